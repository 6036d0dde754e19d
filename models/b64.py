"""Unpadded URL-safe base64 for what mingpian signs or hands out (OAuth state, viewer and
sidebar tokens, console sessions, radar cursors): one encoding, and a decoder that accepts
only what the encoder writes."""

from __future__ import annotations

import base64


def encode(data: bytes) -> str:
    """Return data as URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode(text: str) -> bytes:
    """Decode what encode wrote, and only that (ValueError otherwise): base64 ignores the
    unused low bits of a last character, so a tampered last character could otherwise
    decode to the same bytes."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if encode(raw) != text:
        raise ValueError("not canonical base64")
    return raw
