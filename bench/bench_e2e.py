"""End-to-end throughput: signed WeCom callback → queue → one worker → updated profile.

    .venv/bin/python -m bench.bench_e2e [--messages 5000] [--runs 3] [--embedder use]
                                        [--blas-threads 1] [--json FILE]

For each back-end it starts the product (`create_app`, what `mingpian serve` runs, with the
embedded worker off) and one `mingpian worker` process, warms both up, then fires the
messages as distinct signed, encrypted WeCom callbacks with `wrk` (50 connections, each
request once) and waits until the worker has applied every one to the profiles. Reported:

- e2e: messages / (first callback sent → last message applied), callbacks and worker
  running at once on the same 2 cores;
- drain: the worker alone on a queue already holding every message (callbacks first),
  timed from the end of its first batch: a freshly started worker builds its tag index and
  loads jieba's dictionaries on its first message, which is start-up, not throughput;
- floor: the embedder alone encoding the same texts in the worker's batch size, and the
  pipeline alone (redact → tag → profile commit) in this process on the same store
  back-end; both with the model as the worker runs it (two child processes of one BLAS
  thread each, settings.worker_embedder_processes).

``--blas-threads N`` gives each of the worker's embedding processes N BLAS threads
(MINGPIAN_EMBEDDER_THREADS), and the floors the same; left out, everything runs as shipped.
``--json FILE`` also writes each row's figures (medians of the runs) as numbers.

The mix is realistic group chat: a third chit-chat (好的、哈哈、[强], emoji), the rest topical
lines from bench/data/tagging_gold.jsonl and the demo chat, combined so they rarely repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_callback import (
    AES_KEY,
    CORP_ID,
    ROOT,
    TOKEN,
    Row,
    _start_redis,
    _start_server,
    _stop,
    print_table,
    write_callbacks,
    write_json,
)

WORKER_CHILDREN = 2  # Settings.worker_embedder_processes, the worker's default

CHITCHAT = ["好的", "哈哈", "哈哈哈哈", "[强]", "👍", "收到", "谢谢", "早上好呀", "晚安", "😂😂",
            "[玫瑰]", "嗯嗯", "好哒", "在的", "[捂脸]", "中午吃啥", "今天好冷", "路上堵死了"]

_LUA_ONCE = r"""
-- Send each pre-generated request once (cycling only to keep busy connections fed while
-- the last answers arrive; repeats are deduplicated by the service), then stop.
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  reqs = {}
  local stride = tonumber(args[2])
  local n = 0
  for line in io.lines(args[1]) do
    if n % stride == tid then
      local sep = string.find(line, "\t", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", string.sub(line, 1, sep - 1),
                                   {["Content-Type"] = "text/xml"}, string.sub(line, sep + 1))
    end
    n = n + 1
  end
  i = 0
  answered = 0
end
function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
function response(status, headers, body)
  answered = answered + 1
  if answered >= #reqs then wrk.thread:stop() end
end
function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "non2xx": %d, "p99_us": %d}\n',
    summary.requests, summary.errors.status, latency:percentile(99)))
end
"""


def texts(n: int, *, seed: int = 7) -> list[str]:
    """Return n chat lines: a third chit-chat, the rest topical and rarely repeated."""
    rng = random.Random(seed)
    topical = [json.loads(x)["text"] for x in
               (ROOT / "bench/data/tagging_gold.jsonl").read_text(encoding="utf-8").splitlines()]
    topical += [m["text"] for m in (json.loads(x) for x in
                (ROOT / "app/demo/chat.jsonl").read_text(encoding="utf-8").splitlines())
                if len(m["text"]) > 8]
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(rng.choice(CHITCHAT))
        else:
            a, b = rng.sample(topical, 2)
            out.append(a if rng.random() < 0.3 else f"{a}，{b}")
    return out


def _start_fire(port: int, requests_file: Path, lua: Path) -> subprocess.Popen[str]:
    # wrk 4.1 keeps its main thread for the whole -d even after thread:stop(): we end it
    # ourselves (SIGINT, which still prints the summary) once every message is in.
    cmd = ["wrk", "-t1", "-c50", "-d900s", "--timeout", "30s", "-s", str(lua),
           f"http://127.0.0.1:{port}", "--", str(requests_file), "1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _end_fire(proc: subprocess.Popen[str]) -> dict[str, Any]:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    res: dict[str, Any] = json.loads(line[7:])
    return res


def _until(cond: Any, *, timeout: float = 900) -> float:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.01)
    return time.perf_counter()


class Worker:
    """A `mingpian worker` process; ready once it logs that it consumes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.ready = threading.Event()
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT,
                                     # demo mode: worker refuses the bench's weak secrets
                                     env={**os.environ, "MINGPIAN_DEMO": "true", **env,
                                          "MINGPIAN_LOG_LEVEL": "INFO"},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "consuming" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 300) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError("the worker did not start")

    def stop(self) -> None:
        _stop(self.proc)


