"""Verify, decrypt and parse WeChat Official Account and WeCom callbacks.

The crypto is wechatpy's (Tencent's scheme: SHA-1 signature over the sorted token,
timestamp, nonce and ciphertext; AES-256-CBC with the EncodingAESKey; the receiver id —
AppID or CorpID — checked after the message). Every XML body is parsed here, before and
instead of wechatpy's own parser (xmltodict), with pyexpat driven directly: UTF-8 only, and
any DOCTYPE, entity declaration or external entity reference refused — what defusedxml's
forbid_dtd/forbid_entities/forbid_external did. defusedxml.ElementTree ran every parse
event through ElementTree's pure-Python XMLParser and TreeBuilder, twice per callback;
building the dict straight from expat's events gives the same result in about half the time.

Every step is linear in the body and the element count is capped (max_elements), so the
parse of the largest body the app lets through (MINGPIAN_MAX_CALLBACK_BYTES) takes well
under a millisecond and can stay on the event loop: issue 11 measured 23 s for 200,000
repeated tags when each repeat copied the list built so far.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Literal, NoReturn, Union
from xml.parsers import expat

from wechatpy.crypto import WeChatCrypto as OfficialAccountCrypto
from wechatpy.enterprise.crypto import WeChatCrypto as WeComCrypto

from models.errors import BadRequestError, ForbiddenError

XmlValue = Union[str, "XmlDoc", list["XmlValue"]]
XmlDoc = dict[str, XmlValue]

# The XML declaration, if any, may only name UTF-8. The parser is pinned to UTF-8 anyway;
# this refuses a body that claims otherwise before a parser is even made.
_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_MAX_DEPTH = 8
# A real message or event has a few dozen elements; 256 leaves room for the longest lists
# WeCom sends (approval nodes, member changes) and refuses a flood of repeated tags at once.
MAX_ELEMENTS = 256


def _signature(*parts: str) -> str:
    """Tencent's callback signature: SHA-1 of the sorted parts, concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _check(expected: str, given: str) -> None:
    # Constant-time: the signature is the only thing standing between the internet and
    # the queue.
    if not given or not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise ForbiddenError("bad signature")


def parse_xml(data: bytes, *, max_elements: int = MAX_ELEMENTS) -> XmlDoc:
    """Return the children of the <xml> root as a dict; hostile or malformed XML is a 400.

    A leaf is its text ("" when empty, CDATA included); an element with children is a dict
    of them, its own text ignored; a tag repeated below the top level becomes a list.
    Attributes, comments and processing instructions are ignored. More than max_elements
    elements (the root included) is a 400, refused at the first one over.
    """
    _check_utf8(data)
    parser = _expat_parser()
    tree = _TreeBuilder(max_elements)
    parser.StartElementHandler = tree.start
    parser.EndElementHandler = tree.end
    parser.CharacterDataHandler = tree.chars
    try:
        parser.Parse(data, True)  # noqa: FBT003  pyexpat's isfinal is positional-only
    except expat.ExpatError as e:
        raise BadRequestError("malformed XML") from e
    return tree.done[0]


def _check_utf8(data: bytes) -> None:
    """Refuse a body that is not UTF-8, holds a NUL byte or declares another encoding."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequestError("body is not UTF-8") from e
    if b"\x00" in data:
        # Never legal in XML, and "<\x00" or "\x00<" (valid UTF-8) makes expat sniff UTF-16
        # whatever encoding it was created with.
        raise BadRequestError("body is not UTF-8 XML (NUL byte)")
    declared = _DECLARED_ENCODING.match(data[:200])
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        raise BadRequestError("only UTF-8 XML is accepted")


class _TreeBuilder:
    """expat handlers that build parse_xml's dict, refusing what parse_xml documents."""

    __slots__ = ("count", "done", "kids", "max_elements", "tags", "texts")

    def __init__(self, max_elements: int) -> None:
        self.max_elements = max_elements
        # Per open element: its tag, its children so far and its text runs (kept only if it
        # ends up with no children, like ElementTree's elem.text; tails are never used).
        self.tags: list[str] = []
        self.kids: list[XmlDoc] = []
        self.texts: list[list[str]] = []
        self.done: list[XmlDoc] = []
        self.count = 0

    def start(self, tag: str, _attrs: object) -> None:
        self.count += 1
        if self.count > self.max_elements:  # raising stops expat here: the rest is never read
            raise BadRequestError(f"more than {self.max_elements} XML elements")
        if self.kids:
            if len(self.kids) > _MAX_DEPTH:  # refused on the way in: 10,000 levels stop at the 9th
                raise BadRequestError("XML nested too deeply")
        elif tag != "xml":
            raise BadRequestError("the XML root must be <xml>")
        self.tags.append("{" + tag if "}" in tag else tag)
        self.kids.append({})
        self.texts.append([])

    def end(self, _tag: str) -> None:
        kids = self.kids
        tag = self.tags.pop()
        children = kids.pop()
        run = self.texts.pop()
        value: XmlValue = children or "".join(run)
        if not kids:
            if not children:
                raise BadRequestError("the XML root must hold elements")
            self.done.append(children)
            return
        parent = kids[-1]
        if tag in parent:
            if len(kids) == 1:
                # Two <Encrypt> or two <MsgId> at the top: ambiguous, so refused.
                raise BadRequestError(f"duplicate field {tag!r}")
            prev = parent[tag]
            # Append in place: rebuilding the list on every repeat made n repeats O(n²).
            # Lists are only ever made here, so a list value is always our own list.
            if isinstance(prev, list):
                prev.append(value)
            else:
                parent[tag] = [prev, value]
        else:
            parent[tag] = value

    def chars(self, text: str) -> None:
        if self.texts:
            self.texts[-1].append(text)


