"""Per-group bot settings (issue 15 point 5): the card a group's replies link, replies on or
off, and the group's quiet hours, instead of one global `reply.card_url`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ApiKey, BotDep, CardsDep
from bot.group_settings import GroupSettings, GroupSettingsRepo, QuietHours
from models.errors import ConflictError
from models.ids import ID_PATTERN, Id

router = APIRouter(prefix="/v1/groups", dependencies=[ApiKey], tags=["groups"])

GroupPath = Annotated[str, Path(pattern=ID_PATTERN)]
Hour = Annotated[int, Field(ge=0, le=23)]


class QuietHoursIO(BaseModel):
    """Local hours the bot stays silent in: start (inclusive) to end (exclusive), across
    midnight when start > end; equal hours mean never quiet."""

    model_config = ConfigDict(extra="forbid")

    start_hour: Hour
    end_hour: Hour


class GroupSettingsIn(BaseModel):
    """Body of `PUT /v1/groups/{group_id}/settings`."""

    model_config = ConfigDict(extra="forbid")

    card_id: Id | None = None  # the salesperson's card the replies link; null: the global one
    reply_enabled: bool = True
    quiet_hours: QuietHoursIO | None = None  # null: the global quiet hours


class GroupSettingsOut(GroupSettingsIn):
    """A group's settings, and whether they were ever set (else the global ones apply)."""

    group_id: str
    configured: bool


def _repo(bot: BotDep) -> GroupSettingsRepo:
    repo = bot.replier.groups
    if repo is None:  # build_bot always sets it; a replier built elsewhere may not
        raise ConflictError("per-group settings are not kept by this process")
    return repo


def _out(group_id: str, s: GroupSettings | None) -> GroupSettingsOut:
    q = s.quiet_hours if s is not None else None
    return GroupSettingsOut(
        group_id=group_id, configured=s is not None,
        card_id=s.card_id if s is not None else None,
        reply_enabled=s.reply_enabled if s is not None else True,
        quiet_hours=QuietHoursIO(start_hour=q.start_hour, end_hour=q.end_hour) if q else None)


@router.put("/{group_id}/settings", response_model=GroupSettingsOut)
def put_settings(group_id: GroupPath, body: GroupSettingsIn, bot: BotDep,
                 cards: CardsDep) -> GroupSettingsOut:
    """Set which card the bot's replies in this group link (every item through the card's
    share code), whether it replies there, and its quiet hours; 404 for an unknown card."""
    if body.card_id is not None:
        cards.require_card(body.card_id)
    q = body.quiet_hours
    settings = GroupSettings(
        card_id=body.card_id, reply_enabled=body.reply_enabled,
        quiet_hours=QuietHours(q.start_hour, q.end_hour) if q is not None else None)
    return _out(group_id, _repo(bot).put(group_id, settings))


@router.get("/{group_id}/settings", response_model=GroupSettingsOut)
def get_settings(group_id: GroupPath, bot: BotDep) -> GroupSettingsOut:
    """Return the group's settings (`configured: false` and the defaults when never set)."""
    return _out(group_id, _repo(bot).get(group_id))


@router.delete("/{group_id}/settings", response_model=GroupSettingsOut)
def delete_settings(group_id: GroupPath, bot: BotDep) -> GroupSettingsOut:
    """Forget the group's settings: the global reply settings apply again."""
    _repo(bot).delete(group_id)
    return _out(group_id, None)
