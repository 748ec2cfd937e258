"""The seed's planner endpoint (Phase 3, Part C) on okome, with FastAPI.

    OKOME_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn planner_example:app --port 8000

``POST /api/planner`` with a JSON body ``{"model": ..., "prompt": ...,
"toolset_version"?: ...}`` and the headers ``X-OKOME-Agent`` and
``X-Repo-Hash``. One ``OKOME.PLAN.GET ... AGENT ... WAIT ... REFRESHAHEAD``
per request: a hit is one round trip; a miss computes the plan (once, however
many requests ask for it at the same time) and stores it with one
``OKOME.PLAN.SET ... TOKEN ... AGENT ... WLIMIT``. Answers carry
``X-OKOME-Cache`` (``HIT``/``MISS``), ``X-OKOME-Cache-Key`` and
``X-OKOME-Agent-Rate-Remaining``; an agent over 60 requests a minute gets
``429`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aredis
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import okome
import okome.aio

RATE_LIMIT = int(os.environ.get("PLANNER_RATE_LIMIT", "60"))  # requests per agent per window
RATE_WINDOW_S = int(os.environ.get("PLANNER_RATE_WINDOW", "60"))
WRITE_LIMIT = int(os.environ.get("PLANNER_WRITE_LIMIT", "30"))  # cache writes per agent per minute
TOOLSET_VERSION = os.environ.get("PLANNER_TOOLSET_VERSION", "v1")
COMPUTE_DELAY_MS = int(os.environ.get("PLANNER_COMPUTE_DELAY_MS", "0"))


class PlanRequest(BaseModel):
    model: str
    prompt: str
    toolset_version: str | None = None


async def compute_plan(model: str, prompt: str, toolset_version: str) -> dict[str, Any]:
    """A stand-in for the real (slow, LLM-backed) planner."""
    await asyncio.sleep(COMPUTE_DELAY_MS / 1000)
    return {
        "model": model,
        "toolset_version": toolset_version,
        "steps": [f"understand: {prompt}", "plan the changes", "apply and test"],
    }


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    client = aredis.Redis.from_url(okome.redis_url())  # OKOME_REDIS_URL
    app.state.planner = okome.aio.Planner(
        client, limit=RATE_LIMIT, window=RATE_WINDOW_S, write_limit=WRITE_LIMIT
    )
    try:
        yield
    finally:
        await app.state.planner.wait_background(timeout=30)
        await client.aclose()


app = FastAPI(title="OKOME planner on okome", lifespan=lifespan)


@app.exception_handler(okome.PlannerError)
async def planner_refused(_request: Request, e: okome.PlannerError) -> JSONResponse:
    # RateLimited: 429 + Retry-After; PlanLocked (the wait timed out): 503 + Retry-After.
    return JSONResponse({"detail": str(e)}, status_code=e.status_code, headers=e.headers)


@app.post("/api/planner")
async def planner(
    body: PlanRequest,
    x_okome_agent: str | None = Header(default=None),
    x_repo_hash: str | None = Header(default=None),
) -> JSONResponse:
    if not x_okome_agent or not x_repo_hash:
        raise HTTPException(status_code=400, detail="X-OKOME-Agent and X-Repo-Hash are required")
    toolset = body.toolset_version or TOOLSET_VERSION
    result = await app.state.planner.get_or_compute(
        body.model,
        body.prompt,
        toolset,
        x_repo_hash,  # part of the key: a plan never leaks across repositories
        lambda: compute_plan(body.model, body.prompt, toolset),
        agent=x_okome_agent,
    )
    return JSONResponse(result.plan, headers=dict(result.headers))
