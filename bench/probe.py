"""An external probe of the public surface and of data safety (issues 11 and 12).

It starts mingpian as `make run` does (the demo catalog imported, then `mingpian serve` on
127.0.0.1) but with real secrets (no MINGPIAN_DEMO) and an Official Account in safe mode,
plus `mingpian worker` processes of its own, and then behaves as an attacker, a newcomer and
an operator would, over HTTP and signals only:

    python -m bench.probe [--json FILE]

Each check prints PASS or FAIL with what it saw; the exit status is the number of failures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.simulate import signed_wecom_post, wecom_text_xml

ROOT = Path(__file__).resolve().parents[1]

WECOM = {"corp_id": "wwprobe000000001", "token": "probetoken",
         "aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"}
WECHAT = {"token": "probewechat", "app_id": "wxprobe000000001",
          "aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def strong_env(data_dir: Path) -> dict[str, str]:
    """The environment of a real deployment: long random secrets, no demo flag."""
    return {
        "MINGPIAN_DATA_DIR": str(data_dir),
        "MINGPIAN_API_KEYS": "probe-" + secrets.token_hex(16),
        "MINGPIAN_SHARE_SECRET": secrets.token_hex(24),
        "MINGPIAN_LEDGER_KEY": secrets.token_hex(24),
        "MINGPIAN_WECOM__CORP_ID": WECOM["corp_id"], "MINGPIAN_WECOM__TOKEN": WECOM["token"],
        "MINGPIAN_WECOM__AES_KEY": WECOM["aes_key"], "MINGPIAN_WECOM__SECRET": "probe-secret",
        "MINGPIAN_WECOM__API_BASE": "http://127.0.0.1:9",  # nothing there: replies just fail
        "MINGPIAN_WECHAT__TOKEN": WECHAT["token"], "MINGPIAN_WECHAT__APP_ID": WECHAT["app_id"],
        "MINGPIAN_WECHAT__AES_KEY": WECHAT["aes_key"],
        "MINGPIAN_EMBEDDED_WORKER": "false",  # the probe runs (and kills) workers of its own
        "MINGPIAN_REPLY__ENABLED": "false",
    }


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MINGPIAN_")}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


@dataclass
class Result:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str


@dataclass
class Probe:
    """The service under probe and what was found."""

    env: dict[str, str]
    url: str = ""
    results: list[Result] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.env["MINGPIAN_API_KEYS"]

    def check(self, name: str, ok: bool, detail: str) -> None:
        """Record and print one check."""
        self.results.append(Result(name, ok, detail))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Call /v1 with the API key."""
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a mingpian verb with this deployment's environment."""
        proc = subprocess.Popen(_cli(*args), cwd=ROOT, env=_clean_environ() | (env or self.env),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def wait_profile(self, user_id: str, *, count: int = 1, timeout_s: float = 90) -> bool:
        """Wait until the user's profile has at least count messages."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = self.api("GET", f"/v1/users/{user_id}/profile")
            if r.status_code == 200 and r.json()["message_count"] >= count:
                return True
            time.sleep(0.3)
        return False


def _children(pid: int) -> set[int]:
    """Every live descendant of pid (from /proc)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parent_of.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _message(user_id: str, text: str, ts: int, group_id: str = "g-probe") -> dict[str, Any]:
    return {"msg_id": f"probe-{secrets.token_hex(6)}", "platform": "wecom",
            "group_id": group_id, "user_id": user_id, "user_name": user_id, "text": text,
            "ts": ts}


# ------------------------------------------------------------------------------ issue 11


def probe_slow_parse(p: Probe) -> None:
    """Point 1: unsigned bodies built to parse slowly are refused at once; /healthz stays fast."""
    huge = b"<xml><a>" + b"<b/>" * 200_000 + b"</a></xml>"
    dense = b"<xml><a>" + b"<b/>" * 15_000 + b"</a></xml>"  # 60 KiB, under the byte cap
    health: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            with suppress(httpx.HTTPError):
                httpx.get(p.url + "/healthz", timeout=30)
            health.append(time.perf_counter() - t0)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    q = "msg_signature=00&timestamp=1&nonce=1"
    for path in ("/wecom/callback?" + q, "/wechat/callback?encrypt_type=aes&signature=0&" + q,
                 "/wecom/callback?" + q, "/wechat/callback?encrypt_type=aes&signature=0&" + q):
        for name, body in (("781 KiB", huge), ("60 KiB dense", dense)):
            t0 = time.perf_counter()
            r = httpx.post(p.url + path, content=body, timeout=60)
            took = time.perf_counter() - t0
            p.check(f"11.1 unsigned {name} body to {path.split('?')[0]}",
                    400 <= r.status_code < 500 and took < 1.0,
                    f"HTTP {r.status_code} in {took * 1000:.0f} ms")
    stop.set()
    watcher.join()
    worst = max(health) if health else float("inf")
    p.check("11.1 /healthz during the hostile bodies", worst < 1.0,
            f"{len(health)} checks, slowest {worst * 1000:.0f} ms")


def _wechat_plain_xml(sender: str, text: str) -> str:
    return (f"<xml><ToUserName><![CDATA[{WECHAT['app_id']}]]></ToUserName>"
            f"<FromUserName><![CDATA[{sender}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{text}]]></Content>"
            f"<MsgId>{secrets.randbelow(10**15)}</MsgId></xml>")


def probe_safe_mode(p: Probe) -> None:
    """Point 2: with an AES key, a plaintext POST with a valid plain signature is refused."""
    ts, nonce = str(int(time.time())), "12345"
    sig = hashlib.sha1("".join(sorted((WECHAT["token"], ts, nonce))).encode()).hexdigest()
    victim = "oProbeVictim" + secrets.token_hex(4)
    r = httpx.post(f"{p.url}/wechat/callback",
                   params={"signature": sig, "timestamp": ts, "nonce": nonce,
                           "openid": victim},
                   content=_wechat_plain_xml(victim, "宝宝湿疹用什么好 宝宝湿疹").encode(),
                   timeout=30)
    p.check("11.2 plaintext POST with a valid plain signature (safe mode)",
            400 <= r.status_code < 500, f"HTTP {r.status_code}")
    # A marker message through the real encrypted route shows when the queue has drained.
    marker = "probe-marker-" + secrets.token_hex(4)
    _post_wecom(p, marker, "宝宝辅食怎么加")
    drained = p.wait_profile(marker)
    profile = p.api("GET", f"/v1/users/{victim}/profile").status_code
    p.check("11.2 the downgraded message built no profile", drained and profile == 404,
            f"marker applied={drained}, victim profile HTTP {profile}")


def _post_wecom(p: Probe, user_id: str, text: str) -> int:
    plain = wecom_text_xml(corp_id=WECOM["corp_id"], user_id=user_id, text=text,
                           msg_id=secrets.randbelow(10**15), ts=int(time.time()),
                           group_id="g-probe")
    path, body = signed_wecom_post(plain, token=WECOM["token"], aes_key=WECOM["aes_key"],
                                   corp_id=WECOM["corp_id"], timestamp=str(int(time.time())))
    return httpx.post(p.url + path, content=body, timeout=30).status_code


def _card_and_code(p: Probe) -> tuple[str, str]:
    r = p.api("POST", "/v1/cards", json={
        "staff_id": "probe-staff", "name": "探针顾问", "title": "母婴顾问", "company": "探针母婴",
        "phone": "13800138000", "provider_id": "sh-01", "wecom_user_id": "probe"})
    r.raise_for_status()
    card_id = str(r.json()["id"])
    s = p.api("POST", f"/v1/cards/{card_id}/shares", json={"sharer_id": "probe-sharer"})
    s.raise_for_status()
    return card_id, str(s.json()["code"])


def _radar_visitors(p: Probe, card_id: str) -> list[dict[str, Any]]:
    visits: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        body = p.api("GET", f"/v1/cards/{card_id}/visits", params=params).json()
        visits.extend(body["visits"])
        cursor = body.get("next_cursor")
        if not cursor:
            break
    return visits


def probe_viewers(p: Probe, member: str) -> None:
    """Point 3: ?u= is ignored; a signed token names the viewer; a tampered one does not."""
    card_id, code = _card_and_code(p)
    anon = httpx.Client(base_url=p.url, timeout=30)
    r = anon.get(f"/c/{card_id}", params={"u": member})
    leaked = "因为你最近聊到" in r.text
    p.check("11.3 /c/{card}?u=<member> prints no chat-derived reason", r.status_code == 200
            and not leaked, f"HTTP {r.status_code}, reason printed={leaked}")
    cookie = r.headers.get("set-cookie", "")
    p.check("11.3 ?u= sets no cookie naming the member", member not in cookie,
            f"set-cookie={cookie[:60]!r}")
    anon.get(f"/s/{code}", params={"u": member})
    named = [v for v in _radar_visitors(p, card_id) if v["visitor_id"] == member]
    p.check("11.3 ?u= writes no visit under the member's name", not named,
            f"{len(named)} visits named {member}")

    tok = p.api("POST", "/v1/viewer-tokens", json={"user_id": member, "ttl_s": 600})
    p.check("11.3 POST /v1/viewer-tokens", tok.status_code in (200, 201),
            f"HTTP {tok.status_code}")
    token = str(tok.json().get("token", "")) if tok.status_code in (200, 201) else ""
    viewer = httpx.Client(base_url=p.url, timeout=30)
    first = viewer.get(f"/s/{code}", params={"vt": token})
    location = first.headers.get("location", "")
    p.check("11.3 ?vt=TOKEN redirects to the URL without it",
            first.status_code in (302, 303, 307) and "vt=" not in location
            and location.endswith(f"/s/{code}"), f"HTTP {first.status_code} → {location!r}")
    page = viewer.get(f"/s/{code}")
    p.check("11.3 the signed viewer's page prints no chat-derived reason",
            page.status_code == 200 and "因为你最近聊到" not in page.text,
            f"HTTP {page.status_code}")
    named = [v for v in _radar_visitors(p, card_id) if v["visitor_id"] == member]
    p.check("11.3 a signed token names the viewer in the radar", len(named) == 1,
            f"{len(named)} visits named {member}")

    other = "u-probe-tamper"
    forged = p.api("POST", "/v1/viewer-tokens", json={"user_id": other, "ttl_s": 600})
    bad = str(forged.json().get("token", "x")) if forged.status_code in (200, 201) else "x"
    bad = bad[:-2] + ("AA" if not bad.endswith("AA") else "BB")
    tampered = httpx.Client(base_url=p.url, timeout=30)
    tampered.get(f"/s/{code}", params={"vt": bad}, follow_redirects=True)
    named = [v for v in _radar_visitors(p, card_id) if v["visitor_id"] == other]
    p.check("11.3 a tampered token is anonymous", not named, f"{len(named)} visits named {other}")
    hand = httpx.Client(base_url=p.url, timeout=30, cookies={"mp_vid": other})
    hand.get(f"/s/{code}")
    named = [v for v in _radar_visitors(p, card_id) if v["visitor_id"] == other]
    p.check("11.3 a hand-made cookie naming a member is anonymous", not named,
            f"{len(named)} visits named {other}")


def probe_burst(p: Probe) -> None:
    """Point 4: a 200-request burst from one client is limited and counted once."""
    card_id, code = _card_and_code(p)
    before = len(_radar_visitors(p, card_id))
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=p.url, timeout=30, headers={"User-Agent": "probe-burst"}) as c:
        for _ in range(200):
            r = c.get(f"/s/{code}", cookies={})
            c.cookies.clear()
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    added = len(_radar_visitors(p, card_id)) - before
    p.check("11.4 200 cookie-less /s/{code} from one client: 429 beyond the limit",
            statuses.get(429, 0) > 0, f"statuses {statuses}")
    p.check("11.4 ... counted once in the radar", added <= 1, f"{added} visits added")


