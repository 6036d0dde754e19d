"""The operator's console under /console: server-rendered pages (Jinja2), Chinese first
(issue 18). Every page but the login page needs a session; every POST needs the form's CSRF
token, and all but sign-in/out need an admin. Changes are written to an audit log.

The console has its own Content-Security-Policy (no inline script or style; its one script
and stylesheet come from /console/static), separate from the public card pages' policy.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel
from starlette.types import Scope

from app.console import group_settings as group_form
from app.console import segments as segments_view
from app.console import views
from app.console.activity import RequestCounter, RequestCountMiddleware, local_day
from app.console.auth import (
    PRE_COOKIE,
    SESSION_COOKIE,
    ConsoleUser,
    LoginRefusedError,
    Session,
)
from app.console.overrides import TagEdit, preview, split_terms
from app.console.segments import SegmentQuery
from app.deps import ServicesDep
from app.erasure import erase_user
from app.public_rate import get_public_limiter
from app.services import INBOX, Services
from bot.tags import NotConfiguredError
from models.errors import AppError, BadRequestError, NotFoundError
from nlp.privacy import redact
from store.base import Store

log = logging.getLogger("mingpian.console")

HERE = Path(__file__).parent
AUDIT_LOG = "console.audit"
WECOM_MAX = 10_000  # members one "tag them in WeCom" run takes (WeCom: ~3000 calls a minute)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
NAV = [("/console/", "概览"), ("/console/groups", "群"), ("/console/segments", "人群"),
       ("/console/members", "成员"), ("/console/salespeople", "销售"),
       ("/console/referrals", "推荐与奖励"), ("/console/catalog", "商品"),
       ("/console/taxonomy", "标签"), ("/console/dead-letters", "失败消息"),
       ("/console/audit", "审计")]

router = APIRouter(prefix="/console", include_in_schema=False)
_env = Environment(loader=FileSystemLoader(HERE / "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


class SignedOutError(Exception):
    """No valid session: the page answers with a redirect to the login page."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class ConsoleRefusalError(Exception):
    """A console request refused with a page (403: no CSRF token, not an admin)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fmt_time(ts: float | None, tz: int = 8) -> str:
    if not ts:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(ts) + tz * 3600))


_env.filters["time"] = _fmt_time
_env.filters["day"] = lambda ts: local_day(float(ts), 8) if ts else "—"
_env.filters["yuan"] = lambda cents: f"¥{int(cents) / 100:,.2f}"


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY"}


def render(request: Request, name: str, *, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Render a console page with the console's headers."""
    html = _env.get_template(name).render(nav=NAV, path=request.url.path, **ctx)
    return HTMLResponse(html, status_code=status, headers=_headers())


class Viewer:
    """The signed-in account of a request, its session and its CSRF token."""

    def __init__(self, user: ConsoleUser, session: Session, csrf: str) -> None:
        self.user = user
        self.session = session
        self.csrf = csrf


def current_viewer(request: Request, services: ServicesDep) -> Viewer:
    """Return the signed-in account, or raise SignedOutError (→ the login page)."""
    kit = services.console
    session = kit.signer.read(request.cookies.get(SESSION_COOKIE))
    user = kit.users.get(session.name) if session else None
    if session is None or user is None or user.disabled:
        raise SignedOutError(request.url.path)
    return Viewer(user, session, kit.signer.csrf_token(session.sid))


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
CsrfField = Annotated[str, Form()]


def _require_change(viewer: Viewer, services: Services, csrf: str) -> None:
    if not services.console.signer.csrf_ok(viewer.session.sid, csrf):
        raise ConsoleRefusalError(403, "表单已过期或缺少 CSRF 令牌，请刷新页面后重试。")
    if not viewer.user.is_admin:
        raise ConsoleRefusalError(403, "只有管理员可以修改设置（你的角色：运营，只读）。")


