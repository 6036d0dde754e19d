"""GET /v1/recommendations over HTTP on a synthetic catalog, with its floors, in one run.

    .venv/bin/python -m bench.bench_recommend_speed --items 100000
    .venv/bin/python -m bench.bench_recommend_speed --items 1000000 --no-vectors-in-store

What it does:

1. builds a synthetic catalog (bench/synthetic.py: vectors mixed from real USE embeddings)
   in a fresh embedded data dir: items and change log in SQLite, the index built with
   nlp.index exactly as compaction builds it and persisted where `serve` loads it;
2. gives ``--users`` users a profile through nlp.profile (interest vector + two tags) and
   records some popularity, so requests exercise the profile, group and popular paths;
3. measures in-process: faiss alone on the same vectors (the floor), recall@10 of the
   approximate index against exact search, and Recommender.for_user without HTTP;
4. starts ``mingpian serve`` and, as the HTTP floor, bench/trivial_app.py under the same
   uvicorn settings, and drives both with wrk (1 thread, a Lua script cycling through
   pre-generated requests) at each ``--connections`` level, ``--runs`` times;
5. prints p50/p99/throughput (median and min–max over runs) and serve's RSS.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import httpx
import numpy as np

from bench import synthetic
from catalog.repo import CatalogRepo
from models.messages import ChatMessage
from nlp.embed import load_embedder
from nlp.index import _KIND_CODE, VectorIndex, _from_rows, _Meta, _save, main_vectors
from nlp.profile import ProfileRepo
from nlp.recommend import Recommender, TagSpace
from nlp.signals import Signals
from nlp.tagging import TagHit, TagResult
from store.sqlite import SQLiteStore

KEY = "bench-key"
EXACT_MAX = 10_000  # the setting's default
NPROBE = 32  # the setting's default


def _ivf_params(nprobe: int) -> faiss.SearchParametersIVF:
    """Return IVF search parameters probing nprobe lists."""
    # The SWIG class takes keyword arguments its stub does not declare; set the field instead.
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    return params


def pct(values: list[float], q: float) -> float:
    """Return the q-th percentile."""
    return float(np.percentile(np.asarray(values), q))


def rss_mb(pid: int) -> tuple[float, float]:
    """Return (VmRSS, VmHWM) of a process in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def build(folder: Path, *, n: int, users: int, with_vectors: bool, seed: int) -> None:
    """Create the data dir: catalog, persisted index, profiles, popularity."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    emb = load_embedder("use")
    anchors = synthetic.anchors(emb)
    x, ai, aj = synthetic.mix(rng, anchors, n)
    docs = list(synthetic.item_docs(rng, anchors, ai, aj))
    data = folder / "data"
    data.mkdir(parents=True)
    store = SQLiteStore(data / "mingpian.db")
    synthetic.write_catalog(store, docs, x, embedder_name=emb.name, with_vectors=with_vectors)
    t_store = time.perf_counter() - t0

    t1 = time.perf_counter()
    repo = CatalogRepo(store, embedder=emb)
    active = [k for k, d in enumerate(docs) if d["active"]]
    ids = [docs[k]["id"] for k in active]
    offers: dict[str, list[int]] = {}
    tags: dict[str, list[int]] = {}
    for row, k in enumerate(active):
        for a in docs[k]["availability"]:
            if a["stock"] > 0:
                offers.setdefault(a["provider_id"], []).append(row)
        for t in docs[k]["tags"]:
            tags.setdefault(t, []).append(row)
    meta = _Meta(ids=ids,
                 kind=np.asarray([_KIND_CODE[docs[k]["kind"]] for k in active], dtype=np.int8),
                 universal=np.asarray([not docs[k]["availability"] for k in active]),
                 offers={p: np.asarray(r, dtype=np.int64) for p, r in offers.items()},
                 tags={t: np.asarray(r, dtype=np.int64) for t, r in tags.items()})
    snap = _from_rows(ids, np.ascontiguousarray(x[active]), meta, version=repo.version(),
                      epoch=repo.epoch(), dim=emb.dim, exact_max=EXACT_MAX, trained=None,
                      trained_n=len(ids))
    t_index = time.perf_counter() - t1
    _save(snap, data / "index")
    kind = (f"IVF nlist={snap.main.nlist} nprobe={NPROBE}" if isinstance(snap.main, faiss.IndexIVF)
            else "exact")
    del snap, docs, x

    # Users: an interest vector and two tags each, half of them in one of 50 groups.
    t2 = time.perf_counter()
    profiles = ProfileRepo(store, half_life_days=30)
    ux, ui, uj = synthetic.mix(rng, anchors, users)
    now = int(time.time())
    for u in range(users):
        result = TagResult(tags=[TagHit(anchors.tags[int(ui[u])], 0.9),
                                 TagHit(anchors.tags[int(uj[u])], 0.5)],
                           vector=ux[u], contentless=False)
        group = f"g-{u % 50:02d}" if u % 2 else None
        profiles.apply(msg=ChatMessage(msg_id=f"bench-{u}", platform="wecom", group_id=group,
                                       user_id=f"u-{u:06d}", text="…", ts=now - 3600),
                       result=result)
    signals = Signals(store)
    for _ in range(2000):
        k = int(rng.integers(0, n))
        p = synthetic.PROVIDERS[int(rng.integers(0, len(synthetic.PROVIDERS)))]
        signals.record(("view", "click", "order")[int(rng.integers(0, 3))], [f"syn-{k:07d}"],
                       provider_id=p)
    t_users = time.perf_counter() - t2
    store.close()
    print(f"built: store {t_store:.0f} s, index ({kind}) {t_index:.0f} s, users {t_users:.0f} s; "
          f"{len(ids)} active items")


def in_process(data: Path, *, users: int, queries: int, seed: int) -> None:
    """Floor (faiss alone), recall of the approximate index, the recommender without HTTP."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread, as serve runs (app/catalog_wiring.py tune_for_serving): otherwise an
    # idle OpenBLAS thread spins on the other core after every product and the figure
    # carries twice its CPU on a busy machine.
    threadpool_limits(limits=1, user_api="blas")
    store = SQLiteStore(data / "mingpian.db")
    emb = load_embedder("use")
    repo = CatalogRepo(store, embedder=emb)
    index = VectorIndex(repo, dim=emb.dim, exact_max=EXACT_MAX, nprobe=NPROBE,
                        persist_dir=data / "index")
    t = time.perf_counter()
    index.load()
    load_s = time.perf_counter() - t
    snap = index._snap
    main = snap.main
    assert main is not None, "the index is empty"
    # IVF holds the only copy of the vectors (issue 17): decode them for the exact floor.
    x = main_vectors(main, snap.x, np.arange(main.ntotal, dtype=np.int64))
    profiles = ProfileRepo(store, half_life_days=30)
    rng = np.random.default_rng(seed + 1)
    picked = [f"u-{int(u):06d}" for u in rng.integers(0, users, queries)]
    vecs = []
    for u in picked:
        prof = profiles.get("user", u)
        assert prof is not None and prof.interest is not None
        vecs.append(prof.interest)
    q = np.ascontiguousarray(np.vstack(vecs), dtype=np.float32)
    faiss.omp_set_num_threads(1)
    params = _ivf_params(NPROBE) if isinstance(main, faiss.IndexIVF) else None
    for _ in range(2):  # warm caches, then measure
        lat = []
        for r in range(len(q)):
            t = time.perf_counter()
            main.search(q[r : r + 1], 50, params=params)
            lat.append((time.perf_counter() - t) * 1000)
    print(f"floor: faiss alone ({'IVF' if params else 'exact'}, k=50, one query, 1 thread): "
          f"p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms")
    _, idx_a = main.search(q, 10, params=params)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(np.ascontiguousarray(x))
    t = time.perf_counter()
    _, idx_e = flat.search(q[:50], 10)
    exact_ms = (time.perf_counter() - t) * 1000 / 50
    _, idx_e = flat.search(q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(idx_a, idx_e, strict=True)])
    print(f"recall@10 of the served index vs exact search ({len(q)} user queries): {recall:.3f}"
          f"   (exact search alone: {exact_ms:.1f} ms a query)")
    if isinstance(main, faiss.IndexIVF):
        for nprobe in (8, 16, 32, 48, 64, 96):
            p = _ivf_params(nprobe)
            t = time.perf_counter()
            _, ia = main.search(q, 10, params=p)
            per = (time.perf_counter() - t) * 1000 / len(q)
            rc = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ia, idx_e, strict=True)])
            print(f"  nprobe {nprobe:>3}: recall@10 {rc:.3f}, {per:.2f} ms a query")
    del flat

    rec = Recommender(index=index, items=repo, embedder=emb, signals=Signals(store),
                      tags=TagSpace.default(emb), profiles=profiles)
    for _ in range(2):
        lat = []
        for r, u in enumerate(picked):
            prov = synthetic.PROVIDERS[r % 20] if r % 2 else None
            t = time.perf_counter()
            res = rec.for_user(u, k=10, provider_id=prov)
            lat.append((time.perf_counter() - t) * 1000)
            assert res.strategy == "profile"
    print(f"index load from disk (as serve does): {load_s:.1f} s; "
          f"Recommender.for_user in-process: p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms")
    index.close()
    store.close()


