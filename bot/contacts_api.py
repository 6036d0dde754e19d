"""WeCom's customer-contact APIs (客户联系) over the app's shared access token (issue 15).

Corporate tags (WECOM.md §3: get_corp_tag_list, add_corp_tag, mark_tag), a contact's follow
users and tags (externalcontact/get), 联系我 QR codes (add_contact_way), the agent's JS-SDK
ticket (ticket/get?type=agent_config) and member OAuth (auth/getuserinfo, WECOM.md §4).

Every call goes through the app's `WeComClient` token: one token for every process, and a
40001/42001 answer refreshes it once and retries once (bot/platform.py), GETs included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.platform import STALE_TOKEN_CODES, PlatformError, WeComClient
from models.errors import UpstreamError

log = logging.getLogger("mingpian.contacts")

CORP_TAG = 1  # follow_user.tags[].type: 1 企业标签, 2 用户自定义, 3 规则组标签


@dataclass(frozen=True)
class CorpTag:
    """A corporate tag of a tag group."""

    id: str
    name: str


@dataclass(frozen=True)
class TagGroup:
    """A corporate tag group and its tags."""

    id: str
    name: str
    tags: tuple[CorpTag, ...] = ()


@dataclass(frozen=True)
class FollowUser:
    """A member who follows a contact, when they added it, and the corporate tag ids they
    have on it."""

    userid: str
    createtime: int
    tag_ids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ContactWay:
    """A 联系我 configuration: its id and QR code URL."""

    config_id: str
    qr_code: str


def _group(doc: dict[str, Any]) -> TagGroup:
    return TagGroup(id=str(doc["group_id"]), name=str(doc.get("group_name", "")),
                    tags=tuple(CorpTag(id=str(t["id"]), name=str(t["name"]))
                               for t in doc.get("tag") or [] if not t.get("deleted")))


class ContactsApi:
    """The customer-contact calls of one WeCom app."""

    def __init__(self, client: WeComClient) -> None:
        self.client = client

    # -- transport ---------------------------------------------------------------
    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """GET path with the shared token; refresh it once on 40001/42001 and retry once."""
        token = self.client.tokens.get()
        try:
            return self._get_once(path, params, token)
        except PlatformError as e:
            if e.errcode not in STALE_TOKEN_CODES:
                raise
            log.warning("%s: token rejected (%s); refreshing once", path, e.errcode)
        return self._get_once(path, params, self.client.tokens.refresh(token))

    def _get_once(self, path: str, params: dict[str, str], token: str) -> dict[str, Any]:
        try:
            resp = self.client.http.get(self.client.base + path,
                                        params={**params, "access_token": token})
            body = resp.json()
        except (httpx.HTTPError, ValueError) as e:
            raise UpstreamError(f"{path}: {type(e).__name__}") from e
        if not isinstance(body, dict):
            raise UpstreamError(f"{path}: unexpected answer")
        code = int(body.get("errcode", 0) or 0)
        if code:
            raise PlatformError(path, code, str(body.get("errmsg", "")))
        return body

    # -- tags --------------------------------------------------------------------
    def tag_groups(self, *, group_ids: Sequence[str] = ()) -> list[TagGroup]:
        """Return the corp's tag groups (all, or those of group_ids) with their live tags."""
        body = self.client.post("/cgi-bin/externalcontact/get_corp_tag_list",
                                {"group_id": list(group_ids)} if group_ids else {})
        return [_group(g) for g in body.get("tag_group") or [] if not g.get("deleted")]

    def add_tags(self, names: Sequence[str], *, group_id: str | None = None,
                 group_name: str | None = None) -> TagGroup:
        """Create tags (in group_id, or in the group called group_name, made if missing);
        return the group with the tags just made."""
        payload: dict[str, Any] = {"tag": [{"name": n} for n in names]}
        if group_id:
            payload["group_id"] = group_id
        else:
            payload["group_name"] = group_name
        body = self.client.post("/cgi-bin/externalcontact/add_corp_tag", payload)
        return _group(body["tag_group"])

    def mark_tag(self, *, userid: str, external_userid: str, add: Sequence[str] = (),
                 remove: Sequence[str] = ()) -> None:
        """Add and remove corporate tags on a member's contact (mark_tag, one call)."""
        self.client.post("/cgi-bin/externalcontact/mark_tag", {
            "userid": userid, "external_userid": external_userid,
            "add_tag": list(add), "remove_tag": list(remove)})

    def follow_users(self, external_userid: str) -> list[FollowUser]:
        """Return who follows a contact and the corporate tags each has on it."""
        body = self._get("/cgi-bin/externalcontact/get", {"external_userid": external_userid})
        return [FollowUser(userid=str(f["userid"]), createtime=int(f.get("createtime", 0)),
                           tag_ids=frozenset(str(t["tag_id"]) for t in f.get("tags") or []
                                             if int(t.get("type", CORP_TAG)) == CORP_TAG))
                for f in body.get("follow_user") or []]

    # -- 联系我, JS-SDK, member OAuth -----------------------------------------------
    def add_contact_way(self, *, userid: str, state: str) -> ContactWay:
        """Create a single-member 联系我 QR code for userid (type 1, scene 2: a QR code)."""
        body = self.client.post("/cgi-bin/externalcontact/add_contact_way", {
            "type": 1, "scene": 2, "style": 1, "skip_verify": True, "state": state[:30],
            "user": [userid]})
        return ContactWay(config_id=str(body["config_id"]), qr_code=str(body["qr_code"]))

    def agent_ticket(self) -> tuple[str, int]:
        """Return the agent's JS-SDK ticket (agentConfig) and its lifetime in seconds."""
        body = self._get("/cgi-bin/ticket/get", {"type": "agent_config"})
        return str(body["ticket"]), int(body.get("expires_in", 7200))

    def member_of_code(self, code: str) -> str:
        """Return the member userid a WeCom OAuth code names (auth/getuserinfo)."""
        body = self._get("/cgi-bin/auth/getuserinfo", {"code": code})
        userid = body.get("userid") or body.get("UserId")
        if not userid:
            raise UpstreamError("auth/getuserinfo: not a member of the corp")
        return str(userid)