def audit(store: Store, viewer: Viewer, action: str, target: str, detail: str = "") -> None:
    """Record who changed what."""
    store.append(AUDIT_LOG, [{"at": int(time.time()), "who": viewer.user.name,
                              "action": action, "target": target, "detail": detail[:500]}])


def _page(request: Request, name: str, viewer: Viewer, **ctx: Any) -> HTMLResponse:
    return render(request, name, viewer=viewer, user=viewer.user, csrf=viewer.csrf, **ctx)


def _back(url: str, notice: str = "") -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(url + (f"{sep}notice={quote(notice)}" if notice else ""), 303)


# ------------------------------------------------------------------------- sign-in


@router.get("/login")
def login_form(*, request: Request, services: ServicesDep, next: str = "/console/",
               error: str = "") -> HTMLResponse:
    """The sign-in form (with a CSRF token tied to a pre-session cookie)."""
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(18)
    kit = services.console
    resp = render(request, "login.html", csrf=kit.signer.csrf_token("login|" + pre),
                  next=_safe_next(next), error=error, user=None)
    resp.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="lax", secure=kit.secure_cookies,
                    path="/console", max_age=3600)
    return resp


def _safe_next(url: str) -> str:
    return url if url.startswith("/console") and not url.startswith("//") else "/console/"


