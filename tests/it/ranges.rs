//! One table, `okome_core::config` (the configs' `params()`) with the
//! commands' descriptions (`okome_core::command::ranges()`), is the source of every range; these tests check that
//! everything a user meets agrees with it, on a real server:
//! - `CONFIG SET` takes each config's min and max and refuses min-1 and
//!   max+1;
//! - each command takes each bounded argument's min and max and refuses
//!   min-1 and max+1 with that range and unit (a standard: the configured
//!   one);
//! - `COMMAND DOCS` shows each argument's range as its summary;
//! - README's Configuration section lists each config's allowed range and
//!   seed's standard, and each argument's range;
//! - a TTL standard configured outside the seed's is logged once as a
//!   warning, at load and at `CONFIG SET`.
//!
//! The parser side is also unit-tested in okome-core
//! (`the_parser_checks_every_argument_against_the_range_table`).

use crate::support::ops::{config_one, config_set};
use crate::support::*;
use okome_core::command::ranges;
use okome_core::config::{params, Bounds, Range};
use redis::Value;

/// The family of a TTL standard's config: `lock-ttl` for `lock-ttl-min`.
fn family(name: &str) -> Option<&str> {
    ["-min", "-default", "-max"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|base| base.ends_with("-ttl"))
}

#[test]
fn config_set_takes_exactly_each_configs_range() {
    let s = Server::start();
    let mut c = s.conn();
    for p in params() {
        let name = format!("okome.{}", p.name);
        let (min, max) = (p.bounds.min, p.bounds.max);
        let before = config_one(&mut c, &name);
        for v in [min, max] {
            // A standard's three configs move together, so that
            // min <= default <= max holds.
            let pairs: Vec<String> = match family(p.name) {
                Some(base) => ["min", "default", "max"]
                    .iter()
                    .flat_map(|s| [format!("okome.{base}-{s}"), v.to_string()])
                    .collect(),
                None => vec![name.clone(), v.to_string()],
            };
            config_set(&mut c, &refs(&pairs)).unwrap_or_else(|e| panic!("{name} {v}: {e}"));
            assert_eq!(config_one(&mut c, &name), v.to_string(), "{name}");
        }
        for v in [i128::from(min) - 1, i128::from(max) + 1] {
            let e = config_set(&mut c, &[&name, &v.to_string()]).unwrap_err();
            assert!(
                e.starts_with("ERR ") && e.contains(&format!("between {min} and {max}")),
                "{name} {v}: {e}"
            );
            assert_eq!(config_one(&mut c, &name), max.to_string(), "{name} kept");
        }
        // Back to the defaults for the next family.
        let pairs: Vec<String> = match family(p.name) {
            Some(base) => ["min", "default", "max"]
                .iter()
                .flat_map(|s| {
                    let n = format!("{base}-{s}");
                    let d = params()
                        .iter()
                        .find(|q| q.name == n)
                        .map(|q| (q.get)(&Default::default()))
                        .unwrap();
                    [format!("okome.{n}"), d.to_string()]
                })
                .collect(),
            None => vec![name.clone(), before.clone()],
        };
        config_set(&mut c, &refs(&pairs)).unwrap();
        assert_eq!(config_one(&mut c, &name), before, "{name} restored");
    }
}

