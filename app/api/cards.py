"""Routes of the cards surface: cards, the card page and poster, share codes, visits (§6).

Public pages know a viewer only from a signed visitor cookie, made from a viewer token
(`?vt=`, from `POST /v1/viewer-tokens`) that the page takes out of the URL with a redirect;
an unsigned `?u=` names nobody. Each HTML response carries its own CSP nonce.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict

from app.customer_wiring import CustomerKit
from app.deps import ApiKey, CardsDep, CustomersDep, IdentitiesDep
from app.public_rate import PublicRateLimit, get_public_limiter
from cards.oauth import in_wechat
from cards.repo import CardFields, CardPatch
from cards.service import CardsService
from cards.viewer import WECHAT_COOKIE_TTL_S, Visitor
from models.errors import NotFoundError
from models.ids import ID_PATTERN, Id
from nlp.identity import IdentityRepo

router = APIRouter()

VISITOR_COOKIE = "mp_vid"
SIGNIN_TRIED_COOKIE = "mp_oa"  # WeChat sign-in was tried: do not redirect again today
_ID = re.compile(ID_PATTERN)


def _csp(nonce: str) -> str:
    """Return the page's CSP: nothing from elsewhere but the avatar; only our own script."""
    return ("default-src 'none'; img-src 'self' http: https: data:; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


ViewerTokenQuery = Annotated[str | None, Query(
    max_length=512, description="a viewer token from POST /v1/viewer-tokens (moved into a "
    "signed cookie by a redirect)")]


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
    return JSONResponse(cards.get_card_json(_id_or_404(card_id, "card")))


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
def visits(card_id: str, cards: CardsDep, identities: IdentitiesDep,
           limit: Annotated[int, Query(ge=1, le=500)] = 100,
           cursor: Annotated[str | None, Query(max_length=256)] = None) -> JSONResponse:
    """Return the salesperson's radar: who opened the card, when, what they clicked.

    Latest first, `limit` visits a page; pass `next_cursor` back as `cursor` for the next.
    A visitor linked to a person (issue 15) is named by the person's id, whichever of its
    ids it came with (`seen_as`)."""
    page = cards.visits(_id_or_404(card_id, "card"), limit=limit, cursor=cursor)
    people = identities.canonical_many([v["visitor_id"] for v in page["visits"]])
    for v in page["visits"]:
        if (person := people[v["visitor_id"]]) != v["visitor_id"]:
            v["seen_as"], v["visitor_id"] = v["visitor_id"], person
    return JSONResponse(page)


# --------------------------------------------------------------------------- public pages


def _visitor(request: Request, cards: CardsService) -> tuple[Visitor, bool]:
    """Return (the visitor, whether to set its cookie): a signed cookie, else anonymous.

    Without a valid cookie the visitor is a keyed hash of client address and user agent, so
    a client that drops cookies is still one visitor, not a new one on every request."""
    found = cards.visitor_from_cookie(request.cookies.get(VISITOR_COOKIE, ""))
    if found is not None:
        return found, False
    client = get_public_limiter(request).client(request)
    return cards.anonymous_visitor(client=client,
                                   user_agent=request.headers.get("user-agent", "")), True


def _named(visitor: Visitor, identities: IdentityRepo) -> Visitor:
    """Return the visitor as the person their WeChat openid is linked to, if it is."""
    person = identities.resolve("wechat_openid", visitor.openid) if visitor.openid else None
    return visitor if person is None else dataclasses.replace(visitor, id=person)


def _signin_redirect(request: Request, customers: CustomerKit, cards: CardsService,
                     visitor: Visitor) -> Response | None:
    """Send a visitor WeChat does not name yet once through silent OAuth (issue 15 point 2):
    only inside WeChat, only when the Official Account's app id and secret are set."""
    signin = customers.signin
    if (signin is None or visitor.known or request.cookies.get(SIGNIN_TRIED_COOKIE)
            or not in_wechat(request.headers.get("user-agent", ""))):
        return None
    resp = RedirectResponse(signin.authorize_url(request.url.path), status_code=302,
                            headers={"Cache-Control": "no-store"})
    resp.set_cookie(SIGNIN_TRIED_COOKIE, "1", max_age=86_400, path="/", httponly=True,
                    samesite="lax", secure=cards.visitor_cookie(visitor).secure)
    return resp


def _set_cookie(resp: Response, cards: CardsService, visitor: Visitor) -> None:
    cookie = cards.visitor_cookie(visitor)
    resp.set_cookie(VISITOR_COOKIE, cookie.value, max_age=cookie.max_age, path="/",
                    httponly=True, samesite="lax", secure=cookie.secure)


def _token_redirect(request: Request, cards: CardsService, vt: str) -> RedirectResponse:
    """Turn ?vt= into the visitor cookie and send the browser to the URL without it.

    The token leaves the address bar (and so shares, history and Referer headers); a
    tampered or expired one sets nothing, so the page that follows is anonymous."""
    url = request.url.remove_query_params("vt")
    target = url.path + (f"?{url.query}" if url.query else "")
    resp = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    member = cards.visitor_from_token(vt)
    if member is not None:
        _set_cookie(resp, cards, member)
    return resp


def _html(body: str, *, nonce: str) -> HTMLResponse:
    return HTMLResponse(body, headers={
        "Cache-Control": "no-store", "Content-Security-Policy": _csp(nonce),
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "strict-origin-when-cross-origin",
    })


def _viewer_page(request: Request, cards: CardsService, customers: CustomerKit,
                 identities: IdentityRepo, vt: str | None, *, check: Callable[[], object],
                 render: Callable[[Visitor, str], str]) -> Response:
    """Serve a public page to its visitor: render(visitor, nonce) returns its HTML.

    check() raises the 404 of an unknown card or code, also before a ?vt= is moved into the
    cookie by a redirect; a visitor WeChat does not name yet goes through sign-in first."""
    if vt is not None:
        check()  # an unknown card or code is a 404, not a redirect
        return _token_redirect(request, cards, vt)
    visitor, new = _visitor(request, cards)
    check()
    if (signin := _signin_redirect(request, customers, cards, visitor)) is not None:
        return signin  # before render: a share's visit is recorded under the openid
    visitor = _named(visitor, identities)
    nonce = secrets.token_urlsafe(16)
    resp = _html(render(visitor, nonce), nonce=nonce)
    if new:
        _set_cookie(resp, cards, visitor)
    return resp


@router.get("/c/{card_id}", response_class=HTMLResponse, tags=["pages"],
            dependencies=[PublicRateLimit])
def card_page(card_id: str, request: Request, cards: CardsDep, *, customers: CustomersDep,
              identities: IdentitiesDep, vt: ViewerTokenQuery = None) -> Response:
    """The card as a mobile page, with items for the viewer."""
    card_id = _id_or_404(card_id, "card")
    return _viewer_page(
        request, cards, customers, identities, vt, check=lambda: cards.require_card(card_id),
        render=lambda visitor, nonce: cards.card_page(
            card_id, viewer_id=visitor.id if visitor.known else None, csp_nonce=nonce))


@router.get("/c/{card_id}/poster.png", tags=["pages"], dependencies=[PublicRateLimit])
def poster(card_id: str, cards: CardsDep,
           code: Annotated[str | None, Query(max_length=32)] = None) -> Response:
    """The card's shareable poster (750 px wide) with a QR code of its share URL."""
    png = cards.poster(_id_or_404(card_id, "card"), code=code)
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=300"})


@router.get("/s/{code}", response_class=HTMLResponse, tags=["pages"],
            dependencies=[PublicRateLimit])
def share_page(code: str, request: Request, cards: CardsDep, *, customers: CustomersDep,
               identities: IdentitiesDep, vt: ViewerTokenQuery = None) -> Response:
    """A shared card: records the visit (once a day per visitor) and shows the card."""
    return _viewer_page(
        request, cards, customers, identities, vt,
        check=lambda: cards.resolve_share_or_raise(code),
        render=lambda visitor, nonce: cards.open_share(code, visitor=visitor, csp_nonce=nonce))


@router.get("/r/{code}/{item_id}", tags=["pages"], dependencies=[PublicRateLimit])
def item_redirect(code: str, item_id: str, request: Request, cards: CardsDep,
                  identities: IdentitiesDep) -> RedirectResponse:
    """Record the tap and redirect to the catalog item's own mall URL with ref=<code>."""
    visitor, new = _visitor(request, cards)
    visitor = _named(visitor, identities)
    target = cards.click(code, _id_or_404(item_id, "item"), visitor_id=visitor.id)
    resp = RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})
    if new:
        _set_cookie(resp, cards, visitor)
    return resp


@router.get("/oauth/wechat", tags=["pages"], dependencies=[PublicRateLimit])
def wechat_signin(
        cards: CardsDep, customers: CustomersDep, *,
        next_path: Annotated[str, Query(alias="next", max_length=80)],
        code: Annotated[str, Query(max_length=128)],
        state: Annotated[str, Query(max_length=128)]) -> RedirectResponse:
    """WeChat's OAuth comes back here: a signed, one-use state and code → the visitor's
    openid in the signed visitor cookie, then back to the card (issue 15 point 2)."""
    signin = customers.signin
    if signin is None:
        raise NotFoundError("WeChat sign-in is not configured")
    done = signin.finish(next_path=next_path, code=code, state=state)
    resp = RedirectResponse(done.next_path, status_code=303,
                            headers={"Cache-Control": "no-store"})
    now = int(cards.clock())
    _set_cookie(resp, cards, Visitor(done.openid, known=True, openid=done.openid,
                                     expires_at=now + WECHAT_COOKIE_TTL_S))
    return resp
