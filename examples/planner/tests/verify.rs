//! The seed's "Verification" against a real redis-server with okome loaded
//! and the real `okome-planner` binary: MISS then HIT with the same key, the
//! 61st request of an agent within a minute gets 429, and 25 concurrent cold
//! requests compute the plan exactly once. Every process is killed by a
//! `Drop` guard.

use okome_testkit::Server;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// redis-server with the module: `okome_testkit::Server` (the workspace's test
// harness: OKOME_MODULE, REDIS_SERVER, a free port below 55535, killed on drop)

static COUNTER: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------
// The planner binary

struct Planner {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Planner {
    /// Starts `okome-planner` on a free port against `redis`, with extra flags.
    fn start(redis: &Server, flags: &[&str]) -> Planner {
        let log = redis.dir.join(format!(
            "planner-{}.log",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let stderr = std::fs::File::create(&log).expect("planner log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_okome-planner"))
            .args(["--redis-url", &redis.url(), "--listen", "127.0.0.1:0"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn okome-planner");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        let mut planner = Planner {
            child,
            base: String::new(),
            log,
        };
        let Some(addr) = first.trim().strip_prefix("listening on ") else {
            panic!(
                "okome-planner printed {first:?} instead of 'listening on ADDR'; stderr:\n{}",
                planner.log()
            );
        };
        planner.base = format!("http://{addr}");
        // Keep draining stdout so the planner can never block on it.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        planner
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Planner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("okome-planner stderr:\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn cache(&self) -> &str {
        self.header("x-okome-cache").unwrap_or("<none>")
    }

    fn key(&self) -> &str {
        self.header("x-okome-cache-key").unwrap_or("<none>")
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.body)
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// `POST /api/planner` with the seed's headers (each only if given).
async fn post(
    http: &reqwest::Client,
    p: &Planner,
    agent: Option<&str>,
    repo: Option<&str>,
    body: &Value,
) -> Reply {
    let mut req = http.post(format!("{}/api/planner", p.base)).json(body);
    if let Some(a) = agent {
        req = req.header("X-OKOME-Agent", a);
    }
    if let Some(r) = repo {
        req = req.header("X-Repo-Hash", r);
    }
    let resp = req.send().await.expect("POST /api/planner");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.expect("body"),
    }
}

async fn computations(http: &reqwest::Client, p: &Planner) -> u64 {
    let v: Value = http
        .get(format!("{}/stats", p.base))
        .send()
        .await
        .expect("GET /stats")
        .json()
        .await
        .expect("stats JSON");
    v["computations"].as_u64().expect("computations")
}

/// One counter of `INFO okome` (`okome_<name>`).
fn info(r: &Server, name: &str) -> u64 {
    let text: String = redis::cmd("INFO")
        .arg("okome")
        .query(&mut r.conn())
        .expect("INFO");
    let prefix = format!("okome_{name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in INFO okome:\n{text}"))
}

fn pttl(r: &Server, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query(&mut r.conn())
        .expect("PTTL")
}

// ---------------------------------------------------------------------------

/// The seed's "Test Cache Integration" and "Test Budget Enforcement".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_verification_miss_hit_and_61st_request_limited() {
    let redis = Server::start();
    let p = Planner::start(&redis, &[]);
    let http = http();
    let body = json!({"model": "gpt-4", "prompt": "test"});
    let before = computations(&http, &p).await;

    let first = post(&http, &p, Some("test-agent"), Some("abc123"), &body).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.cache(), "MISS", "{first:?}");
    assert_eq!(first.header("x-okome-cache-write"), Some("STORED"));
    assert_eq!(first.header("x-okome-agent-rate-remaining"), Some("59"));
    // The key is the module's own, for this tuple (toolset_version defaults to v1).
    let expected: String = redis::cmd("OKOME.KEY")
        .arg(&["planner", "gpt-4", "test", "v1", "abc123"])
        .query(&mut redis.conn())
        .expect("OKOME.KEY");
    assert_eq!(first.key(), expected);
    let plan: Value = serde_json::from_str(&first.body).expect("the plan is JSON");
    assert_eq!(plan["model"], "gpt-4");
    assert_eq!(plan["prompt"], "test");

