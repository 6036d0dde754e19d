"""Routes of the profiles surface."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
