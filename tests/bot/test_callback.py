"""Signature, decryption and parsing against Tencent's published sample vectors."""

from __future__ import annotations

import pytest

from bot.callback import OfficialAccountCallback, WeComCallback, parse_xml
from bot.dedup import event_digest, platform_key
from models.errors import BadRequestError, ForbiddenError
from tests.bot.support import (
    AES_KEY,
    CORP_ID,
    OA_AES_KEY,
    OA_APP_ID,
    OA_TOKEN,
    TOKEN,
    event_xml,
    message_xml,
    wecom_post,
)

# WeCom "加解密方案说明": the URL check and the encrypted message.
VERIFY = {"msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
          "timestamp": "1409659589", "nonce": "263014780",
          "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8T"
                     "gAE7OaBO+FZXvnaqQ=="}
SAMPLE_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3Qczc"
    "dCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLj"
    "vd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMn"
    "vw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k"
    "22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2Yoy"
    "yH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==")
SAMPLE_BODY = (f"<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>"
               f"<Encrypt><![CDATA[{SAMPLE_ENCRYPT}]]></Encrypt>"
               f"<AgentID><![CDATA[218]]></AgentID></xml>").encode()
SAMPLE_QUERY = {"msg_signature": "477715d11cdb4164915debcba66cb864d751f3e6",
                "timestamp": "1409659813", "nonce": "1372623149"}

# Official Account sample (WXBizMsgCrypt sample code): safe-mode message, URL check.
OA_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6"
    "F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T33"
    "2jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCg"
    "avjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6Oew"
    "pusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=")
OA_BODY = (f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
           f"<Encrypt><![CDATA[{OA_ENCRYPT}]]></Encrypt></xml>").encode()
OA_QUERY = {"timestamp": "1409735669", "nonce": "1320562132",
            "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
            "signature": "16120ec1b8dbb870f510d87ce6bc2463eae6ca1a"}


@pytest.fixture
def wecom() -> WeComCallback:
    return WeComCallback(token=TOKEN, aes_key=AES_KEY, corp_id=CORP_ID)


@pytest.fixture(params=["plaintext", "compatible", "safe"])
def oa(request: pytest.FixtureRequest) -> OfficialAccountCallback:
    """The sample Official Account, with its AES key, in each of its three modes."""
    return OfficialAccountCallback(token=OA_TOKEN, app_id=OA_APP_ID, aes_key=OA_AES_KEY,
                                   mode=request.param)


def test_wecom_sample_url_verification(wecom: WeComCallback) -> None:
    assert wecom.verify_url(**VERIFY) == "1616140317555161061"


def test_wecom_sample_url_verification_bad_signature(wecom: WeComCallback) -> None:
    with pytest.raises(ForbiddenError):
        wecom.verify_url(**{**VERIFY, "nonce": "263014781"})


def test_wecom_sample_message_decryption(wecom: WeComCallback) -> None:
    fields = wecom.open(SAMPLE_BODY, **SAMPLE_QUERY)
    assert fields == {"ToUserName": "wx5823bf96d3bd56c7", "FromUserName": "mycreate",
                      "CreateTime": "1409659813", "MsgType": "text", "Content": "hello",
                      "MsgId": "4561255354251345929", "AgentID": "218"}


def test_official_account_sample_safe_mode(oa: OfficialAccountCallback) -> None:
    fields = oa.open(OA_BODY, signature=OA_QUERY["signature"], timestamp=OA_QUERY["timestamp"],
                     nonce=OA_QUERY["nonce"], encrypt_type="aes",
                     msg_signature=OA_QUERY["msg_signature"])
    assert fields["Content"] == "abcdteT"
    assert fields["MsgId"] == "6054768590064713728"
    assert fields["FromUserName"] == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"


def test_official_account_sample_url_check(oa: OfficialAccountCallback) -> None:
    assert oa.verify_url(signature=OA_QUERY["signature"], timestamp=OA_QUERY["timestamp"],
                         nonce=OA_QUERY["nonce"], echostr="shr5ch") == "shr5ch"
    with pytest.raises(ForbiddenError):
        oa.verify_url(signature="0" * 40, timestamp=OA_QUERY["timestamp"],
                      nonce=OA_QUERY["nonce"], echostr="shr5ch")


