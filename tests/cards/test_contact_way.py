"""Issue 15 point 6: a card's 联系我 QR code (add_contact_way), made once per card and shown.

WeCom is the local stand-in (bot/standin.py): add_contact_way answers a config_id and a
qr_code URL whose PNG it serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from cards.contact_way import NS_CONTACT_WAY
from tests.app.cards_env import Env, running
from tests.bot.fake_wecom import FakeWeCom
from tests.bot.support import wecom_app_config
from tests.conftest import make_settings

CARD = {"staff_id": "staff-1", "name": "王小明", "title": "母婴顾问", "wecom_user_id": "wangxm"}
ADD = "/cgi-bin/externalcontact/add_contact_way"


def _settings(tmp_path: Path, fake: FakeWeCom | None) -> Settings:
    extra = {"wecom": wecom_app_config(fake)} if fake is not None else {}
    return make_settings(tmp_path / "data", embedder="hash", embedded_worker=False, **extra)


@pytest.fixture
def env(tmp_path: Path, fake: FakeWeCom) -> Iterator[Env]:
    with running(_settings(tmp_path, fake)) as e:
        yield e


def test_point6_contact_way_is_made_once_and_shown(env: Env, fake: FakeWeCom) -> None:
    card_id = env.post("/v1/cards", CARD).json()["id"]
    made = fake.sent(ADD)
    assert len(made) == 1
    assert made[0].body == {"type": 1, "scene": 2, "style": 1, "skip_verify": True,
                            "state": f"card:{card_id}", "user": ["wangxm"]}
    for _ in range(3):
        page = env.client.get(f"/c/{card_id}").text
        assert 'id="wecom-qr"' in page and "加企业微信" in page
        assert f'src="{fake.url}/qr/' in page
        assert "企业微信 wangxm" not in page  # the QR, not a bare user id
    assert len(fake.sent(ADD)) == 1  # stored: not made again per view
    qr = env.services.store.get(NS_CONTACT_WAY, card_id)
    assert qr is not None
    png = httpx.get(str(qr.doc["qr_code"]))
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_point6_a_new_member_gets_a_new_contact_way(env: Env, fake: FakeWeCom) -> None:
    card_id = env.post("/v1/cards", CARD).json()["id"]
    first = env.services.store.get(NS_CONTACT_WAY, card_id)
    r = env.client.patch(f"/v1/cards/{card_id}", json={"wecom_user_id": "lifang"},
                         headers={"Authorization": "Bearer test-key"})
    assert r.status_code == 200
    made = fake.sent(ADD)
    assert [m.body["user"] for m in made if m.body] == [["wangxm"], ["lifang"]]
    second = env.services.store.get(NS_CONTACT_WAY, card_id)
    assert first is not None and second is not None
    assert second.doc["config_id"] != first.doc["config_id"]


def test_point6_wecom_refusing_leaves_the_page_working_and_is_not_hammered(
        env: Env, fake: FakeWeCom) -> None:
    fake.contacts.fail_next(ADD, 60020)  # not a trusted IP (FACTS.md)
    card_id = env.post("/v1/cards", CARD).json()["id"]
    assert env.services.store.get(NS_CONTACT_WAY, card_id) is None
    for _ in range(3):
        page = env.client.get(f"/c/{card_id}")
        assert page.status_code == 200
        assert 'data-wecom="wangxm"' in page.text and 'id="wecom-qr"' not in page.text
    assert len(fake.sent(ADD)) == 1  # retried only after a pause
    env.services.store.forget(f"contact-way-try:{card_id}:wangxm")  # the pause is over
    assert 'id="wecom-qr"' in env.client.get(f"/c/{card_id}").text
    assert len(fake.sent(ADD)) == 2


def test_point6_without_wecom_the_card_shows_the_user_id(tmp_path: Path) -> None:
    with running(_settings(tmp_path, None)) as env:
        card_id = env.post("/v1/cards", CARD).json()["id"]
        page = env.client.get(f"/c/{card_id}").text
        assert 'data-wecom="wangxm"' in page and "企业微信 wangxm" in page
        assert env.services.store.get(NS_CONTACT_WAY, card_id) is None
