"""The ctypes wrapper of Tencent's Finance SDK, against a fake built from C in this run, with
real RSA keys (issue 14 point 4)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.archive.native import archive_msg_id, map_native
from bot.archive.sdk import (
    ERR_NETWORK,
    ERR_NO_KEY,
    ERR_SECRET,
    FinanceSdk,
    PrivateKeys,
    SdkError,
)
from tests.bot.archive_fake.support import (
    CORP,
    SECRET,
    build_sdk,
    encrypt_record,
    make_keys,
    sdk_env,
    text,
    write_data,
)


@pytest.fixture(scope="module")
def sdk_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sdk(tmp_path_factory.mktemp("sdk"))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, PrivateKeys]]:
    keys = make_keys(tmp_path, 3)
    records = [encrypt_record(s, text(f"消息 {s}", msgid=f"m{s}"), keys) for s in range(1, 26)]
    data = write_data(tmp_path / "chat.jsonl", records)
    for k, v in sdk_env(data).items():
        monkeypatch.setenv(k, v)
    yield data, PrivateKeys.from_pem_files({"3": keys.pem})


def test_point4_pages_by_seq_and_limit_and_decrypts(sdk_path: Path,
                                                     env: tuple[Path, PrivateKeys]) -> None:
    _, keys = env
    sdk = FinanceSdk(sdk_path, corp_id=CORP, secret=SECRET)
    try:
        first = sdk.get_chat_data(0, 10)
        assert [r.seq for r in first] == list(range(1, 11))
        rest = sdk.get_chat_data(20, 10)
        assert [r.seq for r in rest] == list(range(21, 26))
        assert sdk.get_chat_data(25, 10) == []
        # The real RSA step, then DecryptData with the decrypted random key.
        plain = sdk.decrypt(keys.random_key(first[0]), first[0].encrypt_chat_msg)
        m = map_native(json.loads(plain))
        assert m.message is not None and m.message.text == "消息 1"
        assert m.message.msg_id == "m1" and m.message.platform == "archive"
        with pytest.raises(ValueError, match="limit"):
            sdk.get_chat_data(0, 1001)
    finally:
        sdk.close()
        sdk.close()  # a second close does nothing


def test_point4_wrong_key_and_unknown_version(sdk_path: Path, env: tuple[Path, PrivateKeys],
                                              tmp_path: Path) -> None:
    _, keys = env
    (tmp_path / "other").mkdir()
    other = PrivateKeys.from_pem_files({"3": make_keys(tmp_path / "other", 3).pem})
    sdk = FinanceSdk(sdk_path, corp_id=CORP, secret=SECRET)
    try:
        rec = sdk.get_chat_data(0, 1)[0]
        with pytest.raises(SdkError) as e:
            PrivateKeys({}).random_key(rec)
        assert e.value.code == ERR_NO_KEY
        # A key that is not the record's: PKCS#1 v1.5 fails, or yields a key DecryptData rejects.
        with pytest.raises(SdkError):
            sdk.decrypt(other.random_key(rec), rec.encrypt_chat_msg)
        assert keys.random_key(rec)
    finally:
        sdk.close()


def test_point4_codes_become_sdk_errors(sdk_path: Path, env: tuple[Path, PrivateKeys],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SdkError) as e:
        FinanceSdk(sdk_path, corp_id=CORP, secret="wrong")
    assert e.value.code == ERR_SECRET
    monkeypatch.setenv("FAKE_FINANCE_SDK_FAIL_FIRST", "2")
    sdk = FinanceSdk(sdk_path, corp_id=CORP, secret=SECRET)
    try:
        for _ in range(2):
            with pytest.raises(SdkError) as e:
                sdk.get_chat_data(0, 5)
            assert e.value.code == ERR_NETWORK
        assert len(sdk.get_chat_data(0, 5)) == 5
        with pytest.raises(SdkError) as e:
            sdk.decrypt("", "x")
        assert e.value.code != 0
    finally:
        sdk.close()


def test_point4_archive_msgids_become_valid_ids() -> None:
    assert archive_msg_id("m1") == "m1"
    odd = archive_msg_id("CAQQluDa4QUY0On2rYSAgAMgzPrShAE=")
    assert odd.startswith("h:") and odd == archive_msg_id("CAQQluDa4QUY0On2rYSAgAMgzPrShAE=")
