//! What the server says about itself: `INFO` fields, okome's counters,
//! `CLIENT LIST`, and polling until a state is reached.

use redis::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Calls `check` every `every` until it returns `Ok`, and returns that;
/// panics with its last `Err` once `within` has passed.
pub fn poll<T>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(every);
    }
}

/// The text of `INFO <section>`.
pub fn info_text(c: &mut Connection, section: &str) -> String {
    redis::cmd("INFO").arg(section).query(c).expect("INFO")
}

/// An integer field of `INFO <section>`.
pub fn info_i64(c: &mut Connection, section: &str, field: &str) -> i64 {
    let text = info_text(c, section);
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{field}: {e}"))
}

/// `valkey_version` of `INFO server`: `None` on Redis.
pub fn valkey_version(c: &mut Connection) -> Option<String> {
    info_map(c, "server").get("valkey_version").cloned()
}

/// The counter `okome_<name>` of `INFO okome`.
pub fn counter(c: &mut Connection, name: &str) -> i64 {
    info_i64(c, "okome", &format!("okome_{name}"))
}

/// Every `name:value` field of `INFO <section>`.
pub fn info_map(c: &mut Connection, section: &str) -> BTreeMap<String, String> {
    parse_info(&info_text(c, section))
}

pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fields of `INFO okome`, without the `okome_` prefix Redis puts on a
/// module's INFO fields.
pub fn parse_okome_info(text: &str) -> BTreeMap<String, String> {
    parse_info(text)
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("okome_").unwrap_or(&k).to_string(), v))
        .collect()
}

/// The counters of `INFO okome` the waiting invariants are about.
pub const WAIT_COUNTERS: &[&str] = &[
    "wait_blocked",
    "wait_woken",
    "wait_woken_hit",
    "wait_woken_leader",
    "wait_woken_other",
    "wait_timed_out",
    "wait_disconnected",
    "wait_unblocked",
    "waiting_clients",
];

/// The wait counters of `INFO okome` (text of the section given), or the
/// names that are missing.
pub fn wait_counters(info_okome: &str) -> Result<BTreeMap<String, i64>, String> {
    let m = parse_okome_info(info_okome);
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for name in WAIT_COUNTERS {
        match m.get(*name).and_then(|v| v.parse::<i64>().ok()) {
            Some(v) => {
                out.insert(name.to_string(), v);
            }
            None => missing.push(*name),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!("INFO okome lacks {missing:?}:\n{info_okome}"))
    }
}

/// Checks, once nobody waits (`waiting_clients:0`):
/// `wait_blocked == wait_woken + wait_timed_out + wait_disconnected +
/// wait_unblocked` and `wait_woken == wait_woken_hit + wait_woken_leader +
/// wait_woken_other`.
pub fn check_wait_invariants(c: &BTreeMap<String, i64>) -> Result<(), String> {
    let g = |n: &str| c.get(n).copied().unwrap_or(i64::MIN);
    if g("waiting_clients") != 0 {
        return Err(format!("waiting_clients is not 0: {c:?}"));
    }
    let ends = g("wait_woken") + g("wait_timed_out") + g("wait_disconnected") + g("wait_unblocked");
    if g("wait_blocked") != ends {
        return Err(format!(
            "wait_blocked {} != wait_woken + wait_timed_out + wait_disconnected + wait_unblocked = {ends}: {c:?}",
            g("wait_blocked")
        ));
    }
    let woken = g("wait_woken_hit") + g("wait_woken_leader") + g("wait_woken_other");
    if g("wait_woken") != woken {
        return Err(format!(
            "wait_woken {} != wait_woken_hit + wait_woken_leader + wait_woken_other = {woken}: {c:?}",
            g("wait_woken")
        ));
    }
    Ok(())
}

/// `CLIENT LIST` as one map of fields per client.
pub fn client_list(c: &mut Connection) -> Vec<BTreeMap<String, String>> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(c)
        .expect("CLIENT LIST");
    list.lines()
        .map(|line| {
            line.split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Ids of the clients blocked now (flag `b`).
pub fn blocked_client_ids(c: &mut Connection) -> BTreeSet<i64> {
    client_list(c)
        .into_iter()
        .filter(|m| m.get("flags").is_some_and(|f| f.contains('b')))
        .filter_map(|m| m.get("id").and_then(|v| v.parse().ok()))
        .collect()
}

/// Names of the clients blocked now (flag `b`) that have a name.
pub fn blocked_names(c: &mut Connection) -> BTreeSet<String> {
    client_list(c)
        .into_iter()
        .filter(|m| m.get("flags").is_some_and(|f| f.contains('b')))
        .filter_map(|m| m.get("name").filter(|n| !n.is_empty()).cloned())
        .collect()
}

/// `blocked_clients` of `INFO clients`.
pub fn blocked_clients(c: &mut Connection) -> i64 {
    info_i64(c, "clients", "blocked_clients")
}

/// Polls until `blocked_clients` is `n` (panics after `within`).
pub fn wait_blocked(c: &mut Connection, n: i64, within: Duration) {
    poll(within, Duration::from_millis(1), || {
        let b = blocked_clients(c);
        if b == n {
            Ok(())
        } else {
            Err(format!(
                "blocked_clients is {b}, want {n} within {within:?}"
            ))
        }
    })
}

/// Polls until every id in `ids` is blocked (panics after `within`).
pub fn wait_ids_blocked(c: &mut Connection, ids: &[i64], within: Duration) {
    wait_all_blocked(c, ids, within, blocked_client_ids)
}

/// Polls until every client named in `names` is blocked (panics after
/// `within`).
pub fn wait_names_blocked(c: &mut Connection, names: &[String], within: Duration) {
    wait_all_blocked(c, names, within, blocked_names)
}

fn wait_all_blocked<T: Ord + std::fmt::Debug>(
    c: &mut Connection,
    want: &[T],
    within: Duration,
    blocked: fn(&mut Connection) -> BTreeSet<T>,
) {
    poll(within, Duration::from_millis(1), || {
        let b = blocked(c);
        if want.iter().all(|w| b.contains(w)) {
            Ok(())
        } else {
            Err(format!(
                "not all of {want:?} blocked within {within:?}; blocked: {b:?}"
            ))
        }
    })
}
