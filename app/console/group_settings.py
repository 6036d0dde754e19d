"""The console's group settings form over the bot's per-group settings (bot/group_settings.py).

One source of truth: the form reads and writes the same records as
`GET/PUT /v1/groups/{id}/settings`, and the bot's replier reads them for every message of
the group. Blank quiet hours (both) mean "the global quiet hours"; no card means "the
global card link".
"""

from __future__ import annotations

from dataclasses import dataclass

from app.services import Services
from bot.group_settings import GroupSettings, GroupSettingsRepo, QuietHours
from models.errors import BadRequestError, ConflictError

_LAST_HOUR = 23


@dataclass(frozen=True)
class GroupForm:
    """What the group page's settings form shows."""

    configured: bool  # settings were saved for this group (else the global ones apply)
    card_id: str | None
    reply_enabled: bool
    quiet_start_hour: int | None  # None: the global quiet hours apply
    quiet_end_hour: int | None
    global_enabled: bool  # MINGPIAN_REPLY__ENABLED: off silences every group
    global_quiet: tuple[int, int]  # MINGPIAN_REPLY__QUIET_START_HOUR / __QUIET_END_HOUR


def repo(services: Services) -> GroupSettingsRepo:
    """Return the bot's per-group settings, or raise ConflictError when this process's
    replier keeps none (build_bot always gives it some)."""
    groups = services.bot.replier.groups
    if groups is None:
        raise ConflictError("per-group settings are not kept by this process")
    return groups


def read_form(services: Services, group_id: str) -> GroupForm:
    """Return the group's settings as the form shows them."""
    r = services.settings.reply
    s = repo(services).get(group_id)
    q = s.quiet_hours if s is not None else None
    return GroupForm(configured=s is not None, card_id=s.card_id if s is not None else None,
                     reply_enabled=s.reply_enabled if s is not None else True,
                     quiet_start_hour=q.start_hour if q else None,
                     quiet_end_hour=q.end_hour if q else None,
                     global_enabled=r.enabled,
                     global_quiet=(r.quiet_start_hour, r.quiet_end_hour))


def _hour(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        h = int(text)
    except ValueError:
        raise BadRequestError("静默时段需填 0–23 的整点") from None
    if not 0 <= h <= _LAST_HOUR:
        raise BadRequestError("静默时段需填 0–23 的整点")
    return h


def parse_form(*, card_id: str, replies: bool, quiet_start: str, quiet_end: str
               ) -> GroupSettings:
    """Return the settings a submitted form describes, or raise BadRequestError."""
    start, end = _hour(quiet_start), _hour(quiet_end)
    if (start is None) != (end is None):
        raise BadRequestError("静默开始与结束需同时填写（都留空则沿用全局静默时段）")
    quiet = QuietHours(start, end) if start is not None and end is not None else None
    return GroupSettings(card_id=card_id.strip() or None, reply_enabled=replies,
                         quiet_hours=quiet)


def save(services: Services, group_id: str, settings: GroupSettings) -> GroupSettings:
    """Store the group's settings where the bot and the API read them (NotFoundError for an
    unknown card, as `PUT /v1/groups/{id}/settings` answers)."""
    if settings.card_id is not None:
        services.cards.require_card(settings.card_id)
    return repo(services).put(group_id, settings)


def describe(s: GroupSettings) -> str:
    """Return the settings in one line, for the audit log."""
    q = s.quiet_hours
    quiet = f"{q.start_hour}-{q.end_hour}" if q is not None else "global"
    return f"card={s.card_id or '-'} replies={'on' if s.reply_enabled else 'off'} quiet={quiet}"
