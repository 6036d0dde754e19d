"""Routes of the cards surface: cards, the card page and poster, share codes, visits (§6)."""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict

from app.deps import ApiKey, ServicesDep
from cards.repo import CardFields, CardPatch
from cards.service import CardsService
from models.errors import NotFoundError
from models.ids import ID_PATTERN, Id

router = APIRouter()

VISITOR_COOKIE = "mp_vid"
_ID = re.compile(ID_PATTERN)
# The page loads nothing from elsewhere except the salesperson's avatar image.
_CSP = ("default-src 'none'; img-src 'self' http: https: data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def get_cards(services: ServicesDep) -> CardsService:
    """Return the process's cards domain."""
    if services.cards is None:
        raise RuntimeError("the cards domain is not wired (app/cards_wiring.py)")
    return services.cards


CardsDep = Annotated[CardsService, Depends(get_cards)]
UserQuery = Annotated[str | None, Query(max_length=64, description="a known viewer's user id")]


def _id_or_404(value: str, what: str) -> str:
    if not _ID.match(value):
        raise NotFoundError(f"no {what} {value!r}")
    return value


class ShareIn(BaseModel):
    """Body of `POST /v1/cards/{card_id}/shares`."""

    model_config = ConfigDict(extra="forbid")

    sharer_id: Id


# --------------------------------------------------------------------------- API (key)


@router.post("/v1/cards", status_code=201, dependencies=[ApiKey], tags=["cards"])
def create_card(fields: CardFields, cards: CardsDep) -> JSONResponse:
    """Create a salesperson's card; return it with its id and URLs."""
    card = cards.create_card(fields)
    return JSONResponse(cards.card_json(card), status_code=201)


@router.get("/v1/cards/{card_id}", dependencies=[ApiKey], tags=["cards"])
def get_card(card_id: str, cards: CardsDep) -> JSONResponse:
    """Return a card."""
    card = cards.cards.get_card_or_raise(_id_or_404(card_id, "card"))
    return JSONResponse(cards.card_json(card))


@router.patch("/v1/cards/{card_id}", dependencies=[ApiKey], tags=["cards"])
def update_card(card_id: str, patch: CardPatch, cards: CardsDep) -> JSONResponse:
    """Change some fields of a card (its poster is redrawn)."""
    card = cards.update_card(_id_or_404(card_id, "card"), patch)
    return JSONResponse(cards.card_json(card))


@router.post("/v1/cards/{card_id}/shares", status_code=201, dependencies=[ApiKey],
             tags=["cards"])
def create_share(card_id: str, body: Annotated[ShareIn, Body()], cards: CardsDep
                 ) -> JSONResponse:
    """Return the sharer's share code and URL for the card (the same code every time)."""
    share = cards.create_share(_id_or_404(card_id, "card"), sharer_id=body.sharer_id)
    return JSONResponse({"code": share.code, "url": cards.share_url(share),
                         "card_id": share.card_id, "sharer_id": share.sharer_id},
                        status_code=201)


@router.get("/v1/cards/{card_id}/visits", dependencies=[ApiKey], tags=["cards"])
def visits(card_id: str, cards: CardsDep) -> JSONResponse:
    """Return the salesperson's radar: who opened the card, when, what they clicked."""
    return JSONResponse(cards.visits(_id_or_404(card_id, "card")))


# --------------------------------------------------------------------------- public pages


def _visitor(request: Request, u: str | None) -> tuple[str, str | None, bool]:
    """Return (visitor id, known viewer or None, whether to set the cookie)."""
    cookie = request.cookies.get(VISITOR_COOKIE, "")
    if u and _ID.match(u):
        return u, u, cookie != u
    if cookie and _ID.match(cookie):
        # A cookie we set from ?u= names a known viewer; a random one ("v:…") does not.
        return cookie, None if cookie.startswith("v:") else cookie, False
    return "v:" + secrets.token_hex(10), None, True


def _html(body: str, *, visitor: str, set_cookie: bool) -> HTMLResponse:
    resp = HTMLResponse(body, headers={
        "Cache-Control": "no-store", "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "strict-origin-when-cross-origin",
    })
    if set_cookie:
        resp.set_cookie(VISITOR_COOKIE, visitor, max_age=365 * 86_400, httponly=True,
                        samesite="lax")
    return resp


@router.get("/c/{card_id}", response_class=HTMLResponse, tags=["pages"])
def card_page(card_id: str, request: Request, cards: CardsDep, u: UserQuery = None
              ) -> HTMLResponse:
    """The card as a mobile page, with items for the viewer."""
    visitor, known, set_cookie = _visitor(request, u)
    body = cards.card_page(_id_or_404(card_id, "card"), viewer_id=known, pass_u=known if u else None)
    return _html(body, visitor=visitor, set_cookie=set_cookie)


@router.get("/c/{card_id}/poster.png", tags=["pages"])
def poster(card_id: str, cards: CardsDep,
           code: Annotated[str | None, Query(max_length=32)] = None) -> Response:
    """The card's shareable poster (750 px wide) with a QR code of its share URL."""
    png = cards.poster(_id_or_404(card_id, "card"), code=code)
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=300"})


@router.get("/s/{code}", response_class=HTMLResponse, tags=["pages"])
def share_page(code: str, request: Request, cards: CardsDep, u: UserQuery = None
               ) -> HTMLResponse:
    """A shared card: records the visit (once a day per visitor) and shows the card."""
    visitor, known, set_cookie = _visitor(request, u)
    body = cards.open_share(code, visitor_id=visitor, known_viewer=known,
                            pass_u=known if u else None)
    return _html(body, visitor=visitor, set_cookie=set_cookie)


@router.get("/r/{code}/{item_id}", tags=["pages"])
def item_redirect(code: str, item_id: str, request: Request, cards: CardsDep,
                  u: UserQuery = None) -> RedirectResponse:
    """Record the tap and redirect to the catalog item's own mall URL with ref=<code>."""
    visitor, _, set_cookie = _visitor(request, u)
    target = cards.click(code, _id_or_404(item_id, "item"), visitor_id=visitor)
    resp = RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})
    if set_cookie:
        resp.set_cookie(VISITOR_COOKIE, visitor, max_age=365 * 86_400, httponly=True,
                        samesite="lax")
    return resp
