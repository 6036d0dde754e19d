"""Scale-out drill: 2 `serve` + 3 `worker` processes on Redis (AOF on), signed WeCom load with
duplicate deliveries, a worker SIGKILLed and Redis restarted mid-run; then every distinct
message must have been applied exactly once.

    .venv/bin/python -m bench.drill --messages 20000      # make drill
    .venv/bin/python -m bench.drill --messages 1500       # the shortened CI form (tests/e2e)

Exits non-zero when a message is lost or applied twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.loadgen import LoadResult, Request, percentile, run_load
from bot.simulate import signed_wecom_post, wecom_text_xml

ROOT = Path(__file__).resolve().parents[1]
CORP_ID = "wwdrill0000000001"
TOKEN = "drilltoken"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
API_KEY = "drill-key"

CHAT = [
    "宝宝六个月了，辅食先加什么好？", "娃晚上老醒，一晚上起来三四次", "好的", "哈哈哈", "[强]",
    "敏感肌换季就泛红，有没有温和的面霜", "防晒霜推荐一个不油的", "收到", "谢谢亲",
    "车开了五千公里了是不是该去保养了", "新能源车冬天充电好慢", "今天好冷啊", "👍",
    "奶粉转段要注意什么", "脸上老是长痘痘怎么办", "轮胎有点鼓包还能开吗", "晚安",
    "宝宝湿疹反反复复的", "想给车里换个真皮座椅", "孕期能用什么护肤品",
]


def free_port() -> int:
    """Return a free TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Plan:
    """What will be sent: distinct messages and the delivery order with duplicates."""

    requests: list[Request]
    expected: dict[str, int]  # user_id -> distinct messages
    distinct: int


def build_plan(n: int, dup_rate: float, *, users: int, groups: int, seed: int = 7) -> Plan:
    """Pre-generate signed, encrypted WeCom callbacks (duplicates reuse the same body)."""
    rnd = random.Random(seed)
    base_ts = int(time.time())
    distinct: list[Request] = []
    expected: Counter[str] = Counter()
    for i in range(n):
        user = f"u-{rnd.randrange(users):05d}"
        group = f"g-{rnd.randrange(groups):03d}"
        text = rnd.choice(CHAT)
        xml = wecom_text_xml(corp_id=CORP_ID, user_id=user, text=text, msg_id=10_000_000 + i,
                             ts=base_ts + i, group_id=group)
        path, body = signed_wecom_post(xml, token=TOKEN, aes_key=AES_KEY, corp_id=CORP_ID,
                                       timestamp=str(base_ts), nonce=f"n{i}")
        distinct.append(Request(key=str(i), path=path, body=body))
        expected[user] += 1
    order = list(distinct)
    for _ in range(int(n * dup_rate)):
        # A WeChat retry: the same signed body again, later in the stream.
        order.insert(rnd.randrange(len(order) + 1), rnd.choice(distinct))
    return Plan(order, dict(expected), n)


