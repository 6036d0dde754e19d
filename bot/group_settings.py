"""Per-group bot settings (issue 15 point 5): which salesperson's card a group's replies
link, whether the bot answers there at all, and the group's own quiet hours.

A reply in a group with a card links every item through that card's share code
(``/r/{code}/{item}``) and ends with the card's share page (``/s/{code}``), so a click is on
the salesperson's radar and an order that follows binds to them. bot/ never imports
cards/ (a sibling): app/ hands in a :data:`CardLinksFor` that builds those links.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from store.base import Store

NS_GROUP_SETTINGS = "bot.group_settings"  # group id → {"card_id", "reply_enabled", "quiet"}
_HOURS = 24


@dataclass(frozen=True)
class QuietHours:
    """Local hours in which the bot stays silent: from start (inclusive) to end (exclusive),
    across midnight when start > end; start == end means never quiet."""

    start_hour: int
    end_hour: int

    def __post_init__(self) -> None:
        for h in (self.start_hour, self.end_hour):
            if not 0 <= h < _HOURS:
                raise ValueError("quiet hours are 0 to 23")


@dataclass(frozen=True)
class GroupSettings:
    """How the bot behaves in one group; None fields follow the global reply settings."""

    card_id: str | None = None
    reply_enabled: bool = True
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True)
class ReplyLinks:
    """The links a reply in a group with a card carries."""

    card_url: str  # the card's share page (a visit on the radar)
    item_url: Callable[[str], str]  # item id → its tracked link through the share code


CardLinksFor = Callable[[str], ReplyLinks | None]  # card id → its links; None: no such card


class GroupSettingsRepo:
    """Per-group settings in the store (both back-ends)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, group_id: str) -> GroupSettings | None:
        """Return the group's settings, or None when never set (the global ones apply)."""
        rec = self.store.get(NS_GROUP_SETTINGS, group_id)
        if rec is None:
            return None
        d = rec.doc
        quiet = d.get("quiet")
        return GroupSettings(
            card_id=d.get("card_id") or None, reply_enabled=bool(d.get("reply_enabled", True)),
            quiet_hours=QuietHours(int(quiet[0]), int(quiet[1])) if quiet else None)

    def put(self, group_id: str, settings: GroupSettings) -> GroupSettings:
        """Store the group's settings (replacing what was there); return them."""
        q = settings.quiet_hours
        self.store.put(NS_GROUP_SETTINGS, group_id, {
            "card_id": settings.card_id, "reply_enabled": settings.reply_enabled,
            "quiet": [q.start_hour, q.end_hour] if q is not None else None})
        return settings

    def delete(self, group_id: str) -> bool:
        """Forget the group's settings (the global ones apply again); return whether any."""
        return self.store.delete(NS_GROUP_SETTINGS, group_id)
