"""Routes of the cards surface."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