@router.post("/login")
def login(*, request: Request, services: ServicesDep, name: Annotated[str, Form()] = "",
          password: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/console/") -> Response:
    """Check the CSRF token, the throttles and the password; start a session."""
    kit = services.console
    pre = request.cookies.get(PRE_COOKIE)
    if not kit.signer.csrf_ok("login|" + pre if pre else None, csrf):
        raise ConsoleRefusalError(403, "登录表单已过期或缺少 CSRF 令牌，请刷新登录页。")
    limiter = get_public_limiter(request)
    try:
        kit.throttle.check(limiter.client(request))
        user = kit.users.authenticate(name, password)
    except LoginRefusedError as e:
        resp = render(request, "login.html", status=429, csrf=csrf, next=_safe_next(next),
                      error=f"尝试次数过多，请 {e.retry_after_s} 秒后再试。", user=None)
        resp.headers["Retry-After"] = str(e.retry_after_s)
        return resp
    if user is None:
        log.info("console sign-in refused for %r", name[:64])
        return render(request, "login.html", status=401, csrf=csrf, next=_safe_next(next),
                      error="用户名或密码错误。", user=None)
    value, _ = kit.signer.issue(user.name)
    ok = RedirectResponse(_safe_next(next), 303)
    ok.set_cookie(SESSION_COOKIE, value, httponly=True, samesite="lax",
                    secure=kit.secure_cookies, path="/console", max_age=kit.signer.ttl_s)
    ok.delete_cookie(PRE_COOKIE, path="/console")
    services.store.append(AUDIT_LOG, [{"at": int(time.time()), "who": user.name,
                                       "action": "login", "target": "", "detail": ""}])
    return ok


@router.post("/logout")
def logout(*, viewer: ViewerDep, services: ServicesDep, csrf: CsrfField = "") -> Response:
    """End the session (the cookie goes; it also expires by itself)."""
    if not services.console.signer.csrf_ok(viewer.session.sid, csrf):
        raise ConsoleRefusalError(403, "缺少 CSRF 令牌。")
    resp = RedirectResponse("/console/login", 303)
    resp.delete_cookie(SESSION_COOKIE, path="/console")
    return resp


# ------------------------------------------------------------------------- pages


@router.get("/")
def overview(*, request: Request, viewer: ViewerDep, services: ServicesDep) -> HTMLResponse:
    """Messages, active members and groups, replies, recommendations; rising tags."""
    return _page(request, "overview.html", viewer, data=views.overview(services))


@router.get("/groups")
def groups(*, request: Request, viewer: ViewerDep, services: ServicesDep,
           page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> HTMLResponse:
    """Groups, busiest first."""
    return _page(request, "groups.html", viewer, data=views.groups(services, page=page))


@router.get("/groups/{group_id}")
def group(*, request: Request, group_id: str, viewer: ViewerDep, services: ServicesDep,
          notice: str = "") -> HTMLResponse:
    """One group: topics per week, most active members, replies, settings."""
    data = views.group(services, group_id)
    if not data["exists"]:
        raise ConsoleRefusalError(404, f"没有这个群：{group_id}")
    return _page(request, "group.html", viewer, g=data, notice=notice)


@router.post("/groups/{group_id}/settings")
def group_settings(*, group_id: str, viewer: ViewerDep, services: ServicesDep,
                   csrf: CsrfField = "", card_id: Annotated[str, Form()] = "",
                   replies: Annotated[str, Form()] = "",
                   quiet_start_hour: Annotated[str, Form()] = "",
                   quiet_end_hour: Annotated[str, Form()] = "") -> Response:
    """Change which card replies link, replies on/off and quiet hours (admins): the bot's
    own per-group settings, as `PUT /v1/groups/{id}/settings` writes them."""
    _require_change(viewer, services, csrf)
    try:
        new = group_form.save(services, group_id, group_form.parse_form(
            card_id=card_id, replies=replies == "on", quiet_start=quiet_start_hour,
            quiet_end=quiet_end_hour))
    except BadRequestError as e:
        raise ConsoleRefusalError(400, e.message) from e
    except NotFoundError as e:
        raise ConsoleRefusalError(404, f"没有这张名片：{card_id}") from e
    audit(services.store, viewer, "group.settings", group_id, group_form.describe(new))
    return _back(f"/console/groups/{quote(group_id)}", "群设置已保存")


@router.get("/segments")
def segments(*, request: Request, viewer: ViewerDep, services: ServicesDep, tag: str = "",
             days: Annotated[int, Query(ge=1, le=365)] = 30,
             min_weight: Annotated[float, Query(ge=0, le=1000)] = 0.0,
             after: Annotated[str, Query(max_length=200)] = "",
             notice: str = "") -> HTMLResponse:
    """Who talked about a tag lately, above a weight: a page of them (heaviest first, read
    from the weight-ordered index), and CSV."""
    q = SegmentQuery.of(tag, days, min_weight)
    services.console.taxonomy.refresh()
    seg = segments_view.page(services, q, after=after)
    rows = segments_view.detail(services, seg.rows)
    query = urlencode({"tag": q.tag, "days": q.days, "min_weight": q.min_weight})
    return _page(request, "segments.html", viewer, seg=seg, q=q, rows=rows, query=query,
                 first=not after, next_query=urlencode({"after": seg.next}) if seg.next else "",
                 tags=services.tagger.taxonomy.names(), notice=notice,
                 wecom=services.customers.tags.enabled, report=None)


@router.get("/segments.csv")
def segments_csv(*, viewer: ViewerDep, services: ServicesDep, tag: str,
                 days: Annotated[int, Query(ge=1, le=365)] = 30,
                 min_weight: Annotated[float, Query(ge=0, le=1000)] = 0.0) -> Response:
    """The whole segment as CSV (UTF-8 with BOM, for Excel), streamed a chunk at a time."""
    q = SegmentQuery.of(tag, days, min_weight)
    audit(services.store, viewer, "segment.export", q.tag,
          f"days={q.days} min_weight={q.min_weight}")
    name = quote(f"segment-{q.tag}-{q.days}d.csv")
    return StreamingResponse(segments_view.csv_chunks(services, q),
                             media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}",
                                      "Cache-Control": "no-store"})


