"""What each console page shows, read from the store and the services (issue 18).

Every listing is paged or bounded: counters the worker keeps (app/console/activity.py), the
weight-ordered tag index for segments (app/console/segments.py), key-ordered pages of records (Store.scan_page) and the newest
entries of logs — never a scan of every profile or item on a page view.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from app.console.activity import (
    NS_DAILY,
    NS_GROUPS,
    NS_MEMBER,
    local_day,
    local_week,
    member_key,
    ns_group_members,
    ns_group_topics,
    ns_member_evidence,
    ns_tag_week,
)
from app.console.charts import bar_chart
from app.console.group_settings import read_form
from app.services import INBOX, Services
from bot.replies import REPLY_LOG
from cards.plan.views import balances, entry_status
from cards.plan_store import LOG_LEDGER
from cards.repo import NS_CARD, Card
from cards.share import NS_PAIR
from catalog.repo import NS_CURSOR, NS_ITEM
from models.catalog import CatalogItem
from nlp.pipeline import NS_MESSAGES
from nlp.profile import NS_GROUP as NS_GROUP_PROFILE
from nlp.profile import NS_USER as NS_USER_PROFILE

PAGE = 50
_LEDGER_SCAN = 20_000  # ledger entries a filtered page reads at most
_REPLY_WINDOW = 2000  # newest reply-log entries read for the charts and the group pages
_DAY_S = 86_400


def _days(now: float, n: int, tz: int) -> list[str]:
    return [local_day(now - _DAY_S * (n - 1 - i), tz) for i in range(n)]


def _replies(services: Services) -> list[dict[str, Any]]:
    store = services.store
    after = max(0, store.log_length(REPLY_LOG) - _REPLY_WINDOW)
    return [e for _, e in store.read_log(REPLY_LOG, after=after, limit=_REPLY_WINDOW)]


# ------------------------------------------------------------------------- overview


def overview(services: Services, *, days: int = 14) -> dict[str, Any]:
    """Return the overview: daily charts, totals and the tags rising this week."""
    s = services.settings
    tz = s.tz_offset_hours
    now = time.time()
    labels = _days(now, days, tz)
    daily = services.store.counters(NS_DAILY)

    def series(what: str) -> list[float]:
        return [float(daily.get(f"{d}|{what}", 0)) for d in labels]

    sent = Counter(local_day(float(e.get("at", 0)), tz) for e in _replies(services))
    sent_s = [float(sent.get(d, 0)) for d in labels]
    held = [max(0.0, a - b) for a, b in zip(series("asked"), sent_s, strict=True)]
    this_week, last_week = local_week(now, tz), local_week(now - 7 * _DAY_S, tz)
    cur = services.store.counters(ns_tag_week(this_week))
    prev = services.store.counters(ns_tag_week(last_week))
    rising = sorted(((t, n, prev.get(t, 0)) for t, n in cur.items()),
                    key=lambda r: (-(r[1] - r[2]), -r[1], r[0]))[:10]
    return {
        "charts": [
            bar_chart(labels, {"消息": series("msgs")}, title="每日消息数"),
            bar_chart(labels, {"活跃成员": series("members"), "活跃群": series("groups")},
                      title="每日活跃成员与群"),
            bar_chart(labels, {"已回复": sent_s, "未回复（限流/静默）": held},
                      title="机器人回复（被 @ 或提问）", stacked=True),
            bar_chart(labels, {"推荐次数": series("served"), "点击": series("clicked")},
                      title="推荐与点击"),
        ],
        "totals": {"members": services.store.count(NS_USER_PROFILE),
                   "groups": services.store.count(NS_GROUP_PROFILE),
                   "catalog": services.catalog.count(),
                   "queue": services.store.queue_depth(INBOX),
                   "dead": len(services.store.dead_letters(INBOX, limit=1000))},
        "rising": [{"tag": t, "this": n, "last": p} for t, n, p in rising],
        "week": this_week,
    }


# ------------------------------------------------------------------------- groups


def groups(services: Services, *, page: int = 1) -> dict[str, Any]:
    """Return one page of groups, busiest first, with their top tags."""
    counts = services.store.counters(NS_GROUPS)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = ranked[(page - 1) * PAGE: page * PAGE]
    out = []
    for gid, n in rows:
        prof = services.profiles.get("group", gid)
        out.append({"id": gid, "messages": n,
                    "tags": [t.tag for t in prof.tags[:5]] if prof else [],
                    "last_seen": prof.last_seen if prof else None})
    return {"groups": out, "page": page, "pages": max(1, math.ceil(len(ranked) / PAGE)),
            "total": len(ranked)}


def _names(services: Services, mks: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {k: r.doc for k, r in services.store.get_many(NS_MEMBER, list(mks)).items()}


def group(services: Services, group_id: str, *, weeks: int = 8) -> dict[str, Any]:
    """Return one group: weekly topics (stacked), most active members, replies, settings."""
    s = services.settings
    tz = s.tz_offset_hours
    now = time.time()
    week_labels = list(dict.fromkeys(local_week(now - 7 * _DAY_S * (weeks - 1 - i), tz)
                                     for i in range(weeks)))
    topics = services.store.counters(ns_group_topics(group_id))
    per: dict[str, Counter[str]] = {w: Counter() for w in week_labels}
    for key, v in topics.items():
        week, _, tag = key.partition("|")
        if week in per:
            per[week][tag] += v
    total: Counter[str] = Counter()
    for c in per.values():
        total.update(c)
    top = [t for t, _ in total.most_common(6)]
    series = {t: [per[w][t] / 1000 for w in week_labels] for t in top}
    if len(total) > len(top):
        series["其他"] = [sum(v for t, v in per[w].items() if t not in top) / 1000
                        for w in week_labels]
    members = services.store.counters(ns_group_members(group_id))
    busiest = sorted(members.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    names = _names(services, [k for k, _ in busiest])
    replies = [e for e in _replies(services) if group_id in str(e.get("conversation", ""))]
    titles = services.catalog.get_items(list({i for e in replies for i in e.get("items", [])}))
    prof = services.profiles.get("group", group_id)
    return {
        "id": group_id,
        "exists": prof is not None or bool(members),
        "chart": bar_chart(week_labels, series or {"无": [0.0] * len(week_labels)},
                           title="每周话题（标签置信度之和）", stacked=True),
        "tags": prof.tags[:10] if prof else [],
        "messages": prof.message_count if prof else 0,
        "members": [{"user": names.get(k, {}).get("user"), "name": names.get(k, {}).get("name"),
                     "messages": n} for k, n in busiest],
        "replies": [{"at": int(e.get("at", 0)),
                     "items": [titles[i].title if i in titles else i
                               for i in e.get("items", [])]} for e in replies[-20:][::-1]],
        "settings": read_form(services, group_id),
        "cards": list_cards(services),
    }


# ------------------------------------------------------------------------- members


def member(services: Services, user_id: str) -> dict[str, Any]:
    """Return a member — the person this id belongs to (nlp/identity.py): tags with weights
    and evidence counts over every linked id (never chat text), recommendations, referral
    status, rewards and the linked ids."""
    person = services.identities.canonical(user_id)
    linked = services.identities.linked_ids(person)
    ids = list(dict.fromkeys([user_id, *(i for _, i in linked)]))
    prof = services.profiles.get("user", person)
    evidence: Counter[str] = Counter()
    if prof:
        for i in ids:
            evidence.update(services.store.counters(ns_member_evidence(member_key(i))))
    names = _names(services, [member_key(i) for i in ids])
    name = next((str(d["name"]) for i in ids
                 if (d := names.get(member_key(i))) and d.get("name")), None)
    recs = services.recommender.for_user(person, k=5) if prof else None
    return {
        "id": user_id, "person": person, "profile": prof, "name": name,
        "evidence": dict(evidence),
        "recommendations": list(recs.items) if recs else [],
        "strategy": recs.strategy if recs else None,
        "referral": services.cards.referral(person), "rewards": services.cards.rewards(person),
        "bought": sorted(services.recommender.bought(person)),
        "linked": linked,
    }


def linked_ids(services: Services, user_id: str) -> list[tuple[str, str]]:
    """Return every (kind, id) of the person this id belongs to (nlp/identity.py), the
    canonical one included; [] when it is linked to nothing."""
    return services.identities.links(user_id)


def find_members(services: Services, prefix: str, *, limit: int = PAGE) -> list[str]:
    """Return member ids starting with prefix (key order)."""
    out: list[str] = []
    for key, _ in services.store.scan(NS_USER_PROFILE, prefix=prefix):
        out.append(key)
        if len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------------- salespeople


def list_cards(services: Services, *, limit: int = 500) -> list[Card]:
    """Return the cards (a brand has tens to hundreds of salespeople), by id."""
    return [Card.from_doc(r.doc, r.version)
            for _, r in services.store.scan_page(NS_CARD, limit=limit)]


def salesperson(services: Services, card_id: str, *, days: int = 30) -> dict[str, Any]:
    """Return a card's funnel (visits → clicks → bindings → orders → rewards), radar and
    share codes."""
    card = services.cards.cards.get_card_or_raise(card_id)
    tz = services.settings.tz_offset_hours
    radar = services.cards.visits(card_id, limit=20)
    labels = _days(time.time(), days, tz)
    page = services.cards.shares.page_visits(
        card_id, limit=10_000, retention_days=services.settings.visit_retention_days)
    opens: Counter[str] = Counter()
    clicks: Counter[str] = Counter()
    for r in page.rows:
        if r.get("first_ts") is not None:
            opens[str(r["day"])] += 1
        clicks[str(r["day"])] += len(r.get("clicks", []))
    sharer = card.staff_id
    ref = services.cards.referral(sharer)
    rew = services.cards.rewards(sharer)
    orders = {e.order_id for e in rew.entries if e.status != "withheld"}
    earned = sum(e.amount_cents for e in rew.entries if e.status != "withheld")
    codes = [(k.split("|", 1)[1], str(r.doc.get("code")))
             for k, r in services.store.scan(NS_PAIR, prefix=f"{card_id}|")]
    return {
        "card": card, "radar": radar, "codes": codes,
        "funnel": [("访问", page.opens), ("点击", page.clicks),
                   ("绑定", len(ref.direct_referrals)), ("订单", len(orders)),
                   ("奖励（元）", earned / 100)],
        "chart": bar_chart(labels, {"访问": [float(opens[d]) for d in labels],
                                    "点击": [float(clicks[d]) for d in labels]},
                           title="每日访问与点击"),
        "balances": rew.balances,
    }


# ------------------------------------------------------------------------- referrals


def referral_tree(services: Services, user_id: str) -> dict[str, Any]:
    """Return the tree around a member: two referrers up, its team and direct referrals
    below, each direct referral marked when it slid to another boss's team."""
    me = services.cards.referral(user_id)
    up1 = services.cards.referral(me.referrer) if me.referrer else None
    below = []
    for d in me.direct_referrals:
        v = services.cards.referral(d)
        slid = v.role != "member" and v.boss not in (None, user_id) and me.role != "boss"
        below.append({"id": d, "role": v.role, "boss": v.boss, "slid": slid})
    return {"id": user_id, "me": me, "up1": me.referrer,
            "up2": up1.referrer if up1 else None, "below": below,
            "team": me.team, "rewards": services.cards.rewards(user_id)}


