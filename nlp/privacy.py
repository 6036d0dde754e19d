"""Redaction of personal numbers (PIPL): phone numbers, ID-card numbers, bank-card numbers.

Runs before anything is stored or logged. Digits may be ASCII or full-width (１３８…), and
groups may be separated by spaces or hyphens the way people type them in chat.
"""

from __future__ import annotations

import re

from models.messages import ChatMessage

PHONE = "[手机号]"
ID_CARD = "[身份证号]"
BANK_CARD = "[银行卡号]"

_D = "[0-9０-９]"
_ND = r"(?<![0-9０-９])"  # not preceded by a digit
_NA = r"(?![0-9０-９])"  # not followed by a digit
_SEP = r"[ \-－\u00a0]?"

# 18-digit resident ID: 6-digit region, 8-digit birth date, 3-digit sequence, check digit;
# typed whole or as 6-8-4 groups.
_ID = re.compile(
    _ND + rf"({_D}{{6}}){_SEP}({_D}{{8}}){_SEP}({_D}{{3}})({_D}|[xXｘＸ])" + r"(?![0-9０-９xXｘＸ])"
)
# Bank card: 16–19 digits, whole or in groups of 4 (the last group 1–4 digits).
_CARD = re.compile(_ND + rf"(?:{_D}{{16,19}}|{_D}{{4}}(?:[ \-－]{_D}{{4}}){{2,3}}(?:[ \-－]{_D}{{1,4}})?)" + _NA)
# Mainland mobile, with an optional +86 / 0086 / 86 prefix, whole or 3-4-4.
_MOBILE = re.compile(
    _ND + rf"(?:(?:[+＋]|00)?86{_SEP})?[1１][3-9３-９]{_D}{_SEP}{_D}{{4}}{_SEP}{_D}{{4}}" + _NA
)
# Landline: (0AA)/0AA-/0AAA- area code + 7–8 digits, or +86 AA(A) + 7–8 digits.
_LANDLINE = re.compile(
    _ND + r"(?:"
    rf"[(（]0{_D}{{2,3}}[)）]{_SEP}{_D}{{7,8}}"
    rf"|0{_D}{{2,3}}[ \-－]{_D}{{7,8}}"
    rf"|(?:[+＋]|00)86{_SEP}[1-9]{_D}{{1,2}}{_SEP}{_D}{{7,8}}"
    rf"|0(?:10|2{_D}|[3-9]{_D}{{2}}){_D}{{7,8}}"
    r")" + _NA
)

_ID_LEN = 18  # a resident ID number: 17 digits and a check character
_CARD_LEN = range(16, 20)  # bank card numbers are 16 to 19 digits
_MIN_DIGITS = 7  # the shortest number redacted (a landline without its area code)
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # a doubled digit, its digits summed
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_FULLWIDTH = str.maketrans("０１２３４５６７８９ｘＸ", "0123456789XX")


def _digits(s: str) -> str:
    return "".join(c for c in s.translate(_FULLWIDTH) if c.isdigit() or c == "X")


def id_checksum_ok(number: str) -> bool:
    """Return True when an 18-character ID number's check digit is right."""
    n = _digits(number.upper())
    if len(n) != _ID_LEN or not n[:-1].isdigit():
        return False
    total = sum(int(c) * w for c, w in zip(n[:-1], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % len(_ID_CHECK)] == n[-1]


def luhn_ok(number: str) -> bool:
    """Return True when a card number passes the Luhn check."""
    n = _digits(number)
    if not n.isdigit():
        return False
    total = 0
    for i, c in enumerate(reversed(n)):
        d = int(c)
        total += _LUHN_DOUBLE[d] if i % 2 == 1 else d
    return total % 10 == 0


def _sub_id(m: re.Match[str]) -> str:
    return ID_CARD if id_checksum_ok(m.group(0)) else m.group(0)


def _sub_card(m: re.Match[str]) -> str:
    n = _digits(m.group(0))
    return BANK_CARD if len(n) in _CARD_LEN and luhn_ok(n) else m.group(0)


def redact(text: str) -> str:
    """Return text with phone, 18-digit ID-card and bank-card numbers replaced by
    [手机号], [身份证号] and [银行卡号]."""
    if not text or sum(c.isdigit() for c in text) < _MIN_DIGITS:
        return text  # fast path: nothing here can be a phone, ID or card number
    text = _ID.sub(_sub_id, text)
    text = _CARD.sub(_sub_card, text)
    text = _MOBILE.sub(PHONE, text)
    return _LANDLINE.sub(PHONE, text)


def redact_message(msg: ChatMessage) -> ChatMessage:
    """Return the message with its text redacted."""
    return msg.model_copy(update={"text": redact(msg.text)})