# ------------------------------------------------------------------------------ issue 12


def probe_children(p: Probe, worker: subprocess.Popen[bytes]) -> None:
    """Point 6: a SIGKILLed worker leaves no embedder children behind."""
    deadline = time.monotonic() + 120
    kids: set[int] = set()
    while time.monotonic() < deadline and len(kids) < 1:
        kids = _children(worker.pid)
        time.sleep(0.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.25)
    alive = [k for k in kids if _alive(k)]
    for k in alive:  # clean up what the product failed to
        with suppress(OSError):
            os.kill(k, signal.SIGKILL)
    p.check("12.6 SIGKILL of a worker: its children die with it", bool(kids) and not alive,
            f"{len(kids)} children, {len(alive)} alive 20 s later")


def probe_erasure(p: Probe) -> None:
    """Point 2: a message queued before DELETE does not resurrect the profile."""
    user = "u-probe-erase-" + secrets.token_hex(3)
    now = int(time.time())
    r = p.api("POST", "/v1/messages", json={"messages": [
        _message(user, "宝宝辅食先加米粉还是蔬菜泥", now - 30),
        _message(user, "宝宝晚上老醒怎么办", now - 20)]})
    p.check("12.2 messages queued with no worker running", r.status_code in (200, 202),
            f"HTTP {r.status_code}")
    time.sleep(1.1)  # the erasure is strictly later than the queued messages
    d = p.api("DELETE", f"/v1/users/{user}")
    p.check("12.2 DELETE /v1/users/{id} with messages still queued",
            d.status_code in (200, 202, 204), f"HTTP {d.status_code}")
    worker = p.spawn("worker")
    marker = "probe-marker-" + secrets.token_hex(4)
    p.api("POST", "/v1/messages", json=_message(marker, "防晒霜怎么选", int(time.time())))
    drained = p.wait_profile(marker)
    status = p.api("GET", f"/v1/users/{user}/profile").status_code
    p.check("12.2 the queued messages did not resurrect the erased profile",
            drained and status == 404, f"queue drained={drained}, profile HTTP {status}")
    later = int(time.time()) + 2
    p.api("POST", "/v1/messages", json=_message(user, "宝宝湿疹用什么面霜", later))
    fresh = p.wait_profile(user)
    count = p.api("GET", f"/v1/users/{user}/profile").json().get("message_count") if fresh else 0
    p.check("12.2 a message after the erasure starts a fresh profile", fresh and count == 1,
            f"message_count={count}")
    worker.send_signal(signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=30)


