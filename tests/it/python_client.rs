//! examples/python/okome_demo.py, the planner flow with redis-py, against a
//! real server: it must exit 0 and print one line per step. Python and
//! redis-py are required (`make deps` installs Debian's python3-redis): if
//! neither `$OKOME_PYTHON`, `/usr/bin/python3` nor `python3` can import
//! redis, the test fails and says so; it is never skipped.

use crate::support::demo::*;
use crate::support::*;

use std::process::Output;

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Checks one run's output, line by line, and returns the planner key.
fn check_output(o: &Output) -> String {
    assert!(o.status.success(), "the demo failed: {}", describe(o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{}", describe(o));

    let miss = lines[0];
    assert!(
        miss.starts_with("PLAN.GET MISS key=okome:planner:llama3%3A8b:{"),
        "{miss}"
    );
    assert!(miss.contains("}:v1.2.3:abc123 "), "{miss}");
    assert!(miss.contains(" lock_ms=9000 "), "{miss}");
    assert!(miss.ends_with(" rate_remaining=59"), "{miss}");
    let token = miss
        .split(" token=")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap_or_default();
    assert!(
        token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{miss}"
    );
    let key = miss
        .strip_prefix("PLAN.GET MISS key=")
        .and_then(|k| k.split(' ').next())
        .unwrap_or_default()
        .to_string();

    assert_eq!(
        lines[1],
        "PLAN.SET STORED ttl_ms=600000 wbudget_remaining=29 lock_released=1"
    );
    assert!(lines[2].starts_with("PLAN.GET HIT ttl_ms="), "{}", lines[2]);
    assert!(
        lines[2].ends_with(
            r#" rate_remaining=58 plan={"steps": ["open login.tsx", "add the form", "wire the submit"]}"#
        ),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "RATE allowed 60/60 remaining=0");
    assert!(
        lines[4].starts_with("RATE refused request 61 retry_after_ms="),
        "{}",
        lines[4]
    );
    let retry_after: u64 = lines[4]
        .rsplit_once("(Retry-After: ")
        .and_then(|(_, r)| r.strip_suffix(')'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {}", lines[4]));
    assert!((1..=60).contains(&retry_after), "{}", lines[4]);
    assert_eq!(
        lines[5],
        "OK planner flow and rate limit behave as documented"
    );
    key
}

#[test]
fn python_demo_runs_the_planner_flow() {
    let s = Server::start();
    let first = run_demo(&s.url());
    let key = check_output(&first);

    // What the script left in the server: the plan with its TTL, no lock.
    let mut c = s.conn();
    let ttl = pttl(&mut c, &key);
    assert!((590_000..=600_000).contains(&ttl), "plan PTTL {ttl}");
    let lock: i64 = redis::cmd("EXISTS")
        .arg(format!("{key}:lock"))
        .query(&mut c)
        .unwrap();
    assert_eq!(lock, 0, "the lock was released");

    // It uses fresh names per run, so it runs again on the same server.
    let second = run_demo(&s.url());
    let key2 = check_output(&second);
    assert_ne!(key, key2);
}

#[test]
fn python_demo_fails_loudly_without_a_server() {
    // A port with nothing listening.
    let port = free_port();
    let o = run_demo(&format!("redis://127.0.0.1:{port}/"));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reach"),
        "{}",
        describe(&o)
    );
    assert!(o.stdout.is_empty(), "{}", describe(&o));
}

#[test]
fn python_demo_fails_on_an_unexpected_reply() {
    // With a default REFRESHAHEAD above the plan TTL, the lookup after the
    // store is a REFRESH, not the HIT the script expects: it must say so and
    // exit 1.
    let s = Server::start_full(&[], &["refresh-ahead-ms", "900000"]);
    let o = run_demo(&s.url());
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("FAIL PLAN.GET: expected HIT") && stderr.contains("REFRESH"),
        "{}",
        describe(&o)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
}
