"""Bodies of one object or {"<key>": [...]}, as the batch webhooks take them (§2, §4)."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

from models.errors import ValidationFailed

MAX_BATCH = 1000


def batch_examples(key: str, example: dict[str, Any]) -> dict[str, Example]:
    """Return the OpenAPI examples of such a body: one object, and a list of it."""
    return {"one": {"value": example}, "many": {"value": {key: [example]}}}


def batch_of(body: dict[str, Any], key: str) -> list[Any]:
    """Return the objects of body: body[key], else [body]; a ValidationFailed (422) when
    body[key] is not a list or holds more than MAX_BATCH."""
    raw: Any = body.get(key, [body])
    if not isinstance(raw, list):
        raise ValidationFailed(f'"{key}" must be a list')
    if len(raw) > MAX_BATCH:
        raise ValidationFailed(f"at most {MAX_BATCH} {key} per request, got {len(raw)}")
    return raw
