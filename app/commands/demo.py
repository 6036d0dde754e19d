"""`mingpian demo`: load the demo catalog, create two cards, replay a bundled group chat
through the real signed WeCom callback, then print what mingpian learned.

Against a running service (`make run`) it uses that service's settings (the same MINGPIAN_*
environment or .env); when nothing answers at --url it starts a service of its own. WeCom's
servers cannot be reached here, so the demo stands in for them on the address the service's
`MINGPIAN_WECOM__API_BASE` names: the bot's in-group replies land there and are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from app.commands import Verbs
from app.settings import Settings, WeComAibotSettings, WeComSettings

if TYPE_CHECKING:
    from bot.standin import WeComStandIn

GROUP_NAMES = {"g-beauty-01": "美妆护肤群", "g-muying-01": "宝妈交流群", "g-car-01": "车友群"}
# Credentials the demo uses when it starts its own service; `make run` uses the same ones
# (Makefile DEMO_ENV), with the stand-in's address as the WeCom API base.
DEMO_WECOM = {"corp_id": "wwdemo0000000001", "token": "mingpiandemo",
              "aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "secret": "demo-secret"}
MAKE_RUN_API_BASE = "http://127.0.0.1:8071"
# The AI bot's HTTP callback (MINGPIAN_WECOM_AIBOT__*), also in the Makefile's DEMO_ENV.
DEMO_AIBOT = {"token": "mingpianaibot", "aes_key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
              "reply_mode": "response_url"}
AIBOT_QUESTION = ("g-muying-01", "u-1001", "@名片助手 宝宝湿疹用什么好")
CARDS = [
    {"staff_id": "s-001", "name": "林小美", "title": "美妆护肤顾问", "company": "名片美妆·上海店",
     "phone": "13800001111", "avatar_url": "", "provider_id": "sh-01",
     "wecom_user_id": "linxiaomei",
     "bio": "十年护肤经验，擅长敏感肌和换季修护，欢迎随时问我。"},
    {"staff_id": "s-002", "name": "陈静", "title": "母婴育儿顾问", "company": "名片母婴·北京店",
     "phone": "13900002222", "avatar_url": "", "provider_id": "bj-01",
     "wecom_user_id": "chenjing",
     "bio": "国家二级育婴师，辅食、睡眠、早教都可以聊。"},
]


@dataclass
class Target:
    """The service the demo talks to."""

    url: str
    api_key: str
    wecom: WeComSettings
    proc: subprocess.Popen[bytes] | None = None
    aibot: WeComAibotSettings | None = None


def chat_path() -> Path:
    """Return the bundled demo chat (JSONL, CONTRACTS §2 objects)."""
    return Path(__file__).resolve().parents[1] / "demo" / "chat.jsonl"


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == httpx.codes.OK
    except httpx.HTTPError:
        return False


def _start_own_service(api_base: str) -> Target:
    port = _free_port()
    data = Path(tempfile.mkdtemp(prefix="mingpian-demo-"))
    env = {**os.environ, "MINGPIAN_DATA_DIR": str(data), "MINGPIAN_API_KEYS": "demo-key",
           "MINGPIAN_REDIS_URL": "", "MINGPIAN_WECOM__API_BASE": api_base,
           "MINGPIAN_REPLY__QUIET_START_HOUR": "0", "MINGPIAN_REPLY__QUIET_END_HOUR": "0",
           "MINGPIAN_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "MINGPIAN_LOG_LEVEL": "WARNING",
           # A throwaway service with the documented demo credentials: serve refuses those
           # outside demo mode (issue 11).
           "MINGPIAN_DEMO": "true"}
    env.update({f"MINGPIAN_WECOM__{k.upper()}": v for k, v in DEMO_WECOM.items()})
    env.update({f"MINGPIAN_WECOM_AIBOT__{k.upper()}": v for k, v in DEMO_AIBOT.items()})
    log = open(data / "serve.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the demo service did not start; see {data / 'serve.log'}")
        time.sleep(0.3)
    print(f"started a demo service at {url} (data in {data})")
    return Target(url, "demo-key", _demo_wecom(api_base), proc,
                  WeComAibotSettings.model_validate(DEMO_AIBOT))


def _demo_wecom(api_base: str) -> WeComSettings:
    return WeComSettings.model_validate({**DEMO_WECOM, "api_base": api_base})


def _post(c: httpx.Client, path: str, body: object) -> Any:
    r = c.post(path, json=body)
    if r.status_code >= httpx.codes.BAD_REQUEST:
        raise SystemExit(f"POST {path} → {r.status_code}: {r.text[:300]}")
    return r.json()


def _queue_depth(c: httpx.Client) -> int:
    m = re.search(r'^mingpian_queue_depth\{queue="inbox"\} (\S+)$', c.get("/metrics").text, re.M)
    return int(float(m.group(1))) if m else 0


def _replay(c: httpx.Client, wecom: WeComSettings, lines: list[dict[str, Any]]) -> Counter[int]:
    from bot.simulate import signed_wecom_post, wecom_text_xml

    shift = int(time.time()) - max(int(m["ts"]) for m in lines)  # the chat ends "now"
    statuses: Counter[int] = Counter()
    ids: dict[str, int] = {}
    for m in lines:
        msg_id = ids.setdefault(m["msg_id"], 7_000_000 + len(ids))
        xml = wecom_text_xml(corp_id=wecom.corp_id, user_id=m["user_id"], text=m["text"],
                             msg_id=msg_id, ts=int(m["ts"]) + shift, group_id=m.get("group_id"))
        path, body = signed_wecom_post(xml, token=wecom.token.get_secret_value(),
                                       aes_key=wecom.aes_key.get_secret_value(),
                                       corp_id=wecom.corp_id, timestamp=str(int(time.time())))
        statuses[c.post(path, content=body, headers={"content-type": "text/xml"}).status_code] += 1
    return statuses


def _tags(profile: dict[str, Any], n: int) -> str:
    return "、".join(f"{t['tag']} {t['weight']:.2f}" for t in profile.get("tags", [])[:n]) or "（暂无）"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the demo; return the exit status."""
    from bot.standin import WeComStandIn

    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = args.url.rstrip("/")
    standin: WeComStandIn | None = None
    if _healthy(url):
        # Without WeCom settings here, assume the service is `make run`'s (same demo values).
        wecom = settings.wecom or _demo_wecom(MAKE_RUN_API_BASE)
        keys = settings.api_key_list()
        target = Target(url, args.api_key or (keys[0] if keys else "dev-key"), wecom,
                        aibot=settings.wecom_aibot
                        or WeComAibotSettings.model_validate(DEMO_AIBOT))
        print(f"using the service at {url}")
        api = urlsplit(target.wecom.api_base)
        if api.hostname in ("127.0.0.1", "localhost") and api.port:
            standin = WeComStandIn(corp_id=target.wecom.corp_id, port=api.port,
                                   secret=target.wecom.secret.get_secret_value()
                                   if target.wecom.secret else "")
        else:
            print(f"(replies go to {target.wecom.api_base}; they are not shown here)")
    else:
        standin = WeComStandIn(corp_id=DEMO_WECOM["corp_id"], secret=DEMO_WECOM["secret"],
                               port=_free_port())
        target = _start_own_service(standin.url)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if standin is not None:
            standin.start()
        return _run(target, standin, out)
    finally:
        if standin is not None:
            standin.stop()
        if target.proc is not None:
            target.proc.terminate()
            target.proc.wait(timeout=30)


