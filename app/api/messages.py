"""Routes of the messages surface."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
