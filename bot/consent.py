"""Who agreed to be profiled: the consent of external contacts, kept in the store.

WeCom asks each external contact whether their chat may be archived (会话内容存档): the
archive carries ``agree`` / ``disagree`` records and the app gets a ``change_external_contact``
event with ``ChangeType=msg_audit_approved`` (WECOM.md §2.5, §2.7). What mingpian writes
back to WeCom about a contact (tags, issue 15 point 3) is written only for contacts whose
latest answer is "agree"; a later "disagree" withdraws it.

Store: ``bot.consent/<external_userid>`` → ``{"agree": bool, "at": Unix seconds}``; the
newest answer wins, whatever order they are recorded in.
"""

from __future__ import annotations

from collections.abc import Iterator

from store import Batch, CommitResult, Store
from store.retry import AGAIN, Again, retry

NS_CONSENT = "bot.consent"


class ConsentBook:
    """Consent answers of external contacts (newest wins)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, external_userid: str, *, agree: bool, at: float) -> bool:
        """Keep an answer given at `at`; return False when a newer one is already kept."""

        def attempt(_: int) -> bool | Again:
            rec = self.store.get(NS_CONSENT, external_userid)
            if rec is not None and float(rec.doc.get("at", 0)) > at:
                return False
            batch = Batch(puts=[(NS_CONSENT, external_userid, {"agree": agree, "at": at})],
                          checks=[(NS_CONSENT, external_userid, rec.version if rec else 0)])
            return True if self.store.commit(batch) is CommitResult.OK else AGAIN

        return retry(attempt, what=f"the consent of {external_userid}")

    def has_consent(self, external_userid: str) -> bool:
        """Return whether the contact's latest answer is "agree"."""
        rec = self.store.get(NS_CONSENT, external_userid)
        return rec is not None and bool(rec.doc.get("agree"))

    def consented(self) -> Iterator[str]:
        """Yield every contact whose latest answer is "agree"."""
        for key, rec in self.store.scan(NS_CONSENT):
            if rec.doc.get("agree"):
                yield key

    def forget(self, external_userid: str) -> bool:
        """Delete a contact's answer (erasure); return whether there was one."""
        return self.store.delete(NS_CONSENT, external_userid)
