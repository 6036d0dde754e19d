"""Routes of the recommend surface."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