def _applied(store: Any) -> int:
    return sum(int(rec.doc.get("n", 0)) for _, rec in store.scan("profile.user"))


def _count(store: Any, user: str) -> int:
    rec = store.get("profile.user", user)
    return int(rec.doc.get("n", 0)) if rec is not None else 0


def _all_applied(store: Any, *, last_user: str, last_count: int, target: int) -> bool:
    """Cheap first (the last message's sender: the queue is FIFO), then the full count."""
    from app.services import INBOX

    if _count(store, last_user) < last_count or store.queue_depth(INBOX) > 0:
        return False
    return _applied(store) >= target


def run_once(backend: str, work: Path, lines: list[str], lua: Path, embedder: str,
             run: int, *, blas_threads: int = 0) -> dict[str, float]:
    """Return e2e and drain throughput (messages/s) for one back-end, one run."""
    from app.services import INBOX
    from store import open_store

    warm = work / f"warm-{run}.tsv"
    write_callbacks(warm, texts(60, seed=100 + run), first_id=7_100_000_000_000_000_000)
    reqs = work / f"reqs-{run}.tsv"
    write_callbacks(reqs, lines, first_id=7_200_000_000_000_000_000 + run * 1_000_000)
    out: dict[str, float] = {}
    for mode in ("e2e", "drain"):
        data = work / f"data-{backend}-{run}-{mode}"
        env = {"MINGPIAN_WECOM__CORP_ID": CORP_ID, "MINGPIAN_WECOM__TOKEN": TOKEN,
               "MINGPIAN_WECOM__AES_KEY": AES_KEY, "MINGPIAN_WECOM__AGENT_ID": "1000002",
               "MINGPIAN_EMBEDDED_WORKER": "false", "MINGPIAN_LOG_LEVEL": "WARNING",
               "MINGPIAN_EMBEDDER": embedder, "MINGPIAN_DATA_DIR": str(data),
               "MINGPIAN_REDIS_URL": ""}
        redis_proc = None
        if backend == "redis":
            redis_proc, env["MINGPIAN_REDIS_URL"] = _start_redis(data / "redis")
        worker_env = dict(env)
        if blas_threads:
            worker_env.update(MINGPIAN_EMBEDDER_THREADS=str(blas_threads),
                              OPENBLAS_NUM_THREADS=str(blas_threads))
        server, port = _start_server("product", env)
        store = open_store(redis_url=env["MINGPIAN_REDIS_URL"] or None, data_dir=data)
        worker = Worker(worker_env)
        try:
            worker.wait_ready()
            fire = _start_fire(port, warm, lua)
            _until(lambda st=store: _applied(st) >= 60 and st.queue_depth(INBOX) == 0)
            _end_fire(fire)
            base = _applied(store)
            target = base + len(lines)
            last_user = f"u-{1000 + (len(lines) - 1) % 300}"
            last_count = _count(store, last_user) + sum(
                1 for i in range(len(lines)) if i % 300 == (len(lines) - 1) % 300)

            def done(store: Any = store, last_user: str = last_user,
                     last_count: int = last_count, target: int = target) -> bool:
                return _all_applied(store, last_user=last_user, last_count=last_count,
                                    target=target)
            if mode == "e2e":
                t0 = time.perf_counter()
                fire = _start_fire(port, reqs, lua)
                t1 = _until(done)
                res = _end_fire(fire)
            else:
                worker.stop()
                fire = _start_fire(port, reqs, lua)
                _until(lambda st=store: st.queue_depth(INBOX) >= len(lines))
                res = _end_fire(fire)
                worker = Worker(worker_env)
                worker.wait_ready()
                t0 = _until(lambda st=store: st.queue_depth(INBOX) < len(lines))
                timed = store.queue_depth(INBOX)  # what is left after the first batch
                t1 = _until(done)
            applied = _applied(store) - base
            if applied != len(lines) or res["non2xx"]:
                raise RuntimeError(f"{applied} of {len(lines)} applied, "
                                   f"{res['non2xx']} non-2xx answers")
            out[mode] = (len(lines) if mode == "e2e" else timed) / (t1 - t0)
            print(f"{backend} run {run + 1} {mode}: {out[mode]:.0f} msg/s", file=sys.stderr)
        finally:
            worker.stop()
            _stop(server)
            store.close()
            if redis_proc is not None:
                _stop(redis_proc)
    return out