    let second = post(&http, &p, Some("test-agent"), Some("abc123"), &body).await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.cache(), "HIT", "{second:?}");
    assert_eq!(second.key(), first.key());
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("x-okome-agent-rate-remaining"), Some("58"));
    assert_eq!(computations(&http, &p).await - before, 1);

    // What the seed's "Check Redis Keys" shows: the plan with its TTL, no
    // lock left behind.
    let ttl = pttl(&redis, first.key());
    assert!((590_000..=600_000).contains(&ttl), "plan PTTL {ttl}");
    assert_eq!(pttl(&redis, &format!("{}:lock", first.key())), -2);

    // Another repository never sees this plan.
    let other = post(&http, &p, Some("test-agent"), Some("def456"), &body).await;
    assert_eq!(other.cache(), "MISS", "{other:?}");
    assert_ne!(other.key(), first.key());

    // "Make 61 requests in 60 seconds": a fresh agent gets 60, then 429.
    let started = Instant::now();
    for i in 1..=60 {
        let r = post(&http, &p, Some("agent-61"), Some("abc123"), &body).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        let remaining = (60 - i).to_string();
        assert_eq!(r.header("x-okome-agent-rate-remaining"), Some(&*remaining));
    }
    let limited = post(&http, &p, Some("agent-61"), Some("abc123"), &body).await;
    assert!(started.elapsed() < Duration::from_secs(50));
    assert_eq!(limited.status, 429, "request 61: {limited:?}");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(limited.header("x-okome-agent-rate-remaining"), Some("0"));
    assert_eq!(limited.key(), first.key());
    // Other agents are not affected.
    let ok = post(&http, &p, Some("test-agent"), Some("abc123"), &body).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.cache(), "HIT");
}

/// 25 concurrent cold requests for one plan: one leader computes it, the 24
/// followers wait inside the server and get it the moment it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_concurrent_cold_requests_compute_once() {
    let redis = Server::start();
    let p = Planner::start(&redis, &["--compute-delay-ms", "500"]);
    let http = http();
    let before = computations(&http, &p).await;
    let body =
        json!({"model": "llama3:8b", "prompt": "plan the login page", "toolset_version": "v1.2.3"});
    let mut tasks = Vec::new();
    for i in 0..25 {
        let (http, body, base) = (http.clone(), body.clone(), p.base.clone());
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{base}/api/planner"))
                .header("X-OKOME-Agent", format!("agent-{i}"))
                .header("X-Repo-Hash", "abc123")
                .json(&body)
                .send()
                .await
                .expect("POST");
            Reply {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                body: resp.text().await.expect("body"),
            }
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("request task"));
    }
    for r in &replies {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, replies[0].body, "every caller gets the same plan");
        assert_eq!(r.key(), replies[0].key());
    }
    let misses = replies.iter().filter(|r| r.cache() == "MISS").count();
    let hits = replies.iter().filter(|r| r.cache() == "HIT").count();
    assert_eq!((misses, hits), (1, 24));
    assert_eq!(computations(&http, &p).await - before, 1);
    // The followers waited inside the server (no polling) and were answered
    // by the leader's PLAN.SET; none timed out.
    assert!(info(&redis, "wait_woken_hit") >= 1);
    assert_eq!(info(&redis, "wait_timed_out"), 0);
    assert_eq!(info(&redis, "waiting_clients"), 0);
    // The prompt hash is the key's Redis Cluster hash tag.
    let hash = replies[0]
        .key()
        .strip_prefix("okome:planner:llama3%3A8b:{")
        .and_then(|k| k.strip_suffix("}:v1.2.3:abc123"))
        .unwrap_or_else(|| panic!("unexpected key {}", replies[0].key()));
    assert_eq!(hash.len(), 64, "{hash}");
    assert!(hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
}