def _run(target: Target, standin: WeComStandIn | None, out: Path) -> int:
    from catalog_sync.loader import demo_catalog_path

    headers = {"Authorization": f"Bearer {target.api_key}"}
    with httpx.Client(base_url=target.url, headers=headers, timeout=60) as c:
        items = [json.loads(x) for x in demo_catalog_path().read_text().splitlines() if x.strip()]
        loaded = 0
        for i in range(0, len(items), 100):
            res = _post(c, "/v1/catalog/items", {"items": items[i : i + 100]})
            loaded += int(res.get("accepted", res.get("upserted", 0)) or 0)
        print(f"1. demo catalog: {len(items)} items sent ({loaded} accepted)")

        cards = []
        for fields in CARDS:
            card = _post(c, "/v1/cards", fields)
            share = _post(c, f"/v1/cards/{card['id']}/shares", {"sharer_id": fields["staff_id"]})
            poster = c.get(f"/c/{card['id']}/poster.png")
            path = out / f"poster-{fields['staff_id']}.png"
            drawn = poster.status_code == httpx.codes.OK
            if drawn:
                path.write_bytes(poster.content)
            cards.append((fields, card, share, path if drawn else None))
        print(f"2. cards: {', '.join(f[0]['name'] for f in cards)}")

        lines = [json.loads(x) for x in chat_path().read_text().splitlines() if x.strip()]
        t0 = time.perf_counter()
        statuses = _replay(c, target.wecom, lines)
        took = time.perf_counter() - t0
        print(f"3. replayed {len(lines)} deliveries ({len({m['msg_id'] for m in lines})} distinct "
              f"messages, repeats included) through the signed WeCom callback in {took:.1f} s: "
              + ", ".join(f"HTTP {k} × {v}" for k, v in sorted(statuses.items())))
        deadline = time.monotonic() + 300
        while _queue_depth(c) > 0 and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.0)  # the last batch's replies
        _summary(c, lines, cards, standin)
        aibot_ok = _aibot_exchange(c, target, standin)
        orders_ok = _orders(c, target.url, cards)
    if target.proc is None:  # a service that stays up: its console shows all of this
        print(f"\n控制台 (console): {target.url}/console/ — 账号用 "
              "`mingpian console-user add NAME --role admin` 创建（与服务同一份数据）")
    return 0 if set(statuses) == {200} and aibot_ok and orders_ok else 1