def probe_orders(p: Probe) -> None:
    """Point 4: eligible items over the amount, or a future ts, are refused."""
    base = {"user_id": "u-probe-buyer", "status": "paid", "refund_cents": 0, "ref_code": None}
    over = p.api("POST", "/v1/orders", json=base | {
        "order_id": "probe-over-" + secrets.token_hex(3), "amount_cents": 1000,
        "items": [{"item_id": "sku-10001", "amount_cents": 100_000, "reward_eligible": True}],
        "ts": int(time.time())})
    p.check("12.4 an order whose eligible items exceed its amount", over.status_code == 422,
            f"HTTP {over.status_code}")
    future = p.api("POST", "/v1/orders", json=base | {
        "order_id": "probe-future-" + secrets.token_hex(3), "amount_cents": 1000,
        "items": [{"item_id": "sku-10001", "amount_cents": 1000, "reward_eligible": True}],
        "ts": int(time.time()) + 3600})
    p.check("12.4 an order dated an hour in the future", future.status_code == 422,
            f"HTTP {future.status_code}")


# ------------------------------------------------------------------------------ secrets


def probe_weak_secrets(data_dir: Path) -> list[Result]:
    """Point 11.6: serve and worker refuse weak secrets unless MINGPIAN_DEMO=true."""
    out: list[Result] = []
    good = strong_env(data_dir)
    cases: list[tuple[str, dict[str, str], str]] = [
        ("the default share secret", {"MINGPIAN_SHARE_SECRET": "change-me-share-secret"},
         "MINGPIAN_SHARE_SECRET"),
        ("a 5-character share secret", {"MINGPIAN_SHARE_SECRET": "abcde"},
         "MINGPIAN_SHARE_SECRET"),
        ("a 7-character API key", {"MINGPIAN_API_KEYS": "abcdefg"}, "MINGPIAN_API_KEYS"),
    ]
    for verb in ("serve", "worker"):
        for what, change, setting in cases:
            env = _clean_environ() | good | change
            if what == "the default share secret":
                env.pop("MINGPIAN_SHARE_SECRET")  # unset = the documented default
            args = ["serve", "--port", str(_free_port())] if verb == "serve" else ["worker"]
            try:
                proc = subprocess.run(_cli(*args), cwd=ROOT, env=env, capture_output=True,
                                      text=True, timeout=60)
                code, err = proc.returncode, proc.stderr
            except subprocess.TimeoutExpired:
                code, err = 0, "still running after 60 s"
            ok = code != 0 and setting in err
            out.append(Result(f"11.6 `{verb}` with {what}", ok,
                              f"exit {code}, names {setting}: {setting in err}"))
            print(f"  {'PASS' if ok else 'FAIL'}  {out[-1].name}: {out[-1].detail}", flush=True)
    return out


