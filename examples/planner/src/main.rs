//! okome-planner: the seed's planner endpoint, `POST /api/planner`, on the
//! okome Redis module.
//!
//! Each request makes ONE `OKOME.PLAN.GET ... AGENT a LIMIT n WINDOW s
//! WAIT ms REFRESHAHEAD ms` round trip, which charges the agent's rate
//! window, looks the plan up and, on a miss, takes the stampede lock, all
//! atomically in the server:
//!
//! - `HIT`: serve the cached plan.
//! - `REFRESH`: serve the cached plan now; recompute it in the background and
//!   store it with the lock token (exactly one caller gets `REFRESH`).
//! - `MISS` + token: this request is the leader: compute the plan (extending
//!   the lock while it runs), then one `OKOME.PLAN.SET key plan TOKEN t AGENT a
//!   WLIMIT n` stores it, releases the lock and answers every follower that
//!   was waiting in the server.
//! - `LOCKED`: the wait timed out: 503 with `Retry-After`.
//! - `LIMITED`: 429 with `Retry-After`.
//!
//! The plan computation is a stand-in: it sleeps, then builds a deterministic
//! JSON plan from the model and the prompt, and counts itself (`GET /stats`).

mod config;
mod pool;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use config::Config;
use pool::Pool;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CACHE: HeaderName = HeaderName::from_static("x-okome-cache");
const CACHE_KEY: HeaderName = HeaderName::from_static("x-okome-cache-key");
const RATE_REMAINING: HeaderName = HeaderName::from_static("x-okome-agent-rate-remaining");
const CACHE_WRITE: HeaderName = HeaderName::from_static("x-okome-cache-write");

/// How often a leader extends its lock while computing. The lock standard
/// is 8–10 s, so a few beats fit in every lock's lifetime.
const HEARTBEAT: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Stats {
    computations: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    refreshes: AtomicU64,
    locked: AtomicU64,
    limited: AtomicU64,
}

struct App {
    cfg: Config,
    redis: Pool,
    stats: Stats,
}

/// The reply of `OKOME.PLAN.GET`: `[status, key, value, ms, token, rate_remaining]`.
type PlanReply = (
    String,
    String,
    Option<Vec<u8>>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// The reply of `OKOME.PLAN.SET`: `[status, ttl_ms, wbudget_remaining, lock_released]`.
type SetReply = (String, Option<i64>, Option<i64>, i64);

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "error": self.1 }).to_string(),
        )
            .into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn redis_error(e: redis::RedisError) -> ApiError {
    eprintln!("okome-planner: redis: {e}");
    ApiError(StatusCode::BAD_GATEWAY, format!("redis: {e}"))
}

/// A required, non-empty header.
fn required_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    let v = headers
        .get(name)
        .ok_or_else(|| bad_request(format!("missing header {name}")))?;
    let v = v
        .to_str()
        .map_err(|_| bad_request(format!("header {name} must be visible ASCII")))?
        .trim();
    if v.is_empty() {
        return Err(bad_request(format!("header {name} is empty")));
    }
    Ok(v)
}

/// A non-empty string field of the request body.
fn field(body: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(bad_request(format!("'{name}' must be a non-empty string"))),
    }
}

struct PlanRequest {
    model: String,
    prompt: String,
    toolset_version: String,
    agent: String,
    repo_hash: String,
}

fn parse_request(cfg: &Config, headers: &HeaderMap, body: &[u8]) -> Result<PlanRequest, ApiError> {
    let agent = required_header(headers, "x-okome-agent")?.to_string();
    let repo_hash = required_header(headers, "x-repo-hash")?.to_string();
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    if !body.is_object() {
        return Err(bad_request("the body must be a JSON object"));
    }
    let model = field(&body, "model")?.ok_or_else(|| bad_request("'model' is required"))?;
    let prompt = field(&body, "prompt")?.ok_or_else(|| bad_request("'prompt' is required"))?;
    let toolset_version =
        field(&body, "toolset_version")?.unwrap_or_else(|| cfg.toolset_version.clone());
    Ok(PlanRequest {
        model,
        prompt,
        toolset_version,
        agent,
        repo_hash,
    })
}

