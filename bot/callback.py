"""Verify, decrypt and parse WeChat Official Account and WeCom callbacks.

The crypto is wechatpy's (Tencent's scheme: SHA-1 signature over the sorted token,
timestamp, nonce and ciphertext; AES-256-CBC with the EncodingAESKey; the receiver id —
AppID or CorpID — checked after the message). Every XML body is parsed here with
defusedxml, before and instead of wechatpy's own parser (xmltodict): no DTD, no entity
declarations, no external entities, UTF-8 only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Union

import defusedxml.ElementTree as SafeET
from wechatpy.crypto import WeChatCrypto as OfficialAccountCrypto
from wechatpy.enterprise.crypto import WeChatCrypto as WeComCrypto

from models.errors import BadRequestError, ForbiddenError

XmlValue = Union[str, "XmlDoc", list["XmlValue"]]
XmlDoc = dict[str, XmlValue]

# The XML declaration, if any, may only name UTF-8: expat would otherwise decode the
# (already UTF-8-checked) bytes as another charset.
_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_MAX_DEPTH = 8


def _signature(*parts: str) -> str:
    """Tencent's callback signature: SHA-1 of the sorted parts, concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _check(expected: str, given: str) -> None:
    # Constant-time: the signature is the only thing standing between the internet and
    # the queue.
    if not given or not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise ForbiddenError("bad signature")


def parse_xml(data: bytes) -> XmlDoc:
    """Return the children of the <xml> root as a dict; hostile or malformed XML is a 400."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequestError("body is not UTF-8") from e
    declared = _DECLARED_ENCODING.match(data[:200])
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        raise BadRequestError("only UTF-8 XML is accepted")
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except ValueError as e:  # defusedxml's DTDForbidden, EntitiesForbidden, ExternalReference…
        raise BadRequestError(f"forbidden XML construct: {type(e).__name__}") from e
    except SyntaxError as e:  # ElementTree.ParseError
        raise BadRequestError("malformed XML") from e
    if root.tag != "xml":
        raise BadRequestError("the XML root must be <xml>")
    doc = _children(root, 0)
    if not isinstance(doc, dict):
        raise BadRequestError("the XML root must hold elements")
    return doc


def _children(elem: Any, depth: int) -> XmlValue:
    if depth > _MAX_DEPTH:
        raise BadRequestError("XML nested too deeply")
    if len(elem) == 0:
        return str(elem.text or "")
    out: XmlDoc = {}
    for child in elem:
        value = _children(child, depth + 1)
        tag = str(child.tag)
        if tag in out:
            if depth == 0:
                # Two <Encrypt> or two <MsgId> at the top: ambiguous, so refused.
                raise BadRequestError(f"duplicate field {tag!r}")
            prev = out[tag]
            out[tag] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[tag] = value
    return out


def text_field(doc: XmlDoc, name: str) -> str:
    """Return a top-level text field, or "" when it is absent or not text."""
    value = doc.get(name, "")
    return value if isinstance(value, str) else ""


def _decrypt(crypto: OfficialAccountCrypto | WeComCrypto, encrypt: str, msg_signature: str,
             timestamp: str, nonce: str) -> str:
    _check(_signature(crypto.token, timestamp, nonce, encrypt), msg_signature)
    try:
        # A dict skips wechatpy's xmltodict parse; the signature is checked again there.
        plain: str = crypto.decrypt_message({"Encrypt": encrypt}, msg_signature.lower(),
                                            timestamp, nonce)
    except Exception as e:  # wrong key, truncated or forged ciphertext: all a 400
        raise BadRequestError("cannot decrypt the message") from e
    return plain


_BAD_KEY = "the EncodingAESKey must be 43 characters of base64"


class OfficialAccountCallback:
    """WeChat Official Account (公众号): plaintext, compatible and safe mode."""

    def __init__(self, *, token: str, app_id: str, aes_key: str | None) -> None:
        self.token = token
        self.app_id = app_id
        self.crypto: OfficialAccountCrypto | None = None
        if aes_key:
            try:
                self.crypto = OfficialAccountCrypto(token, aes_key, app_id)
            except (AssertionError, ValueError) as e:
                raise ValueError(_BAD_KEY) from e

    def verify_url(self, *, signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """Return echostr when the URL-check signature is right; else ForbiddenError."""
        _check(_signature(self.token, timestamp, nonce), signature)
        return echostr

    def open(self, body: bytes, *, signature: str, timestamp: str, nonce: str,
             encrypt_type: str = "", msg_signature: str = "") -> XmlDoc:
        """Return the message's fields from a POSTed body, verified (and decrypted)."""
        if encrypt_type.lower() == "aes":
            if self.crypto is None:
                raise BadRequestError("encrypted message but no EncodingAESKey is configured")
            outer = parse_xml(body)
            encrypt = text_field(outer, "Encrypt")
            if not encrypt:
                raise BadRequestError("no <Encrypt> in an encrypted message")
            return parse_xml(_decrypt(self.crypto, encrypt, msg_signature, timestamp,
                                      nonce).encode())
        _check(_signature(self.token, timestamp, nonce), signature)
        return parse_xml(body)

    def encrypt(self, plain_xml: str, *, nonce: str, timestamp: str) -> str:
        """Return the encrypted envelope WeChat would send (used by the demo and tests)."""
        if self.crypto is None:
            raise ValueError("no EncodingAESKey is configured")
        out: str = self.crypto.encrypt_message(plain_xml, nonce, timestamp)
        return out


class WeComCallback:
    """WeCom (企业微信) self-built app: always encrypted."""

    def __init__(self, *, token: str, aes_key: str, corp_id: str) -> None:
        self.corp_id = corp_id
        try:
            self.crypto = WeComCrypto(token, aes_key, corp_id)
        except (AssertionError, ValueError) as e:
            raise ValueError(_BAD_KEY) from e

    def verify_url(self, *, msg_signature: str, timestamp: str, nonce: str,
                   echostr: str) -> str:
        """Return the decrypted echostr (what WeCom expects back) or raise."""
        return _decrypt(self.crypto, echostr, msg_signature, timestamp, nonce)

    def open(self, body: bytes, *, msg_signature: str, timestamp: str, nonce: str) -> XmlDoc:
        """Return the message's fields from a POSTed body, verified and decrypted."""
        outer = parse_xml(body)
        encrypt = text_field(outer, "Encrypt")
        if not encrypt:
            raise BadRequestError("no <Encrypt> in the message")
        return parse_xml(_decrypt(self.crypto, encrypt, msg_signature, timestamp,
                                  nonce).encode())

    def encrypt(self, plain_xml: str, *, nonce: str, timestamp: str) -> str:
        """Return the encrypted envelope WeCom would send (used by the demo and tests)."""
        out: str = self.crypto.encrypt_message(plain_xml, nonce, timestamp)
        return out
