"""Tencent's Finance SDK (会话内容存档, libWeWorkFinanceSdk_C.so) through ctypes.

The signatures are the official C header's (WECOM.md §2.1, HDR); the way they are declared
follows the public ctypes wrapper VESIO (§2.4), except that every buffer is read by pointer
and length (``GetContentFromSlice`` + ``GetSliceLen``, ``ctypes.string_at``): a ``c_char_p``
stops at the first NUL byte.

No ``.so`` can be downloaded in development: tests build a small C library with the same
symbols and structs (tests/bot/archive_fake/fake_finance_sdk.c).
"""

from __future__ import annotations

import base64
import ctypes
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# Return codes of the C SDK (HDR header comment).
ERR_PARAM = 10000  # 参数错误
ERR_NETWORK = 10001  # 网络错误: retried
ERR_PARSE = 10002  # 数据解析失败
ERR_SYSTEM = 10003  # 系统失败
ERR_SECRET = 10004  # 密钥错误
ERR_FILEID = 10005  # fileid错误
ERR_DECRYPT = 10006  # 解密失败
ERR_NO_KEY = 10007  # 找不到消息加密版本的私钥
ERR_KEY = 10008  # 解析encrypt_key出错
ERR_IP = 10009  # ip非法
ERR_EXPIRED = 10010  # 数据过期
ERR_CERT = 10011  # 证书错误
MESSAGES = {ERR_PARAM: "参数错误", ERR_NETWORK: "网络错误", ERR_PARSE: "数据解析失败",
            ERR_SYSTEM: "系统失败", ERR_SECRET: "密钥错误", ERR_FILEID: "fileid错误",
            ERR_DECRYPT: "解密失败", ERR_NO_KEY: "找不到消息加密版本的私钥",
            ERR_KEY: "解析encrypt_key出错", ERR_IP: "ip非法", ERR_EXPIRED: "数据过期",
            ERR_CERT: "证书错误"}
MAX_LIMIT = 1000  # "超过1000条会返回错误" (HDR)


class SdkError(Exception):
    """The SDK (or our step before it) answered a non-zero code."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(f"{what}: {code} {MESSAGES.get(code, 'unknown error')}")
        self.code = code


class _Slice(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("len", ctypes.c_int)]


@dataclass(frozen=True)
class ChatRecord:
    """One encrypted record of GetChatData (WECOM.md §2.2)."""

    seq: int
    msgid: str
    publickey_ver: int
    encrypt_random_key: str
    encrypt_chat_msg: str

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ChatRecord:
        """Return the record of one chatdata entry; ValueError when a field is missing."""
        try:
            return cls(seq=int(doc["seq"]), msgid=str(doc["msgid"]),
                       publickey_ver=int(doc.get("publickey_ver", 0)),
                       encrypt_random_key=str(doc["encrypt_random_key"]),
                       encrypt_chat_msg=str(doc["encrypt_chat_msg"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed chatdata entry: {type(e).__name__} {e}") from e

    def to_json(self) -> dict[str, Any]:
        """Return the entry as GetChatData gave it (kept with a dead letter)."""
        return {"seq": self.seq, "msgid": self.msgid, "publickey_ver": self.publickey_ver,
                "encrypt_random_key": self.encrypt_random_key,
                "encrypt_chat_msg": self.encrypt_chat_msg}


class PrivateKeys:
    """The corp's RSA private keys by ``publickey_ver`` (WECOM.md §2.3 step 1)."""

    def __init__(self, keys: Mapping[int, rsa.RSAPrivateKey]) -> None:
        self.keys = dict(keys)

    @classmethod
    def from_pem_files(cls, paths: Mapping[str, str | Path]) -> PrivateKeys:
        """Load `{"<publickey_ver>": "<PEM file>"}` (PKCS#1 or PKCS#8, unencrypted)."""
        keys: dict[int, rsa.RSAPrivateKey] = {}
        for ver, path in paths.items():
            key = load_pem_private_key(Path(path).read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"the key of publickey_ver {ver} ({path}) is not an RSA key")
            keys[int(ver)] = key
        return cls(keys)

    def random_key(self, record: ChatRecord) -> str:
        """Return the record's decrypted random key: base64 → RSA PKCS#1 v1.5 with the key
        of its publickey_ver. SdkError ERR_NO_KEY without that key, ERR_KEY when it does
        not decrypt."""
        key = self.keys.get(record.publickey_ver)
        if key is None:
            raise SdkError(ERR_NO_KEY, f"publickey_ver {record.publickey_ver}")
        try:
            plain = key.decrypt(base64.b64decode(record.encrypt_random_key, validate=True),
                                padding.PKCS1v15())
            return plain.decode("ascii")
        except (ValueError, UnicodeDecodeError) as e:
            raise SdkError(ERR_KEY, f"encrypt_random_key of seq {record.seq}") from e


