"""Shared fixtures: a real redis-server on a free port, stores of both back-ends, settings."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis

from app.settings import Settings
from store.base import Store
from store.redis import RedisStore
from store.sqlite import SQLiteStore
from tests.bot.fake_wecom import FakeWeCom
from tests.support import StoreClock

API_KEY = "test-key"
CORP_ID = "wx5823bf96d3bd56c7"  # Tencent's sample CorpID, with its sample token and key


def free_port() -> int:
    """Return a TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process of our own (so no run sees another's keys)."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.workdir = workdir
        self.appendonly = appendonly
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.workdir), "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                if client.ping():
                    client.close()
                    return
            except redis.ConnectionError:
                time.sleep(0.025)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL: MINGPIAN_TEST_REDIS_URL, or a redis-server started for this session."""
    given = os.environ.get("MINGPIAN_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def clean_redis_url(redis_url: str) -> str:
    """The session's Redis, emptied for this test."""
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    r.close()
    return redis_url


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrise a test over both back-ends."""
    return str(request.param)


@pytest.fixture
def store_clock(backend: str) -> StoreClock:
    """The clock of the store fixture (real time until a test advances it)."""
    return StoreClock(server_time=backend == "redis")


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
          store_clock: StoreClock) -> Iterator[Store]:
    """A fresh store of the back-end under test."""
    st: Store
    if backend == "redis":
        st = RedisStore(request.getfixturevalue("clean_redis_url"))
    else:
        st = SQLiteStore(tmp_path / "store.db", clock=store_clock)
    yield st
    st.close()


class OpenSQLite(Protocol):
    """The `open_sqlite` fixture: SQLiteStore's signature."""

    def __call__(self, path: Path, *, clock: Callable[[], float] = ...,
                 background_checkpoint: bool = ...) -> SQLiteStore: ...


@pytest.fixture
def open_sqlite() -> Iterator[OpenSQLite]:
    """Open SQLiteStores (`open_sqlite(path, **options)`), every one closed when the test ends.

    Python 3.13 warns (ResourceWarning, an error here) when a connection is collected
    unclosed: a test that builds a store of its own takes it from here, or closes it itself."""
    opened: list[SQLiteStore] = []

    def open_(path: Path, *, clock: Callable[[], float] = time.time,
              background_checkpoint: bool = False) -> SQLiteStore:
        st = SQLiteStore(path, clock=clock, background_checkpoint=background_checkpoint)
        opened.append(st)
        return st

    yield open_
    for st in reversed(opened):
        st.close()


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test: a private data dir, a known API key, no .env."""
    # model_validate goes through BaseSettings.__init__, so `_env_file` still turns .env off.
    values: dict[str, object] = {"_env_file": None, "data_dir": data_dir, "api_keys": API_KEY,
                                 "redis_url": None}
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for the back-end under test."""
    redis_url = request.getfixturevalue("clean_redis_url") if backend == "redis" else None
    return make_settings(tmp_path / "data", redis_url=redis_url)


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    """WeCom's API, stood in for on a local port."""
    with FakeWeCom(corp_id=CORP_ID) as f:
        yield f