class Cluster:
    """redis-server + serve + worker processes in a temporary directory."""

    def __init__(self, workdir: Path, *, serves: int, workers: int) -> None:
        self.workdir = workdir
        self.redis_port = free_port()
        self.serve_ports = [free_port() for _ in range(serves)]
        self.n_workers = workers
        self.redis: subprocess.Popen[bytes] | None = None
        self.serves: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "MINGPIAN_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "MINGPIAN_API_KEYS": API_KEY,
            "MINGPIAN_WECOM__CORP_ID": CORP_ID,
            "MINGPIAN_WECOM__TOKEN": TOKEN,
            "MINGPIAN_WECOM__AES_KEY": AES_KEY,
            # No real WeCom here: replies are queued and their sending fails; keep them off.
            "MINGPIAN_REPLY__ENABLED": "false",
            "MINGPIAN_QUEUE_VISIBILITY_S": "5",
            "MINGPIAN_LOG_LEVEL": "WARNING",
        }

    def start_redis(self) -> None:
        exe = shutil.which("redis-server") or "redis-server"
        self.redis = subprocess.Popen(
            [exe, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = redis.Redis(port=self.redis_port)
        for _ in range(400):
            try:
                if r.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.025)
        r.close()

    def restart_redis(self) -> float:
        """Stop Redis gracefully and start it again on its AOF; return seconds it was away."""
        assert self.redis is not None
        t0 = time.perf_counter()
        self.redis.send_signal(signal.SIGTERM)
        self.redis.wait(timeout=30)
        self.start_redis()
        return time.perf_counter() - t0

    def _mingpian(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        data = self.workdir / name
        data.mkdir(exist_ok=True)
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT,
                                # demo mode: serve and worker refuse the drill's weak secrets
                                env={"MINGPIAN_DEMO": "true", **self.env,
                                     "MINGPIAN_DATA_DIR": str(data)},
                                stdout=log, stderr=subprocess.STDOUT,
                                # A group of its own, children included: stop() ends it whole.
                                start_new_session=True)

    def start_services(self) -> None:
        for i, port in enumerate(self.serve_ports):
            self.serves.append(self._mingpian("serve", "--port", str(port), name=f"serve{i}"))
        for i in range(self.n_workers):
            self.workers.append(self._mingpian("worker", name=f"worker{i}"))
        deadline = time.monotonic() + 180
        for port in self.serve_ports:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve on {port} did not start; see {self.workdir}")
                time.sleep(0.25)

    def kill_worker(self) -> None:
        self.workers[0].send_signal(signal.SIGKILL)
        self.workers[0].wait(timeout=10)

    def queue_depth(self) -> int:
        r = redis.Redis(port=self.redis_port)
        try:
            return int(r.xlen("mp:{q:inbox}:s"))
        finally:
            r.close()

    def stop(self) -> None:
        for p in self.serves + self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.serves + self.workers:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        for p in self.serves + self.workers:
            # Whatever is left of a process's group (the SIGKILLed worker's embedder children,
            # had they not died with it) goes too: a drill leaves nothing running.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        if self.redis is not None and self.redis.poll() is None:
            self.redis.send_signal(signal.SIGTERM)
            self.redis.wait(timeout=30)


async def _drive(cluster: Cluster, plan: Plan, concurrency: int) -> tuple[LoadResult, float]:
    """Send the load; SIGKILL a worker at 40 % and restart Redis at 60 %."""
    targets = [("127.0.0.1", p) for p in cluster.serve_ports]
    n = len(plan.requests)
    cut1, cut2 = int(n * 0.4), int(n * 0.6)
    result = LoadResult()
    away = 0.0
    t0 = time.perf_counter()
    for lo, hi, action in ((0, cut1, "kill"), (cut1, cut2, "restart"), (cut2, n, None)):
        part = await run_load(plan.requests[lo:hi], targets=targets, concurrency=concurrency,
                              max_tries=40)
        result.latencies_s += part.latencies_s
        for s, c in part.statuses.items():
            result.statuses[s] = result.statuses.get(s, 0) + c
        result.gave_up += part.gave_up
        result.acked |= part.acked
        if action == "kill":
            cluster.kill_worker()
            print(f"  SIGKILLed worker 0 after {hi} deliveries")
        elif action == "restart":
            away = cluster.restart_redis()
            print(f"  restarted Redis (AOF) after {hi} deliveries; away {away:.2f} s")
    result.elapsed_s = time.perf_counter() - t0
    return result, away


def check(cluster: Cluster, plan: Plan, *, timeout_s: float) -> tuple[int, int, float]:
    """Wait for the queue to drain; return (lost, doubled, drain seconds)."""
    t0 = time.perf_counter()
    while cluster.queue_depth() > 0 and time.perf_counter() - t0 < timeout_s:
        time.sleep(0.25)
    drain = time.perf_counter() - t0
    lost = doubled = 0
    port = cluster.serve_ports[0]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                      headers={"X-API-Key": API_KEY}, timeout=10) as c:
        for user, want in plan.expected.items():
            r = c.get(f"/v1/users/{user}/profile")
            got = r.json()["message_count"] if r.status_code == 200 else 0
            lost += max(0, want - got)
            doubled += max(0, got - want)
    return lost, doubled, drain


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--dup-rate", type=float, default=0.10)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=30)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--serves", type=int, default=2)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--workdir", type=Path,
                    help="an empty directory for Redis, data and logs (default: a new temporary one, "
                    "removed after a passing drill)")
    args = ap.parse_args(argv)

    print(f"building {args.messages} signed messages (+{args.dup_rate:.0%} duplicates)…")
    plan = build_plan(args.messages, args.dup_rate, users=args.users, groups=args.groups)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="mingpian-drill-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(workdir, serves=args.serves, workers=args.workers)
    try:
        cluster.start_redis()
        cluster.start_services()
        print(f"cluster up: redis :{cluster.redis_port}, serve {cluster.serve_ports}, "
              f"{args.workers} workers ({workdir})")
        result, away = asyncio.run(_drive(cluster, plan, args.concurrency))
        lost, doubled, drain = check(cluster, plan, timeout_s=300)
    finally:
        cluster.stop()
    deliveries = len(plan.requests)
    figures = {
        "distinct_messages": plan.distinct,
        "deliveries": deliveries,
        "non_2xx_attempts": result.non_2xx,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "gave_up": len(result.gave_up),
        "ack_p50_ms": round(percentile(result.latencies_s, 50) * 1000, 2),
        "ack_p99_ms": round(percentile(result.latencies_s, 99) * 1000, 2),
        "send_rate_per_s": round(deliveries / result.elapsed_s, 1),
        "end_to_end_rate_per_s": round(plan.distinct / (result.elapsed_s + drain), 1),
        "redis_away_s": round(away, 2),
        "drain_after_load_s": round(drain, 2),
        "lost": lost,
        "applied_twice": doubled,
    }
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = lost == 0 and doubled == 0 and not result.gave_up
    print("DRILL PASSED" if ok else "DRILL FAILED")
    if ok and own_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
