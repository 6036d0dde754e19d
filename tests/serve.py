"""A real `mingpian serve` process for multi-process tests: start, wait for /healthz, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port


class ServeProcess:
    """`python -m app.cli serve --port P [args]` with MINGPIAN_* settings from env."""

    def __init__(self, env: dict[str, str], *, workdir: Path, args: tuple[str, ...] = ()
                 ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), *args],
            # Test secrets are short and public: demo mode lets serve start with them
            # (a test passing MINGPIAN_DEMO itself wins).
            cwd=workdir, env=os.environ | {"MINGPIAN_DEMO": "true"} | env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Return once /healthz answers 200; raise if it does not in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("serve did not start")

    def stop(self) -> None:
        """Stop it gracefully (as a process manager would), killing it if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL it: a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