/// The command that sets argument `arg` of `command` to `v`, everything
/// else valid.
fn with_arg(command: &str, arg: &str, v: &str, pk: &str) -> Vec<String> {
    let mut a: Vec<String> = vec![command.to_uppercase()];
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    match (command, arg) {
        ("okome.plan.get" | "okome.plan.lookup", _) => {
            if command == "okome.plan.get" {
                push(&["m", "ranges", "t", "r"]);
            } else {
                push(&[pk]);
            }
            match arg {
                "limit" => push(&["AGENT", "a", "WINDOW", "1", "LIMIT", v]),
                "window" => push(&["AGENT", "a", "LIMIT", "100000", "WINDOW", v]),
                other => push(&[&other.to_uppercase(), v]),
            }
        }
        ("okome.plan.set", "ttl") => push(&[pk, "{}", "TTL", v]),
        ("okome.unlock", "ms") => push(&[pk, "not-the-holder", "FAILED", v]),
        ("okome.plan.set", "wlimit") => push(&[pk, "{}", "AGENT", "a", "WLIMIT", v]),
        ("okome.plan.set", "wwindow") => {
            push(&[pk, "{}", "AGENT", "a", "WLIMIT", "100000", "WWINDOW", v])
        }
        ("okome.lock", "ttl") => push(&["okome:tools:{ranges}", "TTL", v]),
        ("okome.rate", "limit") => push(&["a", v, "1"]),
        ("okome.rate", "window") => push(&["a", "100000", v]),
        ("okome.rate", "cost") => push(&["a", "1000000000000000", "1", "COST", v]),
        ("okome.wbudget", "write_limit") => push(&["a", v]),
        ("okome.wbudget", "window") => push(&["a", "100000", "WINDOW", v]),
        ("okome.wbudget", "cost") => push(&["a", "1000000000000000", "COST", v]),
        // A subject per argument: a state written with a slow rate is
        // refused as ahead of the clock by a much faster one.
        ("okome.throttle", "rate") => push(&["t-rate", v, "1", "0"]),
        ("okome.throttle", "period_s") => push(&["t-period", "1", v, "0"]),
        ("okome.throttle", "burst") => push(&["t-burst", "1", "1", v]),
        ("okome.throttle", "cost") => push(&["t-cost", "1", "1", "1000000000000000", "COST", v]),
        ("okome.cache.set", "ttl") => push(&["rag", "r", "c", "{}", "TTL", v]),
        ("okome.agent.keys" | "okome.agent.purge", "count") => push(&["a", "COUNT", v]),
        ("okome.lease.acquire", "max") => push(&["ranges", v, "1000"]),
        ("okome.lease.acquire", "ttl_ms") => push(&["ranges", "100000", v]),
        ("okome.lease.acquire", "wait") => push(&["ranges", "100000", "1000", "WAIT", v]),
        ("okome.lease.renew", "ttl_ms") => push(&["{ranges}:0123456789abcdef0123456789abcdef", v]),
        // A subject per argument: each window charged with one limit.
        ("okome.take", "numlimits") => {
            let n: usize = v.parse().unwrap_or(1).clamp(1, 16);
            push(&[v]);
            for i in 0..n {
                a.extend([
                    "take-n".into(),
                    format!("n{i}"),
                    "1000000000000000".into(),
                    "1".into(),
                    "1".into(),
                ]);
            }
        }
        ("okome.take", "limit") => push(&["1", "take-l", "n", v, "1", "1"]),
        ("okome.take", "window_s") => push(&["1", "take-w", "n", "1000000000000000", v, "1"]),
        ("okome.take", "cost") => push(&["1", "take-c", "n", "1000000000000000", "1", v]),
        ("okome.take", "ttl_ms") => push(&[
            "1",
            "take-t",
            "n",
            "1000000000000000",
            "1",
            "1",
            "RESERVE",
            v,
        ]),
        ("okome.settle", "cost") => push(&["{ranges}:0123456789abcdef0123456789abcdef", v]),
        _ => panic!("no command for {command} {arg}: add one"),
    }
    a
}

const UNKNOWN_RESERVATION: &str = "ERR unknown or expired reservation";

#[test]
fn every_command_takes_each_arguments_range() {
    let s = Server::start();
    let mut c = s.conn();
    let pk = okome_key(&mut c, "planner", &["m", "ranges", "t", "r"]);
    let cfg = okome_core::config::Config::default();
    for a in ranges() {
        let (min, max, unit) = match a.bounds {
            Bounds::Fixed(r) => (r.min, r.max, r.unit),
            Bounds::Standard { prefix, hard, .. } => {
                let s = match prefix {
                    "lock-ttl" => cfg.lock_ttl_ms,
                    "planner-ttl" => cfg.planner_ttl,
                    other => panic!("no standard {other}"),
                };
                (s.min, s.max, hard.unit)
            }
            Bounds::KindStandard => (cfg.rag_ttl.min, cfg.rag_ttl.max, "seconds"),
        };
        let name = format!("{} {}", a.command, a.arg);
        for v in [min, max] {
            // A lock taken here is released so that the next call can
            // take it again.
            redis::cmd("DEL")
                .arg(&["okome:tools:{ranges}:lock", &format!("{pk}:lock")])
                .query::<i64>(&mut c)
                .unwrap();
            let args = with_arg(a.command, a.arg, &v.to_string(), &pk);
            match call(&mut c, &refs(&args)) {
                // The cost was taken; no reservation has that id.
                Err(e) if a.command == "okome.settle" && e == UNKNOWN_RESERVATION => {}
                Err(e) => panic!("{name} {v}: {args:?} refused: {e}"),
                Ok(_) => {}
            }
        }
        for v in [i128::from(min) - 1, i128::from(max) + 1] {
            let args = with_arg(a.command, a.arg, &v.to_string(), &pk);
            let e = call(&mut c, &refs(&args)).expect_err(&format!("{name} {v} taken"));
            let want = format!("{v} is out of range: must be between {min} and {max} {unit}");
            assert!(
                e.starts_with("ERR ") && e.contains(&want),
                "{name}: {e}\nwanted: {want}"
            );
        }
    }
    // REFRESHAHEAD's default is the config, which takes the same range.
    config_set(&mut c, &["okome.refresh-ahead-ms", "900000"]).unwrap();
    assert_eq!(plan_get(&mut c, &["m", "ranges2", "t", "r"]).status, "MISS");
}

