"""The salesperson's sidebar (issue 15 point 4): `/sidebar`, opened from WeCom's chat toolbar.

1. `/sidebar` without a session sends the member through WeCom's silent OAuth
   (`connect/oauth2/authorize?appid=<corp id>…&agentid=…`); `/sidebar/oauth` turns the code
   into the member's userid (`auth/getuserinfo`) in a signed session cookie.
2. With a session, `/sidebar` is a small page that configures the JS-SDK
   (`wx.agentConfig`, signed here with the agent's jsapi ticket over the page's URL) and asks
   `getCurExternalContact` for the chat's customer, then opens `/sidebar/customer/{id}`.
3. `/sidebar/customer/{id}` believes the id only if WeCom says the member follows that
   customer (`externalcontact/get`); otherwise 403.
In demo mode (`MINGPIAN_DEMO=true`) `POST /v1/sidebar/test-tokens` hands out a signed token
naming a member and a customer, and `/sidebar?t=TOKEN` shows that customer directly.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.customer_wiring import CustomerKit, WeComJs
from app.deps import ApiKey, CardsDep, CustomersDep, SettingsDep, StoreDep
from app.public_rate import PublicRateLimit
from cards.sidebar import STATE_LABEL, jsapi_signature
from models.errors import ForbiddenError, NotFoundError, UnauthorizedError
from models.ids import Id

router = APIRouter()

SESSION_COOKIE = "mp_sb"
STATE_TTL_S = 300
CUSTOMER_PATH = "/sidebar/customer/"


def _csp(nonce: str, *, script_origin: str = "") -> str:
    extra = f" {script_origin}" if script_origin else ""
    return ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{nonce}'{extra}; connect-src 'self'{extra}; base-uri 'none'; "
            "form-action 'none'")


def _html(body: str, *, nonce: str, script_origin: str = "") -> HTMLResponse:
    return HTMLResponse(body, headers={
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _csp(nonce, script_origin=script_origin),
        "Referrer-Policy": "no-referrer"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _set_session(resp: Response, customers: CustomerKit, *, userid: str, now: float,
                 secure: bool) -> None:
    resp.set_cookie(SESSION_COOKIE, customers.sidebar.keys.session(userid, now=now),
                    max_age=8 * 3600, path="/sidebar", httponly=True, samesite="lax",
                    secure=secure)


def _wecom_js(customers: CustomerKit) -> WeComJs:
    if customers.wecom_js is None:
        raise NotFoundError("the sidebar needs WeCom (MINGPIAN_WECOM__CORP_ID, __SECRET, "
                            "__AGENT_ID)")
    return customers.wecom_js


def _customer_page(customers: CustomerKit, external_userid: str, *, userid: str
                   ) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    view = customers.sidebar.view(external_userid, userid=userid)
    return _html(customers.sidebar.render(view, csp_nonce=nonce), nonce=nonce)


@router.get("/sidebar", response_class=HTMLResponse, tags=["sidebar"],
            dependencies=[PublicRateLimit])
def sidebar(request: Request, customers: CustomersDep, settings: SettingsDep, cards: CardsDep,
            t: Annotated[str | None, Query(max_length=512)] = None
            ) -> Response:
    """The sidebar: sign the member in, then let the JS-SDK name the chat's customer."""
    now = cards.clock()
    secure = settings.public_base_url.lower().startswith("https://")
    if t is not None:
        if not settings.demo:
            raise NotFoundError("test tokens work in demo mode only")
        named = customers.sidebar.keys.read_test_token(t, now=now)
        if named is None:
            raise ForbiddenError("invalid or expired sidebar token")
        resp: Response = _customer_page(customers, named[1], userid=named[0])
        _set_session(resp, customers, userid=named[0], now=now, secure=secure)
        return resp
    js = _wecom_js(customers)
    base = settings.public_base_url.rstrip("/")
    userid = customers.sidebar.keys.session_user(request.cookies.get(SESSION_COOKIE, ""),
                                                 now=now)
    if userid is None:
        nonce = secrets.token_urlsafe(9)
        state = customers.sidebar.keys.sign(STATE_LABEL, [nonce, str(int(now) + STATE_TTL_S)])
        redirect = quote(f"{base}/sidebar/oauth", safe="")
        return RedirectResponse(
            f"{js.oauth_base.rstrip('/')}/connect/oauth2/authorize?appid={js.corp_id}"
            f"&redirect_uri={redirect}&response_type=code&scope=snsapi_base&state={state}"
            f"&agentid={js.agent_id}#wechat_redirect",
            status_code=302, headers={"Cache-Control": "no-store"})
    page_url = f"{base}/sidebar"
    stamp, nonce_str = str(int(now)), secrets.token_urlsafe(12)
    config = {"corpid": js.corp_id, "agentid": js.agent_id, "timestamp": stamp,
              "nonceStr": nonce_str,
              "signature": jsapi_signature(ticket=js.tickets.get(), nonce=nonce_str,
                                           timestamp=stamp, url=page_url)}
    csp_nonce = secrets.token_urlsafe(16)
    body = customers.sidebar.render_shell(csp_nonce=csp_nonce, jssdk_url=js.jssdk_url,
                                          config=config, customer_path=CUSTOMER_PATH)
    return _html(body, nonce=csp_nonce, script_origin=_origin(js.jssdk_url))


