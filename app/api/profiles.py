"""Routes of the profiles surface (CONTRACTS §3): user and group profiles, user erasure."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from app.deps import ApiKey, IdentitiesDep, ProfilesDep, ServicesDep
from app.erasure import erase_user
from models.errors import NotFoundError
from models.ids import ID_PATTERN
from models.times import rfc3339
from nlp.profile import Profile, ProfileRepo

router = APIRouter(prefix="/v1", dependencies=[ApiKey], tags=["profiles"])

_ID = re.compile(ID_PATTERN)
IdPath = Annotated[str, Path(max_length=64)]


class TagWeightOut(BaseModel):
    """One tag of a profile."""

    tag: str
    weight: float
    last_seen: str  # RFC 3339 UTC


class UserProfileOut(BaseModel):
    """`GET /v1/users/{user_id}/profile`."""

    user_id: str
    tags: list[TagWeightOut]
    message_count: int
    updated_at: str  # RFC 3339 UTC


class GroupProfileOut(BaseModel):
    """`GET /v1/groups/{group_id}/profile`: the same, aggregated over the group's members."""

    group_id: str
    tags: list[TagWeightOut]
    message_count: int
    updated_at: str


class ErasureOut(BaseModel):
    """`DELETE /v1/users/{user_id}`."""

    user_id: str
    erased: list[str]  # the domains that erased what they held


def _tags(p: Profile) -> list[TagWeightOut]:
    return [TagWeightOut(tag=t.tag, weight=round(t.weight, 4), last_seen=rfc3339(t.last_seen))
            for t in p.tags if round(t.weight, 4) > 0]


def _profile_or_404(profiles: ProfileRepo, kind: str, id: str) -> Profile:
    p = profiles.get("user" if kind == "user" else "group", id) if _ID.match(id) else None
    if p is None:
        raise NotFoundError(f"no {kind} {id!r}")
    return p


@router.get("/users/{user_id}/profile", response_model=UserProfileOut)
def get_user_profile(user_id: IdPath, profiles: ProfilesDep,
                     identities: IdentitiesDep) -> UserProfileOut:
    """Return a person's interests, decayed to now (any linked id names the person, whose
    canonical id the answer carries); 404 for a user never seen."""
    person = identities.canonical(user_id) if _ID.match(user_id) else user_id
    p = _profile_or_404(profiles, "user", person)
    return UserProfileOut(user_id=person, tags=_tags(p), message_count=p.message_count,
                          updated_at=rfc3339(p.updated_at))


@router.get("/groups/{group_id}/profile", response_model=GroupProfileOut)
def get_group_profile(group_id: IdPath, profiles: ProfilesDep) -> GroupProfileOut:
    """Return what a group talks about now (its members' messages, decayed)."""
    p = _profile_or_404(profiles, "group", group_id)
    return GroupProfileOut(group_id=group_id, tags=_tags(p), message_count=p.message_count,
                           updated_at=rfc3339(p.updated_at))


@router.delete("/users/{user_id}", response_model=ErasureOut)
def delete_user(user_id: IdPath, services: ServicesDep) -> ErasureOut:
    """Erase everything held about a user (PIPL), leaving a tombstone that drops the user's
    earlier messages still queued anywhere; repeating it is harmless. A linked id erases
    the whole person: every id linked to it, and the links."""
    if not _ID.match(user_id):
        raise NotFoundError(f"no user {user_id!r}")
    return ErasureOut(user_id=user_id, erased=erase_user(services, user_id))
