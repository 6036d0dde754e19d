"""The stand-in's customer-contact APIs (issue 15): tags, contacts, 联系我, OAuth, JS-SDK.

Part of the local WeCom / Official Account stand-in (bot/standin.py), kept in a file of its
own. It speaks what WECOM.md §3–§4 documents:

- ``externalcontact/get_corp_tag_list``, ``add_corp_tag`` (names ≤ 30 characters, one tag
  per name in a call, an existing name refused with 40071), ``mark_tag`` (the member must
  follow the contact: 84061; unknown tag 40068; unknown contact 40096; nothing to do 40058),
  ``externalcontact/get`` (the follow users and their corporate tags);
- ``externalcontact/add_contact_way`` → a ``config_id`` and a ``qr_code`` URL whose PNG it
  also serves (a real QR code);
- a per-API call limit in a time window (45009 "api freq out of limit", D90454), off unless
  set, with the highest count seen per window kept for tests;
- Official Account OAuth: ``/connect/oauth2/authorize`` redirects back with a one-use code
  for ``oauth_openid``; ``/sns/oauth2/access_token`` exchanges it (40029 invalid code,
  40163 code been used, 40125 wrong secret). With ``appid`` = the corp id the same page
  is WeCom's member OAuth, and ``/cgi-bin/auth/getuserinfo`` answers ``oauth_userid``;
- ``/cgi-bin/ticket/get?type=agent_config`` and a small JS-SDK (``/jssdk.js``) whose
  ``wx.agentConfig`` checks the page's signature against that ticket here (as WeCom's
  client does) and whose ``getCurExternalContact`` answers ``current_external_contact``.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import qrcode

if TYPE_CHECKING:
    from bot.standin import WeComStandIn

TAG_NAME_MAX = 30
CODE_TTL_S = 300
INVALID_CODE, CODE_USED = 40029, 40163
TAG_PATHS = ("/cgi-bin/externalcontact/get_corp_tag_list",
             "/cgi-bin/externalcontact/add_corp_tag", "/cgi-bin/externalcontact/mark_tag",
             "/cgi-bin/externalcontact/get")
Raw = tuple[int, dict[str, str], bytes]


def _ok(**fields: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **fields}


def _err(code: int, msg: str) -> dict[str, Any]:
    return {"errcode": code, "errmsg": msg}


def jsapi_signature(*, ticket: str, nonce: str, timestamp: str, url: str) -> str:
    """Return the JS-SDK signature WeCom checks (sha1 of the sorted, &-joined fields)."""
    text = f"jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url}"
    return hashlib.sha1(text.encode()).hexdigest()


class ContactsStandIn:
    """State and answers of the contact APIs; the owning stand-in routes requests here."""

    def __init__(self, owner: WeComStandIn, *, clock: Callable[[], float] = time.time) -> None:
        self.owner = owner
        self.clock = clock
        self.lock = threading.Lock()
        # external_userid → {"name", "follow": {userid: {"createtime", "tags": set(tag ids)}}}
        self.contacts: dict[str, dict[str, Any]] = {}
        # group_id → {"group_name", "create_time", "order", "tags": {tag_id: {"name", …}}}
        self.groups: dict[str, dict[str, Any]] = {}
        self.contact_ways: dict[str, dict[str, Any]] = {}
        self.oauth_openid = "oVisitor-0001"
        self.oauth_userid = "lifang"
        self.current_external_contact = ""
        self.jsapi_ticket = "tkt-" + secrets.token_hex(8)
        self.verified_signatures = 0
        self._codes: dict[str, tuple[str, str, float]] = {}  # code → (kind, who, expires)
        self._serial = 0
        self._fail: dict[str, list[int]] = {}
        # Call limit per API path per window (None = no limit), like WeCom's per-corp limits.
        self.rate_limit: int | None = None
        self.rate_window_s = 60.0
        self._window: dict[str, tuple[int, int]] = {}  # path → (window index, calls)
        self.max_in_window: dict[str, int] = {}
        self.refused_for_rate = 0

    # -- set-up ----------------------------------------------------------------
    def add_contact(self, external_userid: str, *, follow: str, name: str = "",
                    createtime: int = 1_700_000_000) -> None:
        """Make external_userid a customer of member `follow`."""
        with self.lock:
            c = self.contacts.setdefault(external_userid, {"name": name or external_userid,
                                                           "follow": {}})
            c["follow"].setdefault(follow, {"createtime": createtime, "tags": set()})

    def fail_next(self, path: str, errcode: int, times: int = 1) -> None:
        """Make the next `times` calls of path answer errcode."""
        with self.lock:
            self._fail.setdefault(path, []).extend([errcode] * times)

    def tags_of(self, external_userid: str, userid: str) -> set[str]:
        """Return the names of the corporate tags the member has on the contact."""
        with self.lock:
            ids = self.contacts[external_userid]["follow"][userid]["tags"]
            return {t["name"] for g in self.groups.values() for tid, t in g["tags"].items()
                    if tid in ids}

    def _next_id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial:06d}"

    # -- dispatch --------------------------------------------------------------
    def _limited(self, path: str) -> bool:
        """Count a call of path; return True when it is over the window's limit."""
        if self.rate_limit is None:
            return False
        window = int(self.clock() // self.rate_window_s)
        idx, n = self._window.get(path, (window, 0))
        n = n + 1 if idx == window else 1
        self._window[path] = (window, n)
        self.max_in_window[path] = max(self.max_in_window.get(path, 0), n)
        if n > self.rate_limit:
            self.refused_for_rate += 1
            return True
        return False

    def answer(self, method: str, path: str, query: dict[str, str],
               body: dict[str, Any] | None) -> dict[str, Any] | None:
        """Answer one of this file's JSON APIs, or None when path is not one of them."""
        if path == "/sns/oauth2/access_token" and method == "GET":
            return self._sns_token(query)
        handlers: dict[tuple[str, str], Callable[[dict[str, str], dict[str, Any]],
                                                 dict[str, Any]]] = {
            ("POST", TAG_PATHS[0]): self._tag_list, ("POST", TAG_PATHS[1]): self._add_tag,
            ("POST", TAG_PATHS[2]): self._mark_tag, ("GET", TAG_PATHS[3]): self._get_contact,
            ("POST", "/cgi-bin/externalcontact/add_contact_way"): self._add_contact_way,
            ("GET", "/cgi-bin/ticket/get"): self._ticket,
            ("GET", "/cgi-bin/auth/getuserinfo"): self._getuserinfo,
        }
        handler = handlers.get((method, path))
        if handler is None:
            return None
        with self.lock:
            if self._limited(path):
                return _err(45009, "api freq out of limit")
            fails = self._fail.get(path)
            if fails:
                return _err(fails.pop(0), "injected failure")
        if query.get("access_token") != self.owner.current_token:
            return _err(40014, "invalid access_token")
        with self.lock:
            return handler(query, body or {})

    def answer_raw(self, method: str, path: str, query: dict[str, str]) -> Raw | None:
        """Answer the non-JSON routes (redirects, the QR PNG, the JS-SDK), else None."""
        if method != "GET":
            return None
        if path == "/connect/oauth2/authorize":
            return self._authorize(query)
        if path.startswith("/qr/") and path.endswith(".png"):
            return self._qr_png(path[len("/qr/"):-len(".png")])
        if path == "/jssdk.js":
            return 200, {"content-type": "application/javascript"}, _JSSDK.encode()
        if path == "/jssdk/verify":
            ok = self._verify(query)
            return 200, {"content-type": "application/json",
                         "access-control-allow-origin": "*"}, json.dumps(ok).encode()
        return None

    # -- tags ------------------------------------------------------------------
    def _group_json(self, gid: str, g: dict[str, Any], only: set[str] | None) -> dict[str, Any]:
        return {"group_id": gid, "group_name": g["group_name"], "create_time": g["create_time"],
                "order": g["order"], "deleted": False,
                "tag": [{"id": tid, "name": t["name"], "create_time": t["create_time"],
                         "order": t["order"], "deleted": False}
                        for tid, t in g["tags"].items() if only is None or tid in only]}

    def _tag_list(self, _q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        group_ids = set(body.get("group_id") or [])
        tag_ids = set(body.get("tag_id") or [])
        out = []
        for gid, g in self.groups.items():
            if group_ids:  # with both given, tag_id is ignored (D92117)
                if gid in group_ids:
                    out.append(self._group_json(gid, g, None))
            elif tag_ids:
                if tag_ids & set(g["tags"]):
                    out.append(self._group_json(gid, g, tag_ids))
            else:
                out.append(self._group_json(gid, g, None))
        return _ok(tag_group=out)

    def _add_tag(self, _q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        names: list[str] = []
        for t in body.get("tag") or []:
            name = str(t.get("name", ""))
            if not name or len(name) > TAG_NAME_MAX:
                return _err(40058, "invalid tag name")
            if name not in names:  # one tag per name in a call (D92117)
                names.append(name)
        if not names:
            return _err(40058, "no empty tag groups")
        gid = body.get("group_id")
        if gid:
            if gid not in self.groups:
                return _err(40068, "invalid tagid")
        else:
            gname = str(body.get("group_name", ""))
            if not gname or len(gname) > TAG_NAME_MAX:
                return _err(40058, "invalid group name")
            gid = next((k for k, g in self.groups.items() if g["group_name"] == gname), None)
            if gid is None:
                gid = self._next_id("et_group_")
                self.groups[gid] = {"group_name": gname, "create_time": int(self.clock()),
                                    "order": int(body.get("order", 0)), "tags": {}}
        group = self.groups[gid]
        if any(t["name"] in names for t in group["tags"].values()):
            return _err(40071, "UserTag Name Already Exist")
        created = []
        for i, name in enumerate(names):
            tid = self._next_id("et_tag_")
            group["tags"][tid] = {"name": name, "create_time": int(self.clock()), "order": i}
            created.append(tid)
        return _ok(tag_group=self._group_json(gid, group, set(created)))

    def _mark_tag(self, _q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        contact = self.contacts.get(str(body.get("external_userid", "")))
        if contact is None:
            return _err(40096, "invalid external userid")
        follow = contact["follow"].get(str(body.get("userid", "")))
        if follow is None:
            return _err(84061, "not external contact")
        add, remove = list(body.get("add_tag") or []), list(body.get("remove_tag") or [])
        if not add and not remove:
            return _err(40058, "add_tag and remove_tag are both empty")
        known = {tid for g in self.groups.values() for tid in g["tags"]}
        if any(t not in known for t in add + remove):
            return _err(40068, "invalid tagid")
        follow["tags"] = (follow["tags"] | set(add)) - set(remove)
        return _ok()

    def _get_contact(self, query: dict[str, str], _b: dict[str, Any]) -> dict[str, Any]:
        ext = query.get("external_userid", "")
        contact = self.contacts.get(ext)
        if contact is None:
            return _err(40096, "invalid external userid")
        names = {tid: (g["group_name"], t["name"]) for g in self.groups.values()
                 for tid, t in g["tags"].items()}
        follow = [{"userid": uid, "remark": "", "createtime": f["createtime"],
                   "tags": [{"group_name": names[t][0], "tag_name": names[t][1],
                             "tag_id": t, "type": 1} for t in sorted(f["tags"]) if t in names]}
                  for uid, f in contact["follow"].items()]
        return _ok(external_contact={"external_userid": ext, "name": contact["name"],
                                     "type": 2}, follow_user=follow)

    # -- 联系我 ----------------------------------------------------------------
    def _add_contact_way(self, _q: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        users = body.get("user") or []
        if body.get("type") not in (1, 2) or body.get("scene") not in (1, 2) or not users:
            return _err(40058, "invalid parameter")
        if body.get("type") == 1 and len(users) != 1:
            return _err(40058, "a single-member contact way takes one user")
        config_id = self._next_id("cw")
        self.contact_ways[config_id] = dict(body)
        return _ok(config_id=config_id, qr_code=f"{self.owner.url}/qr/{config_id}.png")

    def _qr_png(self, config_id: str) -> Raw:
        if config_id not in self.contact_ways:
            return 404, {"content-type": "text/plain"}, b"no such contact way"
        img = qrcode.make(f"https://work.weixin.qq.com/ca/{config_id}", box_size=6, border=2)
        buf = io.BytesIO()
        img.save(buf)
        return 200, {"content-type": "image/png"}, buf.getvalue()

    # -- OAuth -----------------------------------------------------------------
    def _authorize(self, query: dict[str, str]) -> Raw:
        appid, redirect = query.get("appid", ""), query.get("redirect_uri", "")
        if query.get("response_type") != "code" or not redirect or query.get("scope") not in (
                "snsapi_base", "snsapi_userinfo", "snsapi_privateinfo"):
            return 400, {"content-type": "text/plain"}, b"invalid authorize request"
        if appid == self.owner.app_id:
            kind, who = "oa", self.oauth_openid
        elif appid == self.owner.corp_id:
            kind, who = "wecom", self.oauth_userid
        else:
            return 400, {"content-type": "text/plain"}, b"invalid appid"
        code = secrets.token_urlsafe(24)
        with self.lock:
            self._codes[code] = (kind, who, self.clock() + CODE_TTL_S)
        sep = "&" if urlsplit(redirect).query else "?"
        location = redirect + sep + urlencode({"code": code, "state": query.get("state", "")})
        return 302, {"location": location}, b""

    def _take_code(self, code: str, kind: str) -> str | int:
        """Return who a code names (spending it), or the errcode that refuses it (the
        caller holds the lock)."""
        got = self._codes.get(code)
        if got is None or got[0] != kind or got[2] < self.clock():
            return INVALID_CODE
        if got[1] == "":
            return CODE_USED
        self._codes[code] = (kind, "", got[2])
        return got[1]

    def _sns_token(self, query: dict[str, str]) -> dict[str, Any]:
        if query.get("appid") != self.owner.app_id or query.get(
                "secret") != self.owner.app_secret:
            return _err(40125, "invalid appsecret")
        if query.get("grant_type") != "authorization_code":
            return _err(40002, "invalid grant_type")
        with self.lock:
            who = self._take_code(query.get("code", ""), "oa")
        if isinstance(who, int):
            return _err(who, "invalid code" if who == INVALID_CODE else "code been used")
        return _ok(access_token="sns-" + secrets.token_hex(8), expires_in=7200,
                   refresh_token="r-" + secrets.token_hex(8), openid=who, scope="snsapi_base")

    def _getuserinfo(self, query: dict[str, str], _b: dict[str, Any]) -> dict[str, Any]:
        who = self._take_code(query.get("code", ""), "wecom")
        if isinstance(who, int):
            return _err(who, "invalid code")
        return _ok(userid=who)

    # -- JS-SDK ----------------------------------------------------------------
    def _ticket(self, query: dict[str, str], _b: dict[str, Any]) -> dict[str, Any]:
        if query.get("type") != "agent_config":
            return _err(40058, "invalid type")
        return _ok(ticket=self.jsapi_ticket, expires_in=7200)

    def _verify(self, query: dict[str, str]) -> dict[str, Any]:
        expected = jsapi_signature(ticket=self.jsapi_ticket, nonce=query.get("nonceStr", ""),
                                   timestamp=query.get("timestamp", ""),
                                   url=query.get("url", "").split("#")[0])
        ok = (query.get("corpid") == self.owner.corp_id
              and secrets.compare_digest(expected, query.get("signature", "")))
        if ok:
            with self.lock:
                self.verified_signatures += 1
        return {"ok": ok, "userId": self.current_external_contact if ok else ""}


# A JS-SDK of the size the sidebar needs: agentConfig asks this server to check the
# signature (WeCom's client checks it against the same ticket), then getCurExternalContact
# answers the customer of the chat the sidebar was opened from.
_JSSDK = """(function(){
var base=(document.currentScript&&document.currentScript.src||"").replace(/\\/jssdk\\.js.*$/,"");
var state={ok:false,userId:""};
window.wx={
 agentConfig:function(o){
  var q="corpid="+encodeURIComponent(o.corpid)+"&agentid="+encodeURIComponent(o.agentid)
   +"&timestamp="+encodeURIComponent(o.timestamp)+"&nonceStr="+encodeURIComponent(o.nonceStr)
   +"&signature="+encodeURIComponent(o.signature)+"&url="+encodeURIComponent(location.href.split("#")[0]);
  fetch(base+"/jssdk/verify?"+q).then(function(r){return r.json()}).then(function(j){
   state=j;if(j.ok){o.success&&o.success({errMsg:"agentConfig:ok"})}
   else{o.fail&&o.fail({errMsg:"agentConfig:fail invalid signature"})}
  },function(){o.fail&&o.fail({errMsg:"agentConfig:fail network"})});
 },
 invoke:function(name,args,cb){
  if(!state.ok){cb({err_msg:name+":fail no permission"});return}
  if(name==="getCurExternalContact"){cb({err_msg:name+":ok",userId:state.userId});return}
  if(name==="getContext"){cb({err_msg:name+":ok",entry:"single_chat_tools"});return}
  cb({err_msg:name+":fail unsupported"});
 }
};
})();
"""
