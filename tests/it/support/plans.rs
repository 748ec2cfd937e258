//! `OKOME.PLAN.GET` / `OKOME.PLAN.LOOKUP` and their replies, the planner
//! tuples the tests send, and the checks on plans, locks and tokens.

use super::*;

use redis::Connection;

/// The 6-element reply of `OKOME.PLAN.GET` / `OKOME.PLAN.LOOKUP`: status,
/// key, value, ms, token, rate_remaining.
pub type PlanReply = (
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// The 6-element reply of `OKOME.PLAN.GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub status: String,
    pub key: String,
    pub value: Option<String>,
    pub ms: Option<i64>,
    pub token: Option<String>,
    pub rate_remaining: Option<i64>,
}

impl From<PlanReply> for Plan {
    fn from((status, key, value, ms, token, rate_remaining): PlanReply) -> Plan {
        Plan {
            status,
            key,
            value,
            ms,
            token,
            rate_remaining,
        }
    }
}

pub fn plan_get(con: &mut Connection, args: &[&str]) -> Plan {
    try_plan_get(con, args).expect("OKOME.PLAN.GET")
}

pub fn try_plan_get(con: &mut Connection, args: &[&str]) -> redis::RedisResult<Plan> {
    let r: PlanReply = redis::cmd("OKOME.PLAN.GET").arg(args).query(con)?;
    Ok(r.into())
}

/// `OKOME.PLAN.LOOKUP key opts...`.
pub fn plan_lookup(con: &mut Connection, args: &[&str]) -> Plan {
    let r: PlanReply = redis::cmd("OKOME.PLAN.LOOKUP")
        .arg(args)
        .query(con)
        .expect("OKOME.PLAN.LOOKUP");
    r.into()
}

/// A planner tuple but its prompt: `model <prompt> toolset repo`.
#[derive(Debug, Clone, Copy)]
pub struct Tuple {
    pub model: &'static str,
    pub toolset: &'static str,
    pub repo: &'static str,
}

/// The tuple most tests use: `m <prompt> t r`.
pub const MTR: Tuple = Tuple {
    model: "m",
    toolset: "t",
    repo: "r",
};

impl Tuple {
    /// The `PLAN.GET` arguments for `prompt`, then `opts`.
    pub fn args(self, prompt: &str, opts: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            self.model.into(),
            prompt.into(),
            self.toolset.into(),
            self.repo.into(),
        ];
        v.extend(opts.iter().map(|s| s.to_string()));
        v
    }

    /// `OKOME.PLAN.GET` of `prompt` with `opts`.
    pub fn get(self, c: &mut Connection, prompt: &str, opts: &[&str]) -> Plan {
        plan_get(c, &refs(&self.args(prompt, opts)))
    }
}

/// [`MTR`]'s `PLAN.GET` arguments for `prompt`, then `opts`.
pub fn tuple(prompt: &str, opts: &[&str]) -> Vec<String> {
    MTR.args(prompt, opts)
}

/// `OKOME.PLAN.GET m <prompt> t r opts...`.
pub fn get_plan(c: &mut Connection, prompt: &str, opts: &[&str]) -> Plan {
    MTR.get(c, prompt, opts)
}

/// The strings of `v` as `&str`s.
pub fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Whether `t` is a lock token: 32 lowercase hex digits.
pub fn is_token(t: impl AsRef<[u8]>) -> bool {
    let t = t.as_ref();
    t.len() == 32 && t.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn assert_token(t: &str) {
    assert!(is_token(t), "not a 32-hex token: {t:?}");
}

/// A leader's `MISS`: status, lock TTL, a token; returns the token.
pub fn leader_token(p: &Plan, lock_ttl: i64) -> String {
    assert_eq!(p.status, "MISS", "{p:?}");
    assert_eq!(p.ms, Some(lock_ttl), "{p:?}");
    let t = p.token.clone().expect("a token on MISS");
    assert_token(&t);
    t
}

/// [`leader_token`], and neither a value nor a rate count.
pub fn assert_miss(p: &Plan, lock_ttl: i64) -> String {
    let t = leader_token(p, lock_ttl);
    assert_eq!(p.value, None, "{p:?}");
    assert_eq!(p.rate_remaining, None, "{p:?}");
    t
}

/// A `HIT` of `key` with `json` and no token.
pub fn assert_hit(p: &Plan, key: &str, json: &str) {
    assert_eq!(p.status, "HIT", "{p:?}");
    assert_eq!(p.key, key, "{p:?}");
    assert_eq!(p.value.as_deref(), Some(json), "{p:?}");
    assert_eq!(p.token, None, "{p:?}");
}

/// [`assert_hit`], with a plan TTL of about `ttl_ms` and no rate count.
pub fn assert_hit_ttl(p: &Plan, key: &str, json: &str, ttl_ms: i64) {
    assert_hit(p, key, json);
    assert!(
        matches!(p.ms, Some(m) if m > ttl_ms - 2000 && m <= ttl_ms),
        "plan TTL, want about {ttl_ms}: {p:?}"
    );
    assert_eq!(p.rate_remaining, None, "{p:?}");
}

/// `t` is at most `max_ms` and at most one second below it.
pub fn assert_ttl_near(what: &str, t: i64, max_ms: i64) {
    assert!(
        t > max_ms - 1000 && t <= max_ms,
        "{what}: TTL {t} ms, want ({}, {max_ms}]",
        max_ms - 1000
    );
}

/// The lock of `key` is held with `token` and expires within `max_ms`
/// (and not much sooner: the step took well under a second).
pub fn assert_held(c: &mut Connection, key: &str, token: &str, max_ms: i64) {
    let lk = lock_of(key);
    assert_eq!(get(c, &lk).as_deref(), Some(token), "holder of {lk}");
    assert_ttl_near(&lk, pttl(c, &lk), max_ms);
}
