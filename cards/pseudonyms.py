"""Pseudonyms: how the plan (event log, referral graph, ledger) names users.

Why the ledger never holds a user id
------------------------------------
The ledger is hash-chained: an entry can never be edited without breaking `audit verify`.
PIPL erasure (`DELETE /v1/users/{id}`) still has to leave "ledger rows, with the user
pseudonymised". Rewriting rows would break the chain, and a pseudonym computed later from
the user id alone (HMAC with a fixed secret) is no erasure at all: whoever holds the secret
and the id can recompute it.

So every record of the plan family — the event log the ledger is rebuilt from, the referral
graph, the orders and the ledger itself — names a user only by a pseudonym chosen once, the
first time the user appears::

    salt      = 32 random bytes, kept in the user's alias record
    pseudonym = cards.ledger.pseudonymise(user_id, secret=salt)   # "anon:" + HMAC-SHA256 hex

Two records map between the two worlds: ``plan.alias/<user_id>`` (salt and pseudonym) and
``plan.anon/<pseudonym>`` (the user id). The HTTP views translate through them, so
`GET /v1/rewards?user_id=U` and `GET /v1/referrals/U` speak in user ids while the mapping
exists. Erasure deletes both records: the ledger, the graph and the event log stay byte for
byte what they were (the chain verifies, `ledger rebuild` replays to the same balances,
other people's rewards and their refunds keep working), but nothing links the pseudonym to
the person any more — the salt that produced it is gone and it was never derivable from the
id. A user who comes back after erasure gets a fresh salt, hence a fresh pseudonym.

The pseudonym is stored, not recomputed, so rotating any secret never changes it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from cards.ledger import PSEUDONYM_PREFIX, pseudonymise
from store import Batch, CommitResult, Store
from store.retry import AGAIN, Again, retry

NS_ALIAS = "plan.alias"  # user id -> {"pseudonym", "salt"}
NS_ANON = "plan.anon"  # pseudonym -> {"user_id"}


def is_pseudonym(name: str) -> bool:
    """Return whether a plan name is a pseudonym (rather than a user id)."""
    return name.startswith(PSEUDONYM_PREFIX)


@dataclass
class Resolution:
    """Pseudonyms for some user ids, plus the writes that create the missing ones.

    The writes go into the same `Batch` as whatever uses the pseudonyms (with `checks` that
    the aliases still do not exist), so a pseudonym is never used without being stored.
    """

    names: dict[str, str] = field(default_factory=dict)
    puts: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)
    checks: list[tuple[str, str, int]] = field(default_factory=list)

    def add_to(self, batch: Batch) -> Batch:
        """Return batch with the alias writes added."""
        batch.puts.extend(self.puts)
        batch.checks.extend(self.checks)
        return batch


class Pseudonyms:
    """Maps user ids to plan pseudonyms and back, over the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: str) -> str | None:
        """Return the user's pseudonym, or None if the user never reached the plan (or was erased)."""
        rec = self.store.get(NS_ALIAS, user_id)
        return None if rec is None else str(rec.doc["pseudonym"])

    def resolve(self, user_ids: Iterable[str]) -> Resolution:
        """Return pseudonyms for user_ids, drafting new aliases for users seen the first time."""
        wanted = sorted(set(user_ids))
        found = self.store.get_many(NS_ALIAS, wanted)
        res = Resolution()
        for uid in wanted:
            if uid in found:
                res.names[uid] = str(found[uid].doc["pseudonym"])
                continue
            salt = secrets.token_hex(32)
            name = pseudonymise(uid, secret=salt)
            res.names[uid] = name
            res.puts.append((NS_ALIAS, uid, {"pseudonym": name, "salt": salt}))
            res.puts.append((NS_ANON, name, {"user_id": uid}))
            res.checks.append((NS_ALIAS, uid, 0))
        return res

    def ensure(self, user_id: str) -> str:
        """Return the user's pseudonym, creating and storing it if needed."""

        def attempt(_: int) -> str | Again:
            res = self.resolve([user_id])
            if not res.puts or self.store.commit(res.add_to(Batch())) is CommitResult.OK:
                return res.names[user_id]
            return AGAIN

        return retry(attempt, what="a pseudonym")

    def user_ids(self, names: Iterable[str]) -> dict[str, str]:
        """Return pseudonym -> user id for the names still linked (erased ones are absent)."""
        wanted = sorted({n for n in names if is_pseudonym(n)})
        found = self.store.get_many(NS_ANON, wanted)
        return {n: str(r.doc["user_id"]) for n, r in found.items()}

    def is_linked(self, name: str) -> bool:
        """Return whether a pseudonym still maps to a user."""
        return self.store.get(NS_ANON, name) is not None

    def erase(self, user_id: str) -> bool:
        """Unlink the user from its pseudonym for good; return whether there was one."""
        rec = self.store.get(NS_ALIAS, user_id)
        if rec is None:
            return False
        name = str(rec.doc["pseudonym"])
        self.store.commit(Batch(deletes=[(NS_ALIAS, user_id), (NS_ANON, name)]))
        return True
