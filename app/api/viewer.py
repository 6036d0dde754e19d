"""`POST /v1/viewer-tokens`: the mall vouches for a signed-in viewer of the card pages (§6)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ApiKey, CardsDep, IdentitiesDep
from models.ids import Id
from models.times import rfc3339

router = APIRouter()


class ViewerTokenIn(BaseModel):
    """Body of `POST /v1/viewer-tokens`."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    # Capped at MINGPIAN_VIEWER_TOKEN_MAX_TTL_S; the answer says what was granted.
    ttl_s: int = Field(default=3600, gt=0)


@router.post("/v1/viewer-tokens", dependencies=[ApiKey], tags=["cards"])
def create_viewer_token(body: ViewerTokenIn, cards: CardsDep,
                        identities: IdentitiesDep) -> JSONResponse:
    """Return a signed token naming the viewer (the person, when the id is linked); card and
    share pages accept it as `?vt=`."""
    token, expires_at = cards.issue_viewer_token(identities.canonical(body.user_id),
                                                 ttl_s=body.ttl_s)
    return JSONResponse({
        "token": token,
        "expires_at": rfc3339(expires_at),
        "ttl_s": expires_at - int(cards.clock()),
    })
