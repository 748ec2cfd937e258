//! The configs: their defaults, `CONFIG GET`/`SET`, and the fields of
//! `INFO okome` (a server started from a redis.conf, `ConfServer`, and
//! `TempDir` are in `okome-testkit`).

use super::*;

use redis::Connection;
use std::collections::BTreeMap;

/// Every tunable of `okome_core::config::params()` with its default.
pub const DEFAULTS: [(&str, &str); 23] = [
    ("planner-ttl-min", "300"),
    ("planner-ttl-default", "600"),
    ("planner-ttl-max", "900"),
    ("model-meta-ttl-min", "86400"),
    ("model-meta-ttl-default", "86400"),
    ("model-meta-ttl-max", "86400"),
    ("rag-ttl-min", "1800"),
    ("rag-ttl-default", "3600"),
    ("rag-ttl-max", "3600"),
    ("tools-ttl-min", "600"),
    ("tools-ttl-default", "600"),
    ("tools-ttl-max", "600"),
    ("health-ttl-min", "30"),
    ("health-ttl-default", "30"),
    ("health-ttl-max", "30"),
    ("lock-ttl-min", "8000"),
    ("lock-ttl-default", "9000"),
    ("lock-ttl-max", "10000"),
    ("write-window", "60"),
    ("max-prompt-bytes", "4194304"),
    ("max-value-bytes", "4194304"),
    ("refresh-ahead-ms", "0"),
    ("ledger-max-keys", "1000"),
];

/// The defaults as `CONFIG GET okome.*` shows them.
pub fn default_configs() -> BTreeMap<String, String> {
    DEFAULTS
        .iter()
        .map(|(n, v)| (format!("okome.{n}"), v.to_string()))
        .collect()
}

pub fn config_get(c: &mut Connection, pattern: &str) -> BTreeMap<String, String> {
    redis::cmd("CONFIG")
        .arg("GET")
        .arg(pattern)
        .query(c)
        .expect("CONFIG GET")
}

/// The value of the one config `name` (`CONFIG GET` must list exactly it).
pub fn config_one(c: &mut Connection, name: &str) -> String {
    let m = config_get(c, name);
    assert_eq!(m.len(), 1, "CONFIG GET {name}: {m:?}");
    m.get(name).cloned().expect("the config asked for")
}

/// `CONFIG SET name value [name value ...]`: Ok or the error text.
pub fn config_set(c: &mut Connection, pairs: &[&str]) -> Result<(), String> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(pairs)
        .query::<()>(c)
        .map_err(|e| error_text(&e))
}

/// The `okome_*` fields of `INFO okome`, without the prefix.
pub fn info(c: &mut Connection) -> BTreeMap<String, String> {
    let s = info_text(c, "okome");
    let mut m = BTreeMap::new();
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(':').expect("name:value");
        let k = k
            .strip_prefix("okome_")
            .unwrap_or_else(|| panic!("INFO okome field without the okome_ prefix: {line}"));
        m.insert(k.to_string(), v.to_string());
    }
    m
}
