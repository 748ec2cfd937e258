//! Settings: each one from a `--flag value` (or `--flag=value`) on the
//! command line, else from its environment variable, else its default.

use okome_core::config::{LIMIT, REFRESH_AHEAD_MS, WAIT_MS, WINDOW_S};
use std::fmt::Write as _;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where okome runs (a Redis server with the module loaded).
    pub redis_url: String,
    /// Address to listen on; port 0 picks a free one.
    pub listen: String,
    /// Requests admitted per agent per `rate_window_s` (`LIMIT`).
    pub rate_limit: u64,
    /// The rate window in seconds (`WINDOW`).
    pub rate_window_s: u64,
    /// Cache writes per agent per minute (`WLIMIT`).
    pub write_limit: u64,
    /// How long the stand-in planner "thinks" (ms).
    pub compute_delay_ms: u64,
    /// How long a follower waits for the leader's plan (`WAIT`, ms; 0 = not at all).
    pub wait_ms: u64,
    /// Stale-while-revalidate horizon (`REFRESHAHEAD`, ms; 0 = off).
    pub refresh_ahead_ms: u64,
    /// The toolset version used when a request does not name one.
    pub toolset_version: String,
}

/// (flag, environment variable, default, help)
const SETTINGS: &[(&str, &str, &str, &str)] = &[
    (
        "--redis-url",
        "REDIS_URL",
        "redis://127.0.0.1:6379/",
        "Redis server with okome loaded",
    ),
    (
        "--listen",
        "PLANNER_LISTEN",
        "127.0.0.1:8000",
        "listen address (port 0: any free port)",
    ),
    (
        "--rate-limit",
        "PLANNER_RATE_LIMIT",
        "60",
        "requests per agent per rate window",
    ),
    (
        "--rate-window",
        "PLANNER_RATE_WINDOW",
        "60",
        "rate window in seconds",
    ),
    (
        "--write-limit",
        "PLANNER_WRITE_LIMIT",
        "30",
        "cache writes per agent per 60 s",
    ),
    (
        "--compute-delay-ms",
        "PLANNER_COMPUTE_DELAY_MS",
        "200",
        "stand-in planner's compute time",
    ),
    (
        "--wait-ms",
        "PLANNER_WAIT_MS",
        "10000",
        "follower wait for the leader's plan (0: none)",
    ),
    (
        "--refresh-ahead-ms",
        "PLANNER_REFRESH_AHEAD_MS",
        "60000",
        "refresh plans with less TTL left (0: off)",
    ),
    (
        "--toolset-version",
        "PLANNER_TOOLSET_VERSION",
        "v1",
        "toolset_version when the request has none",
    ),
];

pub fn usage() -> String {
    let mut s = String::from(
        "okome-planner: POST /api/planner on the okome Redis module\n\n\
         usage: okome-planner [--flag value]...\n\n",
    );
    for (flag, env, default, help) in SETTINGS {
        let _ = writeln!(s, "  {flag:<20} ${env:<26} {help} (default {default})");
    }
    s
}

impl Config {
    /// Reads the command line (without the program name) and the environment.
    pub fn load(args: impl IntoIterator<Item = String>) -> Result<Config, String> {
        let mut given: Vec<(&'static str, String)> = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let Some(&(flag, ..)) = SETTINGS.iter().find(|s| s.0 == name) else {
                return Err(format!("unknown argument '{arg}'"));
            };
            let value = match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
            };
            given.push((flag, value));
        }
        let get = |flag: &str| -> String {
            let (_, env, default, _) = SETTINGS.iter().find(|s| s.0 == flag).expect("a known flag");
            given
                .iter()
                .rev()
                .find(|(f, _)| *f == flag)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
                .unwrap_or_else(|| default.to_string())
        };
        let num = |flag: &str| -> Result<u64, String> {
            let v = get(flag);
            v.trim()
                .parse()
                .map_err(|_| format!("{flag}: '{v}' is not a non-negative integer"))
        };
        // The module's own bounds (okome-core's range table, the one the
        // server checks), so that a bad setting stops the planner at start
        // instead of failing every request.
        let within = |flag: &str, r: okome_core::config::Range| -> Result<u64, String> {
            let n = num(flag)?;
            if r.contains(n) {
                Ok(n)
            } else {
                Err(format!(
                    "{flag} must be between {} and {} (okome's {} range)",
                    r.min, r.max, r.name
                ))
            }
        };
        let cfg = Config {
            redis_url: get("--redis-url"),
            listen: get("--listen"),
            rate_limit: within("--rate-limit", LIMIT)?,
            rate_window_s: within("--rate-window", WINDOW_S)?,
            write_limit: within("--write-limit", LIMIT)?,
            compute_delay_ms: num("--compute-delay-ms")?,
            wait_ms: match num("--wait-ms")? {
                0 => 0,
                _ => within("--wait-ms", WAIT_MS)?,
            },
            refresh_ahead_ms: within("--refresh-ahead-ms", REFRESH_AHEAD_MS)?,
            toolset_version: get("--toolset-version"),
        };
        if cfg.toolset_version.is_empty() {
            return Err("--toolset-version must not be empty".into());
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, String> {
        Config::load(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_in_both_forms_override_defaults() {
        let c = load(&[
            "--listen",
            "127.0.0.1:0",
            "--rate-limit=5",
            "--wait-ms",
            "0",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!((c.rate_limit, c.wait_ms), (5, 0));
        assert_eq!((c.write_limit, c.refresh_ahead_ms), (30, 60_000));
    }

    #[test]
    fn bad_settings_are_refused_with_the_flag_named() {
        for (args, needle) in [
            (&["--rate-limit", "0"][..], "--rate-limit"),
            (
                &["--rate-limit", "1000000000000001"][..],
                "--rate-limit must be between 1 and 1000000000000000 (okome's limit range)",
            ),
            (&["--rate-window", "x"][..], "--rate-window"),
            (&["--wait-ms", "600001"][..], "--wait-ms"),
            (&["--refresh-ahead-ms", "900001"][..], "--refresh-ahead-ms"),
            (&["--listen"][..], "--listen needs a value"),
            (&["--nope", "1"][..], "unknown argument"),
        ] {
            let e = load(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
