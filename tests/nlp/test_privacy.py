"""Redaction of phone, ID-card and bank-card numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlp.privacy import BANK_CARD, ID_CARD, PHONE, id_checksum_ok, luhn_ok, redact

_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number(first17: str) -> str:
    """Return a valid 18-digit ID number for 17 given digits."""
    return first17 + "10X98765432"[sum(int(c) * w for c, w in zip(first17, _W, strict=True)) % 11]


def card_number(prefix: str) -> str:
    """Return a Luhn-valid card number starting with prefix (one check digit appended)."""
    return next(prefix + d for d in "0123456789" if luhn_ok(prefix + d))


ID_X = id_number("11010519491231002")  # ends in X
ID_9 = id_number("44030719851020123")
CARD_16 = card_number("411111111111111")
CARD_19 = card_number("622202020011223344")


def test_fixtures_are_valid_numbers() -> None:
    assert ID_X.endswith("X") and id_checksum_ok(ID_X) and id_checksum_ok(ID_9)
    assert len(CARD_16) == 16 and len(CARD_19) == 19 and luhn_ok(CARD_19)


@pytest.mark.parametrize("text", [
    "电话13812345678谢谢", "联系电话 139-0012-3456", "138 1234 5678", "+86 138 1234 5678",
    "+8613812345678", "0086-13812345678", "86-13812345678", "１３８１２３４５６７８",
    "座机010-12345678", "(0755)1234567", "（021）87654321", "0755-12345678", "+86 10 12345678",
])
def test_phone_numbers(text: str) -> None:
    out = redact(text)
    assert PHONE in out
    assert sum(c.isdigit() for c in out) == 0, out


@pytest.mark.parametrize("number", [ID_X, ID_9, ID_X.lower(), f"{ID_9[:6]} {ID_9[6:14]} {ID_9[14:]}"])
def test_id_cards_with_a_valid_checksum(number: str) -> None:
    assert redact(f"我的身份证{number}，帮我查下") == f"我的身份证{ID_CARD}，帮我查下"


@pytest.mark.parametrize("number", [CARD_16, CARD_19, " ".join(CARD_19[i:i + 4] for i in
                                                               range(0, 19, 4)),
                                    "-".join(CARD_16[i:i + 4] for i in range(0, 16, 4))])
def test_bank_cards_passing_luhn(number: str) -> None:
    assert redact(f"卡号 {number} 转账") == f"卡号 {BANK_CARD} 转账"


@pytest.mark.parametrize("text", [
    "宝宝6个月了，体重7.5公斤", "2026年11月25日下午3点", "价格399，现在只要199",
    "订单号 4111111111111112 查一下",  # 16 digits failing Luhn
    "血红蛋白105，38.5度", "138123456789", "尾号12345678的那个快递", "20261125083000",
])
def test_other_numbers_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_a_wrong_id_checksum_is_not_an_id() -> None:
    bad = ID_9[:-1] + ("0" if ID_9[-1] != "0" else "1")
    assert not id_checksum_ok(bad)
    assert ID_CARD not in redact(bad)


def test_several_kinds_in_one_message() -> None:
    text = f"姓名张三 电话13912345678 身份证{ID_X} 卡{CARD_19} 邮编100000"
    assert redact(text) == f"姓名张三 电话{PHONE} 身份证{ID_CARD} 卡{BANK_CARD} 邮编100000"


_CHAT = st.text(alphabet="宝妈辅食奶粉了吗，。！ 好的哈", max_size=12)


@settings(max_examples=200, deadline=None)
@given(before=_CHAT, after=_CHAT, mobile=st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
       id17=st.from_regex(r"[1-9][0-9]{5}(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9])"
                          r"[0-9]{3}", fullmatch=True),
       card=st.from_regex(r"62[0-9]{14,16}", fullmatch=True))
def test_numbers_in_any_chat_never_survive(before: str, after: str, mobile: str, id17: str,
                                           card: str) -> None:
    card = card_number(card)
    for number in (mobile, id_number(id17), card):
        out = redact(before + number + after)
        assert number not in out
        assert redact(out) == out  # idempotent
