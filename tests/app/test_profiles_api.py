"""`GET /v1/users/{id}/profile`, `GET /v1/groups/{id}/profile`, `DELETE /v1/users/{id}`, and
log redaction (CONTRACTS §3)."""

from __future__ import annotations

import logging
import re
import time

import pytest
from fastapi.testclient import TestClient

from app.logging_filter import RedactingFilter, install_log_redaction
from app.main import create_app
from app.services import Services, build_services
from app.settings import Settings
from models.messages import ChatMessage
from tests.conftest import API_KEY
from tests.nlp.support import dump_store

KEY = {"X-API-Key": API_KEY}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def feed(services: Services) -> None:
    rows = [("a1", "u-1001", "宝宝六个月了，辅食先加什么好？"),
            ("a2", "u-1001", "娃晚上老醒，一晚上起来三四次"),
            ("a3", "u-1001", "好的"),
            ("a4", "u-1002", "辅食加了米粉，娃不爱吃，电话13812345678")]
    services.pipeline.process([
        ChatMessage(msg_id=i, platform="wecom", group_id="g-muying-01", user_id=u, text=t,
                    ts=int(time.time()) - 60 + n) for n, (i, u, t) in enumerate(rows)])


def test_user_profile_has_the_contract_shape(client: TestClient, services: Services) -> None:
    feed(services)
    r = client.get("/v1/users/u-1001/profile", headers=KEY)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"user_id", "tags", "message_count", "updated_at"}
    assert body["user_id"] == "u-1001" and body["message_count"] == 3
    assert RFC3339.match(body["updated_at"])
    names = [t["tag"] for t in body["tags"]]
    assert {"辅食添加", "睡眠"} <= set(names)
    weights = [t["weight"] for t in body["tags"]]
    assert weights == sorted(weights, reverse=True) and all(0.3 < w <= 1 for w in weights)
    for t in body["tags"]:
        assert set(t) == {"tag", "weight", "last_seen"} and RFC3339.match(t["last_seen"])


def test_group_profile_aggregates_members(client: TestClient, services: Services) -> None:
    feed(services)
    body = client.get("/v1/groups/g-muying-01/profile", headers=KEY).json()
    assert set(body) == {"group_id", "tags", "message_count", "updated_at"}
    assert body["message_count"] == 4
    top = body["tags"][0]
    assert top["tag"] == "辅食添加" and top["weight"] > 1  # both members talked about it


def test_unknown_is_404_and_the_key_is_required(client: TestClient) -> None:
    for path in ("/v1/users/nobody/profile", "/v1/groups/nogroup/profile",
                 "/v1/users/bad%20id/profile"):
        r = client.get(path, headers=KEY)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/v1/users/u-1001/profile").status_code == 401
    assert client.delete("/v1/users/u-1001").status_code == 401


def test_delete_erases_the_user(settings: Settings) -> None:
    keep = settings.model_copy(update={"retain_messages": True})
    services = build_services(keep)
    try:
        with TestClient(create_app(keep, services=services)) as client:
            feed(services)
            held = dump_store(services.store)
            assert "u-1001" in held and "辅食先加什么好" in held  # retained (redacted) text
            r = client.delete("/v1/users/u-1001", headers=KEY)
            assert r.status_code == 200
            assert r.json()["user_id"] == "u-1001" and "nlp" in r.json()["erased"]
            assert client.get("/v1/users/u-1001/profile", headers=KEY).status_code == 404
            held = dump_store(services.store)
            assert "u-1001" not in held and "辅食先加什么好" not in held
            assert "13812345678" not in held
            assert client.get("/v1/users/u-1002/profile", headers=KEY).status_code == 200
            assert client.delete("/v1/users/u-1001", headers=KEY).status_code == 200
    finally:
        services.close()


def test_logs_never_carry_personal_numbers(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("mingpian.test")
    log.info("user said %s", "加我微信13812345678，身份证11010519491231002X")
    log.warning("card %s paid", "6222020200112233446")
    try:
        raise ValueError("bad phone 13912345678")
    except ValueError:
        log.exception("failed for %s", "+86 138 1234 5678")
    text = caplog.text
    for n in ("13812345678", "11010519491231002X", "6222020200112233446", "13912345678",
              "138 1234 5678"):
        assert n not in text
    assert "[手机号]" in text and "[身份证号]" in text and "[银行卡号]" in text
    assert "ValueError: bad phone [手机号]" in text


def test_the_filter_works_on_its_own() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "tel %s", ("13812345678",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "tel [手机号]"


def test_records_keep_their_shape_for_formatters_that_unpack_args() -> None:
    # uvicorn's access formatter unpacks record.args: it must stay a tuple.
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/v1/users/13812345678/profile", "1.1",
                                404), None)
    RedactingFilter().filter(record)
    assert isinstance(record.args, tuple) and record.args[2] == "/v1/users/[手机号]/profile"
    split = logging.LogRecord("x", logging.INFO, __file__, 1, "tel %s%s", ("138", "12345678"),
                              None)
    RedactingFilter().filter(split)
    assert split.getMessage() == "tel [手机号]" and split.args is None