@router.post("/segments/wecom-tags")
def segment_wecom(*, request: Request, viewer: ViewerDep, services: ServicesDep,
                  csrf: CsrfField = "", tag: Annotated[str, Form()] = "",
                  days: Annotated[int, Form()] = 30, min_weight: Annotated[float, Form()] = 0.0,
                  dry_run: Annotated[str, Form()] = "") -> Response:
    """Run the WeCom tag write-back (bot/tags.py) for the segment's members and show its
    report (admins); with dry_run, only what it would change."""
    _require_change(viewer, services, csrf)
    q = SegmentQuery.of(tag, days, min_weight)
    ids: list[str] = []
    for rows in segments_view.members(services, q):
        # Members are persons (nlp/identity.py); WeCom knows their external_userids.
        more = segments_view.wecom_contacts(services, [str(r["user"]) for r in rows])
        ids = list(dict.fromkeys([*ids, *more]))
        if len(ids) >= WECOM_MAX:
            break
    ids = ids[:WECOM_MAX]
    preview_only = dry_run == "1"
    try:
        report = services.customers.tags.sync_contacts(ids, dry_run=preview_only)
    except NotConfiguredError as e:
        raise ConsoleRefusalError(409, "未配置企业微信（需要 MINGPIAN_WECOM__CORP_ID 与 "
                                  "MINGPIAN_WECOM__SECRET），无法在企业微信中打标签。") from e
    except AppError as e:
        raise ConsoleRefusalError(502, f"企业微信标签回写失败：{e.message}") from e
    summary = report.lines()[0]
    audit(services.store, viewer, "segment.wecom_tags" + (".dry_run" if preview_only else ""),
          q.tag, f"days={q.days} min_weight={q.min_weight} members={len(ids)}: {summary}")
    back = urlencode({"tag": q.tag, "days": q.days, "min_weight": q.min_weight})
    return _page(request, "wecom_tags.html", viewer, q=q, report=report, asked=len(ids),
                 capped=len(ids) >= WECOM_MAX, back=back)


@router.get("/members")
def members(*, request: Request, viewer: ViewerDep, services: ServicesDep,
            q: str = "") -> Response:
    """Find a member by id (prefix)."""
    q = q.strip()[:128]
    found = views.find_members(services, q) if q else []
    if q and ((len(found) == 1 and found[0] == q) or services.identities.canonical(q) != q):
        return RedirectResponse(f"/console/members/{quote(q)}", 303)
    return _page(request, "members.html", viewer, q=q, found=found)


@router.get("/members/{user_id}")
def member(*, request: Request, user_id: str, viewer: ViewerDep, services: ServicesDep,
           notice: str = "") -> HTMLResponse:
    """A member's profile (never chat text), recommendations, referral, linked ids."""
    return _page(request, "member.html", viewer, m=views.member(services, user_id),
                 notice=notice)


@router.post("/members/{user_id}/erase")
def member_erase(*, user_id: str, viewer: ViewerDep, services: ServicesDep,
                 csrf: CsrfField = "", confirm: Annotated[str, Form()] = "") -> Response:
    """Erase a member everywhere (PIPL), after the operator typed the id to confirm."""
    _require_change(viewer, services, csrf)
    if confirm.strip() != user_id:
        return _back(f"/console/members/{quote(user_id)}", "未删除：请输入该成员的 ID 以确认")
    done = erase_user(services, user_id)
    audit(services.store, viewer, "member.erase", user_id, ", ".join(done))
    return _back(f"/console/members/{quote(user_id)}", "该成员的数据已删除")


@router.get("/salespeople")
def salespeople(*, request: Request, viewer: ViewerDep, services: ServicesDep) -> HTMLResponse:
    """Every card."""
    return _page(request, "salespeople.html", viewer, cards=views.list_cards(services))


@router.get("/salespeople/{card_id}")
def salesperson(*, request: Request, card_id: str, viewer: ViewerDep,
                services: ServicesDep) -> HTMLResponse:
    """A card's funnel over time, radar, poster and share codes."""
    return _page(request, "salesperson.html", viewer, s=views.salesperson(services, card_id),
                 base=services.settings.public_base_url)


@router.get("/referrals")
def referrals(*, request: Request, viewer: ViewerDep, services: ServicesDep,
              user: str = "") -> HTMLResponse:
    """The referral tree around a member, and its rewards."""
    user = user.strip()[:128]
    tree = views.referral_tree(services, user) if user else None
    return _page(request, "referrals.html", viewer, tree=tree, q=user)