def lua_script(folder: Path, paths: list[str]) -> Path:
    """Write a wrk script that cycles through paths with the API key."""
    body = ",\n".join(f'"{p}"' for p in paths)
    script = folder / "requests.lua"
    script.write_text(
        f"local paths = {{\n{body}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        f'  return wrk.format("GET", paths[(i % #paths) + 1], {{["Authorization"] = "Bearer {KEY}"}})\n'
        "end\n")
    return script


def request_paths(rng: np.random.Generator, users: int, count: int) -> list[str]:
    """80% known users (profile), 10% newcomers with a group, 10% strangers (popular); half
    of the requests name one of the 20 providers."""
    out = []
    for _ in range(count):
        r = rng.random()
        if r < 0.8:
            q = f"user_id=u-{int(rng.integers(0, users)):06d}"
        elif r < 0.9:
            q = f"user_id=new-{int(rng.integers(0, 10**6))}&group_id=g-{int(rng.integers(0, 50)):02d}"
        else:
            q = f"user_id=anon-{int(rng.integers(0, 10**6))}"
        if rng.random() < 0.5:
            q += f"&provider_id={synthetic.PROVIDERS[int(rng.integers(0, 20))]}"
        out.append(f"/v1/recommendations?{q}&k=10")
    return out


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, script: Path, *, connections: int, duration: int) -> dict[str, float]:
    """Run wrk once; return p50/p99 (ms), requests/s and non-2xx count."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True
                         ).stdout
    got: dict[str, float] = {}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert m, out
        got[f"p{q}"] = float(m.group(1)) * _UNIT[m.group(2)]
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    got["rps"] = float(m.group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    got["non2xx"] = float(bad.group(1)) if bad else 0.0
    return got


class Proc:
    """A server subprocess."""

    def __init__(self, args: list[str], env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def wait(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode() if self.proc.stderr else "")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(name: str, url: str, script: Path, *, conns: list[int], runs: int, duration: int
         ) -> dict[int, list[dict[str, float]]]:
    """Warm up, then run wrk runs times at each connection count; print a summary line each."""
    wrk(url, script, connections=2, duration=3)
    out: dict[int, list[dict[str, float]]] = {}
    for c in conns:
        rows = [wrk(url, script, connections=c, duration=duration) for _ in range(runs)]
        out[c] = rows
        med = {k: statistics.median(r[k] for r in rows) for k in ("p50", "p99", "rps")}
        lo = {k: min(r[k] for r in rows) for k in ("p50", "p99", "rps")}
        hi = {k: max(r[k] for r in rows) for k in ("p50", "p99", "rps")}
        bad = sum(r["non2xx"] for r in rows)
        print(f"{name:<9} c={c:<3} p50 {med['p50']:6.2f} ms ({lo['p50']:.2f}–{hi['p50']:.2f})  "
              f"p99 {med['p99']:6.2f} ms ({lo['p99']:.2f}–{hi['p99']:.2f})  "
              f"{med['rps']:7.0f} req/s ({lo['rps']:.0f}–{hi['rps']:.0f})"
              + (f"  NON-2XX {bad:.0f}" if bad else ""))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--connections", default="1,4,16")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--queries", type=int, default=1000, help="in-process queries")
    p.add_argument("--no-vectors-in-store", action="store_true",
                   help="write items without their vector records (1M: saves ~3 GB of SQLite; "
                   "serve loads the persisted index and never needs them)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", type=Path,
                   help="build in this folder and keep it (reused when it holds a build)")
    p.add_argument("--no-http", action="store_true", help="in-process measurements only")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="mp-speed-"))
    print(f"# {args.items} items, {args.users} users, {os.cpu_count()} cores; data in {folder}")
    data = folder / "data"
    if not (data / "index" / "CURRENT").exists():
        build(folder, n=args.items, users=args.users, with_vectors=not args.no_vectors_in_store,
              seed=args.seed)
    in_process(data, users=args.users, queries=args.queries, seed=args.seed)
    if args.no_http:
        return

    conns = [int(c) for c in args.connections.split(",")]
    script = lua_script(folder, request_paths(np.random.default_rng(args.seed), args.users,
                                              20_000))
    env = os.environ | {"MINGPIAN_DATA_DIR": str(data), "MINGPIAN_API_KEYS": KEY,
                        "MINGPIAN_EMBEDDER": "use", "MINGPIAN_LOG_LEVEL": "WARNING",
                        "MINGPIAN_EMBEDDED_WORKER": "false", "MINGPIAN_REDIS_URL": "",
                        "MINGPIAN_DEMO": "true"}  # a bench key: serve refuses it otherwise
    port = free_port()
    serve = Proc([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env, port)
    t = time.perf_counter()
    serve.wait()
    print(f"serve ready in {time.perf_counter() - t:.1f} s; RSS {rss_mb(serve.proc.pid)[0]:.0f} MiB "
          f"(the vectors alone: {args.items * 512 * 4 / 2**20:.0f} MiB)")
    try:
        load("mingpian", serve.url, script, conns=conns, runs=args.runs, duration=args.duration)
        rss, hwm = rss_mb(serve.proc.pid)
        print(f"serve RSS after load: {rss:.0f} MiB (peak {hwm:.0f} MiB)")
    finally:
        serve.stop()
    port = free_port()
    floor = Proc([sys.executable, "-m", "bench.trivial_app", str(port)], env, port)
    floor.wait()
    try:
        load("floor-app", floor.url, script, conns=conns, runs=args.runs, duration=args.duration)
    finally:
        floor.stop()
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