# Orders the mall's webhook sends (CONTRACTS §7), in arrival order: (order id, buyer, items
# as (item, cents), days ago it was paid, days ago it completed or None, cumulative refund
# and days ago it was refunded or None, whose share code bound the buyer or None).
# s-002 (陈静) buys first (→ agent); three members she referred buy (→ agents; the third
# makes her a boss); u-1003 shares on and u-1005 buys through it (direct + team rewards),
# then gets half back; u-1002's second order is refunded in full after completion;
# s-001 (林小美) becomes an agent and earns from u-1006. Rewards stay pending for the plan's
# freeze days, counted from when the completion reached the service.
DemoOrder = tuple[str, str, list[tuple[str, int]], int, int | None, tuple[int, int] | None,
                  str | None]
DEMO_ORDERS: list[DemoOrder] = [
    ("o-demo-01", "s-002", [("sku-10008", 29800)], 14, 13, None, None),
    ("o-demo-02", "s-001", [("sku-11001", 8900)], 14, 13, None, None),
    ("o-demo-03", "u-1001", [("sku-10005", 12800)], 12, 11, None, "s-002"),
    ("o-demo-04", "u-1002", [("sku-10001", 12900), ("sku-10003", 5900)], 11, 10, None,
     "s-002"),
    ("o-demo-05", "u-1003", [("sku-10008", 29800)], 4, 3, None, "s-002"),
    ("o-demo-06", "u-1005", [("sku-10005", 12800), ("sku-10001", 12900)], 3, 2, (12850, 1),
     "u-1003"),
    ("o-demo-07", "u-1002", [("sku-10004", 6900)], 6, 5, (6900, 4), None),
    ("o-demo-08", "u-1006", [("sku-11001", 8900)], 2, 1, None, "s-001"),
]