def test_official_account_plaintext_mode(oa: OfficialAccountCallback) -> None:
    body = message_xml(content="在吗", to="gh_10f6c3c3ac5a").encode()
    if oa.mode != "plaintext":
        # Safe and compatible: a valid plain signature (it never covers the body) is not
        # enough.
        with pytest.raises(ForbiddenError, match="only encrypted"):
            oa.open(body, signature=OA_QUERY["signature"], timestamp=OA_QUERY["timestamp"],
                    nonce=OA_QUERY["nonce"])
        return
    fields = oa.open(body, signature=OA_QUERY["signature"], timestamp=OA_QUERY["timestamp"],
                     nonce=OA_QUERY["nonce"])
    assert fields["Content"] == "在吗"
    with pytest.raises(ForbiddenError):
        oa.open(body, signature=OA_QUERY["signature"], timestamp="1409735670",
                nonce=OA_QUERY["nonce"])


def test_roundtrip_with_real_crypto(wecom: WeComCallback) -> None:
    query, body = wecom_post(message_xml(content="宝宝六个月了，辅食先加什么好？", msg_id="42"))
    fields = wecom.open(body, **query)
    assert fields["Content"] == "宝宝六个月了，辅食先加什么好？"
    assert fields["MsgId"] == "42"


def test_wrong_aes_key_is_a_bad_request(wecom: WeComCallback) -> None:
    other_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    query, body = wecom_post(message_xml(), aes_key=other_key)
    with pytest.raises(BadRequestError):
        wecom.open(body, **query)


def test_truncated_ciphertext_is_a_bad_request(wecom: WeComCallback) -> None:
    short = SAMPLE_ENCRYPT[:100]
    import hashlib

    sig = hashlib.sha1("".join(sorted([TOKEN, "1", "2", short])).encode()).hexdigest()
    body = f"<xml><Encrypt><![CDATA[{short}]]></Encrypt></xml>".encode()
    with pytest.raises(BadRequestError):
        wecom.open(body, msg_signature=sig, timestamp="1", nonce="2")


@pytest.mark.parametrize("data", [
    b"<xml><a>1</a>",  # truncated
    b"not xml at all",
    b"<root><a>1</a></root>",  # not <xml>
    b"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>",  # ambiguous
    b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>',
    b'<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><xml><a>&b;</a></xml>',
    b"<xml><a>\xb9\xfe</a></xml>",  # GBK, not UTF-8
    b'<?xml version="1.0" encoding="GBK"?><xml><a>x</a></xml>',
])
def test_hostile_or_malformed_xml_is_refused(data: bytes) -> None:
    with pytest.raises(BadRequestError):
        parse_xml(data)


def test_nested_fields_are_kept() -> None:
    doc = parse_xml(b"<xml><MsgType>event</MsgType><SendPicsInfo><Count>2</Count><PicList>"
                    b"<item><PicMd5Sum>a</PicMd5Sum></item><item><PicMd5Sum>b</PicMd5Sum></item>"
                    b"</PicList></SendPicsInfo></xml>")
    assert doc["SendPicsInfo"] == {"Count": "2", "PicList": {"item": [{"PicMd5Sum": "a"},
                                                                      {"PicMd5Sum": "b"}]}}


def test_event_keys_cover_every_identifying_field() -> None:
    # Same sender, same second, different external contact: two events, two keys.
    a = parse_xml(event_xml("change_external_contact", extra={
        "ChangeType": "add_external_contact", "UserID": "zhangsan",
        "ExternalUserID": "wmA"}).encode())
    b = parse_xml(event_xml("change_external_contact", extra={
        "ChangeType": "add_external_contact", "UserID": "zhangsan",
        "ExternalUserID": "wmB"}).encode())
    c = parse_xml(event_xml("change_external_contact", extra={
        "ChangeType": "del_external_contact", "UserID": "zhangsan",
        "ExternalUserID": "wmA"}).encode())
    keys = {platform_key("wecom", d) for d in (a, b, c)}
    assert len(keys) == 3
    assert platform_key("wecom", a) == platform_key("wecom", dict(a))
    assert event_digest(a) != event_digest({**a, "State": "card-7"})


def test_message_keys_use_msg_id() -> None:
    a = parse_xml(message_xml(msg_id="1", content="x").encode())
    b = parse_xml(message_xml(msg_id="1", content="x", create_time=1).encode())
    assert platform_key("wecom", a) == platform_key("wecom", b)
    assert platform_key("wecom", a) != platform_key("wechat", a)


def test_bad_encoding_aes_key_is_a_setup_error() -> None:
    with pytest.raises(ValueError, match="EncodingAESKey"):
        WeComCallback(token="t", aes_key="short", corp_id="c")
