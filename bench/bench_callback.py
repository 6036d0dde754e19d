"""Callback acknowledgement latency: encrypted WeCom messages, 50 concurrent clients.

    .venv/bin/python -m bench.bench_callback [--duration 10] [--runs 3] [--connections 50]
                                             [--json FILE]

For each back-end (SQLite, Redis) it starts the product (`create_app`, exactly what
`mingpian serve` runs) and a floor (a trivial app under the same uvicorn that reads the
body and answers 200), and drives each with `wrk` (C, one thread, keep-alive) and a Lua
script cycling through pre-generated, distinct, signed and encrypted WeCom callbacks. It
prints p50/p99 and throughput for product and floor and their ratio: median of the runs,
min–max in brackets (`--json FILE` also writes each row's medians as numbers). Needs `wrk` (apt-get install -y wrk) and, for Redis, `redis-server`.

The product runs with the embedded worker off (MINGPIAN_EMBEDDED_WORKER=false): this
measures the acknowledgement alone; bench_e2e.py measures processing.

`--sqlite-synchronous NORMAL,FULL` runs the SQLite product once per PRAGMA synchronous level
in every run, side by side with one floor (issue 12: the cost of fsyncing every
acknowledgement's commit; the product ships FULL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

ROOT = Path(__file__).resolve().parents[1]

CORP_ID = "wx5823bf96d3bd56c7"
TOKEN = "QDG6eK"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"

_LUA = r"""
-- Cycle through pre-generated signed requests; each wrk thread takes its own slice.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  reqs = {}
  local f = assert(io.open(args[1], "rb"))
  local n = 0
  local stride = tonumber(args[2])
  for line in f:lines() do
    if n % stride == tid then
      local sep = string.find(line, "\t", 1, true)
      local path = string.sub(line, 1, sep - 1)
      local body = string.sub(line, sep + 1)
      reqs[#reqs + 1] = wrk.format("POST", path, {["Content-Type"] = "text/xml"}, body)
    end
    n = n + 1
  end
  f:close()
  i = 0
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout))
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def write_callbacks(path: Path, lines: list[str], *, first_id: int) -> None:
    """Write one signed, encrypted WeCom callback per line (`path?query<TAB>body`), from
    users u-1000…u-1299, MsgIds from first_id on."""
    import hashlib
    import secrets

    from wechatpy.enterprise.crypto import WeChatCrypto

    crypto = WeChatCrypto(TOKEN, AES_KEY, CORP_ID)
    with path.open("w", encoding="utf-8") as f:
        for i, text in enumerate(lines):
            ts = str(1764202312 + i)
            nonce = str(secrets.randbelow(10**9))
            plain = (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
                     f"<FromUserName><![CDATA[u-{1000 + i % 300}]]></FromUserName>"
                     f"<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                     f"<Content><![CDATA[{text}]]></Content>"
                     f"<MsgId>{first_id + i}</MsgId><AgentID>1000002</AgentID></xml>")
            env = crypto.encrypt_message(plain, nonce, ts)
            enc = env.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
            sig = hashlib.sha1("".join(sorted([TOKEN, ts, nonce, enc])).encode()).hexdigest()
            body = (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA["
                    f"{enc}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")
            f.write(f"/wecom/callback?msg_signature={sig}&timestamp={ts}&nonce={nonce}"
                    f"\t{body}\n")


def generate(path: Path, n: int) -> None:
    """Write n distinct signed WeCom callbacks cycling through a few chat lines."""
    texts = ["宝宝六个月了，辅食先加什么好？", "哈哈", "好的", "[强]", "有没有推荐的婴儿湿疹霜",
             "孩子拉粑粑憋得脸通红，几天才一次", "中午吃啥", "今天堵车好厉害"]
    write_callbacks(path, [texts[i % len(texts)] for i in range(n)],
                    first_id=7300000000000000000)


# -- the two servers ----------------------------------------------------------------------

def _floor_app() -> Any:
    app = FastAPI()

    @app.post("/wecom/callback")
    async def floor(request: Request) -> Response:
        await request.body()
        return Response()

    return app


_SYNC_ENV = "BENCH_SQLITE_SYNCHRONOUS"  # read by _product_app only


def _product_app() -> Any:
    """`mingpian serve`'s app, on the SQLite synchronous level this benchmark was asked for
    (set in each server process, so also under `--processes N`)."""
    import store.sqlite
    from app.cli import serving_app

    level = os.environ.get(_SYNC_ENV)
    if level:
        store.sqlite.SYNCHRONOUS = level
    return serving_app()


def serve(kind: str, port: int, processes: int = 1) -> None:
    """Run the product or the floor under uvicorn exactly as `mingpian serve` does
    (`--workers N` for several processes)."""
    import uvicorn

    factory = ("bench.bench_callback:_floor_app" if kind == "floor"
               else "bench.bench_callback:_product_app")
    uvicorn.run(factory, factory=True, workers=processes, host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def _start_server(kind: str, env: dict[str, str], processes: int = 1
                  ) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_callback", "--serve", kind,
                             "--port", str(port), "--processes", str(processes)],
                            cwd=ROOT, env={**os.environ, **env})
    try:
        # Two processes importing torch on a loaded 2-core machine have taken over 30 s.
        _wait_port(port, timeout=120)
    except BaseException:
        _stop(proc)  # a server left behind keeps the caller's pipes (and a test) open
        raise
    return proc, port


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wrk(port: int, requests_file: Path, lua: Path, *, duration: int, connections: int,
         threads: int) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
           "-s", str(lua), f"http://127.0.0.1:{port}", "--", str(requests_file), str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    res: dict[str, Any] = json.loads(line[7:])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def _start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--dir", str(workdir), "--appendonly", "yes",
                             "--appendfsync", "everysec"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


