#!/usr/bin/env python3
"""The okome planner flow from Python, with redis-py and nothing else.

    python3 okome_demo.py redis://127.0.0.1:6379/

Runs against a Redis server with the okome module loaded:

  1. OKOME.PLAN.GET    -> MISS with a lock token (this caller computes the plan)
  2. OKOME.PLAN.SET    -> STORED, with the token (the lock is released)
  3. OKOME.PLAN.GET    -> HIT with the plan
  4. OKOME.RATE  x 60  -> all allowed
  5. OKOME.RATE  #61   -> refused, with the exact retry-after

and prints one line per step. Exits 1 on any unexpected reply, 2 if the
server cannot be reached or does not know the okome commands.

Every run uses fresh names (a random run id in the prompt and the agents),
so it can be run again and again against the same server.
"""

import json
import re
import sys
import uuid

import redis

MODEL = "llama3:8b"
TOOLSET = "v1.2.3"
REPO = "abc123"
LIMIT = 60
WINDOW_S = 60


def fail(step, msg):
    print(f"FAIL {step}: {msg}", file=sys.stderr)
    sys.exit(1)


def plan_get(r, prompt, agent):
    """One OKOME.PLAN.GET: [status, key, value, ms, token, rate_remaining]."""
    reply = r.execute_command(
        "OKOME.PLAN.GET", MODEL, prompt, TOOLSET, REPO,
        "AGENT", agent, "LIMIT", LIMIT, "WINDOW", WINDOW_S,
    )
    if not isinstance(reply, list) or len(reply) != 6:
        fail("PLAN.GET", f"expected a 6-element array, got {reply!r}")
    return reply


def run(url):
    r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
    run_id = uuid.uuid4().hex[:12]
    prompt = f"Create a plan for the login page (demo run {run_id})"
    agent = f"demo-agent-{run_id}"

    # 1. A cold lookup: MISS, and the lock is ours.
    status, key, value, ms, token, remaining = plan_get(r, prompt, agent)
    if status != "MISS" or value is not None or not token:
        fail("PLAN.GET", f"expected MISS with a token, got {[status, key, value, ms, token]!r}")
    # The prompt hash is the key's Redis Cluster hash tag: {<64 hex>}.
    if not re.fullmatch(r"okome:planner:llama3%3A8b:\{[0-9a-f]{64}\}:" + re.escape(f"{TOOLSET}:{REPO}"), key):
        fail("PLAN.GET", f"unexpected key {key!r}")
    print(f"PLAN.GET MISS key={key} lock_ms={ms} token={token} rate_remaining={remaining}")

    # 2. Store the computed plan with the token: the lock is released.
    plan = json.dumps({"steps": ["open login.tsx", "add the form", "wire the submit"]})
    reply = r.execute_command(
        "OKOME.PLAN.SET", key, plan, "TOKEN", token, "AGENT", agent, "WLIMIT", 30,
    )
    if not isinstance(reply, list) or len(reply) != 4 or reply[0] != "STORED" or reply[3] != 1:
        fail("PLAN.SET", f"expected [STORED, ttl_ms, remaining, 1], got {reply!r}")
    print(f"PLAN.SET STORED ttl_ms={reply[1]} wbudget_remaining={reply[2]} lock_released={reply[3]}")

    # 3. The same lookup again: HIT, the plan as stored.
    status, key2, value, ms, token, remaining = plan_get(r, prompt, agent)
    if status != "HIT" or key2 != key or value != plan or token is not None:
        fail("PLAN.GET", f"expected HIT with the stored plan, got {[status, key2, value, ms, token]!r}")
    print(f"PLAN.GET HIT ttl_ms={ms} rate_remaining={remaining} plan={value}")

    # 4. An agent's rate window: LIMIT requests per WINDOW_S are admitted...
    rate_agent = f"demo-rate-{run_id}"
    for i in range(1, LIMIT + 1):
        allowed, left, retry_ms, _reset_ms = r.execute_command("OKOME.RATE", rate_agent, LIMIT, WINDOW_S)
        if allowed != 1 or left != LIMIT - i or retry_ms != 0:
            fail("RATE", f"request {i}: expected [1, {LIMIT - i}, 0, _], got {[allowed, left, retry_ms]!r}")
    print(f"RATE allowed {LIMIT}/{LIMIT} remaining=0")

    # 5. ...and the next one is refused, with how long to wait.
    allowed, left, retry_ms, reset_ms = r.execute_command("OKOME.RATE", rate_agent, LIMIT, WINDOW_S)
    if allowed != 0 or left != 0 or not 0 < retry_ms <= WINDOW_S * 1000:
        fail("RATE", f"request {LIMIT + 1}: expected [0, 0, retry_ms, _], got {[allowed, left, retry_ms, reset_ms]!r}")
    retry_after_s = -(-retry_ms // 1000)
    print(f"RATE refused request {LIMIT + 1} retry_after_ms={retry_ms} (Retry-After: {retry_after_s})")

    print("OK planner flow and rate limit behave as documented")


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} redis://HOST:PORT/", file=sys.stderr)
        return 2
    try:
        run(sys.argv[1])
    except redis.exceptions.ConnectionError as e:
        print(f"ERROR cannot reach {sys.argv[1]}: {e}", file=sys.stderr)
        return 2
    except redis.exceptions.ResponseError as e:
        print(f"ERROR the server refused a command (is the okome module loaded?): {e}", file=sys.stderr)
        return 2
    except redis.exceptions.RedisError as e:
        print(f"ERROR {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
