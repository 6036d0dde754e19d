"""POST /v1/messages: chat messages from any source (CONTRACTS §2)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ValidationError

from app.api.batch import batch_examples, batch_of
from app.deps import ApiKey, BotDep
from models.messages import ChatMessage

router = APIRouter(prefix="/v1", tags=["messages"], dependencies=[ApiKey])


class ItemError(BaseModel):
    """A message of the request that was not accepted, by its position."""

    index: int
    error: str


class MessagesAccepted(BaseModel):
    """How the request's messages fared."""

    accepted: int
    duplicates: int
    errors: list[ItemError]


_EXAMPLE = {"msg_id": "a1", "platform": "wecom", "group_id": "g-muying-01",
            "user_id": "u-1001", "user_name": "小雨妈妈",
            "text": "宝宝六个月了，辅食先加什么好？", "ts": 1764000000}


def _error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "message"
    return f"{loc}: {first.get('msg', 'invalid')}"


@router.post("/messages", response_model=MessagesAccepted)
def post_messages(
    bot: BotDep,
    body: Annotated[dict[str, Any], Body(openapi_examples=batch_examples("messages", _EXAMPLE))],
) -> MessagesAccepted:
    """Queue one message or {"messages": [...]} (≤ 1000); duplicates of a msg_id are skipped."""
    raw = batch_of(body, "messages")
    accepted = duplicates = 0
    errors: list[ItemError] = []
    for i, obj in enumerate(raw):
        if not isinstance(obj, dict):
            errors.append(ItemError(index=i, error="not a JSON object"))
            continue
        try:
            msg = ChatMessage.model_validate(obj)
        except ValidationError as e:
            errors.append(ItemError(index=i, error=_error(e)))
            continue
        if bot.inbox.accept_message(msg):
            accepted += 1
        else:
            duplicates += 1
    return MessagesAccepted(accepted=accepted, duplicates=duplicates, errors=errors)