@dataclass(frozen=True)
class Row:
    """One benchmark row: what was measured, its figures (medians of the runs) and its text."""

    benchmark: str
    figures: dict[str, float]
    text: str  # the BENCHMARKS.md line
    failed_requests: int = 0


def print_table(rows: list[Row]) -> None:
    """Print BENCHMARKS.md rows under the product / floor / ratio header."""
    print("| benchmark | product | floor | ratio |")
    print("|---|---|---|---|")
    print("\n".join(r.text for r in rows))


def write_json(path: Path, rows: list[Row]) -> None:
    """Write the rows as JSON: `{"rows": [{"benchmark", "figures", "failed_requests"}]}`."""
    doc = {"rows": [{"benchmark": r.benchmark, "figures": r.figures,
                     "failed_requests": r.failed_requests} for r in rows]}
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def _measure(backend: str, conns: int, args: argparse.Namespace, reqs: Path, lua: Path,
             work: Path, base_env: dict[str, str]) -> list[Row]:
    """Run floor and product `args.runs` times each; return the rows, one per product."""
    levels = args.sqlite_synchronous.split(",") if args.sqlite_synchronous else []
    products = [f"product:{lv}" for lv in levels] if backend == "sqlite" and levels else ["product"]
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in ("floor", *products)}
    for run in range(args.runs):
        for variant in ("floor", *products):
            kind, _, level = variant.partition(":")
            env = {**base_env, "MINGPIAN_DATA_DIR": str(work / f"data-{backend}-{conns}-{run}-"
                                                        f"{variant.replace(':', '-')}"),
                   "MINGPIAN_REDIS_URL": "", _SYNC_ENV: level}
            redis_proc = None
            if backend == "redis":
                redis_proc, env["MINGPIAN_REDIS_URL"] = _start_redis(
                    work / f"redis-{conns}-{run}-{kind}")
            proc, port = _start_server(kind, env, args.processes)
            try:
                _wrk(port, reqs, lua, duration=2, connections=conns, threads=args.threads)
                res = _wrk(port, reqs, lua, duration=args.duration, connections=conns,
                           threads=args.threads)
            finally:
                _stop(proc)
                if redis_proc is not None:
                    _stop(redis_proc)
            results[variant].append(res)
            print(f"{backend} {conns} conns {variant} run {run + 1}: "
                  f"p50 {res['p50_us'] / 1000:.2f} ms, p99 {res['p99_us'] / 1000:.2f} ms, "
                  f"{res['rps']:.0f} req/s, non-2xx {res['non2xx']}, "
                  f"socket errors {res['socket_errors']}", file=sys.stderr)
    return [_row(backend, conns, args, variant, results[variant], results["floor"])
            for variant in products]