@router.get("/ledger")
def ledger(*, request: Request, viewer: ViewerDep, services: ServicesDep,
           before: Annotated[int | None, Query(ge=1)] = None, who: str = "", rule: str = "",
           status: str = "", verify: str = "") -> HTMLResponse:
    """Ledger entries newest first with filters; the head; `audit verify` on request."""
    data = views.ledger_page(services, before=before, beneficiary=who.strip()[:128],
                             rule=rule if rule in ("direct", "team", "peer") else "",
                             status=status if status in ("pending", "payable", "reversal",
                                                         "withheld") else "")
    result = services.cards.ledger.verify() if verify else None
    if result is not None:
        audit(services.store, viewer, "ledger.verify", "", "ok" if result.ok else result.reason)
    query = urlencode({"who": who, "rule": rule, "status": status})
    return _page(request, "ledger.html", viewer, d=data, verify=result, query=query)


@router.get("/payouts.csv")
def payouts(*, viewer: ViewerDep, services: ServicesDep) -> Response:
    """Balances per beneficiary as CSV, for payouts."""
    audit(services.store, viewer, "ledger.export", "payouts")
    return Response(views.payouts_csv(services), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": "attachment; filename=payouts.csv",
                             "Cache-Control": "no-store"})


@router.get("/catalog")
def catalog(*, request: Request, viewer: ViewerDep, services: ServicesDep, after: str = "",
            q: str = "", provider: str = "") -> HTMLResponse:
    """Items by id with availability per provider; the index; a recommendation search."""
    data = views.catalog_page(services, after=after[:128])
    found = None
    if q.strip():
        found = services.recommender.for_text(q.strip()[:500], k=10,
                                              provider_id=provider.strip() or None)
    return _page(request, "catalog.html", viewer, d=data, q=q, provider=provider,
                 found=found)


@router.get("/taxonomy")
def taxonomy(*, request: Request, viewer: ViewerDep, services: ServicesDep,
             notice: str = "", industry: str = "") -> HTMLResponse:
    """Tags with keywords and example sentences, and the add/edit form."""
    services.console.taxonomy.refresh()
    tags = services.tagger.taxonomy.tags
    industries = list(dict.fromkeys(t.industry for t in tags))
    shown = [t for t in tags if not industry or t.industry == industry]
    return _page(request, "taxonomy.html", viewer, tags=shown, industries=industries,
                 industry=industry, usage=views.tag_usage(services, [t.tag for t in shown]),
                 custom=services.console.taxonomy.stored(), notice=notice,
                 edit=None, matches=None, version=services.console.taxonomy.version())


class TagForm(BaseModel):
    """The tag editor's fields."""

    csrf: str = ""
    tag: str = ""
    industry: str = ""
    keywords: str = ""
    examples: str = ""
    description: str = ""
    sample: str = ""

    def edit(self) -> TagEdit:
        """Return the tag the form describes, or raise BadRequestError."""
        try:
            return TagEdit(tag=self.tag.strip(), industry=self.industry.strip() or "custom",
                           description=self.description.strip(),
                           keywords=split_terms(self.keywords),
                           examples=[e.strip() for e in self.examples.splitlines()
                                     if e.strip()])
        except ValueError as e:
            raise BadRequestError("标签名需 2–16 个字符；关键词、例句各不超过 50 条") from e


TagFormDep = Annotated[TagForm, Form()]


