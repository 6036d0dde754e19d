"""The chat archive's HTTP helpers on the WeCom stand-in (bot/standin.py): check_single_agree
and groupchat/get (WECOM.md §2.7), answering from what a test sets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from bot.archive.api import CHECK_SINGLE_AGREE, GROUPCHAT_GET, MAX_AGREE_PAIRS


class ArchiveStandIn:
    """Consent answers and group names, set by tests; token checked like every send."""

    def __init__(self, token_ok: Callable[[str], bool]) -> None:
        self.token_ok = token_ok
        self.agree: dict[tuple[str, str], tuple[str, int]] = {}  # (userid, external) → status
        self.rooms: dict[str, str] = {}  # roomid → roomname (internal groups only)
        self.agree_calls = 0
        self._lock = threading.Lock()

    def set_agree(self, userid: str, external: str, status: str, *, at: int = 0) -> None:
        """Answer check_single_agree for this pair with status (Agree, Disagree, …)."""
        with self._lock:
            self.agree[(userid, external)] = (status, at)

    def answer(self, method: str, path: str, query: dict[str, str],
               body: dict[str, Any] | None) -> dict[str, Any] | None:
        """Answer an archive call, or None when the path is not one."""
        if method != "POST" or path not in (CHECK_SINGLE_AGREE, GROUPCHAT_GET):
            return None
        if not self.token_ok(query.get("access_token", "")):
            return {"errcode": 40014, "errmsg": "invalid access_token"}
        body = body or {}
        if path == GROUPCHAT_GET:
            name = self.rooms.get(str(body.get("roomid", "")))
            if name is None:
                return {"errcode": 301052, "errmsg": "roomid 必填,且只能为内部群ID"}
            return {"errcode": 0, "errmsg": "ok", "roomname": name, "creator": "",
                    "room_create_time": 0, "notice": "", "members": []}
        info = body.get("info")
        if not isinstance(info, list) or not 0 < len(info) <= MAX_AGREE_PAIRS:
            return {"errcode": 40058, "errmsg": "invalid info"}
        rows = []
        with self._lock:
            self.agree_calls += 1
            for item in info:
                if not isinstance(item, dict):
                    continue
                u, e = str(item.get("userid", "")), str(item.get("exteranalopenid", ""))
                status, at = self.agree.get((u, e), ("Default_Agree", 0))
                rows.append({"status_change_time": at, "userid": u, "exteranalopenid": e,
                             "agree_status": status})
        return {"errcode": 0, "errmsg": "ok", "agreeinfo": rows}