def floors(backend: str, work: Path, lines: list[str], embedder: str, *,
           blas_threads: int = 0) -> dict[str, float]:
    """Return the embedder alone and the pipeline alone, in texts (messages) per second."""
    from threadpoolctl import threadpool_limits

    # As in `mingpian worker`: the model runs in child processes, one BLAS thread here.
    with threadpool_limits(limits=1, user_api="blas"):
        return _floors(backend, work, lines, embedder, threads=blas_threads or None)


def _floors(backend: str, work: Path, lines: list[str], embedder: str,
            threads: int | None) -> dict[str, float]:
    from app.services import build_services
    from app.settings import Settings
    from models.messages import ChatMessage
    from nlp.embed import load_embedder

    # The model as `mingpian worker` runs it (settings.worker_embedder_processes children of
    # one BLAS thread each, or the given number of threads).
    emb = load_embedder(embedder, threads=threads or 1, child_processes=WORKER_CHILDREN)
    contentful = lines
    emb.inner.encode(contentful[:64])
    t0 = time.perf_counter()
    for i in range(0, len(contentful), 64):
        emb.inner.encode(contentful[i:i + 64])  # uncached: the model's own speed
    embed_rate = len(contentful) / (time.perf_counter() - t0)

    data = work / backend
    redis_proc = None
    url = None
    if backend == "redis":
        redis_proc, url = _start_redis(data / "redis")
    settings = Settings(_env_file=None, data_dir=data, redis_url=url,
                        embedder=embedder, embedded_worker=False)
    # A fresh embedder cache, as a freshly started worker has.
    emb.close()
    emb = load_embedder(embedder, threads=threads or 1, child_processes=WORKER_CHILDREN)
    svc = build_services(settings, embedder=emb)
    try:
        assert svc.pipeline is not None
        msgs = [ChatMessage(msg_id=f"f{i}", platform="wecom", user_id=f"u-{1000 + i % 300}",
                            text=t, ts=1764202312 + i) for i, t in enumerate(lines)]
        svc.pipeline.process(msgs[:64])
        t0 = time.perf_counter()
        for i in range(64, len(msgs), 64):
            svc.pipeline.process(msgs[i:i + 64])
        pipe_rate = (len(msgs) - 64) / (time.perf_counter() - t0)
    finally:
        svc.close()
        emb.close()
        if redis_proc is not None:
            _stop(redis_proc)
    return {"embed": embed_rate, "pipeline": pipe_rate}