/// `Retry-After` in whole seconds: `ms` rounded up, at least 1.
fn retry_after(ms: Option<i64>) -> i64 {
    let ms = ms.unwrap_or(1000).max(1);
    (ms + 999) / 1000
}

async fn planner(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    match plan(app, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn plan(app: Arc<App>, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let req = parse_request(&app.cfg, headers, body)?;
    let cfg = &app.cfg;
    let mut cmd = redis::cmd("OKOME.PLAN.GET");
    cmd.arg(&req.model)
        .arg(&req.prompt)
        .arg(&req.toolset_version)
        .arg(&req.repo_hash)
        .arg("AGENT")
        .arg(&req.agent)
        .arg("LIMIT")
        .arg(cfg.rate_limit)
        .arg("WINDOW")
        .arg(cfg.rate_window_s);
    if cfg.wait_ms > 0 {
        cmd.arg("WAIT").arg(cfg.wait_ms);
    }
    cmd.arg("REFRESHAHEAD").arg(cfg.refresh_ahead_ms);
    let (status, key, value, ms, token, rate_remaining): PlanReply =
        app.redis.query(&cmd).await.map_err(redis_error)?;

    let mut out = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&key) {
        out.insert(CACHE_KEY, v);
    }
    if let Some(n) = rate_remaining {
        out.insert(RATE_REMAINING, HeaderValue::from(n));
    }
    let json_body = |mut out: HeaderMap, cache: &'static str, plan: Vec<u8>| {
        out.insert(CACHE, HeaderValue::from_static(cache));
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        (StatusCode::OK, out, plan).into_response()
    };
    let refuse = |mut out: HeaderMap, code: StatusCode, msg: &str| {
        out.insert(header::RETRY_AFTER, HeaderValue::from(retry_after(ms)));
        (out, ApiError(code, msg.to_string())).into_response()
    };
    match (status.as_str(), value, token) {
        ("HIT", Some(plan), _) => {
            app.stats.hits.fetch_add(1, Ordering::Relaxed);
            Ok(json_body(out, "HIT", plan))
        }
        ("REFRESH", Some(plan), Some(token)) => {
            // Serve the plan now; exactly this caller recomputes it.
            app.stats.refreshes.fetch_add(1, Ordering::Relaxed);
            let app = app.clone();
            tokio::spawn(async move {
                let _ = lead(&app, &req, &key, Some(&token)).await;
            });
            Ok(json_body(out, "HIT", plan))
        }
        ("MISS", None, token) => {
            // The leader. The work runs in its own task so that the plan is
            // stored and the lock released even if this client hangs up.
            app.stats.misses.fetch_add(1, Ordering::Relaxed);
            let task = tokio::spawn({
                let app = app.clone();
                async move { lead(&app, &req, &key, token.as_deref()).await }
            });
            let (plan, write) = task.await.map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("planner task: {e}"),
                )
            })?;
            out.insert(CACHE_WRITE, HeaderValue::from_static(write));
            Ok(json_body(out, "MISS", plan.into_bytes()))
        }
        ("LOCKED", ..) => {
            app.stats.locked.fetch_add(1, Ordering::Relaxed);
            Ok(refuse(
                out,
                StatusCode::SERVICE_UNAVAILABLE,
                "another request is computing this plan; retry later",
            ))
        }
        ("LIMITED", ..) => {
            app.stats.limited.fetch_add(1, Ordering::Relaxed);
            Ok(refuse(
                out,
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded for this agent",
            ))
        }
        (other, ..) => Err(ApiError(
            StatusCode::BAD_GATEWAY,
            format!("unexpected OKOME.PLAN.GET reply '{other}'"),
        )),
    }
}

