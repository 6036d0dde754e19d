"""When and how the bot answers in a chat.

It answers a message that @-mentions it, or a question the recommender answers with high
confidence, with up to three items and the salesperson's card link. Never a bot's message
(its own or another's), never in quiet hours, and at most once per conversation per
`min_interval_s` (WeCom group robots allow about 20 messages a minute; a salesperson's group
should hear far less).

A reply goes out exactly zero or one times per message: the decision is queued as a reply
job deduplicated by the message id, and the send is guarded by a store marker set before
the platform is called (cleared again only when the platform refused, so a retry may try
again). A crash in the middle of a send loses that one reply rather than sending it twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from bot.group_settings import CardLinksFor, GroupSettings, GroupSettingsRepo
from bot.routing import PERSONAL_CHANNELS, Conversation, ReplyJob, mentions, strip_mentions
from models.errors import UpstreamError
from models.messages import ChatMessage
from nlp.profile import erased_at
from nlp.recommend import Recommendation, Recommender
from store import Store

log = logging.getLogger("mingpian.replies")

RATE_NS = "bot.reply_rate"  # conversation → the last reply's time; expires with the interval
REPLY_LOG = "bot.replies"
REPLY_LOG_KEEP = 10_000  # newest reply-log entries kept by purge(); older ones are trimmed

# Cues that a chat line asks something. The recommender still has to be confident.
_QUESTION_CUES = ("?", "？", "吗", "呢", "么", "推荐", "哪个", "哪款", "哪种", "哪家", "什么",
                  "怎么", "如何", "有没有", "求", "好不好", "该不该", "能不能", "可以不")

Sender = Callable[[str, str], None]  # (address, text)
# (items, card_url, user_name) → the reply's text; a channel may have its own (markdown).
Renderer = Callable[[Sequence[Recommendation], str | None, str | None], str]


def sent_marker(reply_id: str) -> str:
    """Return the store marker set once the reply to this message is sent (or given up)."""
    return f"reply-sent:{reply_id}"


@dataclass(frozen=True)
class ReplyPolicy:
    """Plain values from ReplySettings (app/settings.py)."""

    enabled: bool = True
    min_interval_s: int = 600
    quiet_start_hour: int = 22
    quiet_end_hour: int = 8
    tz_offset_hours: int = 8
    confidence: float = 0.55
    max_items: int = 3
    card_url: str | None = None
    bot_names: tuple[str, ...] = ("名片助手",)
    bot_user_ids: frozenset[str] = frozenset()
    dedup_ttl_s: int = 7 * 86_400


def is_quiet(now: float, *, start_hour: int, end_hour: int, tz_offset_hours: int) -> bool:
    """Return whether `now` (Unix seconds) falls in the quiet hours, local time."""
    hour = int((now + tz_offset_hours * 3600) // 3600) % 24
    if start_hour == end_hour:
        return False
    if start_hour < end_hour:
        return start_hour <= hour < end_hour
    return hour >= start_hour or hour < end_hour


def looks_like_question(text: str) -> bool:
    """Return whether a chat line reads like a question."""
    return any(cue in text for cue in _QUESTION_CUES)


def render(items: Sequence[Recommendation], *, card_url: str | None,
           user_name: str | None) -> str:
    """Return the reply text: up to the given items, then the card link."""
    lines = [f"@{user_name} 为你推荐：" if user_name else "为你推荐："]
    for n, it in enumerate(items, 1):
        price = f" ¥{it.price_cents // 100}.{it.price_cents % 100:02d}" if it.price_cents else ""
        url = f" {it.url}" if it.url else ""
        lines.append(f"{n}. {it.title}{price}{url}")
    if card_url:
        lines.append(f"有问题随时找我：{card_url}")
    return "\n".join(lines)


def _render_plain(items: Sequence[Recommendation], card_url: str | None,
                  user_name: str | None) -> str:
    return render(items, card_url=card_url, user_name=user_name)


@dataclass
class Replier:
    """Decide replies (in the inbox worker) and send reply jobs."""

    store: Store
    policy: ReplyPolicy
    recommender: Recommender | None
    senders: Mapping[str, Sender] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    log_keep: int = REPLY_LOG_KEEP  # newest reply-log entries purge() keeps
    renderers: Mapping[str, Renderer] = field(default_factory=dict)  # channel → renderer
    # Per-group card, on/off and quiet hours (issue 15 point 5), and the card's tracked links.
    groups: GroupSettingsRepo | None = None
    card_links: CardLinksFor | None = None
    # A chat id → the person it is linked to (nlp/identity.py): whose purchases to leave out.
    canonical: Callable[[str], str] | None = None

    def is_from_bot(self, msg: ChatMessage) -> bool:
        """Return whether a message was sent by a bot, ours or another's."""
        p = self.policy
        return (msg.from_bot or msg.user_id in p.bot_user_ids
                or (msg.user_name is not None and msg.user_name in p.bot_names))

    def decide(  # noqa: PLR0911  a flat chain of guards, each one reason to stay silent
        self, msg: ChatMessage, conv: Conversation | None,
    ) -> ReplyJob | None:
        """Return a reply job for this (redacted) message, or None when the bot stays silent."""
        p = self.policy
        if not p.enabled or conv is None or conv.channel not in self.senders:
            return None
        if self.recommender is None or self.is_from_bot(msg) or not msg.text.strip():
            return None
        group = self._group(msg)
        now = self.clock()
        if (group is not None and not group.reply_enabled) or self._quiet(now, group):
            return None
        mentioned = msg.mentions_bot or mentions(msg.text, p.bot_names)
        if not mentioned and not looks_like_question(msg.text):
            return None
        # A cheap look before asking the recommender; the atomic check comes below.
        last = self.store.get(RATE_NS, conv.key)
        if last is not None and now - float(last.doc.get("at", 0)) < p.min_interval_s:
            return None
        query = strip_mentions(msg.text, p.bot_names)
        result = self.recommender.for_text(
            query or msg.text, k=p.max_items,
            user_id=self.canonical(msg.user_id) if self.canonical else msg.user_id)
        items = list(result.items)[: p.max_items]
        # Never on an answer mingpian is not confident of (chit-chat, off-topic), even when
        # mentioned; unprompted only above the calibrated confidence of the policy.
        if not items or not result.confident or (
                not mentioned and items[0].confidence < p.confidence):
            return None
        if self._erased(msg.user_id, msg.ts):
            return None  # a message of an erased user, sent before the erasure, gets no answer
        # One reply per conversation per interval, across every worker: SET NX EX.
        if not self.store.first_seen(f"reply-rate:{conv.key}", p.min_interval_s):
            return None
        # Only the interval needs the record: it expires with it (nothing piles up).
        self.store.put(RATE_NS, conv.key, {"at": now, "msg_id": msg.msg_id,
                                           "user_id": msg.user_id},
                       ttl_s=max(1, p.min_interval_s))
        renderer = self.renderers.get(conv.channel, _render_plain)
        card_url, items = self._linked(group, items)
        return ReplyJob(reply_id=msg.msg_id, channel=conv.channel, address=conv.address,
                        conversation=conv.key,
                        text=renderer(items, card_url, msg.user_name),
                        items=tuple(it.id for it in items), mentioned=mentioned,
                        user_id=msg.user_id, ts=msg.ts, expires_at=conv.expires_at)

    def _group(self, msg: ChatMessage) -> GroupSettings | None:
        """Return the settings of the message's group, or None (global settings apply)."""
        if self.groups is None or msg.group_id is None:
            return None
        return self.groups.get(msg.group_id)

    def _quiet(self, now: float, group: GroupSettings | None) -> bool:
        """Return whether now is in the group's quiet hours (else the global ones)."""
        p = self.policy
        q = group.quiet_hours if group is not None else None
        return is_quiet(now, start_hour=q.start_hour if q else p.quiet_start_hour,
                        end_hour=q.end_hour if q else p.quiet_end_hour,
                        tz_offset_hours=p.tz_offset_hours)

    def _linked(self, group: GroupSettings | None, items: list[Recommendation]
                ) -> tuple[str | None, list[Recommendation]]:
        """Return the card link and the items a reply carries: with the group's card, its
        share page and every item through its share code (a click on the radar, an order
        bound to the salesperson); else the global card link and the mall's URLs."""
        links = (self.card_links(group.card_id) if group is not None and group.card_id
                 and self.card_links is not None else None)
        if links is None:
            return self.policy.card_url, items
        return links.card_url, [replace(it, url=links.item_url(it.id)) for it in items]

    def _erased(self, user_id: str, ts: int) -> bool:
        at = erased_at(self.store, user_id)
        return at is not None and ts <= at

    def send(self, job: ReplyJob) -> bool:
        """Send a reply job once; return False when it was already sent (or has no channel)."""
        sender = self.senders.get(job.channel)
        if sender is None:
            log.warning("no sender for channel %s; reply %s dropped", job.channel, job.reply_id)
            return False
        if job.user_id is not None and self._erased(job.user_id, job.ts):
            log.info("reply %s dropped: its asker was erased", job.reply_id)
            return False
        if job.expires_at and self.clock() > job.expires_at:
            # A response_url works for an hour: a late reply would only be refused.
            log.info("reply %s dropped: its address expired", job.reply_id)
            return False
        marker = sent_marker(job.reply_id)
        if not self.store.first_seen(marker, self.policy.dedup_ttl_s):
            return False
        try:
            sender(job.address, job.text)
        except UpstreamError:
            # The platform said no (or could not be reached): nothing went out, so a retry
            # of this job may send it.
            self.store.forget(marker)
            raise
        self.store.append(REPLY_LOG, [{"reply_id": job.reply_id, "channel": job.channel,
                                       "conversation": job.conversation,
                                       "items": list(job.items), "at": int(self.clock()),
                                       "user_id": job.user_id}])
        return True

    def purge(self) -> int:
        """Trim the reply log to its newest `log_keep` entries; return how many went."""
        upto = self.store.log_length(REPLY_LOG) - self.log_keep
        return self.store.trim_log(REPLY_LOG, upto=upto) if upto > 0 else 0

    def erase_user(self, user_id: str) -> int:
        """Erase the user from the reply log and the reply-rate state; return how many
        entries and records were erased. Log entries keep their place (sequence numbers are
        read by nothing but stay stable) with only the channel, time and items left."""
        personal = {f"{ch}:{user_id}" for ch in PERSONAL_CHANNELS}
        redacted: dict[int, dict[str, object]] = {}
        after = 0
        while page := self.store.read_log(REPLY_LOG, after=after, limit=1000):
            for seq, e in page:
                if e.get("user_id") == user_id or e.get("conversation") in personal:
                    redacted[seq] = {"erased": True, "channel": e.get("channel"),
                                     "items": e.get("items", []), "at": e.get("at")}
            after = page[-1][0]
        n = self.store.replace_log_entries(REPLY_LOG, redacted)
        # The rate records expire within the interval anyway; these go now.
        for key, rec in list(self.store.scan(RATE_NS)):
            if key in personal or rec.doc.get("user_id") == user_id:
                n += int(self.store.delete(RATE_NS, key))
        for key in personal:
            self.store.forget(f"reply-rate:{key}")
        return n

