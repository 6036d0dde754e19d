"""CPU time per acknowledged callback: an A/B that a loaded machine blurs far less.

    .venv/bin/python -m bench.bench_ack_cost [--tree PATH ...] [--rounds 3] [--duration 10]
                                             [--connections 50] [--backends sqlite,redis]

Wall-clock benchmarks (bench_callback.py) on a shared 2-core machine move by 10–20 % between
runs, which hides a change of a few per cent: throughput there is whatever share of the cores
the server got. This one starts the product exactly as bench_callback does (`serving_app()`
under uvicorn, embedded worker off), drives it with wrk and the same signed, encrypted WeCom
callbacks, and divides the CPU time the server process used (user + system, all its threads,
from /proc/PID/stat) by the requests it answered. Several trees — e.g. a clone of an older
commit — are measured in alternation, round after round (A B A B …), so that a change in the
machine's load hits each the same; `--tree /tmp/old --tree .` runs each tree's own code (its
directory first on PYTHONPATH; `--tree DIR:EXTRA` also puts EXTRA, e.g. a `pip install
--target` folder with a package the old tree needs, before the venv's) under this checkout's
interpreter and packages. Median of the
rounds, min–max in brackets. (callgrind's instruction counts would be exact, but Python under
valgrind takes many minutes just to start here.)

It counts uvicorn's parsing, the app, the store write (SQLite, or the Redis client) and the
group-commit thread; the Redis server's own work is outside the process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_callback import (
    _LUA,
    AES_KEY,
    CORP_ID,
    TOKEN,
    _free_port,
    _start_redis,
    _stop,
    _wait_port,
    _wrk,
    generate,
)

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def measure(tree: Path, extra: str, backend: str, *, conns: int, duration: int, reqs: Path, lua: Path,
            work: Path) -> tuple[float, int]:
    """Return (server CPU seconds while counted, requests answered) for one tree and back-end."""
    tag = f"{tree.name}-{backend}-{conns}-{time.monotonic_ns()}"
    env = {**os.environ, "MINGPIAN_WECOM__CORP_ID": CORP_ID, "MINGPIAN_WECOM__TOKEN": TOKEN,
           "MINGPIAN_WECOM__AES_KEY": AES_KEY, "MINGPIAN_WECOM__AGENT_ID": "1000002",
           "MINGPIAN_EMBEDDED_WORKER": "false", "MINGPIAN_LOG_LEVEL": "WARNING",
           "MINGPIAN_API_KEYS": "bench", "MINGPIAN_DATA_DIR": str(work / f"data-{tag}"),
           "MINGPIAN_REDIS_URL": "", "PYTHONPATH": os.pathsep.join(p for p in (str(tree), extra) if p)}
    redis_proc = None
    if backend == "redis":
        redis_proc, env["MINGPIAN_REDIS_URL"] = _start_redis(work / f"redis-{tag}")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_callback", "--serve", "product",
                             "--port", str(port)], cwd=tree, env=env)
    try:
        _wait_port(port, timeout=180)
        _wrk(port, reqs, lua, duration=2, connections=conns, threads=1)  # warm-up, not counted
        cpu0 = _cpu_seconds(proc.pid)
        res = _wrk(port, reqs, lua, duration=duration, connections=conns, threads=1)
        cpu = _cpu_seconds(proc.pid) - cpu0
    finally:
        _stop(proc)
        if redis_proc is not None:
            _stop(redis_proc)
    if res["non2xx"] or res["socket_errors"]:
        print(f"{tag}: {res['non2xx']} non-2xx, {res['socket_errors']} socket errors",
              file=sys.stderr)
    return cpu, int(res["requests"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append",
                   help="source tree to measure (repeatable; default: this checkout)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    p.add_argument("--duration", type=int, default=10, help="seconds counted per run (10)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--backends", default="sqlite,redis")
    p.add_argument("--requests", type=int, default=60_000, help="distinct requests (60000)")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    specs = [str(t).partition(":") for t in (args.tree or [ROOT])]
    trees = [(Path(t).resolve(), extra) for t, _, extra in specs]
    work = Path(tempfile.mkdtemp(prefix="bench-ack-cost-"))
    lua = work / "cycle.lua"
    lua.write_text(_LUA)
    reqs = work / "requests.tsv"
    generate(reqs, args.requests)
    per: dict[tuple[str, Path], list[float]] = {}
    try:
        for backend in args.backends.split(","):
            for rnd in range(args.rounds):
                for tree, extra in trees:
                    cpu, answered = measure(tree, extra, backend, conns=args.connections,
                                            duration=args.duration, reqs=reqs, lua=lua,
                                            work=work)
                    us = cpu / answered * 1e6 if answered else float("nan")
                    per.setdefault((backend, tree), []).append(us)
                    print(f"round {rnd + 1} {backend} {tree}: {answered} requests, "
                          f"{cpu:.2f} CPU s, {us:.1f} CPU µs/request", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| back-end | tree | server CPU µs per request (median [min–max]) |")
    print("|---|---|---|")
    for (backend, tree), values in per.items():
        print(f"| {backend} | {tree} | {statistics.median(values):.1f} "
              f"[{min(values):.1f}–{max(values):.1f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
