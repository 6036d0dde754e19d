"""The chat archive's HTTP helpers (WECOM.md §2.7), on the access token of the archive secret.

- ``msgaudit/check_single_agree``: whether an external contact agreed to be archived with a
  member (``Agree`` / ``Disagree`` / ``Default_Agree``; note the official misspelling
  ``exteranalopenid``).
- ``msgaudit/groupchat/get``: a group's name (internal groups only, per a public wrapper's
  error text; for other groups the call fails and the name stays unknown).

The token is the app client's (bot/platform.py): one per corp and secret, shared through the
store, refreshed once under a lock on 40001/42001.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bot.platform import WeComClient

log = logging.getLogger("mingpian.archive")

CHECK_SINGLE_AGREE = "/cgi-bin/msgaudit/check_single_agree"
GROUPCHAT_GET = "/cgi-bin/msgaudit/groupchat/get"
# At most 100 info entries per call: a C# SDK's comment (WECOM.md §2.7), UNCONFIRMED.
MAX_AGREE_PAIRS = 100
AGREE = "Agree"
DISAGREE = "Disagree"


@dataclass(frozen=True)
class Agreement:
    """One answer of check_single_agree."""

    userid: str
    external: str
    status: str  # Agree | Disagree | Default_Agree
    changed_at: float  # status_change_time, Unix seconds


class ArchiveApi:
    """The msgaudit HTTP calls of one corp."""

    def __init__(self, client: WeComClient) -> None:
        self.client = client

    def check_single_agree(self, pairs: Sequence[tuple[str, str]]) -> list[Agreement]:
        """Return the consent status of each (member userid, external_userid) pair."""
        out: list[Agreement] = []
        for i in range(0, len(pairs), MAX_AGREE_PAIRS):
            info = [{"userid": u, "exteranalopenid": e} for u, e in pairs[i:i + MAX_AGREE_PAIRS]]
            body = self.client.post(CHECK_SINGLE_AGREE, {"info": info})
            for row in body.get("agreeinfo") or []:
                if not isinstance(row, dict):
                    continue
                out.append(Agreement(userid=str(row.get("userid", "")),
                                     external=str(row.get("exteranalopenid", "")),
                                     status=str(row.get("agree_status", "")),
                                     changed_at=float(row.get("status_change_time") or 0)))
        return out

    def room_name(self, roomid: str) -> str:
        """Return a group's name (groupchat/get); UpstreamError when WeCom refuses."""
        body = self.client.post(GROUPCHAT_GET, {"roomid": roomid})
        return str(body.get("roomname", ""))
