"""The platform client against a local server speaking the WeCom / Official Account API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.platform import TOKEN_NS, OfficialAccountClient, PlatformError, WeComClient
from models.errors import UpstreamError
from store import Store
from store.redis import RedisStore
from store.sqlite import SQLiteStore
from tests.bot.fake_wecom import FakeWeCom


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    with FakeWeCom() as f:
        yield f


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def _client(store: Store, http: httpx.Client, fake: FakeWeCom) -> WeComClient:
    return WeComClient(store, http, api_base=fake.url, corp_id=fake.corp_id,
                       secret=fake.secret, agent_id="1000002", webhook_key=fake.webhook_key)


def _another_process_store(store: Store, tmp_path: Path) -> Store:
    """A second connection to the same back-end, as another process would open."""
    if isinstance(store, RedisStore):
        return RedisStore(store.url)
    assert isinstance(store, SQLiteStore)
    return SQLiteStore(store.path)


def test_token_is_cached_in_the_store_and_shared(store: Store, http: httpx.Client,
                                                 fake: FakeWeCom, tmp_path: Path) -> None:
    _client(store, http, fake).send_text(to_user="zhangsan", text="你好")
    other = _another_process_store(store, tmp_path)
    try:
        _client(other, http, fake).send_group_text(chat_id="chat1", text="大家好")
    finally:
        other.close()
    assert fake.token_calls == 1
    rec = store.get(TOKEN_NS, f"wecom:{fake.corp_id}:1000002")
    assert rec is not None and rec.doc["token"] == fake.current_token
    sends = fake.sent("/cgi-bin/message/send")
    assert sends[0].body is not None and sends[0].body["touser"] == "zhangsan"
    assert sends[0].body["text"] == {"content": "你好"}
    assert sends[0].body["agentid"] == 1000002
    chat = fake.sent("/cgi-bin/appchat/send")[0]
    assert chat.body == {"chatid": "chat1", "msgtype": "text", "text": {"content": "大家好"}}


def _send_from_processes(store: Store, fake: FakeWeCom, tmp_path: Path, n: int
                         ) -> list[BaseException]:
    """Send one text from each of n threads, each with its own store connection (a process
    of its own, for the token's sake); return what they raised."""
    errors: list[BaseException] = []
    stores = [_another_process_store(store, tmp_path) for _ in range(n)]

    def send(st: Store, i: int) -> None:
        try:
            with httpx.Client(timeout=5) as h:
                _client(st, h, fake).send_text(to_user=f"u{i}", text="hi")
        except BaseException as e:  # noqa: BLE001 - returned to the test
            errors.append(e)

    threads = [threading.Thread(target=send, args=(st, i)) for i, st in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for st in stores:
        st.close()
    return errors


def test_concurrent_first_use_fetches_one_token(store: Store, fake: FakeWeCom,
                                                tmp_path: Path) -> None:
    fake.token_delay_s = 0.2  # a slow gettoken: every worker arrives while it runs
    assert _send_from_processes(store, fake, tmp_path, 6) == []
    assert fake.token_calls == 1
    assert len(fake.sent("/cgi-bin/message/send")) == 6


def test_concurrent_stale_token_is_refreshed_once(store: Store, fake: FakeWeCom,
                                                  tmp_path: Path) -> None:
    # Every process holds a token the platform no longer accepts (40014).
    store.put(TOKEN_NS, f"wecom:{fake.corp_id}:1000002",
              {"token": "tok-stale", "expires_at": 4e9}, ttl_s=3600)
    fake.token_delay_s = 0.2
    assert _send_from_processes(store, fake, tmp_path, 5) == []
    assert fake.token_calls == 1


@pytest.mark.parametrize("code", [40001, 42001])
def test_stale_token_code_refreshes_once_and_retries_once(
        store: Store, http: httpx.Client, fake: FakeWeCom, code: int) -> None:
    client = _client(store, http, fake)
    client.send_text(to_user="u", text="one")
    assert fake.token_calls == 1
    fake.fail_next(code)
    client.send_text(to_user="u", text="two")
    assert fake.token_calls == 2
    assert [r.body["text"]["content"] for r in fake.sent("/cgi-bin/message/send")
            if r.body] == ["one", "two", "two"]


def test_a_second_stale_answer_is_an_upstream_error(store: Store, http: httpx.Client,
                                                    fake: FakeWeCom) -> None:
    client = _client(store, http, fake)
    fake.fail_next(40001, times=2)
    with pytest.raises(UpstreamError) as info:
        client.send_text(to_user="u", text="x")
    assert isinstance(info.value, PlatformError) and info.value.errcode == 40001
    assert fake.token_calls == 2  # the first fetch, then exactly one refresh
    assert len(fake.sent("/cgi-bin/message/send")) == 2  # one try, one retry


def test_other_errors_are_not_retried(store: Store, http: httpx.Client,
                                      fake: FakeWeCom) -> None:
    fake.fail_next(60020)  # not a trusted IP
    with pytest.raises(UpstreamError, match="60020"):
        _client(store, http, fake).send_text(to_user="u", text="x")
    assert fake.token_calls == 1
    assert len(fake.sent("/cgi-bin/message/send")) == 1


def test_bad_secret_is_an_upstream_error(store: Store, http: httpx.Client,
                                         fake: FakeWeCom) -> None:
    client = WeComClient(store, http, api_base=fake.url, corp_id=fake.corp_id,
                         secret="wrong", agent_id="1")
    with pytest.raises(UpstreamError, match="40001"):
        client.send_text(to_user="u", text="x")


def test_unreachable_platform_is_an_upstream_error(store: Store, http: httpx.Client) -> None:
    fake = FakeWeCom().start()
    url = fake.url
    fake.stop()
    client = WeComClient(store, http, api_base=url, corp_id="c", secret="s", agent_id="1")
    with pytest.raises(UpstreamError):
        client.send_text(to_user="u", text="x")


def test_group_robot_webhook(store: Store, http: httpx.Client, fake: FakeWeCom) -> None:
    client = _client(store, http, fake)
    client.send_webhook_text(text="群里好" * 1000)  # over 2048 bytes: cut
    sent = fake.sent("/cgi-bin/webhook/send")[0]
    assert sent.query == {"key": fake.webhook_key}
    assert sent.body is not None
    assert len(sent.body["text"]["content"].encode()) <= 2048
    assert fake.token_calls == 0  # a webhook needs no access token
    with pytest.raises(UpstreamError, match="93000"):
        client.send_webhook_text(text="x", key="wrong")


def test_official_account_customer_service_message(store: Store, http: httpx.Client,
                                                   fake: FakeWeCom) -> None:
    client = OfficialAccountClient(store, http, api_base=fake.url, app_id=fake.app_id,
                                   app_secret=fake.app_secret)
    client.send_text(to_user="oyORnuP8q7ou2gfYjqLzSIWZf0rs", text="您好")
    fake.fail_next(42001)
    client.send_text(to_user="oyORnuP8q7ou2gfYjqLzSIWZf0rs", text="再见")
    token_gets = [r for r in fake.requests if r.path == "/cgi-bin/token"]
    assert len(token_gets) == 2
    assert token_gets[0].query["grant_type"] == "client_credential"
    sends = fake.sent("/cgi-bin/message/custom/send")
    assert len(sends) == 3
    assert sends[-1].body == {"touser": "oyORnuP8q7ou2gfYjqLzSIWZf0rs", "msgtype": "text",
                              "text": {"content": "再见"}}
