"""The card as a mobile HTML page (Jinja2) and as a shareable poster PNG (Pillow + qrcode).

The page loads nothing from outside (WeChat's in-app browser, blocked CDNs): inline CSS,
system fonts, no web fonts. Everything user-supplied is escaped (autoescape on).

The poster needs a CJK font on the server (camel-store-api #7: posters full of boxes). We
look for one the install provides (Debian `fonts-wqy-microhei` or `fonts-noto-cjk`, which
`make venv` installs) and refuse to draw without one. A failed look-up is remembered for the
life of the process: otherwise every poster request would run fc-match again.

The page never prints an item's reason: a reason like "因为你最近聊到「辅食添加」" comes from
the viewer's chat and belongs to API answers only (a card page can be opened by anyone).
Its one inline script carries the response's CSP nonce.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import qrcode
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image, ImageDraw, ImageFont

from cards.items import CardItem
from cards.repo import Card
from models.errors import AppError

POSTER_WIDTH = 750
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
# Colours of the poster (the page's CSS uses the same).
_TEAL = (15, 118, 110)
_DARK = (20, 83, 45)
_INK = (29, 33, 41)
_GREY = (78, 89, 105)
_LIGHT = (134, 144, 156)
_PRICE = (217, 72, 15)
_BG = (242, 244, 247)


class FontMissingError(AppError):
    """No font with Chinese glyphs is installed: the poster would be boxes."""

    code = "font_missing"


def price_text(cents: int | None) -> str:
    """Return a price as shown to a shopper ("¥69" or "¥69.90")."""
    if cents is None:
        return ""
    yuan, fen = divmod(cents, 100)
    return f"¥{yuan}" if fen == 0 else f"¥{yuan}.{fen:02d}"


def _initial(name: str) -> str:
    return name.strip()[:1].upper() or "名"


@dataclass(frozen=True)
class PageItem:
    """An item as the page links it."""

    title: str
    href: str
    price: str
    kind: str


class PageRenderer:
    """Renders the card page from cards/templates/."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("cards", "templates"),
            autoescape=select_autoescape(["html"], default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def card_page(
        self,
        card: Card,
        *,
        items: Sequence[tuple[CardItem, str]],
        page_url: str,
        poster_url: str,
        personal: bool,
        csp_nonce: str,
        contact_qr: str | None = None,
    ) -> str:
        """Return the page's HTML; items come with the href each one links through.

        Items may be ordered for the viewer, but no reason is shown (see the module doc)."""
        parts = [p for p in (card.title, card.company) if p]
        description = " · ".join(parts) or "我的名片"
        if card.bio:
            description += " — " + card.bio[:80]
        shown = [PageItem(i.title, href, price_text(i.price_cents), i.kind) for i, href in items]
        return self.env.get_template("card.html").render(
            card=card, items=shown, page_url=page_url, poster_url=poster_url,
            description=description, initial=_initial(card.name), csp_nonce=csp_nonce,
            items_heading="为你推荐" if personal else "热门好物", contact_qr=contact_qr,
        )


# --------------------------------------------------------------------------- poster


def _has_cjk(path: str) -> bool:
    """Return whether the font draws Chinese (two different characters differ, not two boxes)."""
    try:
        font = ImageFont.truetype(path, 32)
    except OSError:
        return False
    a = font.getmask("名")
    b = font.getmask("片")
    return a.getbbox() is not None and bytes(a) != bytes(b)


def find_cjk_font(preferred: str | None = None) -> str:
    """Return the path of an installed font with Chinese glyphs, or raise FontMissingError."""
    path = _lookup_font(preferred)
    if path is None:
        raise FontMissingError(
            "no CJK font found for posters: install Debian's fonts-wqy-microhei "
            "(make venv does) or set MINGPIAN_POSTER_FONT to a .ttf/.ttc/.otf with Chinese "
            "glyphs, then restart"
        )
    return path


def clear_font_cache() -> None:
    """Forget earlier font look-ups, found or not (tests; a font installed at run time)."""
    _lookup_font.cache_clear()


@lru_cache(maxsize=8)
def _lookup_font(preferred: str | None) -> str | None:
    """Return a font path with Chinese glyphs or None; both answers are cached."""
    candidates = [preferred] if preferred else []
    candidates += list(FONT_CANDIDATES)
    fc_match = shutil.which("fc-match")
    if fc_match:
        try:
            out = subprocess.run([fc_match, "-f", "%{file}", ":lang=zh-cn"], check=False,
                                 capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(out)
    for path in candidates:
        if path and Path(path).is_file() and _has_cjk(path):
            return path
    return None


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int,
          max_lines: int) -> list[str]:
    """Break text into at most max_lines lines of at most width pixels (CJK breaks anywhere)."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for ch in para:
            if draw.textlength(line + ch, font=font) <= width:
                line += ch
                continue
            lines.append(line)
            line = ch.lstrip()
        lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and draw.textlength(last + "…", font=font) > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last + "…"]
    return [ln for ln in lines if ln] or [""]


def _qr(url: str, size: int) -> Image.Image:
    """Return a QR code of url, at most size px, with whole-pixel modules (crisp to scan)."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2, box_size=1)
    qr.add_data(url)
    qr.make(fit=True)
    modules = qr.modules_count + 2 * qr.border
    qr.box_size = max(1, size // modules)
    img: Image.Image = qr.make_image(fill_color="black", back_color="white").get_image()
    return img.convert("RGB")


def render_poster(card: Card, *, items: Sequence[CardItem], share_url: str,  # noqa: PLR0915  a linear drawing script, one statement per thing drawn, top to bottom
                  font_path: str) -> bytes:
    """Return the card's poster as PNG bytes: 750 px wide, card, a few items, a QR code."""
    def font(px: int) -> ImageFont.FreeTypeFont:
        return ImageFont.truetype(font_path, px)

    f_name, f_role, f_text, f_small, f_item = font(46), font(26), font(24), font(22), font(26)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    inner = POSTER_WIDTH - 2 * 40 - 2 * 32  # page margin and card padding
    bio = _wrap(scratch, card.bio, f_text, inner, 3) if card.bio else []
    shown = list(items[:3])

    card_h = 32 + 120 + 24 + (len(bio) * 36 + 16 if bio else 0) + 90
    items_h = (60 + len(shown) * 96) if shown else 0
    height = 190 + card_h + 40 + items_h + 420
    img = Image.new("RGB", (POSTER_WIDTH, height), _BG)
    d = ImageDraw.Draw(img)

    # Header band.
    for row in range(260):  # the page's teal-to-green gradient
        t = row / 259
        d.line((0, row, POSTER_WIDTH, row),
               fill=tuple(round(a + (b - a) * t) for a, b in zip(_TEAL, _DARK, strict=True)))
    brand = card.company or "名片"
    d.text((40, 56), _wrap(scratch, brand, f_role, POSTER_WIDTH - 80, 1)[0], font=f_role,
           fill=(220, 240, 236))

    # The card.
    top = 130
    d.rounded_rectangle((40, top, POSTER_WIDTH - 40, top + card_h), radius=24, fill="white")
    x = 40 + 32
    y = top + 32
    d.ellipse((x, y, x + 120, y + 120), fill=_TEAL)
    d.text((x + 60, y + 60), _initial(card.name), font=font(56), fill="white", anchor="mm")
    tx = x + 120 + 28
    name = _wrap(scratch, card.name, f_name, POSTER_WIDTH - 40 - 32 - tx, 1)[0]
    d.text((tx, y + 8), name, font=f_name, fill=_INK, stroke_width=1, stroke_fill=_INK)
    role = " · ".join(p for p in (card.title, card.company) if p)
    if role:
        role = _wrap(scratch, role, f_role, POSTER_WIDTH - 40 - 32 - tx, 1)[0]
        d.text((tx, y + 74), role, font=f_role, fill=_GREY)
    y += 120 + 24
    for line in bio:
        d.text((x, y), line, font=f_text, fill=_GREY)
        y += 36
    if bio:
        y += 16
    d.line((x, y, POSTER_WIDTH - 72, y), fill=(229, 230, 235), width=2)
    y += 22
    contact = []
    if card.phone:
        contact.append(f"电话 {card.phone}")
    if card.wecom_user_id:
        contact.append(f"企业微信 {card.wecom_user_id}")
    d.text((x, y), _wrap(scratch, "   ".join(contact) or "扫码查看名片", f_text, inner, 1)[0],
           font=f_text, fill=_TEAL)

    # Items.
    y = top + card_h + 40
    if shown:
        d.text((48, y), "热门好物", font=font(30), fill=_INK, stroke_width=1, stroke_fill=_INK)
        y += 60
        for item in shown:
            d.rounded_rectangle((40, y, POSTER_WIDTH - 40, y + 80), radius=16, fill="white")
            price = price_text(item.price_cents)
            pw = int(d.textlength(price, font=f_item)) if price else 0
            title = _wrap(scratch, item.title, f_item, POSTER_WIDTH - 80 - 48 - pw - 24, 1)[0]
            d.text((64, y + 40), title, font=f_item, fill=_INK, anchor="lm")
            if price:
                d.text((POSTER_WIDTH - 64, y + 40), price, font=f_item, fill=_PRICE, anchor="rm")
            y += 96

    # QR code of the share URL.
    y += 20
    qr_size = 260
    d.rounded_rectangle(((POSTER_WIDTH - qr_size) // 2 - 20, y, (POSTER_WIDTH + qr_size) // 2 + 20,
                         y + qr_size + 40), radius=16, fill="white")
    code_img = _qr(share_url, qr_size)
    off = (qr_size - code_img.width) // 2
    img.paste(code_img, ((POSTER_WIDTH - qr_size) // 2 + off, y + 20 + off))
    y += qr_size + 40 + 30
    d.text((POSTER_WIDTH // 2, y), "长按识别二维码，查看我的名片", font=f_text, fill=_GREY, anchor="mt")
    d.text((POSTER_WIDTH // 2, y + 44), "微信扫一扫 · 一键拨号 · 专属推荐", font=f_small, fill=_LIGHT,
           anchor="mt")

    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