def _expat_parser() -> expat.XMLParserType:
    """Return an expat parser pinned to UTF-8 that refuses DTDs, entities and other charsets."""
    # Namespaces as ElementTree does them: expat reports "uri}local", stored as "{uri}local".
    parser = expat.ParserCreate("utf-8", "}")
    parser.XmlDeclHandler = _check_xml_decl
    # Raising from a handler stops expat at once: a DOCTYPE is refused as soon as its name
    # is read, before any internal subset, so no entity is ever declared, let alone
    # expanded. The other handlers are a second line should a DTD ever get through.
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.NotationDeclHandler = _refuse_notation
    parser.ExternalEntityRefHandler = _refuse_external
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True  # one data event per text run, not one per line or chunk
    return parser


def _refuser(construct: str) -> Callable[..., NoReturn]:
    def refuse(*_: object) -> NoReturn:
        raise BadRequestError(f"forbidden XML construct: {construct}")
    return refuse


_refuse_doctype = _refuser("DOCTYPE (DTD)")
_refuse_entity = _refuser("entity declaration")
_refuse_notation = _refuser("notation declaration")
_refuse_external = _refuser("external entity reference")


def _check_xml_decl(_version: str, encoding: str | None, _standalone: int) -> None:
    # The parser decodes UTF-8 whatever the declaration says; this refuses, as the regex
    # does, a declaration naming another charset (also one after a BOM or past 200 bytes).
    if encoding is not None and encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise BadRequestError("only UTF-8 XML is accepted")


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


def _open_envelope(crypto: OfficialAccountCrypto | WeComCrypto, body: bytes,
                   msg_signature: str, timestamp: str, nonce: str, *,
                   max_elements: int) -> XmlDoc:
    """Parse the encrypted envelope, verify and decrypt its <Encrypt>, parse the message."""
    # The signature covers <Encrypt>, so the envelope must be parsed before it can be
    # checked: that parse is capped in elements (and the body in bytes, by the app).
    encrypt = text_field(parse_xml(body, max_elements=max_elements), "Encrypt")
    if not encrypt:
        raise BadRequestError("no <Encrypt> in the message")
    return parse_xml(_decrypt(crypto, encrypt, msg_signature, timestamp, nonce).encode(),
                     max_elements=max_elements)


_BAD_KEY = "the EncodingAESKey must be 43 characters of base64"

OfficialAccountMode = Literal["plaintext", "compatible", "safe"]


class OfficialAccountCallback:
    """WeChat Official Account (公众号): plaintext, compatible and safe mode.

    In safe and compatible mode only encrypted messages (encrypt_type=aes, a valid
    msg_signature) are taken: the plain `signature` covers the token, timestamp and nonce,
    never the body, so a plaintext POST with one replayed from any earlier request could
    carry any FromUserName. mode None derives it: safe with an AES key, else plaintext.
    """

    def __init__(self, *, token: str, app_id: str, aes_key: str | None,
                 mode: OfficialAccountMode | None = None,
                 max_elements: int = MAX_ELEMENTS) -> None:
        self.token = token
        self.app_id = app_id
        self.max_elements = max_elements
        self.mode: OfficialAccountMode = mode or ("safe" if aes_key else "plaintext")
        if self.mode != "plaintext" and not aes_key:
            raise ValueError(f"the Official Account's {self.mode} mode needs an EncodingAESKey")
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
             encrypt_type: str = "", msg_signature: str = "", openid: str = "") -> XmlDoc:
        """Return the message's fields from a POSTed body, verified (and decrypted)."""
        if encrypt_type.lower() == "aes":
            if self.crypto is None:
                raise BadRequestError("encrypted message but no EncodingAESKey is configured")
            doc = _open_envelope(self.crypto, body, msg_signature, timestamp, nonce,
                                 max_elements=self.max_elements)
        elif self.mode != "plaintext":
            # Refused before the body is even parsed: nothing of it is trusted.
            raise ForbiddenError(f"the Official Account is in {self.mode} mode: only "
                                 "encrypted messages (encrypt_type=aes) are accepted")
        else:
            _check(_signature(self.token, timestamp, nonce), signature)
            doc = parse_xml(body, max_elements=self.max_elements)
        # WeChat names the sender in the query too; a message whose sender differs was not
        # sent to this URL by WeChat for that user.
        if openid and openid != text_field(doc, "FromUserName"):
            raise ForbiddenError("openid does not match the message's FromUserName")
        return doc

    def encrypt(self, plain_xml: str, *, nonce: str, timestamp: str) -> str:
        """Return the encrypted envelope WeChat would send (used by the demo and tests)."""
        if self.crypto is None:
            raise ValueError("no EncodingAESKey is configured")
        out: str = self.crypto.encrypt_message(plain_xml, nonce, timestamp)
        return out


class WeComCallback:
    """WeCom (企业微信) self-built app: always encrypted."""

    def __init__(self, *, token: str, aes_key: str, corp_id: str,
                 max_elements: int = MAX_ELEMENTS) -> None:
        self.corp_id = corp_id
        self.max_elements = max_elements
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
        return _open_envelope(self.crypto, body, msg_signature, timestamp, nonce,
                              max_elements=self.max_elements)

    def encrypt(self, plain_xml: str, *, nonce: str, timestamp: str) -> str:
        """Return the encrypted envelope WeCom would send (used by the demo and tests)."""
        out: str = self.crypto.encrypt_message(plain_xml, nonce, timestamp)
        return out