@router.post("/taxonomy/preview")
def taxonomy_preview(*, request: Request, viewer: ViewerDep, services: ServicesDep,
                     form: TagFormDep) -> HTMLResponse:
    """Show which recent (redacted) messages, and which typed sentences, the tag would
    match. Changes nothing, so operators may preview too."""
    if not services.console.signer.csrf_ok(viewer.session.sid, form.csrf):
        raise ConsoleRefusalError(403, "缺少 CSRF 令牌。")
    edit = form.edit()
    texts = views.recent_texts(services) + [redact(s) for s in form.sample.splitlines()
                                            if s.strip()][:50]
    tags = services.tagger.taxonomy.tags
    return _page(request, "taxonomy.html", viewer, tags=tags, industries=[], industry="",
                 usage=views.tag_usage(services, [t.tag for t in tags]),
                 custom=services.console.taxonomy.stored(), notice="", edit=edit,
                 sample=form.sample, matches=preview(edit, texts), looked=len(texts),
                 version=services.console.taxonomy.version())


@router.post("/taxonomy/apply")
def taxonomy_apply(*, viewer: ViewerDep, services: ServicesDep, form: TagFormDep) -> Response:
    """Store the tag; every process merges it within a poll (admins)."""
    _require_change(viewer, services, form.csrf)
    edit = form.edit()
    v = services.console.taxonomy.apply(edit)
    audit(services.store, viewer, "taxonomy.apply", edit.tag,
          f"keywords={','.join(edit.keywords)} examples={len(edit.examples)} version={v}")
    return _back("/console/taxonomy", f"标签「{edit.tag}」已生效（版本 {v}）")


@router.get("/dead-letters")
def dead_letters(*, request: Request, viewer: ViewerDep, services: ServicesDep,
                 notice: str = "") -> HTMLResponse:
    """What failed and why."""
    return _page(request, "dead_letters.html", viewer, rows=views.dead_letters(services),
                 notice=notice)


@router.post("/dead-letters/{action}")
def dead_letter_action(*, action: str, viewer: ViewerDep, services: ServicesDep,
                       csrf: CsrfField = "", ids: Annotated[list[str] | None, Form()] = None
                       ) -> Response:
    """Retry (queue again) or drop dead letters (admins)."""
    _require_change(viewer, services, csrf)
    chosen = [i for i in (ids or []) if i][:1000]
    if action == "retry":
        n = services.store.retry_dead(INBOX, chosen)
        note = f"已重新排队 {n} 条"
    elif action == "drop":
        n = services.store.drop_dead(INBOX, chosen)
        note = f"已丢弃 {n} 条"
    else:
        raise NotFoundError("no such action")
    audit(services.store, viewer, f"dead_letters.{action}", INBOX, f"{n}: {','.join(chosen)}")
    return _back("/console/dead-letters", note)


@router.get("/audit")
def audit_page(*, request: Request, viewer: ViewerDep, services: ServicesDep,
               before: Annotated[int | None, Query(ge=1)] = None) -> HTMLResponse:
    """Who changed what, newest first."""
    store = services.store
    end = store.log_length(AUDIT_LOG) if before is None else before - 1
    start = max(0, end - views.PAGE)
    rows = list(reversed(store.read_log(AUDIT_LOG, after=start, limit=end - start)))
    return _page(request, "audit.html", viewer, rows=rows,
                 next_before=start + 1 if start > 0 else None)


# ------------------------------------------------------------------------- wiring


def install(app: FastAPI) -> None:
    """Add the console to the app: routes, static files, its refusals, request counts."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(SignedOutError)
    async def _signed_out(request: Request, exc: SignedOutError) -> Response:
        target = exc.path if request.method == "GET" else "/console/"
        return RedirectResponse("/console/login?" + urlencode({"next": target}), 303)

    @app.exception_handler(ConsoleRefusalError)
    async def _refused(request: Request, exc: ConsoleRefusalError) -> Response:
        return render(request, "refused.html", status=exc.status, message=exc.message,
                      user=None)

    app.add_middleware(RequestCountMiddleware, counter_of=_request_counter)


def _request_counter(scope: Scope) -> RequestCounter | None:
    """Return the request counter of the services the lifespan built, once they exist."""
    svc = scope.get("state", {}).get("services")
    return svc.console.requests if isinstance(svc, Services) else None