def _row(backend: str, conns: int, args: argparse.Namespace, variant: str,
         prod: list[dict[str, Any]], floor: list[dict[str, Any]]) -> Row:
    p50 = [r["p50_us"] / 1000 for r in prod]
    p99 = [r["p99_us"] / 1000 for r in prod]
    f50 = [r["p50_us"] / 1000 for r in floor]
    f99 = [r["p99_us"] / 1000 for r in floor]
    rps = [r["rps"] for r in prod]
    frps = [r["rps"] for r in floor]
    ratio99 = [a / b for a, b in zip(p99, f99, strict=True)]
    bad = sum(r["non2xx"] + r["socket_errors"] for r in prod)
    if bad:
        print(f"WARNING: {bad} failed requests against the product ({backend})",
              file=sys.stderr)
    procs = f", {args.processes} processes" if args.processes > 1 else ""
    if ":" in variant:
        procs += f", synchronous={variant.partition(':')[2]}"
    benchmark = f"callback ack, {backend}, {conns} conns{procs}"
    med = statistics.median
    figures = {"product_p50_ms": med(p50), "product_p99_ms": med(p99), "product_rps": med(rps),
               "floor_p50_ms": med(f50), "floor_p99_ms": med(f99), "floor_rps": med(frps),
               "p99_ratio": med(ratio99), "throughput_ratio": med(rps) / med(frps)}
    text = (f"| {benchmark} | p50 {_summary(p50)} ms, "
            f"p99 {_summary(p99)} ms, {med(rps):.0f} req/s | "
            f"p50 {_summary(f50)} ms, p99 {_summary(f99)} ms, "
            f"{med(frps):.0f} req/s | p99 ×{_summary(ratio99)}, "
            f"throughput ×{figures['throughput_ratio']:.2f} |")
    return Row(benchmark=benchmark, figures=figures, text=text, failed_requests=bad)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    p.add_argument("--connections", default="50",
                   help="concurrent clients; a comma list sweeps (50)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--requests", type=int, default=60_000, help="distinct requests (60000)")
    p.add_argument("--backends", default="sqlite,redis")
    p.add_argument("--processes", type=int, default=1,
                   help="server processes for product and floor alike (`serve --workers`)")
    p.add_argument("--sqlite-synchronous", default="",
                   help="SQLite PRAGMA synchronous levels to compare, e.g. NORMAL,FULL "
                   "(default: the product's own, FULL)")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="also write the rows' figures (medians) to FILE as JSON")
    p.add_argument("--serve", choices=["product", "floor"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.processes)
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    work = Path(tempfile.mkdtemp(prefix="bench-callback-"))
    lua = work / "cycle.lua"
    lua.write_text(_LUA)
    reqs = work / "requests.tsv"
    t0 = time.perf_counter()
    generate(reqs, args.requests)
    print(f"generated {args.requests} signed requests in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)
    base_env = {"MINGPIAN_WECOM__CORP_ID": CORP_ID, "MINGPIAN_WECOM__TOKEN": TOKEN,
                "MINGPIAN_WECOM__AES_KEY": AES_KEY, "MINGPIAN_WECOM__AGENT_ID": "1000002",
                "MINGPIAN_EMBEDDED_WORKER": "false", "MINGPIAN_LOG_LEVEL": "WARNING",
                "MINGPIAN_API_KEYS": "bench"}
    rows: list[Row] = []
    try:
        for backend in args.backends.split(","):
            for conns in (int(c) for c in args.connections.split(",")):
                rows += _measure(backend, conns, args, reqs, lua, work, base_env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