def ledger_page(services: Services, *, before: int | None, beneficiary: str = "",
                rule: str = "", status: str = "", limit: int = PAGE) -> dict[str, Any]:
    """Return ledger entries newest first, filtered; ``before`` pages back by seq."""
    store = services.store
    ledger = services.cards.ledger
    end = store.log_length(LOG_LEDGER) if before is None else before - 1
    want = ledger.names.get(beneficiary) if beneficiary else None
    rows: list[dict[str, Any]] = []
    now = int(time.time())
    cfg = services.settings.plan
    seq = end
    scanned = 0
    while seq > 0 and len(rows) < limit and scanned < _LEDGER_SCAN:
        start = max(0, seq - 500)
        chunk = store.read_log(LOG_LEDGER, after=start, limit=seq - start)
        scanned += len(chunk)
        for s, row in reversed(chunk):
            st = entry_status(row, now_ts=now, config=cfg)
            if (want is None or row.get("beneficiary") == want) and \
                    (not rule or row.get("rule") == rule) and (not status or st == status):
                rows.append({"seq": s, "status": st, **row})
                if len(rows) >= limit:
                    break
        seq = start
    ids = ledger.names.user_ids(list({str(r["beneficiary"]) for r in rows}))
    for r in rows:
        r["who"] = ids.get(str(r["beneficiary"]), str(r["beneficiary"]))
    return {"rows": rows, "next_before": rows[-1]["seq"] if len(rows) >= limit else None,
            "head": ledger.head(), "beneficiary": beneficiary, "rule": rule,
            "status": status}