def overhead(embedder: str = "hash", n_batches: int = 50) -> None:
    """Print the inbox worker's cost per message beyond the pipeline's, batches interleaved."""
    from app.services import INBOX, build_services
    from app.settings import Settings
    from models.messages import ChatMessage
    from store.consumer import consume_once

    lines = texts(64 * (2 * n_batches + 1))
    data = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    settings = Settings(_env_file=None, data_dir=data, redis_url=None,
                        embedder=embedder, embedded_worker=False)
    svc = build_services(settings)
    try:
        assert svc.pipeline is not None and svc.bot is not None
        msgs = [ChatMessage(msg_id=f"m{n}", platform="wecom", user_id=f"u-{1000 + n % 300}",
                            text=t, ts=1764202312 + n) for n, t in enumerate(lines)]
        svc.pipeline.process(msgs[:64])
        alone: list[float] = []
        worker: list[float] = []
        for i in range(64, len(msgs), 128):
            t = time.perf_counter()
            svc.pipeline.process(msgs[i:i + 64])
            alone.append((time.perf_counter() - t) / 64)
            for m in msgs[i + 64:i + 128]:
                svc.bot.inbox.accept_message(m)
            t = time.perf_counter()
            consume_once(svc.store, queue=INBOX, handler=svc.inbox_handler, consumer="b",
                         max_items=64)
            worker.append((time.perf_counter() - t) / 64)
    finally:
        svc.close()
        shutil.rmtree(data, ignore_errors=True)
    a, w = statistics.median(alone) * 1e6, statistics.median(worker) * 1e6
    print(f"per message: pipeline alone {a:.0f} µs; inbox worker path (claim, parse, "
          f"pipeline, ack) {w:.0f} µs; overhead {w - a:.0f} µs ({(w - a) / a:.1%})")


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} [{min(values):.0f}–{max(values):.0f}]"


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--embedder", default="use", help="MINGPIAN_EMBEDDER for every process")
    p.add_argument("--backends", default="sqlite,redis")
    p.add_argument("--blas-threads", type=int, default=0,
                   help="BLAS threads of the worker and the floors (0: as shipped)")
    p.add_argument("--overhead", action="store_true",
                   help="only measure the worker's cost beyond the pipeline (in-process)")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="also write the rows' figures (medians) to FILE as JSON")
    args = p.parse_args()
    if args.overhead:
        overhead()
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    lua = work / "once.lua"
    lua.write_text(_LUA_ONCE)
    lines = texts(args.messages)
    rows: list[Row] = []
    threads = f", {args.blas_threads} BLAS thread(s)" if args.blas_threads else ""
    try:
        for backend in args.backends.split(","):
            e2e: list[float] = []
            drain: list[float] = []
            pipe: list[float] = []
            embed: list[float] = []
            for run in range(args.runs):
                # The floor right before the product, run by run: the machine is shared
                # and its speed drifts, so each run's ratio is the figure to trust.
                fl = floors(backend, work / f"floor-{run}", lines, args.embedder,
                            blas_threads=args.blas_threads)
                res = run_once(backend, work, lines, lua, args.embedder, run,
                               blas_threads=args.blas_threads)
                e2e.append(res["e2e"])
                drain.append(res["drain"])
                pipe.append(fl["pipeline"])
                embed.append(fl["embed"])
                print(f"{backend} run {run + 1} floors: pipeline {fl['pipeline']:.0f} msg/s, "
                      f"embedder {fl['embed']:.0f} texts/s", file=sys.stderr)
            r_e2e = [a / b for a, b in zip(e2e, pipe, strict=True)]
            r_drain = [a / b for a, b in zip(drain, pipe, strict=True)]
            benchmark = (f"e2e callback → profile, {backend}, 1 worker, {args.messages} msgs, "
                         f"embedder {args.embedder}{threads}")
            med = statistics.median
            figures = {"e2e_msg_s": med(e2e), "drain_msg_s": med(drain),
                       "pipeline_msg_s": med(pipe), "embed_texts_s": med(embed),
                       "e2e_over_pipeline": med(r_e2e), "drain_over_pipeline": med(r_drain)}
            rows.append(Row(benchmark=benchmark, figures=figures, text=(
                f"| {benchmark} | e2e {_summary(e2e)} msg/s; worker drain "
                f"{_summary(drain)} msg/s | pipeline alone {_summary(pipe)} msg/s; embedder "
                f"alone {_summary(embed)} texts/s | e2e ÷ pipeline ×{_ratio(r_e2e)}; "
                f"drain ÷ pipeline ×{_ratio(r_drain)} |")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
