"""The fake Finance SDK for tests: built from C in the test run, fed records encrypted with
real RSA keys generated here (WECOM.md §2.3: RSA PKCS#1 v1.5 over the random key)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SOURCE = Path(__file__).with_name("fake_finance_sdk.c")
CORP = "wwarchivecorp"
SECRET = "archive-secret"
# Real deployments use 2048-bit keys; 1024 bits keeps 10,000 private-key operations quick on a
# shared test machine, and the wrapper's code path is the same.
KEY_BITS = 1024


def build_sdk(out_dir: Path) -> Path:
    """Compile the fake SDK into out_dir and return the .so's path."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc, "a C compiler is needed to build the fake Finance SDK"
    out = out_dir / "libWeWorkFinanceSdk_C.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(out),
                    str(SOURCE)], check=True, capture_output=True)
    return out


@dataclass(frozen=True)
class Keys:
    """A key pair of one publickey_ver, and its private key's PEM file."""

    ver: int
    private: rsa.RSAPrivateKey
    pem: Path


def make_keys(out_dir: Path, ver: int) -> Keys:
    """Generate an RSA key pair for publickey_ver ver; write the private PEM (PKCS#1)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = out_dir / f"key-v{ver}.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    return Keys(ver=ver, private=key, pem=pem)


def _xor(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))


def encrypt_record(seq: int, native: Mapping[str, Any], keys: Keys, *,
                   ver: int | None = None) -> dict[str, Any]:
    """Return the chatdata entry of one native message, as GetChatData would give it: the
    random key RSA-encrypted with the public key, the message under the fake's cipher."""
    random_key = secrets.token_hex(16)
    enc_key = keys.private.public_key().encrypt(random_key.encode(), padding.PKCS1v15())
    plain = b"ok:" + json.dumps(native, ensure_ascii=False).encode()
    return {"seq": seq, "msgid": native["msgid"], "publickey_ver": keys.ver if ver is None else ver,
            "encrypt_random_key": base64.b64encode(enc_key).decode(),
            "encrypt_chat_msg": base64.b64encode(_xor(plain, random_key.encode())).decode()}


def write_data(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write chatdata entries, one a line (the fake's data file), replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return path


_ids = itertools.count(1)


def text(content: str, *, sender: str = "wmCustomer01", room: str = "wrRoom01",
         msgtime_ms: int = 1_764_000_000_000, msgid: str | None = None,
         tolist: list[str] | None = None) -> dict[str, Any]:
    """A native text message (WECOM.md §2.5)."""
    return {"msgid": msgid or f"CAQQ{next(_ids):08d}Yy/+=", "action": "send", "from": sender,
            "tolist": tolist if tolist is not None else ["zhangsan", sender], "roomid": room,
            "msgtime": msgtime_ms, "msgtype": "text", "text": {"content": content}}


def sdk_env(data: Path, *, fail_first: int = 0) -> dict[str, str]:
    """The fake's environment: its data file, credentials and injected network errors."""
    return {"FAKE_FINANCE_SDK_DATA": str(data), "FAKE_FINANCE_SDK_CORP": CORP,
            "FAKE_FINANCE_SDK_SECRET": SECRET, "FAKE_FINANCE_SDK_FAIL_FIRST": str(fail_first)}