/// Computes the plan and stores it with one `OKOME.PLAN.SET`, releasing the
/// lock held with `token`. Returns the plan and the write's outcome
/// (`STORED`, `SKIPPED` when the agent's write budget is spent, or `ERROR`).
async fn lead(
    app: &App,
    req: &PlanRequest,
    key: &str,
    token: Option<&str>,
) -> (String, &'static str) {
    let plan = match token {
        Some(token) => compute_holding_lock(app, req, key, token).await,
        None => compute_plan(app, req).await,
    };
    let mut cmd = redis::cmd("OKOME.PLAN.SET");
    cmd.arg(key).arg(&plan);
    if let Some(token) = token {
        cmd.arg("TOKEN").arg(token);
    }
    cmd.arg("AGENT")
        .arg(&req.agent)
        .arg("WLIMIT")
        .arg(app.cfg.write_limit);
    let write = match app.redis.query::<SetReply>(&cmd).await {
        Ok((status, ..)) if status == "STORED" => "STORED",
        Ok(_) => "SKIPPED",
        Err(e) => {
            eprintln!("okome-planner: OKOME.PLAN.SET {key}: {e}");
            // Hand the lock to the next waiting follower now rather than
            // at its expiry.
            if let Some(token) = token {
                let mut unlock = redis::cmd("OKOME.UNLOCK");
                unlock.arg(key).arg(token);
                let _ = app.redis.query::<i64>(&unlock).await;
            }
            "ERROR"
        }
    };
    (plan, write)
}

/// Computes while extending the lock, so that a slow computation keeps it.
async fn compute_holding_lock(app: &App, req: &PlanRequest, key: &str, token: &str) -> String {
    let mut compute = std::pin::pin!(compute_plan(app, req));
    let start = tokio::time::Instant::now() + HEARTBEAT;
    let mut beat = tokio::time::interval_at(start, HEARTBEAT);
    loop {
        tokio::select! {
            plan = &mut compute => return plan,
            _ = beat.tick() => {
                let mut cmd = redis::cmd("OKOME.LOCK");
                cmd.arg(key).arg("TOKEN").arg(token);
                match app.redis.query::<i64>(&cmd).await {
                    Ok(1) => {}
                    Ok(_) => eprintln!("okome-planner: lost the lock on {key}"),
                    Err(e) => eprintln!("okome-planner: OKOME.LOCK {key}: {e}"),
                }
            }
        }
    }
}

/// The stand-in for the real planner: slow, deterministic, counted.
async fn compute_plan(app: &App, req: &PlanRequest) -> String {
    app.stats.computations.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(app.cfg.compute_delay_ms)).await;
    json!({
        "model": req.model,
        "prompt": req.prompt,
        "steps": [
            format!("understand the request: {}", req.prompt),
            format!("choose the tools {} can drive", req.model),
            "draft the plan",
            "review the plan",
        ],
    })
    .to_string()
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    let s = &app.stats;
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "computations": n(&s.computations),
            "hits": n(&s.hits),
            "misses": n(&s.misses),
            "refreshes": n(&s.refreshes),
            "locked": n(&s.locked),
            "limited": n(&s.limited),
        })
        .to_string(),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", config::usage());
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("okome-planner: {e}\n\n{}", config::usage());
            return ExitCode::from(2);
        }
    };
    let client = match redis::Client::open(cfg.redis_url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("okome-planner: bad REDIS_URL '{}': {e}", cfg.redis_url);
            return ExitCode::from(2);
        }
    };
    // Every call is bounded; the longest is a follower's WAIT.
    let redis = Pool::new(client, Duration::from_millis(cfg.wait_ms + 5000));
    // Fail at start, not on the first request, if okome is not there.
    let mut probe = redis::cmd("OKOME.KEY");
    probe.arg(&["planner", "model", "prompt", "v1", "repo"]);
    if let Err(e) = redis.query::<String>(&probe).await {
        eprintln!(
            "okome-planner: {} does not answer OKOME.KEY ({e}); is redis-server running with the okome module loaded?",
            cfg.redis_url
        );
        return ExitCode::FAILURE;
    }
    let listener = match tokio::net::TcpListener::bind(&cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("okome-planner: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("okome-planner: {e}");
            return ExitCode::FAILURE;
        }
    }
    let app = Arc::new(App {
        cfg,
        redis,
        stats: Stats::default(),
    });
    let router = Router::new()
        .route("/api/planner", post(planner))
        .route("/stats", get(stats))
        .with_state(app);
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("okome-planner: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::retry_after;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(Some(59_997)), 60);
        assert_eq!(retry_after(Some(1000)), 1);
        assert_eq!(retry_after(Some(1001)), 2);
        assert_eq!(retry_after(Some(1)), 1);
        assert_eq!(retry_after(Some(0)), 1);
        assert_eq!(retry_after(Some(-2)), 1);
        assert_eq!(retry_after(None), 1);
    }
}
