"""One person across WeChat, WeCom and the mall (issue 15): identity links.

A person has one *canonical* id (the mall user id the link was made for) and any number of
linked ids, each of a kind: a WeCom ``external_userid`` (a customer in a group), a WeCom
member ``userid``, an Official Account ``openid``, a ``unionid`` or another mall id. Every
user id the API takes, and the sender of every chat message, resolves through the links to
the canonical id, so one profile holds what all of them said and did.

The links live in the profiles' family (``profile.alias``: raw id → person, kind;
``profile.person``: canonical id → its ids), so one commit links ids *and* merges their
profiles: the linked id's profile is folded into the person's (decay-aware, message counts
added) and deleted, checked against the versions it read. A worker folding a message in
checks the version of its sender's link record in the same commit
(:meth:`nlp.profile.ProfileRepo.apply_many`), so a message and a link that race are each
applied once: either the message lands on the old profile, which the link then merges, or
it conflicts, re-reads and lands on the person's. Raw ids of different kinds share one key
space (they are the user ids messages and orders carry), so an id has one kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from models.errors import ConflictError, NotFoundError
from nlp.profile import NS_ALIAS, NS_PERSON, NS_USER, ProfileRepo, merge_docs
from nlp.signals import NS_BOUGHT
from store.base import Batch, CommitResult, Record, Store
from store.retry import AGAIN, Again, retry

IdKind = Literal["wecom_external", "wecom_user", "wechat_openid", "wechat_unionid", "mall"]
ID_KINDS: tuple[str, ...] = get_args(IdKind)
MAX_IDS = 20  # ids one person may carry (a person, not a segment)
_ATTEMPTS = 100


@dataclass(frozen=True)
class Person:
    """A canonical id and every id linked to it (the canonical one included), in link order."""

    id: str
    ids: list[tuple[str, str]]  # (kind, id)


@dataclass(frozen=True)
class LinkResult:
    """What a link did."""

    person: Person
    added: list[tuple[str, str]]  # ids linked now (the rest were linked already)
    merged: list[str]  # ids whose profiles were folded into the person's now


def canonical_of(store: Store, user_id: str) -> str:
    """Return the canonical id of the person this id belongs to (itself when unlinked): the
    one read a caller without an IdentityRepo (the bot's replier) needs."""
    rec = store.get(NS_ALIAS, user_id)
    return str(rec.doc["person"]) if rec is not None else user_id


class IdentityRepo:
    """Reads and writes identity links; merges the profiles of ids linked to one person."""

    def __init__(self, store: Store, *, profiles: ProfileRepo) -> None:
        self.store = store
        self.profiles = profiles

    # -- reads ------------------------------------------------------------------------
    def canonical(self, user_id: str) -> str:
        """Return the canonical id of the person this id belongs to (itself when unlinked)."""
        return canonical_of(self.store, user_id)

    def canonical_many(self, user_ids: Sequence[str]) -> dict[str, str]:
        """Return canonical(u) for each of these ids, in one read."""
        found = self.store.get_many(NS_ALIAS, list(dict.fromkeys(user_ids)))
        return {u: str(found[u].doc["person"]) if u in found else u for u in user_ids}

    def resolve(self, kind: str, id: str) -> str | None:
        """Return the canonical id an id of this kind is linked to, or None (not linked)."""
        rec = self.store.get(NS_ALIAS, id)
        if rec is None or rec.doc["kind"] != kind:
            return None
        return str(rec.doc["person"])

    def linked_ids(self, canonical_id: str) -> list[tuple[str, str]]:
        """Return every (kind, id) linked to this person, its own id included; [] when the
        id is no person's canonical id."""
        rec = self.store.get(NS_PERSON, canonical_id)
        return [(str(k), str(i)) for k, i in rec.doc["ids"]] if rec is not None else []

    def links(self, user_id: str) -> list[tuple[str, str]]:
        """Return every (kind, id) of the person this id (of any kind) belongs to; [] when
        it is linked to nothing."""
        return self.linked_ids(self.canonical(user_id))

    def person_of(self, user_id: str) -> Person | None:
        """Return the person this id (of any kind) belongs to, or None when it is unlinked."""
        person = self.canonical(user_id)
        ids = self.linked_ids(person)
        return Person(id=person, ids=ids) if ids else None

    def all_ids(self, user_id: str) -> list[str]:
        """Return every raw id of the person this id belongs to (just [user_id] when
        unlinked): what erasure must erase."""
        ids = [i for _, i in self.linked_ids(self.canonical(user_id))]
        return ids or [user_id]

    # -- writes -----------------------------------------------------------------------
    def link(self, user_id: str, ids: Sequence[tuple[str, str]]) -> LinkResult:
        """Link ids to the person of user_id (a new person with user_id as its mall id when
        unknown), merging each newly linked id's profile into the person's exactly once.

        ConflictError when an id is linked to another person or with another kind."""
        for kind, _ in ids:
            if kind not in ID_KINDS:
                raise ConflictError(f"unknown id kind {kind!r}")

        def attempt(_: int) -> LinkResult | Again:
            raw = list(dict.fromkeys([user_id, *(i for _, i in ids)]))
            aliases = self.store.get_many(NS_ALIAS, raw)
            own = aliases.get(user_id)
            person = str(own.doc["person"]) if own is not None else user_id
            prec = self.store.get(NS_PERSON, person)
            have: list[tuple[str, str]] = (
                [(str(k), str(i)) for k, i in prec.doc["ids"]] if prec is not None else [])
            wanted = list(ids) if any(i == person for _, i in ids) \
                else [("mall", person), *ids]
            added = _new_links(person, wanted, have, aliases)
            if not added:
                return LinkResult(person=Person(id=person, ids=have), added=[], merged=[])
            all_ids = [*have, *added]
            if len(all_ids) > MAX_IDS:
                raise ConflictError(f"a person carries at most {MAX_IDS} ids")
            batch, merged = self._link_batch(person, added, aliases, prec, all_ids)
            if self.store.commit(batch) is not CommitResult.OK:
                return AGAIN
            return LinkResult(person=Person(id=person, ids=all_ids), added=added,
                              merged=merged)

        result = retry(attempt, what=f"identity link for {user_id!r}", attempts=_ATTEMPTS)
        # Every linked id's purchases too (idempotent: a link repeated after a crash here
        # finishes the job).
        self._merge_purchases(result.person.id, [i for _, i in result.person.ids])
        return result

    def _merge_purchases(self, person: str, ids: Sequence[str]) -> None:
        """Move what the linked ids bought into the person's purchases, in one commit."""
        others = [i for i in ids if i != person]

        def attempt(_: int) -> Again | None:
            found = self.store.get_many(NS_BOUGHT, [person, *others])
            moved = [i for i in others if i in found]
            if not moved:
                return None
            own = found.get(person)
            items: dict[str, int] = dict(own.doc.get("items", {})) if own else {}
            again: dict[str, int] = dict(own.doc.get("again", {})) if own else {}
            n = {k: int((own.doc.get("n") or {}).get(k, 1)) for k in items} if own else {}
            batch = Batch(checks=[(NS_BOUGHT, person, own.version if own else 0)])
            for i in moved:
                doc = found[i].doc
                for k, ts in doc.get("items", {}).items():
                    items[k] = max(int(items.get(k, 0)), int(ts))
                    n[k] = n.get(k, 0) + int((doc.get("n") or {}).get(k, 1))
                for k, ts in doc.get("again", {}).items():
                    again[k] = max(int(again.get(k, 0)), int(ts))
                batch.deletes.append((NS_BOUGHT, i))
                batch.checks.append((NS_BOUGHT, i, found[i].version))
            batch.puts.append((NS_BOUGHT, person, {"items": items, "again": again, "n": n}))
            return None if self.store.commit(batch) is CommitResult.OK else AGAIN

        retry(attempt, what=f"purchases of {person!r}", attempts=_ATTEMPTS)

    def _link_batch(self, person: str, added: list[tuple[str, str]],
                    aliases: dict[str, Record], prec: Record | None,
                    all_ids: list[tuple[str, str]]) -> tuple[Batch, list[str]]:
        """Return the commit that links ``added`` and merges their profiles into the
        person's, and the ids whose profiles it merges."""
        others = [i for _, i in added if i != person]
        profiles = self.store.get_many(NS_USER, [person, *others])
        doc = profiles[person].doc if person in profiles else None
        merged: list[str] = []
        batch = Batch()
        for other in others:
            rec = profiles.get(other)
            if rec is not None:
                doc = rec.doc if doc is None else merge_docs(
                    doc, rec.doc, half_life_s=self.profiles.half_life_s)
                merged.append(other)
                batch.deletes.append((NS_USER, other))
            batch.checks.append((NS_USER, other, rec.version if rec else 0))
        own = profiles.get(person)
        batch.checks.append((NS_USER, person, own.version if own else 0))
        if merged and doc is not None:
            batch.puts.append((NS_USER, person, doc))
        for kind, i in added:
            batch.puts.append((NS_ALIAS, i, {"person": person, "kind": kind}))
            rec = aliases.get(i)
            batch.checks.append((NS_ALIAS, i, rec.version if rec else 0))
        batch.puts.append((NS_PERSON, person, {"ids": [list(p) for p in all_ids]}))
        batch.checks.append((NS_PERSON, person, prec.version if prec else 0))
        return batch, merged

    def unlink(self, kind: str, id: str) -> Person:
        """Unlink one id from its person (what was merged stays with the person); return the
        person as it is now. NotFoundError when not linked with this kind; ConflictError for
        the person's own id while others are linked to it."""

        def attempt(_: int) -> Person | Again:
            rec = self.store.get(NS_ALIAS, id)
            if rec is None or rec.doc["kind"] != kind:
                raise NotFoundError(f"no {kind} id {id!r} is linked")
            person = str(rec.doc["person"])
            prec = self.store.get(NS_PERSON, person)
            have = [(str(k), str(i)) for k, i in prec.doc["ids"]] if prec else []
            rest = [p for p in have if p[1] != id]
            if id == person and rest:
                raise ConflictError(
                    f"{id!r} is the person's own id: unlink the other ids first")
            batch = Batch(deletes=[(NS_ALIAS, id)], checks=[(NS_ALIAS, id, rec.version)])
            if rest:
                batch.puts.append((NS_PERSON, person, {"ids": [list(p) for p in rest]}))
            else:
                batch.deletes.append((NS_PERSON, person))
            batch.checks.append((NS_PERSON, person, prec.version if prec else 0))
            if self.store.commit(batch) is not CommitResult.OK:
                return AGAIN
            return Person(id=person, ids=rest)

        return retry(attempt, what=f"identity unlink of {id!r}", attempts=_ATTEMPTS)

    def forget(self, user_id: str) -> list[str]:
        """Delete every link of the person this id belongs to (erasure, after each id's
        profile is gone); return the raw ids that were linked."""

        def attempt(_: int) -> list[str] | Again:
            person = self.canonical(user_id)
            prec = self.store.get(NS_PERSON, person)
            if prec is None:
                return []
            ids = [str(i) for _, i in prec.doc["ids"]]
            batch = Batch(deletes=[(NS_PERSON, person), *((NS_ALIAS, i) for i in ids)],
                          checks=[(NS_PERSON, person, prec.version)])
            return ids if self.store.commit(batch) is CommitResult.OK else AGAIN

        return retry(attempt, what=f"identity erasure of {user_id!r}", attempts=_ATTEMPTS)


def _new_links(person: str, wanted: Sequence[tuple[str, str]],
               have: Sequence[tuple[str, str]], aliases: dict[str, Record]
               ) -> list[tuple[str, str]]:
    """Return the (kind, id) among wanted not yet linked to the person; ConflictError for
    one linked elsewhere or with another kind."""
    linked = dict((i, k) for k, i in have)
    added: list[tuple[str, str]] = []
    for kind, i in wanted:
        rec = aliases.get(i)
        if rec is not None and rec.doc["person"] != person:
            raise ConflictError(f"{i!r} is linked to another person; unlink it first")
        known = linked.get(i) or (str(rec.doc["kind"]) if rec is not None else None)
        if known is not None and known != kind:
            raise ConflictError(f"{i!r} is linked as {known}, not {kind}")
        if known is None and all(i != a for _, a in added):
            added.append((kind, i))
    return added