def payouts_csv(services: Services) -> bytes:
    """Return every beneficiary's balances (from the whole ledger) as CSV for payouts."""
    ledger = services.cards.ledger
    rows = ledger.ledger_rows()
    bal = balances(rows, now_ts=int(time.time()), config=services.settings.plan)
    ids = ledger.names.user_ids(list(bal))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["user_id", "可提现（元）", "冻结中（元）"])
    for name, b in sorted(bal.items(), key=lambda kv: -kv[1].payable_cents):
        w.writerow([ids.get(name, name), f"{b.payable_cents / 100:.2f}",
                    f"{b.pending_cents / 100:.2f}"])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


# ------------------------------------------------------------------------- catalog


def catalog_page(services: Services, *, after: str = "") -> dict[str, Any]:
    """Return one page of items (by id) with availability per provider, and the index."""
    rows = services.store.scan_page(NS_ITEM, after=after, limit=PAGE)
    items = [CatalogItem.from_store(r.doc["item"]) for _, r in rows]
    cursors = [(k, r.doc) for k, r in services.store.scan_page(NS_CURSOR, limit=20)]
    return {"rows": items, "next": rows[-1][0] if len(rows) == PAGE else None,
            "count": services.catalog.count(), "version": services.catalog.version(),
            "index_version": services.index.version, "index_size": len(services.index),
            "index_type": services.index.index_type, "cursors": cursors}