@router.get("/sidebar/oauth", tags=["sidebar"], dependencies=[PublicRateLimit])
def sidebar_oauth(customers: CustomersDep, settings: SettingsDep, cards: CardsDep,
                  store: StoreDep, *, code: Annotated[str, Query(max_length=128)],
                  state: Annotated[str, Query(max_length=256)]) -> RedirectResponse:
    """WeCom's member OAuth comes back here: a signed one-use state and the code name the
    salesperson, kept in a signed session cookie."""
    now = cards.clock()
    got = customers.sidebar.keys.open(STATE_LABEL, state, now=now)
    if not got or len(got) != 1 or not store.first_seen(f"sidebar.state:{got[0]}",
                                                        STATE_TTL_S + 60):
        raise ForbiddenError("sign-in refused: forged, expired or used state")
    if customers.contacts is None:
        raise NotFoundError("the sidebar needs WeCom")
    userid = customers.contacts.member_of_code(code)
    resp = RedirectResponse("/sidebar", status_code=303, headers={"Cache-Control": "no-store"})
    _set_session(resp, customers, userid=userid, now=now,
                 secure=settings.public_base_url.lower().startswith("https://"))
    return resp


@router.get("/sidebar/customer/{external_userid}", response_class=HTMLResponse,
            tags=["sidebar"], dependencies=[PublicRateLimit])
def sidebar_customer(external_userid: Id, request: Request, customers: CustomersDep,
                     cards: CardsDep) -> Response:
    """One customer's sidebar, for a signed-in member who follows that customer in WeCom."""
    userid = customers.sidebar.keys.session_user(request.cookies.get(SESSION_COOKIE, ""),
                                                 now=cards.clock())
    if userid is None:
        raise UnauthorizedError("open the sidebar from WeCom's chat toolbar (/sidebar)")
    if customers.contacts is None:
        raise NotFoundError("the sidebar needs WeCom")
    follow = customers.contacts.follow_users(external_userid)
    if not any(f.userid == userid for f in follow):
        raise ForbiddenError("this customer is not one of yours")
    return _customer_page(customers, external_userid, userid=userid)


class TestTokenIn(BaseModel):
    """Body of `POST /v1/sidebar/test-tokens` (demo mode)."""

    model_config = ConfigDict(extra="forbid")

    userid: Id  # the salesperson (WeCom member userid)
    external_userid: Id  # the customer of the chat
    ttl_s: int = Field(default=3600, gt=0, le=86_400)


@router.post("/v1/sidebar/test-tokens", dependencies=[ApiKey], tags=["sidebar"])
def create_test_token(body: TestTokenIn, customers: CustomersDep, settings: SettingsDep,
                      cards: CardsDep) -> JSONResponse:
    """Demo mode only: a signed token that opens one customer's sidebar without WeCom."""
    if not settings.demo:
        raise NotFoundError("test tokens work in demo mode only (MINGPIAN_DEMO=true)")
    expires_at = int(cards.clock()) + body.ttl_s
    token = customers.sidebar.keys.test_token(userid=body.userid,
                                              external_userid=body.external_userid,
                                              expires_at=expires_at)
    base = settings.public_base_url.rstrip("/")
    return JSONResponse({"token": token, "url": f"{base}/sidebar?t={token}",
                         "expires_at": expires_at})
