"""Routes of the catalog surface."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