# ------------------------------------------------------------------------- taxonomy


def recent_texts(services: Services, *, limit: int = 500) -> list[str]:
    """Return up to limit retained (redacted) message texts; none unless retention is on."""
    if not services.settings.retain_messages:
        return []
    out: list[tuple[int, str]] = []
    for _, r in services.store.scan_page(NS_MESSAGES, limit=limit * 4):
        out.append((int(r.doc.get("ts", 0)), str(r.doc.get("text", ""))))
    out.sort(reverse=True)
    return [t for _, t in out[:limit]]


def tag_usage(services: Services, tags: Iterable[str]) -> dict[str, int]:
    """Return this week's tagged-message count of each tag."""
    week = local_week(time.time(), services.settings.tz_offset_hours)
    counts = services.store.counters(ns_tag_week(week))
    return {t: counts.get(t, 0) for t in tags}


# ------------------------------------------------------------------------- dead letters


def dead_letters(services: Services, *, limit: int = 100) -> list[dict[str, Any]]:
    """Return dead letters: what kind of item, why it failed, how often it was tried (no
    message text)."""
    out = []
    for d in services.store.dead_letters(INBOX, limit=limit):
        p = d.get("payload") or {}
        raw = p.get("message")
        msg: dict[str, Any] = raw if isinstance(raw, dict) else {}
        out.append({"id": str(d["id"]), "kind": p.get("kind", "?"),
                    "source": p.get("source") or msg.get("platform") or "",
                    "msg_id": msg.get("msg_id") or "", "attempts": d.get("attempts"),
                    "error": str(d.get("error") or "")[:500]})
    return out