class FinanceSdk:
    """One SDK handle: Init once, then GetChatData and DecryptData; DestroySdk on close."""

    def __init__(self, library: str | Path, *, corp_id: str, secret: str, proxy: str = "",
                 proxy_password: str = "", timeout_s: int = 5) -> None:
        self.lib = ctypes.CDLL(str(library))
        self._declare(self.lib)
        self.proxy = proxy.encode()
        self.proxy_password = proxy_password.encode()
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # one call at a time per handle: the SDK says nothing
        self.sdk: int | None = self.lib.NewSdk()
        if not self.sdk:
            raise SdkError(ERR_SYSTEM, "NewSdk")
        code = self.lib.Init(self.sdk, corp_id.encode(), secret.encode())
        if code != 0:
            self.close()
            raise SdkError(code, "Init")

    @staticmethod
    def _declare(lib: ctypes.CDLL) -> None:
        slice_p = ctypes.POINTER(_Slice)
        lib.NewSdk.restype = ctypes.c_void_p
        lib.NewSdk.argtypes = []
        lib.Init.restype = ctypes.c_int
        lib.Init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.GetChatData.restype = ctypes.c_int
        lib.GetChatData.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong, ctypes.c_uint,
                                    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, slice_p]
        lib.DecryptData.restype = ctypes.c_int
        lib.DecryptData.argtypes = [ctypes.c_char_p, ctypes.c_char_p, slice_p]
        lib.DestroySdk.restype = None
        lib.DestroySdk.argtypes = [ctypes.c_void_p]
        lib.NewSlice.restype = slice_p
        lib.NewSlice.argtypes = []
        lib.FreeSlice.restype = None
        lib.FreeSlice.argtypes = [slice_p]
        lib.GetContentFromSlice.restype = ctypes.c_void_p
        lib.GetContentFromSlice.argtypes = [slice_p]
        lib.GetSliceLen.restype = ctypes.c_int
        lib.GetSliceLen.argtypes = [slice_p]

    def _with_slice(self, what: str, call: Any) -> bytes:
        out = self.lib.NewSlice()
        if not out:
            raise SdkError(ERR_SYSTEM, "NewSlice")
        try:
            code = call(out)
            if code != 0:
                raise SdkError(int(code), what)
            ptr = self.lib.GetContentFromSlice(out)
            size = self.lib.GetSliceLen(out)
            return ctypes.string_at(ptr, size) if ptr and size > 0 else b""
        finally:
            self.lib.FreeSlice(out)

    def get_chat_data(self, seq: int, limit: int) -> list[ChatRecord]:
        """Return the records after seq (at most limit, 1..1000); SdkError on a code."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")
        with self._lock:
            if self.sdk is None:
                raise SdkError(ERR_SYSTEM, "GetChatData after close")
            sdk = self.sdk
            raw = self._with_slice("GetChatData", lambda out: self.lib.GetChatData(
                sdk, seq, limit, self.proxy, self.proxy_password, self.timeout_s, out))
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SdkError(ERR_PARSE, "GetChatData answer") from e
        if not isinstance(doc, dict):
            raise SdkError(ERR_PARSE, "GetChatData answer")
        errcode = int(doc.get("errcode", 0) or 0)
        if errcode:
            raise SdkError(errcode, f"GetChatData ({doc.get('errmsg', '')})")
        entries = doc.get("chatdata") or []
        if not isinstance(entries, list):
            raise SdkError(ERR_PARSE, "GetChatData chatdata")
        return [ChatRecord.from_json(e) for e in entries if isinstance(e, dict)]

    def decrypt(self, random_key: str, encrypt_chat_msg: str) -> bytes:
        """Return the plaintext message JSON of a record (DecryptData); SdkError on a code."""
        return self._with_slice("DecryptData", lambda out: self.lib.DecryptData(
            random_key.encode(), encrypt_chat_msg.encode(), out))

    def close(self) -> None:
        """Destroy the SDK handle (DestroySdk); a second call does nothing."""
        with self._lock:
            sdk, self.sdk = self.sdk, None
        if sdk:
            self.lib.DestroySdk(sdk)
