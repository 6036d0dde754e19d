"""Routes of the orders surface."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
