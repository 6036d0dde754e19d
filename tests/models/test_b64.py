"""models/b64.py: the one unpadded base64 of signed tokens, cookies and cursors."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import b64


@given(st.binary(max_size=64))
def test_round_trip_without_padding(data: bytes) -> None:
    text = b64.encode(data)
    assert "=" not in text and b64.decode(text) == data


def test_a_last_character_that_differs_only_in_unused_bits_is_refused() -> None:
    text = b64.encode(b"\x01" * 16)  # 22 characters: the last one carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "==") == b"\x01" * 16  # what base64 accepts
    with pytest.raises(ValueError, match="not canonical"):
        b64.decode(twin)
    with pytest.raises(ValueError):
        b64.decode("a")  # not base64 at all