def _orders(c: httpx.Client, url: str,
            cards: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any], Path | None]]
            ) -> bool:
    """Visit the share pages, tap an item, and replay a few orders and refunds through the
    real order webhook, so the console's salespeople, referral and ledger pages have data;
    return False when the service refused one."""
    print("\n== 订单与奖励 (orders through POST /v1/orders → the 2+1 plan → the ledger) ==")
    codes = {fields["staff_id"]: str(share["code"]) for fields, _, share, _ in cards}
    baby = next(card for fields, card, _, _ in cards if fields["staff_id"] == "s-002")
    codes["u-1003"] = str(_post(c, f"/v1/cards/{baby['id']}/shares",
                                {"sharer_id": "u-1003"})["code"])
    visits = 0
    for n, (sharer, code) in enumerate(sorted(codes.items())):
        for visitor in range(2 + n):  # separate visitors: a visit counts once a day each
            with httpx.Client(base_url=url, timeout=30) as page:
                visits += page.get(f"/s/{code}").status_code == httpx.codes.OK
                if visitor == 0:
                    item = "sku-11001" if sharer == "s-001" else "sku-10008"
                    page.get(f"/r/{code}/{item}")
    print(f"  share pages opened {visits} times, one item tapped per share code")
    now = int(time.time())
    day = 86_400
    ok = True
    for order_id, buyer, lines, paid, completed, refund, via in DEMO_ORDERS:
        total = sum(cents for _, cents in lines)
        base = {"order_id": order_id, "user_id": buyer, "amount_cents": total,
                "items": [{"item_id": i, "amount_cents": a} for i, a in lines]}
        events = [{**base, "status": "paid", "ts": now - paid * day,
                   "ref_code": codes[via] if via else None}]
        if completed is not None:
            events.append({**base, "status": "completed", "ts": now - completed * day})
        if refund is not None:
            events.append({**base, "status": "refunded", "refund_cents": refund[0],
                           "ts": now - refund[1] * day})
        for ev in events:
            r = c.post("/v1/orders", json=ev)
            if r.status_code != httpx.codes.OK:
                print(f"  {order_id} {ev['status']}: HTTP {r.status_code} {r.text[:200]}")
                ok = False
        print(f"  {order_id} {buyer} ¥{total / 100:.2f}"
              + (f" via {via}'s code" if via else "")
              + f": {' → '.join(str(e['status']) for e in events)}")
    again = c.post("/v1/orders", json={**base, "status": "paid", "ts": now - 2 * day})
    print(f"  the last paid event sent again: duplicate={again.json().get('duplicate')}")
    for who in ("s-002", "u-1003", "s-001"):
        ref = c.get(f"/v1/referrals/{who}").json()
        rew = c.get("/v1/rewards", params={"user_id": who}).json()
        b = rew.get("balances", {})
        print(f"  {who}: {ref.get('role')}, {len(ref.get('direct_referrals', []))} direct, "
              f"{len(rew.get('entries', []))} ledger entries, pending "
              f"¥{b.get('pending_cents', 0) / 100:.2f}, payable ¥{b.get('payable_cents', 0) / 100:.2f}")
    return ok


def _aibot_exchange(c: httpx.Client, target: Target, standin: WeComStandIn | None) -> bool:
    """Send one group @-mention through the AI bot's real signed JSON callback (three times,
    as a retrying WeCom would) and print the markdown answer the stand-in's response_url
    received; return False when a delivery was refused."""
    from bot.aibot import AibotCallback

    print("\n== 智能机器人 (WeCom AI bot, JSON callback → response_url) ==")
    a = target.aibot
    if a is None or a.token is None or a.aes_key is None or standin is None:
        print("  (skipped: the AI bot's callback or the WeCom stand-in is not configured here)")
        return True
    group, user, text = AIBOT_QUESTION
    cb = AibotCallback(token=a.token.get_secret_value(), aes_key=a.aes_key.get_secret_value())
    msgid = f"demo-aibot-{time.time_ns()}"
    doc = {"msgid": msgid, "aibotid": "demo-aibot", "chatid": group, "chattype": "group",
           "from": {"userid": user}, "response_url": standin.response_url(),
           "msgtype": "text", "text": {"content": text}}
    before = len(standin.aibot_responses())
    count_before = _message_count(c, user)
    statuses: Counter[int] = Counter()
    for n in range(3):
        # WeCom encrypts and signs a callback exactly as we sign an answer (WECOM.md §1.2).
        sealed = cb.encrypt(doc, nonce=f"{n}{time.time_ns() % 10**9}")
        query = {"msg_signature": sealed["msgsignature"], "timestamp": str(sealed["timestamp"]),
                 "nonce": sealed["nonce"]}
        r = c.post("/wecom/aibot/callback", params=query, json={"encrypt": sealed["encrypt"]})
        statuses[r.status_code] += 1
    print(f"  [{GROUP_NAMES.get(group, group)}] {user}: {text}")
    print("  delivered 3 times: " + ", ".join(f"HTTP {k} × {v}" for k, v in sorted(statuses.items())))
    if set(statuses) != {200}:
        print(f"  the service refused it: {r.text[:200]}")
        return False
    deadline = time.monotonic() + 60
    while (_queue_depth(c) > 0 or len(standin.aibot_responses()) == before) \
            and time.monotonic() < deadline:
        time.sleep(0.3)
    answers = standin.aibot_responses()[before:]
    if not answers:
        print("  (no answer: the reply policy held it back — rate limit or quiet hours)")
    for body in answers:
        print("  answer, POSTed once to the message's response_url (markdown):")
        for line in str(body.get("markdown", {}).get("content", "")).splitlines():
            print(f"      {line}")
    added = _message_count(c, user) - count_before
    print(f"  {user}'s profile: +{added} message for the three deliveries")
    return True


