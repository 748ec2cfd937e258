"""The seed's Part C planner endpoint on okome.fastapi: the planner (one
round trip per hit, one computation per stampede) with its per-agent limit,
a per-IP limit, okome's exceptions as HTTP answers and a startup check.

    pip install './python[fastapi]' uvicorn
    OKOME_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn --app-dir examples/fastapi app:app
"""

from typing import Any

from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel

import okome.aio
import okome.fastapi
from okome.fastapi import Agent, RateLimit, RepoHash, client_host

app = FastAPI()
planner = okome.aio.Planner(okome.fastapi.install(app), limit=60, window=60)  # per agent


class PlanRequest(BaseModel):
    model: str
    prompt: str


async def compute_plan(body: PlanRequest) -> dict[str, Any]:  # your (slow) planner
    return {"model": body.model, "steps": [f"understand: {body.prompt}", "plan", "apply"]}


@app.post("/api/planner", dependencies=[Depends(RateLimit(600, 60, key=client_host, name="ip"))])
async def plan(body: PlanRequest, response: Response, agent: Agent, repo: RepoHash) -> Any:
    r = await planner.get_or_compute(
        body.model, body.prompt, "v1", repo, lambda: compute_plan(body), agent=agent
    )
    response.headers.update(r.headers)  # X-OKOME-Cache, -Cache-Key, -Agent-Rate-Remaining
    return r.plan
