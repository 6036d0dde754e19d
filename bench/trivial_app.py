"""The HTTP floor: a FastAPI app that reads the request and answers a fixed body of the same
size as a 10-item recommendation, under the same uvicorn settings as `mingpian serve`.

    .venv/bin/python -m bench.trivial_app PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ITEM = {"id": "syn-0000001", "kind": "product", "title": "睡眠好物 1", "score": 0.61,
        "price_cents": 1990, "url": "https://mall.example.com/p/syn-0000001",
        "reason": "因为你最近聊到「睡眠」"}
BODY = {"items": [ITEM] * 10, "strategy": "profile"}


def create() -> FastAPI:
    """Return the trivial app."""
    app = FastAPI()

    @app.get("/v1/recommendations")
    def recommendations(request: Request) -> JSONResponse:
        _ = request.query_params.get("user_id")
        return JSONResponse(BODY)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(create(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
