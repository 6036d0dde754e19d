"""The card page (escaped, self-contained) and the poster (CJK glyphs, QR, cache)."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cards import render
from cards.items import CardItem
from cards.render import (
    FontMissingError,
    PageRenderer,
    clear_font_cache,
    find_cjk_font,
    price_text,
    render_poster,
)
from cards.repo import Card

EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def _card(*, name: str = "王小明", title: str = "母婴顾问", company: str = "上海好孕母婴",
          bio: str = "十年母婴经验，专注辅食与睡眠。") -> Card:
    return Card(
        id="c1", staff_id="s1", name=name, title=title, company=company,
        phone="13800138000", avatar_url="", bio=bio,
        provider_id="sh-01", wecom_user_id="wangxm", created_at="", updated_at="", version=1)


ITEMS = [CardItem("sku-1", "有机高铁米粉 6月+", "https://mall.example.com/p/sku-1", 6900,
                  reason="因为你最近聊到「辅食添加」"),
         CardItem("crs-2", "宝宝睡眠引导课", "https://mall.example.com/c/2", 19_990, kind="course")]


def test_page_escapes_everything_user_supplied() -> None:
    html = PageRenderer().card_page(
        _card(name=EVIL, bio=EVIL, company=EVIL, title=EVIL),
        items=[(CardItem("sku-1", EVIL, "https://m", 100), "/r/code/sku-1")],
        page_url="https://x/s/code", poster_url="https://x/c/c1/poster.png", personal=False,
        csp_nonce="n0nce")
    assert "<script>alert" not in html and "onerror=alert(2)>" not in html
    assert "&lt;script&gt;" in html


def test_page_is_self_contained_with_share_meta_and_tap_to_call() -> None:
    html = PageRenderer().card_page(
        _card(), items=[(i, f"/r/CODE/{i.id}") for i in ITEMS],
        page_url="https://x/s/CODE", poster_url="https://x/c/c1/poster.png", personal=True,
        csp_nonce="n0nce")
    assert 'property="og:title"' in html and 'property="og:description"' in html
    assert 'href="tel:13800138000"' in html and "wangxm" in html
    assert 'href="/r/CODE/sku-1"' in html and "¥69" in html and "¥199.90" in html
    # No stylesheet, script or font from anywhere else (WeChat's in-app browser).
    assert not re.search(r'<(link|script)[^>]+(href|src)=', html)
    assert "@font-face" not in html and "@import" not in html


def test_prices_read_like_a_shop() -> None:
    assert price_text(6900) == "¥69" and price_text(19_990) == "¥199.90"
    assert price_text(5) == "¥0.05" and price_text(None) == ""


def test_an_installed_cjk_font_is_found() -> None:
    path = find_cjk_font()
    assert Path(path).is_file()


def test_no_cjk_font_fails_loudly_instead_of_drawing_boxes(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    latin = tmp_path / "latin.ttf"
    latin.write_bytes(b"not a font")
    monkeypatch.setattr(render, "FONT_CANDIDATES", (str(latin),))
    # render looks fc-match up through shutil.which: the same module object.
    monkeypatch.setattr(shutil, "which", lambda _: None)
    clear_font_cache()
    try:
        with pytest.raises(FontMissingError, match="fonts-wqy-microhei"):
            find_cjk_font(str(latin))
    finally:
        clear_font_cache()


def test_poster_is_750_px_wide_with_items_and_a_qr_code() -> None:
    png = render_poster(_card(), items=ITEMS, share_url="http://127.0.0.1:8000/s/CODE",
                        font_path=find_cjk_font())
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width == 750 and 900 < img.height < 1800
    # A long name and bio are cut to fit, never drawn past the edge.
    long = render_poster(_card(name="王" * 60, bio="很长的简介" * 80), items=ITEMS * 3,
                         share_url="http://127.0.0.1:8000/s/CODE", font_path=find_cjk_font())
    assert Image.open(io.BytesIO(long)).width == 750