/// A follower whose wait times out gets 503 + Retry-After; a plan close to
/// expiry is served at once and refreshed by exactly one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_gets_503_and_refresh_serves_then_recomputes() {
    let redis = Server::start();
    // Every hit is "close to expiry" with REFRESHAHEAD above the plan TTL.
    let p = Planner::start(
        &redis,
        &[
            "--compute-delay-ms",
            "1000",
            "--wait-ms",
            "100",
            "--refresh-ahead-ms",
            "900000",
        ],
    );
    let http = http();
    let body = json!({"model": "m", "prompt": "slow plan"});
    let leader = tokio::spawn({
        let (http, base, body) = (http.clone(), p.base.clone(), body.clone());
        async move {
            let r = http
                .post(format!("{base}/api/planner"))
                .header("X-OKOME-Agent", "a")
                .header("X-Repo-Hash", "r")
                .json(&body)
                .send()
                .await
                .expect("POST");
            (r.status().as_u16(), r.headers().clone())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let locked = post(&http, &p, Some("b"), Some("r"), &body).await;
    assert_eq!(locked.status, 503, "{locked:?}");
    let retry: u64 = locked
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    let (status, headers) = leader.await.expect("leader");
    assert_eq!(status, 200);
    assert_eq!(headers["x-okome-cache"], "MISS");
    assert_eq!(computations(&http, &p).await, 1);

    // REFRESH: served now (well under the 1 s compute), recomputed behind.
    let t = Instant::now();
    let r = post(&http, &p, Some("c"), Some("r"), &body).await;
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    assert_eq!((r.status, r.cache()), (200, "HIT"), "{r:?}");
    // While it recomputes, everyone else gets HIT and starts nothing.
    let r2 = post(&http, &p, Some("d"), Some("r"), &body).await;
    assert_eq!((r2.status, r2.cache()), (200, "HIT"), "{r2:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while computations(&http, &p).await < 2 {
        assert!(Instant::now() < deadline, "the refresh never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The refreshed plan was stored and the lock released.
    let lock = format!("{}:lock", r.key());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pttl(&redis, &lock) != -2 {
        assert!(
            Instant::now() < deadline,
            "the refresh lock was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pttl(&redis, r.key()) > 590_000);
    assert_eq!(computations(&http, &p).await, 2);
}

/// A spent write budget still serves the computed plan, but stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_write_budget_serves_but_does_not_store() {
    let redis = Server::start();
    let p = Planner::start(&redis, &["--write-limit", "1", "--compute-delay-ms", "0"]);
    let http = http();
    let a = post(
        &http,
        &p,
        Some("w"),
        Some("r"),
        &json!({"model": "m", "prompt": "one"}),
    )
    .await;
    assert_eq!((a.status, a.cache()), (200, "MISS"));
    assert_eq!(a.header("x-okome-cache-write"), Some("STORED"));
    let b = post(
        &http,
        &p,
        Some("w"),
        Some("r"),
        &json!({"model": "m", "prompt": "two"}),
    )
    .await;
    assert_eq!((b.status, b.cache()), (200, "MISS"), "{b:?}");
    assert_eq!(b.header("x-okome-cache-write"), Some("SKIPPED"));
    assert!(b.body.contains("\"two\""));
    assert_eq!(pttl(&redis, b.key()), -2, "nothing stored");
    assert_eq!(
        pttl(&redis, &format!("{}:lock", b.key())),
        -2,
        "lock released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400() {
    let redis = Server::start();
    let p = Planner::start(&redis, &[]);
    let http = http();
    let good = json!({"model": "gpt-4", "prompt": "test"});
    let cases = [
        (None, Some("abc"), good.clone(), "x-okome-agent"),
        (Some("a"), None, good.clone(), "x-repo-hash"),
        (Some(""), Some("abc"), good.clone(), "x-okome-agent"),
        (Some("a"), Some("abc"), json!({"model": "gpt-4"}), "prompt"),
        (Some("a"), Some("abc"), json!({"prompt": "x"}), "model"),
        (
            Some("a"),
            Some("abc"),
            json!({"model": "", "prompt": "x"}),
            "model",
        ),
        (
            Some("a"),
            Some("abc"),
            json!({"model": "m", "prompt": "x", "toolset_version": 3}),
            "toolset_version",
        ),
        (Some("a"), Some("abc"), json!(["model"]), "object"),
    ];
    for (agent, repo, body, mention) in cases {
        let r = post(&http, &p, agent, repo, &body).await;
        assert_eq!(r.status, 400, "{agent:?} {repo:?} {body}: {r:?}");
        assert!(r.body.contains(mention), "{r:?} should mention {mention}");
    }
    let r = http
        .post(format!("{}/api/planner", p.base))
        .header("X-OKOME-Agent", "a")
        .header("X-Repo-Hash", "abc")
        .body("not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(computations(&http, &p).await, 0);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.conn())
        .unwrap();
    assert!(
        keys.is_empty(),
        "a refused request charged or wrote {keys:?}"
    );
}
