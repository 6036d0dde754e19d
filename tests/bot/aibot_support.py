"""An independent implementation of the AI bot's callback crypto (WECOM.md §1.2), straight on
`cryptography` the way Tencent's sample does it, to build callbacks and read our answers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Tencent's published sample key (WeCom "加解密方案说明"); any 43-character key would do.
TOKEN = "QDG6eK"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def _key() -> bytes:
    return base64.b64decode(AES_KEY + "=")


def tx_encrypt(plain: str, *, receive_id: str = "", random16: bytes | None = None) -> str:
    """Tencent's Prpcrypt.encrypt: random(16) + htonl(len) + msg + receiveid, PKCS#7 to 32."""
    msg = plain.encode()
    text = (random16 or os.urandom(16)) + struct.pack("I", socket.htonl(len(msg))) + msg \
        + receive_id.encode()
    pad = 32 - len(text) % 32
    text += bytes([pad]) * pad
    key = _key()
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(text) + enc.finalize()).decode()


def tx_decrypt(encrypt: str) -> tuple[str, str]:
    """Return (message, receive id) of a ciphertext, the way Tencent's sample reads it."""
    key = _key()
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    text = dec.update(base64.b64decode(encrypt)) + dec.finalize()
    pad = text[-1]
    assert 1 <= pad <= 32 and len(text) % 32 == 0  # 32-byte PKCS#7 blocks
    content = text[16:-pad]
    n = socket.ntohl(struct.unpack("I", content[:4])[0])
    return content[4:4 + n].decode(), content[4 + n:].decode()


def tx_sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def signed_post(doc: dict[str, Any], *, timestamp: str = "1764202312", nonce: str = "8831",
                receive_id: str = "") -> tuple[dict[str, str], bytes]:
    """Return (query, body) of an AI-bot callback as WeCom sends it."""
    encrypt = tx_encrypt(json.dumps(doc, ensure_ascii=False), receive_id=receive_id)
    query = {"msg_signature": tx_sign(TOKEN, timestamp, nonce, encrypt),
             "timestamp": timestamp, "nonce": nonce}
    return query, json.dumps({"encrypt": encrypt}).encode()


GROUP_TEXT = {
    "msgid": "CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=", "aibotid": "AIBOTID", "chatid": "wrCHAT01",
    "chattype": "group", "from": {"userid": "zhangsan"},
    "response_url": "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RC",
    "msgtype": "text", "text": {"content": "@名片助手 宝宝湿疹用什么好"},
}




def open_answer(answer: dict[str, Any], *, nonce: str) -> dict[str, Any]:
    """Check and decrypt an encrypted passive reply as WeCom would; return its JSON."""
    assert set(answer) == {"encrypt", "msgsignature", "timestamp", "nonce"}
    assert answer["nonce"] == nonce
    assert answer["msgsignature"] == tx_sign(TOKEN, str(answer["timestamp"]), nonce,
                                             answer["encrypt"])
    msg, receive_id = tx_decrypt(answer["encrypt"])
    assert receive_id == ""
    doc: dict[str, Any] = json.loads(msg)
    return doc


def aibot_message(msgid: str, *, text: str = "@名片助手 宝宝湿疹用什么好", chatid: str | None = "wrCHAT01",
                  userid: str = "zhangsan", response_url: str = "") -> dict[str, Any]:
    """Return a decrypted AI-bot text callback (group when chatid is given, else single)."""
    doc: dict[str, Any] = {"msgid": msgid, "aibotid": "AIBOTID",
                           "chattype": "group" if chatid else "single",
                           "from": {"userid": userid}, "msgtype": "text",
                           "text": {"content": text}}
    if chatid:
        doc["chatid"] = chatid
    if response_url:
        doc["response_url"] = response_url
    return doc


def aibot_settings(*, reply_mode: str = "response_url") -> dict[str, Any]:
    """The AI bot's settings (MINGPIAN_WECOM_AIBOT__*) with this module's keys."""
    return {"token": TOKEN, "aes_key": AES_KEY, "reply_mode": reply_mode}
