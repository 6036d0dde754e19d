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
        # Its output goes to a file: a serve that does not come up says why (see wait_ready).
        self.log = workdir / f"serve-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), *args],
                # Test secrets are short and public: demo mode lets serve start with them
                # (a test passing MINGPIAN_DEMO itself wins).
                cwd=workdir, env=os.environ | {"MINGPIAN_DEMO": "true"} | env,
                stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Return once /healthz answers 200; raise, with serve's last output, if it exits or
        does not answer in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        state = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                 else f"no answer in {timeout_s:.0f} s")
        tail = self.log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"serve did not start ({state}); its output:\n{tail}")

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
