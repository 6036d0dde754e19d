"""Issue 11 in bot/callback.py: a linear, element-capped parse (point 1) and the Official
Account's modes (point 2)."""

from __future__ import annotations

import time

import pytest

from bot.callback import (
    MAX_ELEMENTS,
    OfficialAccountCallback,
    OfficialAccountMode,
    WeComCallback,
    parse_xml,
)
from models.errors import BadRequestError, ForbiddenError
from tests.bot.support import (
    AES_KEY,
    CORP_ID,
    OA_AES_KEY,
    OA_APP_ID,
    OA_TOKEN,
    TOKEN,
    message_xml,
    wechat_post,
    wecom_post,
)

FLOOD = b"<xml><a>" + b"<b/>" * 200_000 + b"</a></xml>"


def test_point1_repeated_tags_parse_in_linear_time() -> None:
    began = time.perf_counter()
    doc = parse_xml(FLOOD, max_elements=300_000)
    # Loose: 23 s before, when every repeat copied the list built so far.
    assert time.perf_counter() - began < 2
    a = doc["a"]
    assert isinstance(a, dict) and isinstance(a["b"], list) and len(a["b"]) == 200_000
    assert parse_xml(b"<xml><a><b>1</b><b>2</b><b>3</b></a></xml>") == {
        "a": {"b": ["1", "2", "3"]}}


def test_point1_element_cap() -> None:
    assert MAX_ELEMENTS == 256
    at_cap = b"<xml><a>" + b"<b/>" * (MAX_ELEMENTS - 2) + b"</a></xml>"
    assert parse_xml(at_cap) == {"a": {"b": [""] * (MAX_ELEMENTS - 2)}}
    with pytest.raises(BadRequestError, match="more than 256 XML elements"):
        parse_xml(at_cap.replace(b"<a>", b"<a><b/>"))
    with pytest.raises(BadRequestError, match="more than 3 XML elements"):
        parse_xml(b"<xml><a/><b/><c/></xml>", max_elements=3)
    # The cap holds inside the ciphertext too.
    wecom = WeComCallback(token=TOKEN, aes_key=AES_KEY, corp_id=CORP_ID, max_elements=12)
    query, body = wecom_post(message_xml(extra={f"F{i}": "x" for i in range(8)}))
    with pytest.raises(BadRequestError, match="more than 12 XML elements"):
        wecom.open(body, **query)


ENCRYPTED_MODES: tuple[OfficialAccountMode, ...] = ("safe", "compatible")
MODES: tuple[OfficialAccountMode, ...] = ("plaintext", *ENCRYPTED_MODES)


def _oa(mode: OfficialAccountMode | None,
        aes_key: str | None = OA_AES_KEY) -> OfficialAccountCallback:
    return OfficialAccountCallback(token=OA_TOKEN, app_id=OA_APP_ID, aes_key=aes_key, mode=mode)


def test_point2_mode_defaults_and_refusals() -> None:
    assert _oa(None).mode == "safe"
    assert _oa(None, aes_key=None).mode == "plaintext"
    for mode in ENCRYPTED_MODES:
        with pytest.raises(ValueError, match=f"{mode} mode needs an EncodingAESKey"):
            _oa(mode, aes_key=None)
    query, body = wechat_post(message_xml(sender="o-real"), encrypted=False)
    fields = dict(signature=query["signature"], timestamp=query["timestamp"],
                  nonce=query["nonce"])
    assert _oa("plaintext").open(body, **fields, openid="o-real")["FromUserName"] == "o-real"
    with pytest.raises(ForbiddenError, match="openid"):
        _oa("plaintext").open(body, **fields, openid="o-other")
    for derived in (*ENCRYPTED_MODES, None):
        with pytest.raises(ForbiddenError, match="only encrypted"):
            _oa(derived).open(body, **fields)
    query, body = wechat_post(message_xml(sender="o-real"))
    for mode in MODES:
        opened = _oa(mode).open(body, signature=query["signature"],
                                timestamp=query["timestamp"], nonce=query["nonce"],
                                encrypt_type="aes", msg_signature=query["msg_signature"],
                                openid=query["openid"])
        assert opened["FromUserName"] == "o-real"