/// Argument `name` of `COMMAND DOCS` (at any depth), as field pairs.
fn find_arg(args: &[Value], name: &str) -> Option<Vec<(String, Value)>> {
    for a in args {
        let m = pairs(a);
        if field(&m, "name").map(text).as_deref() == Some(name) {
            return Some(m);
        }
        if let Some(sub) = field(&m, "arguments") {
            if let Some(found) = find_arg(array(sub), name) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn command_docs_shows_each_arguments_range() {
    let s = Server::start();
    let mut c = s.conn();
    for a in ranges() {
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(a.command)
            .query(&mut c)
            .unwrap();
        let top = pairs(&reply);
        let docs = pairs(&top[0].1);
        let args = array(field(&docs, "arguments").expect("arguments"));
        let arg =
            find_arg(args, a.arg).unwrap_or_else(|| panic!("{}: no argument {}", a.command, a.arg));
        let summary = field(&arg, "summary")
            .map(text)
            .unwrap_or_else(|| panic!("{} {}: no summary", a.command, a.arg));
        assert_eq!(summary, a.bounds.summary(), "{} {}", a.command, a.arg);
        match a.bounds {
            Bounds::Fixed(r) => assert!(
                summary.starts_with(&format!("{} to {} {}", r.min, r.max, r.unit)),
                "{summary}"
            ),
            Bounds::Standard { prefix, .. } => {
                assert!(
                    summary.contains(&format!("okome.{prefix}-min")),
                    "{summary}"
                )
            }
            Bounds::KindStandard => assert!(summary.contains("okome.<kind>-ttl-min")),
        }
    }
    // Every integer argument of every okome command is in the table, but
    // PXAT (a Unix time, checked against the clock).
    let names: Vec<String> = redis::cmd("COMMAND")
        .arg(&["LIST", "FILTERBY", "MODULE", "okome"])
        .query(&mut c)
        .unwrap();
    fn integers(args: &[Value], out: &mut Vec<String>) {
        for a in args {
            let m = pairs(a);
            if field(&m, "type").map(text).as_deref() == Some("integer") {
                out.push(text(field(&m, "name").unwrap()));
            }
            if let Some(sub) = field(&m, "arguments") {
                integers(array(sub), out);
            }
        }
    }
    for name in names {
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(&name)
            .query(&mut c)
            .unwrap();
        let docs = pairs(&pairs(&reply)[0].1);
        let mut ints = Vec::new();
        if let Some(args) = field(&docs, "arguments") {
            integers(array(args), &mut ints);
        }
        for arg in ints {
            assert!(
                arg == "pxat" || ranges().iter().any(|a| a.command == name && a.arg == arg),
                "{name} {arg}: an integer argument missing from the range table"
            );
        }
    }
}

/// The rows of README's tables in its Configuration section, as cells.
fn configuration_rows() -> Vec<Vec<String>> {
    let readme = repo_file("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration\n"))
        .expect("a Configuration section");
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// `OKOME.RATE`, `OKOME.PLAN.GET`... named in a cell.
fn names_command(cell: &str, command: &str) -> bool {
    cell.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_'))
        .any(|w| w.eq_ignore_ascii_case(command))
}

fn names_arg(cell: &str, arg: &str) -> bool {
    cell.split('`').skip(1).step_by(2).any(|code| {
        code.split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(arg))
    })
}

#[test]
fn readme_lists_every_range() {
    let rows = configuration_rows();
    // Configs: | config | default | allowed | seed's standard | meaning |
    let header = &rows[0];
    assert_eq!(
        header[..4],
        ["config", "default", "allowed", "seed's standard"]
    );
    for p in params() {
        let shown = match family(p.name) {
            Some(base) => format!("`okome.{base}-min`"),
            None => format!("`okome.{}`", p.name),
        };
        let row = rows
            .iter()
            .find(|r| r[0].starts_with(&shown))
            .unwrap_or_else(|| panic!("README's config table has no row for okome.{}", p.name));
        assert_eq!(row[2], p.bounds.text(), "allowed range of okome.{}", p.name);
        let seed = p.seed.as_ref().map(Range::text).unwrap_or_default();
        assert_eq!(row[3], seed, "seed's standard of okome.{}", p.name);
    }
    // Arguments: | argument | commands | range | default |
    let args_table: Vec<&Vec<String>> = rows
        .iter()
        .skip_while(|r| r[0] != "argument")
        .skip(1)
        .collect();
    assert!(!args_table.is_empty(), "README has no argument range table");
    for a in ranges() {
        let row = args_table
            .iter()
            .find(|r| names_command(&r[1], a.command) && names_arg(&r[0], a.arg))
            .unwrap_or_else(|| {
                panic!(
                    "README's argument table has no row for {} {}",
                    a.command, a.arg
                )
            });
        let range = &row[2];
        let ok = match a.bounds {
            Bounds::Fixed(r) => range.starts_with(&format!("{} ", r.text())),
            Bounds::Standard { prefix, .. } => range.contains(&format!("`okome.{prefix}-min`")),
            Bounds::KindStandard => range.contains("`okome.<kind>-ttl-min`"),
        };
        assert!(ok, "{} {}: README shows {range}", a.command, a.arg);
        if let Bounds::Fixed(Range {
            default: Some(d), ..
        }) = a.bounds
        {
            assert_eq!(row[3], d.to_string(), "default of {} {}", a.command, a.arg);
        }
    }
}

const WARNING: &str = "outside the seed's standard";

fn warnings(s: &Server) -> Vec<String> {
    s.log()
        .lines()
        .filter(|l| l.contains(WARNING))
        .map(|l| l.split_once(" # ").map_or(l, |(_, w)| w).to_string())
        .collect()
}

#[test]
fn a_standard_outside_the_seeds_is_logged_as_a_warning() {
    // The defaults follow the seed: nothing to say.
    let s = Server::start();
    assert_eq!(warnings(&s), Vec::<String>::new());
    drop(s);

    // At load: a WARNING-level line (`#`) naming config, value and the
    // seed's standard.
    let s = Server::start_full(&[], &["lock-ttl-min", "100"]);
    let lock = "<okome> okome.lock-ttl-min is 100 ms, outside the seed's standard for the \
                stampede lock TTL (8000 to 10000 ms)";
    assert_eq!(warnings(&s), [lock]);
    let mut c = s.conn();

    // At CONFIG SET, once per change.
    config_set(&mut c, &["okome.health-ttl-max", "60"]).unwrap();
    let health = "<okome> okome.health-ttl-max is 60 seconds, outside the seed's standard for \
                  the health TTL (30 seconds)";
    assert_eq!(warnings(&s), [lock, health]);
    config_set(&mut c, &["okome.health-ttl-max", "60"]).unwrap();
    assert_eq!(warnings(&s), [lock, health], "unchanged: no second word");
    // Refused (and rolled back): nothing changes, nothing said.
    config_set(&mut c, &["okome.planner-ttl-default", "1000"]).unwrap_err();
    config_set(&mut c, &["okome.rag-ttl-default", "100"]).unwrap_err();
    assert_eq!(warnings(&s), [lock, health]);
    // Within the seed's standard: nothing said.
    config_set(
        &mut c,
        &["okome.lock-ttl-min", "8500", "okome.rag-ttl-min", "3600"],
    )
    .unwrap();
    assert_eq!(warnings(&s), [lock, health]);
    // Two at once.
    config_set(
        &mut c,
        &[
            "okome.planner-ttl-max",
            "1200",
            "okome.planner-ttl-default",
            "1000",
        ],
    )
    .unwrap();
    let w = warnings(&s);
    assert_eq!(w.len(), 4, "{w:?}");
    assert!(w[2..].contains(
        &"<okome> okome.planner-ttl-default is 1000 seconds, outside the seed's standard for \
          the planner TTL (300 to 900 seconds)"
            .to_string()
    ));
    assert!(w[2..]
        .iter()
        .any(|l| l.starts_with("<okome> okome.planner-ttl-max is 1200")));
    // The lines are WARNING level.
    let log = s.log();
    for l in log.lines().filter(|l| l.contains(WARNING)) {
        assert!(l.contains(" # <okome> "), "{l}");
    }
}