# ------------------------------------------------------------------------------ driver


@contextmanager
def deployment(data_dir: Path) -> Iterator[Probe]:
    """The demo catalog imported and `mingpian serve` started as `make run` does."""
    p = Probe(env=strong_env(data_dir))
    port = _free_port()
    subprocess.run(_cli("catalog", "import", "--demo", "--no-progress"), cwd=ROOT, check=True,
                   env=_clean_environ() | p.env, capture_output=True)
    serve = p.spawn("serve", "--host", "127.0.0.1", "--port", str(port))
    p.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with suppress(httpx.HTTPError):
            if httpx.get(p.url + "/healthz", timeout=2).status_code == 200:
                break
        if serve.poll() is not None:
            err = serve.stderr.read().decode() if serve.stderr else ""
            raise RuntimeError(f"serve exited {serve.returncode}: {err[-2000:]}")
        time.sleep(0.2)
    try:
        yield p
    finally:
        for proc in p.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def run_all() -> list[Result]:
    """Run every probe; return the results."""
    with tempfile.TemporaryDirectory(prefix="mingpian-probe-") as tmp:
        data = Path(tmp) / "data"
        print("== weak secrets ==", flush=True)
        results = probe_weak_secrets(Path(tmp) / "weak")
        print("== a deployment with real secrets ==", flush=True)
        with deployment(data) as p:
            worker = p.spawn("worker")
            member = "u-probe-member"
            p.api("POST", "/v1/messages", json={"messages": [
                _message(member, "宝宝六个月了，辅食先加什么好？", int(time.time()) - 60),
                _message(member, "辅食添加米粉还是蛋黄", int(time.time()) - 50)]})
            if not p.wait_profile(member, count=2):
                p.check("setup: the worker builds a profile", False, "no profile in 90 s")
            steps: list[Callable[[], None]] = [
                lambda: probe_slow_parse(p), lambda: probe_safe_mode(p),
                lambda: probe_viewers(p, member), lambda: probe_burst(p),
                lambda: probe_children(p, worker), lambda: probe_erasure(p),
                lambda: probe_orders(p)]
            for step in steps:
                try:
                    step()
                except Exception as e:  # noqa: BLE001 - a probe that crashes is a failure
                    p.check(f"probe crashed: {step}", False, repr(e)[:300])
            results.extend(p.results)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the probe; exit with the number of failures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    results = run_all()
    failed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], ensure_ascii=False,
                                        indent=1))
    return min(len(failed), 100)


if __name__ == "__main__":
    sys.exit(main())
