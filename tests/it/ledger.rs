//! The agent ledger (issue 13) on real servers: `PLAN.SET`/`CACHE.SET ...
//! AGENT` record the key in `okome:budget:keys:{agent}` in the same step as
//! the write (one replicated transaction); `OKOME.AGENT.KEYS` lists exactly
//! the live entries, paged; `OKOME.AGENT.PURGE` deletes exactly the keys
//! still holding the agent's write, in bounded steps, and wakes followers
//! waiting on a purged plan; a replica and an AOF replay hold the same
//! ledger; a 3-primary cluster records, lists and purges what each node
//! serves and never touches another slot; bad input and missing ACL
//! permissions write nothing; and a ledger's memory stays within its bound
//! under a long random workload.

use crate::support::cluster::Cluster;
use crate::support::errors::{arity, printed, run_with, Case, Want, CROSSSLOT};
use crate::support::*;

use redis::{Connection, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// `[deleted, left, gone, remaining, elsewhere]`
type PurgeReply = (i64, i64, i64, i64, Vec<(String, i64)>);
/// `[cursor, [[key, ttl_ms, state], ...]]`
type KeysReply = (String, Vec<(String, i64, String)>);

fn ledger(agent: &str) -> String {
    format!("okome:budget:keys:{{{agent}}}")
}

fn pkey(c: &mut Connection, prompt: &str) -> String {
    okome_key(c, "planner", &["llama3:8b", prompt, "v1.2.3", "abc123"])
}

fn record(c: &mut Connection, args: &[&str]) -> (i64, i64) {
    redis::cmd("OKOME.AGENT.RECORD")
        .arg(args)
        .query(c)
        .expect("OKOME.AGENT.RECORD")
}

fn keys_page(c: &mut Connection, agent: &str, opts: &[&str]) -> KeysReply {
    redis::cmd("OKOME.AGENT.KEYS")
        .arg(agent)
        .arg(opts)
        .query(c)
        .expect("OKOME.AGENT.KEYS")
}

/// Every page of `AGENT.KEYS`, `count` at a time, concatenated.
fn all_keys(c: &mut Connection, agent: &str, count: usize) -> Vec<(String, i64, String)> {
    let n = count.to_string();
    let mut cursor = "0".to_string();
    let mut out = Vec::new();
    loop {
        let (next, page) = keys_page(c, agent, &["COUNT", &n, "CURSOR", &cursor]);
        assert!(page.len() <= count, "a page holds at most COUNT entries");
        out.extend(page);
        if next == "0" {
            return out;
        }
        cursor = next;
    }
}

fn purge(c: &mut Connection, agent: &str, opts: &[&str]) -> PurgeReply {
    redis::cmd("OKOME.AGENT.PURGE")
        .arg(agent)
        .arg(opts)
        .query(c)
        .expect("OKOME.AGENT.PURGE")
}

/// `ZRANGE key 0 -1 WITHSCORES` as (member, score).
fn zrange(c: &mut Connection, key: &str) -> Vec<(String, i64)> {
    let flat: Vec<String> = redis::cmd("ZRANGE")
        .arg(&[key, "0", "-1", "WITHSCORES"])
        .query(c)
        .expect("ZRANGE");
    flat.chunks(2)
        .map(|p| (p[0].clone(), p[1].parse().expect("an integer score")))
        .collect()
}

/// Lets the clock move on, so that two writes get different expiries.
fn tick() {
    std::thread::sleep(Duration::from_millis(3));
}

/// The ledger in its own words: every entry's score is the PEXPIRETIME of
/// its key as written, and the ledger expires with its highest entry.
fn assert_ledger(c: &mut Connection, agent: &str, want: &[(&str, i64)]) {
    let l = ledger(agent);
    let mut want: Vec<(String, i64)> = want.iter().map(|(k, t)| (k.to_string(), *t)).collect();
    want.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    assert_eq!(zrange(c, &l), want, "{l}");
    let top = want
        .iter()
        .map(|(_, t)| *t)
        .max()
        .expect("a non-empty ledger");
    assert_eq!(pexpiretime(c, &l), top, "{l} expires with its latest entry");
}

// ------------------------------------------------- recording, atomically

/// The commands of an AOF file, grouped: a MULTI ... EXEC block is one
/// group, any other command a group of its own.
fn aof_groups(dir: &Path) -> Vec<Vec<Vec<String>>> {
    let aof_dir = dir.join("appendonlydir");
    let mut files: Vec<_> = std::fs::read_dir(&aof_dir)
        .expect("appendonlydir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .collect();
    files.sort();
    let mut bytes = Vec::new();
    for f in files {
        bytes.extend(std::fs::read(f).unwrap());
    }
    let mut groups = Vec::new();
    let mut open: Option<Vec<Vec<String>>> = None;
    let mut at = 0;
    while at < bytes.len() {
        let (r, next) = parse_resp(&bytes, at).unwrap().expect("a whole command");
        at = next;
        let Resp::Array(Some(items)) = r else {
            panic!("not a command: {r:?}")
        };
        let cmd: Vec<String> = items.iter().map(|i| i.text().unwrap()).collect();
        match cmd[0].to_ascii_uppercase().as_str() {
            "SELECT" => {}
            "MULTI" => open = Some(Vec::new()),
            "EXEC" => groups.push(open.take().expect("EXEC after MULTI")),
            _ => match &mut open {
                Some(g) => g.push(cmd),
                None => groups.push(vec![cmd]),
            },
        }
    }
    groups
}

#[test]
fn writes_with_agent_are_recorded_in_the_same_step() {
    let s = Server::start_with(&[AOF, &["--notify-keyspace-events", "KEA"]].concat());
    let mut c = s.conn();
    let mut sub = s.conn();
    let mut ps = sub.as_pubsub();
    ps.psubscribe("__keyspace@0__:okome:budget:keys:*").unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut events = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| ps.get_message().unwrap().get_payload::<String>().unwrap())
            .collect()
    };

    let k = okome_key(&mut c, "ledger", &["agent:w"]);
    assert_eq!(k, "okome:budget:keys:{agent%3Aw}");

    // PLAN.SET ... AGENT: the plan and its ledger entry, expiring together.
    let a = pkey(&mut c, "plan the login page");
    let r = plan_set(&mut c, &[&a, r#"{"p":1}"#, "AGENT", "agent-w"]);
    assert_eq!(r, ("STORED".into(), Some(600_000), None, 0));
    let ta = pexpiretime(&mut c, &a);
    assert_ledger(&mut c, "agent-w", &[(&a, ta)]);
    assert_eq!(events(2), ["zadd", "expire"]);

    // CACHE.SET ... AGENT: its TTL standard, recorded the same way.
    tick();
    assert_eq!(
        cache_set(
            &mut c,
            &["rag", "repo1", "chunk-1", "{}", "AGENT", "agent-w"]
        ),
        3_600_000
    );
    let rag = "okome:rag:{repo1}:chunk-1";
    let tr = pexpiretime(&mut c, rag);
    assert_ledger(&mut c, "agent-w", &[(&a, ta), (rag, tr)]);
    assert_eq!(events(2), ["zadd", "expire"]);

    // With a write budget: a stored plan is recorded, a SKIPPED one is not.
    tick();
    let b = pkey(&mut c, "plan the signup page");
    let r = plan_set(&mut c, &[&b, "{}", "AGENT", "agent-w", "WLIMIT", "1"]);
    assert_eq!(r, ("STORED".into(), Some(600_000), Some(0), 0));
    let tb = pexpiretime(&mut c, &b);
    assert_eq!(
        events(1),
        ["zadd"],
        "the ledger's expiry (the rag entry's) is unchanged"
    );
    let ledger_before = zrange(&mut c, &ledger("agent-w"));
    let mut w = s.conn();
    let _: () = redis::cmd("WATCH")
        .arg(ledger("agent-w"))
        .query(&mut w)
        .unwrap();
    tick();
    let r = plan_set(&mut c, &[&b, "{}", "AGENT", "agent-w", "WLIMIT", "1"]);
    assert_eq!(r, ("SKIPPED".into(), None, Some(0), 0));
    assert_eq!(zrange(&mut c, &ledger("agent-w")), ledger_before);
    let exec: Option<Vec<String>> = redis::pipe().atomic().cmd("PING").query(&mut w).unwrap();
    assert!(
        exec.is_some(),
        "a write that recorded nothing signals nothing"
    );
    assert_ledger(&mut c, "agent-w", &[(&a, ta), (rag, tr), (&b, tb)]);

    // A write that does record invalidates WATCH on the ledger.
    let _: () = redis::cmd("WATCH")
        .arg(ledger("agent-w"))
        .query(&mut w)
        .unwrap();
    tick();
    let d = pkey(&mut c, "plan the dashboard");
    plan_set(&mut c, &[&d, "{}", "TTL", "900", "AGENT", "agent-w"]);
    let td = pexpiretime(&mut c, &d);
    let exec: Option<Vec<String>> = redis::pipe().atomic().cmd("PING").query(&mut w).unwrap();
    assert!(
        exec.is_none(),
        "the recorded write touched the WATCHed ledger"
    );
    assert_eq!(events(1), ["zadd"], "the rag entry still expires last");
    assert_ledger(
        &mut c,
        "agent-w",
        &[(&a, ta), (rag, tr), (&b, tb), (&d, td)],
    );
    assert_eq!(counter(&mut c, "ledger_records"), 4);

    // All or nothing: a ledger that okome did not write refuses the whole
    // PLAN.SET (no plan, no budget charge).
    let _: () = redis::cmd("SET")
        .arg(&[&ledger("bad"), "x", "PX", "600000"])
        .query(&mut c)
        .unwrap();
    let before = snapshot(&mut c);
    let e = err(
        &mut c,
        &[
            b"OKOME.PLAN.SET",
            d.as_bytes(),
            b"{\"other\":1}",
            b"AGENT",
            b"bad",
            b"WLIMIT",
            b"5",
        ],
    );
    assert!(
        e.starts_with("ERR 'okome:budget:keys:{bad}' does not hold an okome agent ledger"),
        "{e}"
    );
    assert_eq!(snapshot(&mut c), before, "nothing written");

    // The AOF holds each write and its ledger entry in one transaction, as
    // effects with absolute times: SET ... PXAT t, ZADD ledger t key,
    // PEXPIREAT ledger t; never an OKOME.* command.
    let groups = aof_groups(&s.dir);
    let l = ledger("agent-w");
    for g in &groups {
        for cmd in g {
            assert!(
                !cmd[0].to_ascii_uppercase().starts_with("OKOME."),
                "{cmd:?}"
            );
        }
    }
    let find = |key: &str| -> &Vec<Vec<String>> {
        groups
            .iter()
            .find(|g| {
                g.iter()
                    .any(|c| c[0].eq_ignore_ascii_case("SET") && c[1] == key)
            })
            .unwrap_or_else(|| panic!("no SET of {key} in the AOF: {groups:?}"))
    };
    let g = find(&a);
    assert_eq!(g.len(), 3, "{g:?}");
    assert_eq!(
        g[1],
        ["ZADD".to_string(), l.clone(), ta.to_string(), a.clone()]
    );
    assert_eq!(g[2], ["PEXPIREAT".to_string(), l.clone(), ta.to_string()]);
    let g = find(rag);
    assert_eq!(
        &g[1..],
        [
            vec![
                "ZADD".to_string(),
                l.clone(),
                tr.to_string(),
                rag.to_string()
            ],
            vec!["PEXPIREAT".to_string(), l.clone(), tr.to_string()],
        ]
    );
    let g = find(&d);
    assert_eq!(
        &g[1..],
        [vec![
            "ZADD".to_string(),
            l.clone(),
            td.to_string(),
            d.clone()
        ]]
    );
}

// ------------------------------------------------------------ AGENT.KEYS

#[test]
fn keys_lists_exactly_the_live_entries_newest_first() {
    // TTL standards lowered so that some entries expire during the test.
    let s = Server::start_full(&[], &["planner-ttl-min", "1", "health-ttl-min", "1"]);
    let mut c = s.conn();
    let mut short = Vec::new();
    for p in ["s1", "s2"] {
        let k = pkey(&mut c, p);
        plan_set(&mut c, &[&k, "{}", "TTL", "1", "AGENT", "k"]);
        short.push(k);
    }
    cache_set(&mut c, &["health", "n1", "{}", "TTL", "1", "AGENT", "k"]);
    short.push("okome:health:{n1}".into());
    let mut long = Vec::new();
    for p in ["l1", "l2", "l3", "l4", "l5"] {
        tick();
        let k = pkey(&mut c, p);
        plan_set(&mut c, &[&k, "{}", "AGENT", "k"]);
        long.push(k);
    }
    cache_set(&mut c, &["tools", "v1", "{}", "AGENT", "k"]);
    cache_set(&mut c, &["rag", "repo", "c1", "{}", "AGENT", "k"]);
    long.push("okome:tools:{v1}".into());
    long.push("okome:rag:{repo}:c1".into());
    // l2 rewritten by another agent, l3 deleted by hand.
    tick();
    plan_set(&mut c, &[&long[1], r#"{"by":"other"}"#, "AGENT", "other"]);
    let _: i64 = redis::cmd("DEL").arg(&long[2]).query(&mut c).unwrap();
    let recorded: BTreeMap<String, i64> = zrange(&mut c, &ledger("k")).into_iter().collect();
    assert_eq!(recorded.len(), 10);
    std::thread::sleep(Duration::from_millis(1100));

    let now = server_ms(&mut c);
    let mut want: Vec<(String, i64)> = long.iter().map(|k| (k.clone(), recorded[k])).collect();
    want.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
    for count in [1, 2, 3, 100] {
        let got = all_keys(&mut c, "k", count);
        let keys: Vec<&String> = got.iter().map(|e| &e.0).collect();
        assert_eq!(
            keys,
            want.iter().map(|w| &w.0).collect::<Vec<_>>(),
            "COUNT {count}: exactly the live entries, latest-expiring first"
        );
        for (key, ttl, state) in &got {
            let expect = match key.as_str() {
                k if k == long[1] => "rewritten",
                k if k == long[2] => "gone",
                _ => "current",
            };
            assert_eq!(state, expect, "{key}");
            let left = recorded[key] - now;
            assert!(
                *ttl <= left && *ttl >= left - 1000,
                "{key}: ttl {ttl}, recorded {left}"
            );
        }
    }
    let (cursor, page) = keys_page(&mut c, "k", &[]);
    assert_eq!((cursor.as_str(), page.len()), ("0", 7));

    // Expired entries stay until the next record prunes them.
    assert_eq!(zrange(&mut c, &ledger("k")).len(), 10);
    let (ttl, size) = record(&mut c, &["k", "okome:tools:{v1}"]);
    assert_eq!(size, 7, "the three expired entries were pruned");
    assert!(ttl > 590_000, "{ttl}");
    let left: BTreeSet<String> = zrange(&mut c, &ledger("k"))
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(left, long.iter().cloned().collect());

    // A cursor is a position: an entry that stays in the ledger is listed
    // exactly once, whatever is written between two pages.
    let (cur, first) = keys_page(&mut c, "k", &["COUNT", "3"]);
    assert_ne!(cur, "0");
    tick();
    let newer = pkey(&mut c, "written between two pages");
    plan_set(&mut c, &[&newer, "{}", "TTL", "900", "AGENT", "k"]);
    let _: i64 = redis::cmd("DEL").arg(&long[4]).query(&mut c).unwrap();
    let mut rest = Vec::new();
    let mut cursor = cur;
    while cursor != "0" {
        let (next, page) = keys_page(&mut c, "k", &["COUNT", "3", "CURSOR", &cursor]);
        rest.extend(page);
        cursor = next;
    }
    let mut seen: Vec<String> = first.into_iter().chain(rest).map(|e| e.0).collect();
    assert!(
        !seen.contains(&newer),
        "written before the cursor: on a new scan"
    );
    seen.sort();
    let mut all: Vec<String> = long.clone();
    all.sort();
    assert_eq!(seen, all, "every entry once");

    // An agent without a ledger: an empty page.
    assert_eq!(keys_page(&mut c, "nobody", &[]), ("0".into(), vec![]));
}

// ----------------------------------------------------------- AGENT.PURGE

#[test]
fn purge_deletes_exactly_the_keys_still_holding_the_agents_writes() {
    let s = Server::start();
    let mut c = s.conn();
    let (a, b, d) = (pkey(&mut c, "a"), pkey(&mut c, "b"), pkey(&mut c, "d"));
    plan_set(&mut c, &[&a, r#"{"bad":"a"}"#, "AGENT", "bad"]);
    plan_set(
        &mut c,
        &[&b, r#"{"bad":"b"}"#, "AGENT", "bad", "WLIMIT", "10"],
    );
    plan_set(&mut c, &[&d, r#"{"bad":"d"}"#, "AGENT", "bad"]);
    cache_set(&mut c, &["tools", "v7", r#"{"bad":1}"#, "AGENT", "bad"]);
    // Recorded from outside: a plan written by another path.
    let e = pkey(&mut c, "e");
    let _: () = redis::cmd("SET")
        .arg(&[&e, r#"{"bad":"e"}"#, "PX", "300000"])
        .query(&mut c)
        .unwrap();
    record(&mut c, &["bad", &e]);
    // Someone else's plan, untouched by the purge.
    let g = pkey(&mut c, "g");
    plan_set(&mut c, &[&g, r#"{"good":"g"}"#, "AGENT", "good"]);
    // Another agent rewrites a; d is deleted by hand; b is re-expired.
    tick();
    plan_set(&mut c, &[&a, r#"{"good":"a"}"#, "AGENT", "good"]);
    let _: i64 = redis::cmd("DEL").arg(&d).query(&mut c).unwrap();
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&[&b, "500000"])
        .query(&mut c)
        .unwrap();

    let states: BTreeMap<String, String> = all_keys(&mut c, "bad", 100)
        .into_iter()
        .map(|(k, _, st)| (k, st))
        .collect();
    let want: BTreeMap<String, String> = [
        (&a, "rewritten"),
        (&b, "rewritten"),
        (&d, "gone"),
        (&"okome:tools:{v7}".to_string(), "current"),
        (&e, "current"),
    ]
    .into_iter()
    .map(|(k, v)| (k.clone(), v.to_string()))
    .collect();
    assert_eq!(states, want);

    let r = purge(&mut c, "bad", &[]);
    assert_eq!(r, (2, 2, 1, 0, vec![]));
    assert!(!exists(&mut c, "okome:tools:{v7}"));
    assert!(!exists(&mut c, &e));
    assert_eq!(get(&mut c, &a).as_deref(), Some(r#"{"good":"a"}"#));
    assert_eq!(get(&mut c, &b).as_deref(), Some(r#"{"bad":"b"}"#));
    assert_eq!(get(&mut c, &g).as_deref(), Some(r#"{"good":"g"}"#));
    assert!(!exists(&mut c, &ledger("bad")), "the ledger is deleted");
    assert_eq!(zrange(&mut c, &ledger("good")).len(), 2);
    assert_eq!(counter(&mut c, "ledger_purged"), 2);
    // Purging again, or an agent that wrote nothing: nothing to do.
    assert_eq!(purge(&mut c, "bad", &[]), (0, 0, 0, 0, vec![]));
}

#[test]
fn purge_wakes_followers_waiting_on_a_purged_plan() {
    let s = Server::start();
    let mut c = s.conn();
    let args = ["llama3:8b", "purged while they wait", "v1.2.3", "abc123"];
    let leader = plan_get(&mut c, &args);
    assert_eq!(leader.status, "MISS");
    let key = leader.key.clone();
    let mut wait_args: Vec<&str> = args.to_vec();
    wait_args.extend(["WAIT", "20000"]);
    let mut cmd = vec!["OKOME.PLAN.GET"];
    cmd.extend(&wait_args);
    let mut f1 = RawConn::connect(s.port);
    let mut f2 = RawConn::connect(s.port);
    f1.send(&cmd);
    wait_ids_blocked(&mut c, &[f1.id], Duration::from_secs(10));
    f2.send(&cmd);
    wait_ids_blocked(&mut c, &[f1.id, f2.id], Duration::from_secs(10));

    // The bad agent's plan arrives by a path that wakes nobody (a plain
    // SET, the leader's lock dropped by hand), and is recorded.
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{key}:lock"))
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&[&key, r#"{"bad":1}"#, "PX", "600000"])
        .query(&mut c)
        .unwrap();
    record(&mut c, &["bad", &key]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(f1.try_read().unwrap(), None, "nothing has woken them yet");

    // The purge deletes the plan and wakes the followers: the first finds
    // the lock free and becomes the leader (MISS + token), long before the
    // dropped lock's 9 s expiry would have made anyone look.
    let started = Instant::now();
    assert_eq!(purge(&mut c, "bad", &[]), (1, 0, 0, 0, vec![]));
    let m = f1.read(Duration::from_secs(3)).unwrap().plan().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!((m.status.as_str(), m.key.as_str()), ("MISS", key.as_str()));
    let token = m.token.expect("the new leader's token");
    assert_eq!(f2.try_read().unwrap(), None, "the other one waits on");
    // It recomputes; the other follower gets the new plan.
    let r = plan_set(&mut c, &[&key, r#"{"good":1}"#, "TOKEN", &token]);
    assert_eq!(r, ("STORED".into(), Some(600_000), None, 1));
    let h = f2.read(Duration::from_secs(3)).unwrap().plan().unwrap();
    assert_eq!(
        (h.status.as_str(), h.value.as_deref()),
        ("HIT", Some(r#"{"good":1}"#))
    );
}

#[test]
fn a_large_ledger_is_purged_in_bounded_steps() {
    let s = Server::start_with(&["--notify-keyspace-events", "KEA"]);
    let mut c = s.conn();
    let mut sub = s.conn();
    let mut ps = sub.as_pubsub();
    ps.subscribe(format!("__keyspace@0__:{}", ledger("big")))
        .unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut written = Vec::new();
    for i in 0..25 {
        let k = pkey(&mut c, &format!("p{i}"));
        plan_set(&mut c, &[&k, "{}", "AGENT", "big"]);
        written.push(k);
    }
    let mut steps = Vec::new();
    loop {
        let r = purge(&mut c, "big", &["COUNT", "10"]);
        steps.push((r.0, r.3));
        // Between two steps the ledger is still a well-formed ledger.
        if r.3 > 0 {
            let (_, page) = keys_page(&mut c, "big", &["COUNT", "100"]);
            assert_eq!(page.len() as i64, r.3);
            let l = ledger("big");
            let top = zrange(&mut c, &l).last().unwrap().1;
            assert_eq!(pexpiretime(&mut c, &l), top);
        } else {
            break;
        }
    }
    assert_eq!(steps, [(10, 15), (10, 5), (5, 0)]);
    // The ledger's events: the 25 records, then the two partial steps and
    // the last one, as ZREMRANGEBYRANK and DEL fire them.
    let mut events: Vec<String> = Vec::new();
    while events.last().map(String::as_str) != Some("del") {
        events.push(ps.get_message().unwrap().get_payload::<String>().unwrap());
    }
    assert_eq!(events[0..2], ["zadd", "expire"]);
    let records = &events[..events.len() - 3];
    assert_eq!(records.iter().filter(|e| *e == "zadd").count(), 25);
    assert!(
        records.iter().all(|e| e == "zadd" || e == "expire"),
        "{events:?}"
    );
    assert_eq!(
        events[events.len() - 3..],
        ["zremrangebyrank", "zremrangebyrank", "del"],
        "{events:?}"
    );
    for k in &written {
        assert!(!exists(&mut c, k), "{k}");
    }
    assert!(!exists(&mut c, &ledger("big")));
}

#[test]
fn a_full_ledger_drops_its_soonest_expiring_entry() {
    let s = Server::start_full(&[], &["ledger-max-keys", "3"]);
    let mut c = s.conn();
    let p: Vec<String> = (1..=5).map(|i| pkey(&mut c, &format!("f{i}"))).collect();
    plan_set(&mut c, &[&p[0], "{}", "TTL", "900", "AGENT", "f"]);
    plan_set(&mut c, &[&p[1], "{}", "TTL", "300", "AGENT", "f"]);
    plan_set(&mut c, &[&p[2], "{}", "TTL", "600", "AGENT", "f"]);
    assert_eq!(counter(&mut c, "ledger_dropped"), 0);
    plan_set(&mut c, &[&p[3], "{}", "TTL", "600", "AGENT", "f"]);
    let members: BTreeSet<String> = zrange(&mut c, &ledger("f"))
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        members,
        [&p[0], &p[2], &p[3]].into_iter().cloned().collect(),
        "the 300 s plan went first"
    );
    assert_eq!(counter(&mut c, "ledger_dropped"), 1);
    // Rewriting a key already recorded takes no room.
    tick();
    plan_set(&mut c, &[&p[0], "{}", "TTL", "300", "AGENT", "f"]);
    assert_eq!(zrange(&mut c, &ledger("f")).len(), 3);
    assert_eq!(counter(&mut c, "ledger_dropped"), 1);
    // A lowered bound applies at the next record.
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "okome.ledger-max-keys", "1"])
        .query(&mut c)
        .unwrap();
    plan_set(&mut c, &[&p[4], "{}", "AGENT", "f"]);
    let t4 = pexpiretime(&mut c, &p[4]);
    assert_ledger(&mut c, "f", &[(&p[4], t4)]);
    assert_eq!(counter(&mut c, "ledger_dropped"), 4);
}

// --------------------------------------------- replicas and AOF replay

/// A workload through every ledger write: records with pruning (short
/// TTLs), drops (a small bound), updates, a partial purge, a full purge.
fn ledger_workload(c: &mut Connection) {
    for i in 0..6 {
        let k = pkey(c, &format!("short {i}"));
        plan_set(c, &[&k, "{}", "TTL", "1", "AGENT", "r1"]);
    }
    // An entry that outlives them keeps the ledger alive, so the next
    // record prunes them (a ledger whose entries all expired is gone).
    let anchor = pkey(c, "anchor");
    plan_set(c, &[&anchor, "{}", "TTL", "900", "AGENT", "r1"]);
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..8 {
        tick();
        let k = pkey(c, &format!("long {i}"));
        let ttl = (300 + 60 * i).to_string();
        plan_set(c, &[&k, "{}", "TTL", &ttl, "AGENT", "r1"]);
        cache_set(c, &["tools", &format!("t{i}"), "{}", "AGENT", "r2"]);
    }
    cache_set(c, &["rag", "repo", "c", "{}", "AGENT", "r1"]);
    record(c, &["r2", "okome:rag:{repo}:c"]);
    let k = pkey(c, "long 3");
    tick();
    plan_set(c, &[&k, "{}", "TTL", "900", "AGENT", "r1"]);
    for i in 0..10 {
        let k = pkey(c, &format!("purged {i}"));
        plan_set(c, &[&k, "{}", "AGENT", "r3"]);
    }
    let r = purge(c, "r3", &["COUNT", "4"]);
    assert_eq!((r.0, r.3), (4, 1), "the bound kept the latest 5 of 10");
    for i in 0..3 {
        let k = pkey(c, &format!("gone {i}"));
        plan_set(c, &[&k, "{}", "AGENT", "r4"]);
    }
    assert_eq!(purge(c, "r4", &[]).0, 3);
}

type Dumps = BTreeMap<String, (Vec<u8>, Vec<(String, i64)>)>;

/// DUMP and ZRANGE of every ledger.
fn ledgers(c: &mut Connection) -> Dumps {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("okome:budget:keys:*")
        .query(c)
        .unwrap();
    keys.into_iter()
        .map(|k| {
            let d: Vec<u8> = redis::cmd("DUMP").arg(&k).query(c).unwrap();
            let z = zrange(c, &k);
            (k, (d, z))
        })
        .collect()
}

#[test]
fn a_replica_and_an_aof_replay_hold_the_same_ledgers() {
    let primary = Server::start_full(
        &[PRIMARY, AOF].concat(),
        &["planner-ttl-min", "1", "ledger-max-keys", "5"],
    );
    let replica = replica_of(
        &primary,
        &[],
        &["planner-ttl-min", "1", "ledger-max-keys", "5"],
    );
    let mut p = primary.conn();
    let mut r = replica.conn();
    ledger_workload(&mut p);
    assert!(
        counter(&mut p, "ledger_dropped") > 0,
        "the bound was reached"
    );
    replica_acked(&mut p);
    let on_primary = ledgers(&mut p);
    assert_eq!(
        on_primary.keys().cloned().collect::<Vec<_>>(),
        [ledger("r1"), ledger("r2"), ledger("r3")],
        "r4 was purged whole"
    );
    assert_eq!(on_primary[&ledger("r1")].1.len(), 5);
    assert_eq!(on_primary[&ledger("r2")].1.len(), 5);
    assert_eq!(on_primary[&ledger("r3")].1.len(), 1);
    assert_eq!(ledgers(&mut r), on_primary, "the replica");
    for k in on_primary.keys() {
        let (pt, rt) = (pexpiretime(&mut p, k), pexpiretime(&mut r, k));
        assert_eq!(pt, rt, "{k}: the same absolute expiry");
        assert_eq!(pt, on_primary[k].1.last().unwrap().1);
    }
    // The replica serves the same lists.
    let keys_p: Vec<(String, String)> = all_keys(&mut p, "r1", 2)
        .into_iter()
        .map(|e| (e.0, e.2))
        .collect();
    let keys_r: Vec<(String, String)> = all_keys(&mut r, "r1", 2)
        .into_iter()
        .map(|e| (e.0, e.2))
        .collect();
    assert_eq!(keys_p, keys_r);
    drop(r);
    drop(replica);
    // Only effects with absolute bounds ever reach the AOF for a ledger.
    let mut seen = BTreeSet::new();
    for g in aof_groups(&primary.dir) {
        for cmd in g {
            assert!(
                !cmd[0].to_ascii_uppercase().starts_with("OKOME."),
                "{cmd:?}"
            );
            if !cmd[1].starts_with("okome:budget:keys:") {
                continue;
            }
            let name = cmd[0].to_ascii_uppercase();
            let absolute = |v: &str| v.parse::<i64>().is_ok_and(|t| t > 1_600_000_000_000);
            match name.as_str() {
                "ZADD" => assert!(cmd.len() == 4 && absolute(&cmd[2]), "{cmd:?}"),
                "PEXPIREAT" => assert!(cmd.len() == 3 && absolute(&cmd[2]), "{cmd:?}"),
                "ZREMRANGEBYSCORE" => {
                    assert!(cmd[2] == "-inf" && absolute(&cmd[3]), "{cmd:?}")
                }
                "ZREMRANGEBYRANK" => assert!(cmd[2] == "0", "{cmd:?}"),
                "DEL" => assert_eq!(cmd.len(), 2),
                _ => panic!("unexpected effect on a ledger: {cmd:?}"),
            }
            seen.insert(name);
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "DEL",
            "PEXPIREAT",
            "ZADD",
            "ZREMRANGEBYRANK",
            "ZREMRANGEBYSCORE"
        ]
    );

    // SIGKILL and replay of the AOF.
    let mut primary = primary;
    primary.crash_and_restart();
    let mut p = primary.conn();
    assert_eq!(ledgers(&mut p), on_primary, "after an AOF replay");
    for k in on_primary.keys() {
        assert_eq!(
            pexpiretime(&mut p, k),
            on_primary[k].1.last().unwrap().1,
            "{k}"
        );
    }
}

// --------------------------------------------------------------- cluster

/// Redis's refusal of a call whose declared keys lie in two slots.
#[test]
fn cluster_records_lists_and_purges_what_each_node_serves() {
    let cl = Cluster::start();
    let mut any = cl.nodes[0].conn();
    let agent = "agent-7";
    let l = ledger(agent);
    assert_eq!(cl.slot(&l), cl.slot(agent), "the ledger routes by agent");
    let home = cl.node_of(&l);
    let mut h = cl.nodes[home].conn();
    // A plan another node serves, and a cache key in another slot of the
    // agent's own node.
    let remote = (0..200)
        .map(|i| pkey(&mut any, &format!("remote {i}")))
        .find(|k| cl.node_of(k) != home)
        .unwrap();
    let there = cl.node_of(&remote);
    let mut t = cl.nodes[there].conn();
    let v = (0..500)
        .map(|i| format!("v{i}"))
        .find(|v| {
            let k = format!("okome:tools:{{{v}}}");
            cl.node_of(&k) == home && cl.slot(&k) != cl.slot(&l)
        })
        .unwrap();
    let local = format!("okome:tools:{{{v}}}");

    // One call records only when the key shares the agent's slot: both
    // keys are declared, so Redis refuses keys of two slots.
    let e = err(
        &mut t,
        &[
            b"OKOME.PLAN.SET",
            remote.as_bytes(),
            b"{}",
            b"AGENT",
            agent.as_bytes(),
        ],
    );
    assert_eq!(e, CROSSSLOT);
    let e = err(
        &mut h,
        &[
            b"OKOME.CACHE.SET",
            b"tools",
            v.as_bytes(),
            b"{}",
            b"AGENT",
            agent.as_bytes(),
        ],
    );
    assert_eq!(e, CROSSSLOT);
    cl.assert_keys_local();
    assert!(!exists(&mut h, &l) && !exists(&mut t, &remote));
    // The agent's own tag: key and ledger in one slot, one call.
    assert_eq!(
        cache_set(&mut h, &["tools", agent, "{}", "AGENT", agent]),
        600_000
    );
    let same = format!("okome:tools:{{{agent}}}");

    // The supported path for a key elsewhere: write it on its node, read
    // its absolute expiry there, record it on the agent's node with PXAT.
    let mut cc = cl.client();
    let r: SetReply = redis::cmd("OKOME.PLAN.SET")
        .arg(&[&remote, r#"{"bad":1}"#])
        .query(&mut cc)
        .unwrap();
    assert_eq!(r.0, "STORED");
    let at = pexpiretime(&mut t, &remote);
    let e = err(
        &mut h,
        &[b"OKOME.AGENT.RECORD", agent.as_bytes(), remote.as_bytes()],
    );
    assert!(
        e.starts_with("ERR okome:") && e.contains("PXAT") && e.contains("not in the agent's slot"),
        "{e}"
    );
    let far = (at + 3_600_000).to_string();
    let e = err(
        &mut h,
        &[
            b"OKOME.AGENT.RECORD",
            agent.as_bytes(),
            remote.as_bytes(),
            b"PXAT",
            far.as_bytes(),
        ],
    );
    assert!(e.starts_with("ERR pxat"), "{e}");
    let (ttl, size): (i64, i64) = redis::cmd("OKOME.AGENT.RECORD")
        .arg(&[agent, &remote, "PXAT", &at.to_string()])
        .query(&mut cc)
        .unwrap();
    assert!(ttl > 590_000 && size == 2, "{ttl} {size}");
    // A key in another slot of the same node: the same path. A command
    // never touches a second slot, even one its node serves (Redis 7.4+
    // and Valkey 8+ look keys up in the slot the command was routed by).
    cache_set(&mut h, &["tools", &v, "{}"]);
    let e = err(
        &mut h,
        &[b"OKOME.AGENT.RECORD", agent.as_bytes(), local.as_bytes()],
    );
    assert!(
        e.contains("not in the agent's slot") && e.contains("PXAT"),
        "{e}"
    );
    let tl = pexpiretime(&mut h, &local);
    record(&mut h, &[agent, &local, "PXAT", &tl.to_string()]);
    assert_eq!(
        zrange(&mut h, &l).iter().find(|e| e.0 == local).unwrap().1,
        tl
    );
    // A key of the agent's own slot is read: PXAT, if given, must match.
    let ts = pexpiretime(&mut h, &same);
    let wrong = (ts + 1).to_string();
    let e = err(
        &mut h,
        &[
            b"OKOME.AGENT.RECORD",
            agent.as_bytes(),
            same.as_bytes(),
            b"PXAT",
            wrong.as_bytes(),
        ],
    );
    assert!(e.starts_with("ERR pxat"), "{e}");
    record(&mut h, &[agent, &same]);

    // KEYS on the agent's node: keys of other slots are elsewhere.
    let states: BTreeMap<String, String> = {
        let (cursor, page): KeysReply = redis::cmd("OKOME.AGENT.KEYS")
            .arg(agent)
            .query(&mut cc)
            .unwrap();
        assert_eq!(cursor, "0");
        page.into_iter().map(|(k, _, s)| (k, s)).collect()
    };
    assert_eq!(states[&remote], "elsewhere");
    assert_eq!(states[&local], "elsewhere");
    assert_eq!(states[&same], "current");
    // Sent to another node, the agent's commands are redirected by Redis.
    for cmd in ["OKOME.AGENT.KEYS", "OKOME.AGENT.PURGE"] {
        let moved = redis::cmd(cmd)
            .arg(agent)
            .query::<Value>(&mut t)
            .unwrap_err();
        assert_eq!(moved.kind(), redis::ErrorKind::Moved, "{cmd}: {moved}");
    }

    // PURGE deletes what the agent's slot holds and hands back the rest,
    // untouched, with the recorded expiry, soonest-expiring first.
    let r: PurgeReply = redis::cmd("OKOME.AGENT.PURGE")
        .arg(agent)
        .query(&mut cc)
        .unwrap();
    assert_eq!(
        r,
        (1, 0, 0, 0, vec![(remote.clone(), at), (local.clone(), tl)])
    );
    assert!(!exists(&mut h, &same) && !exists(&mut h, &l));
    assert!(exists(&mut h, &local));
    assert_eq!(get(&mut t, &remote).as_deref(), Some(r#"{"bad":1}"#));
    cl.assert_keys_local();
    // The client finishes on the key's node with a compare-and-delete.
    let script = "if redis.call('PEXPIRETIME', KEYS[1]) == tonumber(ARGV[1]) then return redis.call('DEL', KEYS[1]) end return 0";
    let stale: i64 = redis::cmd("EVAL")
        .arg(&[script, "1", &remote, &(at - 1).to_string()])
        .query(&mut cc)
        .unwrap();
    assert_eq!(stale, 0, "a rewritten key is left");
    let done: i64 = redis::cmd("EVAL")
        .arg(&[script, "1", &remote, &at.to_string()])
        .query(&mut cc)
        .unwrap();
    assert_eq!(done, 1);
    assert!(!exists(&mut t, &remote));
    let done: i64 = redis::cmd("EVAL")
        .arg(&[script, "1", &local, &tl.to_string()])
        .query(&mut cc)
        .unwrap();
    assert_eq!(done, 1);
    assert!(!exists(&mut h, &local));
    cl.assert_keys_local();
}

// ---------------------------------------------------- bad input, ACL

/// A case whose reply must start with `want`.
fn case(args: &[&str], want: &str) -> Case {
    Case {
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        want: Want::Prefix(want.to_string(), Vec::new()),
    }
}

#[test]
fn bad_input_writes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    // State to protect: a recorded plan, and every kind of bad ledger.
    let pk = pkey(&mut c, "protected");
    plan_set(&mut c, &[&pk, "{}", "AGENT", "seed"]);
    let t = pexpiretime(&mut c, &pk);
    must(&mut c, &["SET", "okome:tools:{nottl}", "{}"]);
    must(&mut c, &["RPUSH", "okome:tools:{list}", "x"]);
    must(&mut c, &["PEXPIRE", "okome:tools:{list}", "600000"]);
    must(&mut c, &["SET", &ledger("str"), "x", "PX", "600000"]);
    let ts = t.to_string();
    must(&mut c, &["ZADD", &ledger("nottl"), &ts, &pk]);
    must(&mut c, &["ZADD", &ledger("offttl"), &ts, &pk]);
    must(
        &mut c,
        &["PEXPIREAT", &ledger("offttl"), &(t + 5).to_string()],
    );
    must(
        &mut c,
        &["ZADD", &ledger("lowbad"), "1000", "foo", &ts, &pk],
    );
    must(&mut c, &["PEXPIREAT", &ledger("lowbad"), &ts]);
    must(
        &mut c,
        &["ZADD", &ledger("frac"), &format!("{}.5", t - 10), &pk],
    );
    must(&mut c, &["ZADD", &ledger("frac"), &ts, "okome:tools:{x}"]);
    must(&mut c, &["PEXPIREAT", &ledger("frac"), &ts]);
    must(
        &mut c,
        &[
            "ZADD",
            &ledger("mid"),
            &(t - 20).to_string(),
            "okome:tools:{a}",
            &(t - 10).to_string(),
            "okome:budget:rate:{x}",
            &ts,
            &pk,
        ],
    );
    must(&mut c, &["PEXPIREAT", &ledger("mid"), &ts]);
    let garbage = |name: &str, why: &str| {
        format!(
            "ERR '{}' does not hold an okome agent ledger ({why}",
            ledger(name)
        )
    };
    let only_cache = |key: &str, kind: &str| {
        format!(
            "ERR '{key}' is a {kind} budget key; only cache keys (planner, model_meta, rag, tools, health) can be recorded"
        )
    };
    let mut cases = vec![
        case(&["OKOME.AGENT.RECORD", "a"], &arity("okome.agent.record")),
        case(&["OKOME.AGENT.KEYS"], &arity("okome.agent.keys")),
        case(&["OKOME.AGENT.PURGE"], &arity("okome.agent.purge")),
        case(
            &["OKOME.AGENT.RECORD", "", &pk],
            "ERR agent must not be empty",
        ),
        case(&["OKOME.AGENT.KEYS", ""], "ERR agent must not be empty"),
        case(&["OKOME.AGENT.PURGE", ""], "ERR agent must not be empty"),
        case(
            &["OKOME.PLAN.SET", &pk, "{}", "AGENT", ""],
            "ERR agent must not be empty",
        ),
        case(
            &["OKOME.CACHE.SET", "tools", "v1", "{}", "AGENT", ""],
            "ERR agent must not be empty",
        ),
        case(
            &["OKOME.PLAN.SET", &pk, "{}", "WWINDOW", "5", "AGENT", "a"],
            "ERR syntax error: WLIMIT needs AGENT, and WWINDOW needs AGENT and WLIMIT",
        ),
        case(
            &["OKOME.PLAN.SET", &pk, "{}", "WLIMIT", "5"],
            "ERR syntax error: WLIMIT needs AGENT",
        ),
        // Not an okome cache key: the seed's hard rule.
        case(
            &["OKOME.AGENT.RECORD", "a", "foo"],
            "ERR 'foo' is not an okome key: it must start with 'okome:'",
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", &format!("{pk}:lock")],
            &format!(
                "ERR '{}' is not an okome key",
                printed(&format!("{pk}:lock"))
            ),
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", "okome:git:{x}"],
            "ERR 'okome:git:{x}' is not an okome key: unknown kind",
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", "okome:budget:rate:{a}"],
            &only_cache("okome:budget:rate:{a}", "rate"),
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", "okome:budget:write:{a}"],
            &only_cache("okome:budget:write:{a}", "write"),
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", &ledger("seed")],
            &only_cache(&ledger("seed"), "ledger"),
        ),
        case(
            &["OKOME.CACHE.SET", "ledger", "a", "{}"],
            "ERR kind 'ledger' is not cacheable",
        ),
        // A key that does not exist, has no TTL, or is not a string.
        case(
            &["OKOME.AGENT.RECORD", "a", "okome:tools:{none}"],
            "ERR key 'okome:tools:{none}' does not exist",
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", "okome:tools:{nottl}"],
            "ERR key 'okome:tools:{nottl}' has no TTL",
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", "okome:tools:{list}"],
            "WRONGTYPE",
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", &pk, "PXAT", "1"],
            &format!(
                "ERR pxat 1 is not the expiry of '{}', which expires at {t}",
                printed(&pk)
            ),
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", &pk, "PXAT", "0"],
            "ERR pxat 0 is out of range",
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", &pk, "PXAT", "x"],
            "ERR pxat is not an integer or out of range",
        ),
        case(
            &["OKOME.AGENT.RECORD", "a", &pk, "EX", "1"],
            "ERR syntax error: unknown option 'EX' (expected one of: PXAT)",
        ),
        // Options.
        case(
            &["OKOME.AGENT.KEYS", "seed", "COUNT", "0"],
            "ERR count 0 is out of range: must be between 1 and 10000 keys",
        ),
        case(
            &["OKOME.AGENT.KEYS", "seed", "COUNT", "-1"],
            "ERR count -1 is out of range",
        ),
        case(
            &["OKOME.AGENT.KEYS", "seed", "CURSOR", "7"],
            "ERR syntax error: cursor '7' is not a cursor OKOME.AGENT.KEYS replied",
        ),
        case(
            &["OKOME.AGENT.KEYS", "seed", "CURSOR"],
            "ERR syntax error: option CURSOR needs a value",
        ),
        case(
            &["OKOME.AGENT.KEYS", "seed", "COUNT", "1", "count", "2"],
            "ERR syntax error: option COUNT given more than once",
        ),
        case(
            &["OKOME.AGENT.PURGE", "seed", "COUNT", "100001"],
            "ERR count 100001 is out of range: must be between 1 and 100000 keys",
        ),
        case(
            &["OKOME.AGENT.PURGE", "seed", "ALL"],
            "ERR syntax error: unknown option 'ALL' (expected one of: COUNT)",
        ),
    ];
    // Ledgers okome did not write, through every command that opens one.
    for (name, why) in [
        ("str", "a string, not a sorted set"),
        ("nottl", "a sorted set without a TTL"),
        ("offttl", "a sorted set whose TTL"),
        ("lowbad", "entry 'foo' is not an okome cache key"),
        ("frac", "entry '"),
    ] {
        let want = garbage(name, why);
        cases.push(case(&["OKOME.AGENT.RECORD", name, &pk], &want));
        cases.push(case(&["OKOME.AGENT.KEYS", name], &want));
        cases.push(case(&["OKOME.AGENT.PURGE", name], &want));
        cases.push(case(&["OKOME.PLAN.SET", &pk, "{}", "AGENT", name], &want));
        cases.push(case(
            &["OKOME.CACHE.SET", "tools", "v1", "{}", "AGENT", name],
            &want,
        ));
    }
    // A bad entry in the middle is found when it is read.
    let want = garbage(
        "mid",
        "entry 'okome:budget:rate:{x}' is not an okome cache key",
    );
    cases.push(case(&["OKOME.AGENT.KEYS", "mid"], &want));
    cases.push(case(&["OKOME.AGENT.PURGE", "mid"], &want));
    run_with(&mut c, &cases, false);
    // Still intact.
    assert_ledger(&mut c, "seed", &[(&pk, t)]);
}

#[test]
fn acl_checks_the_ledger_and_every_key_purged() {
    let s = Server::start();
    let mut admin = s.conn();
    let acl = |c: &mut Connection, args: &[&str]| {
        let _: () = redis::cmd("ACL").arg("SETUSER").arg(args).query(c).unwrap();
    };
    acl(
        &mut admin,
        &["planner", "on", ">pw", "~okome:planner:*", "+@all"],
    );
    acl(
        &mut admin,
        &[
            "ledgers",
            "on",
            ">pw",
            "~okome:budget:keys:*",
            "%R~okome:planner:*",
            "+@all",
        ],
    );
    acl(&mut admin, &["reader", "on", ">pw", "%R~okome:*", "+@all"]);
    let pk = pkey(&mut admin, "guarded");
    plan_set(&mut admin, &[&pk, "{}", "AGENT", "x"]);
    let before = snapshot(&mut admin);

    // A planner-only user may store plans, but not make okome write a
    // ledger: the ledger is declared, so Redis refuses in its own words.
    let mut planner = as_user(&s, "planner");
    let refused = |c: &mut Connection, args: &[&[u8]]| {
        let e = err(c, args);
        assert!(e.starts_with("NOPERM"), "{e}");
    };
    let other = pkey(&mut admin, "other");
    refused(
        &mut planner,
        &[b"OKOME.PLAN.SET", other.as_bytes(), b"{}", b"AGENT", b"x"],
    );
    refused(&mut planner, &[b"OKOME.AGENT.RECORD", b"x", pk.as_bytes()]);
    refused(&mut planner, &[b"OKOME.AGENT.KEYS", b"x"]);
    // May write ledgers, only read plans: PURGE may not delete the plan,
    // an entry found while running, refused by okome naming it.
    let mut ledgers = as_user(&s, "ledgers");
    assert_eq!(
        err(&mut ledgers, &[b"OKOME.AGENT.PURGE", b"x"]),
        format!(
            "NOPERM this user has no permissions to access the '{}' key (okome.agent.purge \
             found it in the agent's ledger)",
            printed(&pk)
        )
    );
    // A reader lists, but neither records nor purges.
    let mut reader = as_user(&s, "reader");
    let (_, page) = keys_page(&mut reader, "x", &[]);
    assert_eq!(page.len(), 1);
    refused(&mut reader, &[b"OKOME.AGENT.RECORD", b"x", pk.as_bytes()]);
    refused(&mut reader, &[b"OKOME.AGENT.PURGE", b"x"]);
    assert_eq!(snapshot(&mut admin), before, "nothing written");
    // Recording declares the key written (a ledger holds only keys its
    // agent could write), so the ledgers user, which may only read plans,
    // may not record one; it lists a ledger that holds one.
    refused(&mut ledgers, &[b"OKOME.AGENT.RECORD", b"y", pk.as_bytes()]);
    assert_eq!(snapshot(&mut admin), before, "nothing written");
    record(&mut admin, &["y", &pk]);
    assert_eq!(keys_page(&mut ledgers, "y", &[]).1.len(), 1);
}

// ------------------------------------------------------- memory bound

fn memory_usage(c: &mut Connection, key: &str) -> i64 {
    redis::cmd("MEMORY")
        .arg(&["USAGE", key, "SAMPLES", "0"])
        .query::<Option<i64>>(c)
        .unwrap()
        .unwrap_or(0)
}

#[test]
fn a_full_ledger_costs_what_the_readme_says() {
    let s = Server::start();
    let mut c = s.conn();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        let k = pkey(&mut c, &format!("prompt {i}"));
        pipe.cmd("OKOME.PLAN.SET")
            .arg(&[&k, "{}", "AGENT", "agent-123"])
            .ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let l = ledger("agent-123");
    assert_eq!(zrange(&mut c, &l).len(), 1000);
    let bytes = memory_usage(&mut c, &l);
    eprintln!("a full ledger of 1000 planner keys: MEMORY USAGE {bytes} bytes");
    // README: 198 768 bytes on Redis 7.0 (skiplist levels are random, and
    // allocators differ between servers).
    assert!((150_000..=260_000).contains(&bytes), "{bytes}");
}

#[test]
fn ledger_memory_stays_within_its_bound_under_a_long_random_workload() {
    const MAX: u64 = 40;
    let s = Server::start_full(
        &[],
        &[
            "ledger-max-keys",
            "40",
            "planner-ttl-min",
            "1",
            "health-ttl-min",
            "1",
        ],
    );
    let mut c = s.conn();
    // The bound: a full ledger of the longest keys the workload writes.
    for i in 0..MAX {
        let k = pkey(&mut c, &format!("reference {i}"));
        plan_set(&mut c, &[&k, "{}", "AGENT", "reference"]);
    }
    let full = memory_usage(&mut c, &ledger("reference"));
    // Skiplist node levels are random: allow a quarter more than one fill.
    let bound = full + full / 4;
    let agents = ["a0", "a1", "a2"];
    let prompts: Vec<String> = (0..150).map(|i| pkey(&mut c, &format!("w{i}"))).collect();
    let mut rng = Xorshift64(0x9E37_79B9_7F4A_7C15);
    let steps = env_number("OKOME_LEDGER_STEPS").unwrap_or(6000u64);
    let mut largest = 0;
    let mut purged = 0;
    let started = server_ms(&mut c);
    for step in 0..steps {
        let agent = agents[rng.below(3) as usize];
        let p = &prompts[rng.below(prompts.len() as u64) as usize];
        match rng.below(100) {
            0..=39 => {
                let ttl = if rng.below(3) == 0 {
                    1 + rng.below(2)
                } else {
                    300 + rng.below(601)
                };
                plan_set(&mut c, &[p, "{}", "TTL", &ttl.to_string(), "AGENT", agent]);
            }
            40..=54 => {
                let v = format!("t{}", rng.below(60));
                cache_set(&mut c, &["tools", &v, "{}", "AGENT", agent]);
            }
            55..=59 => {
                let n = format!("n{}", rng.below(20));
                let ttl = (1 + rng.below(30)).to_string();
                cache_set(&mut c, &["health", &n, "{}", "TTL", &ttl, "AGENT", agent]);
            }
            60..=69 => {
                // May have expired or been deleted: an error then.
                let _ = redis::cmd("OKOME.AGENT.RECORD")
                    .arg(&[agent, p])
                    .query::<Value>(&mut c);
            }
            70..=79 => {
                plan_set(&mut c, &[p, r#"{"other":1}"#]);
            }
            80..=89 => {
                let (_, page) = keys_page(&mut c, agent, &["COUNT", "10"]);
                assert!(page.len() <= 10);
            }
            90..=92 => {
                purged += purge(&mut c, agent, &["COUNT", "15"]).0;
            }
            _ => {
                let _: i64 = redis::cmd("DEL").arg(p).query(&mut c).unwrap();
            }
        }
        if step % 250 == 0 || step + 1 == steps {
            let now = server_ms(&mut c);
            for a in agents {
                let l = ledger(a);
                let entries = zrange(&mut c, &l);
                if entries.is_empty() {
                    continue;
                }
                assert!(
                    entries.len() as u64 <= MAX,
                    "step {step}: {l} holds {}",
                    entries.len()
                );
                let bytes = memory_usage(&mut c, &l);
                largest = largest.max(bytes);
                assert!(
                    bytes <= bound,
                    "step {step}: {l} uses {bytes} bytes > {bound}"
                );
                let top = entries.iter().map(|e| e.1).max().unwrap();
                assert_eq!(pexpiretime(&mut c, &l), top, "step {step}: {l}'s TTL");
                assert!(top >= now, "step {step}: a live ledger has a live entry");
                for (k, t) in &entries {
                    assert!(
                        k.starts_with("okome:") && !k.starts_with("okome:budget:"),
                        "step {step}: {k}"
                    );
                    assert!(*t > started - 1000, "step {step}: {k} at {t}");
                }
            }
        }
    }
    eprintln!(
        "{steps} steps: largest ledger {largest} bytes, bound {bound} (one full ledger {full}); {purged} keys purged; {} entries dropped",
        counter(&mut c, "ledger_dropped")
    );
    assert!(
        counter(&mut c, "ledger_dropped") > 0,
        "the bound was reached"
    );
    for a in agents {
        while purge(&mut c, a, &["COUNT", "7"]).3 > 0 {}
        assert!(!exists(&mut c, &ledger(a)));
    }
}

/// Every ledger path, round after round with a FLUSHALL in between:
/// `used_memory` (Redis's allocator, which okome allocates through) stays
/// flat, so no string the sorted-set API hands out is leaked.
#[test]
fn ledger_commands_leak_nothing() {
    let s = Server::start_full(&[], &["ledger-max-keys", "20", "planner-ttl-min", "1"]);
    let mut c = s.conn();
    let mut samples = Vec::new();
    for round in 0..10 {
        for i in 0..40 {
            let k = pkey(&mut c, &format!("leak {i}"));
            let ttl = if i % 4 == 0 { "1" } else { "600" };
            plan_set(&mut c, &[&k, "{}", "TTL", ttl, "AGENT", "l"]);
            cache_set(&mut c, &["tools", &format!("v{i}"), "{}", "AGENT", "l"]);
            record(&mut c, &["m", &k]);
        }
        all_keys(&mut c, "l", 3);
        all_keys(&mut c, "m", 7);
        purge(&mut c, "l", &["COUNT", "5"]);
        while purge(&mut c, "m", &["COUNT", "3"]).3 > 0 {}
        for bad in [
            &["OKOME.AGENT.RECORD", "l", "okome:tools:{none}"][..],
            &["OKOME.AGENT.KEYS", "l", "CURSOR", "x"],
        ] {
            assert!(redis::cmd(bad[0])
                .arg(&bad[1..])
                .query::<Value>(&mut c)
                .is_err());
        }
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
        samples.push(info_i64(&mut c, "memory", "used_memory"));
        let _ = round;
    }
    let settled = samples[3];
    let last = *samples.last().unwrap();
    assert!(
        last - settled < 16 * 1024,
        "used_memory grew by {} bytes over 6 rounds: {samples:?}",
        last - settled
    );
}

/// A hand-made ledger whose only entry is a lock key (not a cache key) is
/// refused by every command that opens it, writes included: the first and
/// last entries are checked in full whenever a ledger is opened.
#[test]
fn a_ledger_holding_a_lock_key_is_refused_by_every_command() {
    let s = Server::start();
    let mut c = s.conn();
    let t = server_ms(&mut c) + 60_000;
    let ts = t.to_string();
    let l = ledger("planted");
    let _: i64 = redis::cmd("ZADD")
        .arg(&[l.as_str(), &ts, "okome:tools:{ok}:lock"])
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("PEXPIREAT")
        .arg(&[&l, &ts])
        .query(&mut c)
        .unwrap();
    cache_set(&mut c, &["tools", "ok", "{}"]);
    let before = snapshot(&mut c);
    let want = format!(
        "ERR '{l}' does not hold an okome agent ledger (entry 'okome:tools:{{ok}}:lock' is not an okome cache key"
    );
    for args in [
        &["OKOME.AGENT.RECORD", "planted", "okome:tools:{ok}"][..],
        &["OKOME.CACHE.SET", "tools", "ok", "{}", "AGENT", "planted"],
        &["OKOME.AGENT.KEYS", "planted"],
        &["OKOME.AGENT.PURGE", "planted"],
    ] {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let e = err(&mut c, &bytes);
        assert!(e.starts_with(&want), "{args:?}: {e}");
    }
    assert_eq!(snapshot(&mut c), before, "nothing written");
}