def _message_count(c: httpx.Client, user: str) -> int:
    prof = c.get(f"/v1/users/{user}/profile")
    return int(prof.json().get("message_count", 0)) if prof.status_code == httpx.codes.OK else 0


def _summary(c: httpx.Client, lines: list[dict[str, Any]],
             cards: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any], Path | None]],
             standin: WeComStandIn | None) -> None:
    by_group: dict[str, Counter[str]] = defaultdict(Counter)
    names: dict[str, str] = {}
    for m in lines:
        by_group[m["group_id"]][m["user_id"]] += 1
        names[m["user_id"]] = m.get("user_name") or m["user_id"]
    print("\n== 各群最近在聊什么 (group profiles) ==")
    for gid in by_group:
        r = c.get(f"/v1/groups/{gid}/profile")
        prof = r.json() if r.status_code == httpx.codes.OK else {}
        print(f"  {GROUP_NAMES.get(gid, gid)} ({gid}, {prof.get('message_count', 0)} 条): "
              f"{_tags(prof, 6)}")
    print("\n== 几位群成员的画像与推荐 (member profiles → recommendations) ==")
    for members in by_group.values():
        for uid, _ in members.most_common(2):
            prof = c.get(f"/v1/users/{uid}/profile").json()
            print(f"  {names[uid]} ({uid}, {prof.get('message_count', 0)} 条): {_tags(prof, 4)}")
            recs = c.get("/v1/recommendations", params={"user_id": uid, "k": 3}).json()
            for it in recs.get("items", []):
                print(f"      → {it['title']}  ¥{it['price_cents'] / 100:.2f}  ({it['reason']})")
            print(f"      strategy: {recs.get('strategy')}")
    print("\n== 机器人在群里的回复 (bot replies) ==")
    sent = standin.sent_texts() if standin is not None else []
    mentions = len({m["msg_id"] for m in lines if "@名片助手" in m["text"]})
    for chat, text in sent:
        print(f"  [{GROUP_NAMES.get(chat, chat)}]")
        for t in text.splitlines():
            print(f"      {t}")
    print(f"  {len(sent)} replies to {mentions} @-mentions (one reply per group per "
          f"reply interval; the rest were held back by the rate limit)")
    print("\n== 名片与分享 (cards, share links, posters) ==")
    for fields, card, share, poster in cards:
        print(f"  {fields['name']} · {fields['title']}")
        print(f"      card:   {card.get('url', '')}")
        print(f"      share:  {share['url']}   (code {share['code']})")
        print(f"      poster: {poster.resolve() if poster else '(not rendered)'}")


def register(sub: Verbs) -> None:
    """Add `mingpian demo`."""
    d = sub.add_parser(
        "demo", help="load the demo catalog, replay a bundled group chat through the signed "
        "WeCom callback, print profiles, recommendations, replies and card URLs",
        description=__doc__)
    d.add_argument("--url", default="http://127.0.0.1:8000",
                   help="the service to use; when nothing answers there the demo starts one")
    d.add_argument("--api-key", default=None, help="API key (default: first MINGPIAN_API_KEYS)")
    d.add_argument("--out", default="demo-out", help="where posters are written (demo-out)")
    d.set_defaults(fn=run_demo)
