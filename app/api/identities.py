"""Identity links (issue 15, CONTRACTS §8): one person across WeChat, WeCom and the mall."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ApiKey, IdentitiesDep
from models.errors import NotFoundError
from models.ids import ID_PATTERN, Id
from nlp.identity import MAX_IDS, IdKind, Person

router = APIRouter(prefix="/v1/identities", dependencies=[ApiKey], tags=["identities"])

IdPath = Annotated[str, Path(pattern=ID_PATTERN)]


class LinkedId(BaseModel):
    """One id of a person."""

    model_config = ConfigDict(extra="forbid")

    kind: IdKind
    id: Id


class LinkIn(BaseModel):
    """Body of `POST /v1/identities/link`."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id  # the mall id (or any id already linked to the person)
    ids: Annotated[list[LinkedId], Field(min_length=1, max_length=MAX_IDS)]


class PersonOut(BaseModel):
    """A person: the canonical id every linked id resolves to, and those ids."""

    user_id: str
    ids: list[LinkedId]


class LinkOut(PersonOut):
    """Answer of `POST /v1/identities/link`."""

    added: list[LinkedId]  # linked now; the others were linked already
    merged: list[str]  # ids whose profiles were merged into the person's now


def _ids(pairs: list[tuple[str, str]]) -> list[LinkedId]:
    return [LinkedId.model_validate({"kind": k, "id": i}) for k, i in pairs]


def _person(p: Person) -> PersonOut:
    return PersonOut(user_id=p.id, ids=_ids(p.ids))


@router.post("/link", response_model=LinkOut)
def link(body: LinkIn, identities: IdentitiesDep) -> LinkOut:
    """Link ids to the person of `user_id`, merging their profiles into the person's once;
    409 when an id is linked to another person (unlink it first) or with another kind."""
    result = identities.link(body.user_id, [(i.kind, i.id) for i in body.ids])
    return LinkOut(user_id=result.person.id, ids=_ids(result.person.ids),
                   added=_ids(result.added), merged=result.merged)


@router.get("/{kind}/{id}", response_model=PersonOut)
def get_identity(kind: IdKind, id: IdPath, identities: IdentitiesDep) -> PersonOut:
    """Return the person an id of this kind is linked to; 404 when it is not linked."""
    person = identities.resolve(kind, id)
    if person is None:
        raise NotFoundError(f"no {kind} id {id!r} is linked")
    return PersonOut(user_id=person, ids=_ids(identities.linked_ids(person)))


@router.delete("/{kind}/{id}", response_model=PersonOut)
def unlink(kind: IdKind, id: IdPath, identities: IdentitiesDep) -> PersonOut:
    """Unlink one id (what it brought stays with the person); return the person now. 409
    for the person's own id while other ids are linked to it."""
    return _person(identities.unlink(kind, id))
