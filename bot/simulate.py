"""Build real, signed WeCom callbacks as WeCom would send them (demo, drill, benchmarks).

These are the bytes WeCom's servers POST to /wecom/callback: the message XML encrypted with
the app's EncodingAESKey (wechatpy's crypto) and signed with its token.
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.parse
from xml.sax.saxutils import escape

from wechatpy.enterprise.crypto import WeChatCrypto as WeComCrypto


def _cdata(name: str, value: str) -> str:
    return f"<{name}><![CDATA[{value.replace(']]>', ']]]]><![CDATA[>')}]]></{name}>"


def wecom_text_xml(*, corp_id: str, user_id: str, text: str, msg_id: int, ts: int,
                   group_id: str | None = None, agent_id: str = "1000002") -> str:
    """Return the plaintext XML of a WeCom text message (ChatId set for a group chat)."""
    parts = [_cdata("ToUserName", corp_id), _cdata("FromUserName", user_id),
             f"<CreateTime>{ts}</CreateTime>", _cdata("MsgType", "text"),
             _cdata("Content", text), f"<MsgId>{msg_id}</MsgId>",
             f"<AgentID>{escape(agent_id)}</AgentID>"]
    if group_id:
        parts.append(_cdata("ChatId", group_id))
    return "<xml>" + "".join(parts) + "</xml>"


def signed_wecom_post(plain: str, *, token: str, aes_key: str, corp_id: str,
                      timestamp: str, nonce: str | None = None) -> tuple[str, bytes]:
    """Return (path with query, body) of the encrypted, signed callback carrying plain."""
    crypto = WeComCrypto(token, aes_key, corp_id)
    nonce = nonce or str(secrets.randbelow(10**9))
    envelope = crypto.encrypt_message(plain, nonce, timestamp)
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    # WeCom's real body: ToUserName, Encrypt, AgentID; the signature goes in the query.
    body = (f"<xml>{_cdata('ToUserName', corp_id)}{_cdata('Encrypt', encrypt)}"
            f"{_cdata('AgentID', '1000002')}</xml>").encode()
    signature = hashlib.sha1("".join(sorted((token, timestamp, nonce, encrypt))).encode())
    query = urllib.parse.urlencode({"msg_signature": signature.hexdigest(),
                                    "timestamp": timestamp, "nonce": nonce})
    return f"/wecom/callback?{query}", body
