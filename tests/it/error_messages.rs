//! Every error okome can reply, with its exact text: one row per error
//! class (each variant of `okome_core::Error`, and each message composed in
//! `src/` and `core/src`), sent to a real server. A change of wording is a
//! deliberate diff of this table.
//!
//! Each row is a command and the exact reply; `<n>` in a wanted text
//! stands for a number that depends on the clock (now, ms ahead), and a
//! wanted text ending with `<...>` pins only what comes before it (a
//! refusal in Redis's own words, which differ between Redis and Valkey). After
//! every row the keyspace (DBSIZE, every key's DUMP and whether it has a
//! TTL) is as it was before.
//!
//! Not reachable from a client, so not in the table: `ERR okome internal
//! error: ...` (a panic caught; `src/reply.rs`), `ERR okome internal error:
//! lost wait state` (`src/wait.rs`), `okome.<name> must not be negative`
//! (`src/config.rs`: Redis checks a config's bounds, min >= 0, before
//! okome's setter runs), and the `READONLY` / `LOADING` / paused texts of
//! `server::Refusal` (a command never gets them: Redis refuses first; a
//! woken waiter is answered `LOCKED`).

use crate::support::cluster::Cluster;
use crate::support::errors::{not_cacheable, pattern, Case};
use crate::support::*;

use redis::Connection;
use std::time::Duration;

/// Sends `r` on `c` and checks its reply: exactly the wanted error.
fn send(c: &mut Connection, r: &Case) {
    let cmd = show(&r.args);
    let got = match command(&r.args).query::<redis::Value>(c) {
        Ok(v) => panic!("{cmd}: expected {:?}, got {v:?}", r.want.text()),
        Err(e) => error_text(&e),
    };
    assert!(
        r.want.matches(&got),
        "{cmd}\n  got:  {got}\n  want: {}",
        r.want.text()
    );
}

/// Sends each row on `c`; the keyspace seen from `watch`, or from `c`
/// itself (DBSIZE, and each key's DUMP and whether it has a TTL), must not
/// change.
fn check_on(c: &mut Connection, mut watch: Option<&mut Connection>, rows: &[Case]) {
    for r in rows {
        let w = watch.as_deref_mut().unwrap_or(&mut *c);
        let (before, size) = (snapshot(w), dbsize(w));
        send(c, r);
        let cmd = show(&r.args);
        let w = watch.as_deref_mut().unwrap_or(&mut *c);
        assert_eq!(dbsize(w), size, "{cmd} changed DBSIZE");
        assert_eq!(snapshot(w), before, "{cmd} changed the keyspace");
    }
}

/// [`check_on`], watched from the same connection.
fn check(c: &mut Connection, rows: &[Case]) {
    check_on(c, None, rows)
}

fn cmd<T: redis::FromRedisValue>(c: &mut Connection, args: &[&[u8]]) -> T {
    command(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(args[0])))
}

/// Every argument error, on one server holding a plan, a held lock, a
/// cache value, a budget window and a ledger that the errors must not
/// touch; and the keys okome refuses to read (foreign windows and
/// ledgers, keys of another type).
#[test]
fn every_argument_and_key_error() {
    let s = Server::start();
    let mut c = s.conn();
    let pk: String = cmd(&mut c, &[b"OKOME.KEY", b"planner", b"m", b"p", b"t", b"r"]);
    let pkb = pk.as_bytes();
    let hash = sha256_hex("p");
    let _: i64 = cmd(
        &mut c,
        &[
            b"OKOME.CACHE.SET",
            b"tools",
            b"v1",
            b"[1]",
            b"AGENT",
            b"seed",
        ],
    );
    let _: Vec<i64> = cmd(&mut c, &[b"OKOME.RATE", b"seed", b"5", b"60"]);
    let _: redis::Value = cmd(&mut c, &[b"OKOME.PLAN.SET", pkb, b"{\"plan\":1}"]);
    let _: redis::Value = cmd(&mut c, &[b"OKOME.LOCK", b"okome:rag:{r}:c"]);
    // Keys okome did not write: a window and a ledger of garbage, keys of
    // other types, a cache key without a TTL.
    let _: () = cmd(
        &mut c,
        &[b"SET", b"okome:budget:rate:{foreign}", b"not a window"],
    );
    let _: () = cmd(&mut c, &[b"LPUSH", b"okome:budget:rate:{list}", b"x"]);
    let _: () = cmd(
        &mut c,
        &[b"SET", b"okome:budget:gcra:{foreign}", b"not a state"],
    );
    let _: () = cmd(&mut c, &[b"LPUSH", b"okome:tools:{list}", b"x"]);
    let _: () = cmd(&mut c, &[b"SET", b"okome:tools:{nottl}", b"{}"]);
    let _: () = cmd(&mut c, &[b"SET", b"okome:budget:keys:{str}", b"x"]);
    let _: () = cmd(
        &mut c,
        &[
            b"ZADD",
            b"okome:budget:keys:{nottl}",
            b"1",
            b"okome:tools:{v1}",
        ],
    );
    let _: () = cmd(
        &mut c,
        &[
            b"ZADD",
            b"okome:budget:keys:{score}",
            b"1.5",
            b"okome:tools:{v1}",
        ],
    );
    let _: () = cmd(
        &mut c,
        &[b"PEXPIREAT", b"okome:budget:keys:{score}", b"4102444800000"],
    );
    let _: () = cmd(
        &mut c,
        &[
            b"ZADD",
            b"okome:budget:keys:{member}",
            b"4102444800000",
            b"foo",
        ],
    );
    let _: () = cmd(
        &mut c,
        &[
            b"PEXPIREAT",
            b"okome:budget:keys:{member}",
            b"4102444800000",
        ],
    );
    let _: () = cmd(
        &mut c,
        &[
            b"ZADD",
            b"okome:budget:keys:{ttl}",
            b"4102444700000",
            b"okome:tools:{v1}",
        ],
    );
    let _: () = cmd(
        &mut c,
        &[b"PEXPIREAT", b"okome:budget:keys:{ttl}", b"4102444800000"],
    );
    // A window whose newest entry lies ten minutes ahead of the server.
    let (secs, _): (i64, i64) = cmd(&mut c, &[b"TIME"]);
    let mut ahead = vec![okome_core::limiter::FORMAT_V1];
    ahead.extend_from_slice(&(secs * 1000 + 600_000).to_le_bytes());
    ahead.push(1);
    let _: () = cmd(&mut c, &[b"SET", b"okome:budget:rate:{ahead}", &ahead]);
    let tools_at: i64 = cmd(&mut c, &[b"PEXPIRETIME", b"okome:tools:{v1}"]);
    let cursor_bad = "ERR syntax error: cursor '7' is not a cursor OKOME.AGENT.KEYS replied \
                      (0 starts from the newest key)";
    let big_prompt = vec![b'p'; 4 * 1024 * 1024 + 1];
    let mut big_value = vec![b'"'; 1];
    big_value.resize(4 * 1024 * 1024, b'a');
    big_value.push(b'"');
    let garbage = |ledger: &str, why: &str| {
        format!(
            "ERR 'okome:budget:keys:{{{ledger}}}' does not hold an okome agent ledger ({why}; was \
             it written by another client?); nothing was written; DEL it to start a new ledger"
        )
    };
    let rows = vec![
        // Arity (Redis's own text, and okome's for the same thing).
        pattern(&[b"OKOME.RATE", b"a", b"60"], "ERR wrong number of arguments for 'okome.rate' command"),
        pattern(&[b"OKOME.UNLOCK", pkb], "ERR wrong number of arguments for 'okome.unlock' command"),
        // Options: unknown, repeated, without a value, combined wrongly.
        pattern(
            &[b"OKOME.LOCK", pkb, b"PX", b"9000"],
            "ERR syntax error: unknown option 'PX' (expected one of: TTL, TOKEN)",
        ),
        pattern(&[b"OKOME.LOCK", pkb, b"TTL", b"9000", b"ttl", b"9000"], "ERR syntax error: option TTL given more than once"),
        pattern(&[b"OKOME.LOCK", pkb, b"TOKEN"], "ERR syntax error: option TOKEN needs a value"),
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"NOLOCK", b"LOCKTTL", b"9000"],
            "ERR syntax error: LOCKTTL and NOLOCK cannot be combined",
        ),
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"WAIT", b"10", b"NOLOCK"],
            "ERR syntax error: WAIT and NOLOCK cannot be combined (a waiter may be handed the lock)",
        ),
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"REFRESHAHEAD", b"10", b"NOLOCK"],
            "ERR syntax error: REFRESHAHEAD and NOLOCK cannot be combined (a refresh takes the lock)",
        ),
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"AGENT", b"a", b"LIMIT", b"5"],
            "ERR syntax error: AGENT, LIMIT and WINDOW must be given together",
        ),
        pattern(
            &[b"OKOME.PLAN.SET", pkb, b"{}", b"WLIMIT", b"3"],
            "ERR syntax error: WLIMIT needs AGENT, and WWINDOW needs AGENT and WLIMIT",
        ),
        pattern(
            &[b"OKOME.PLAN.GET", b"m", hash.as_bytes(), b"t", b"r", b"WAIT", b"5", b"HASHED"],
            "ERR syntax error: HASHED must come right after repo_hash (OKOME.PLAN.GET model \
             prompt_hash toolset_version repo_hash HASHED [options])",
        ),
        pattern(&[b"OKOME.AGENT.KEYS", b"seed", b"CURSOR", b"7"], cursor_bad),
        // The window: positional in RATE, an option in WBUDGET.
        pattern(
            &[b"OKOME.RATE", b"agent", b"60", b"WINDOW", b"60"],
            "ERR syntax error: OKOME.RATE takes the window as its third argument (OKOME.RATE \
             agent limit window [COST n]), not as WINDOW s",
        ),
        pattern(
            &[b"OKOME.WBUDGET", b"agent", b"2", b"120"],
            "ERR syntax error: OKOME.WBUDGET takes the window as WINDOW s (OKOME.WBUDGET agent \
             write_limit [WINDOW s] [COST n]), not as its third argument",
        ),
        // Parts: how many a kind takes, named alike everywhere.
        pattern(
            &[b"OKOME.CACHE.GET", b"tools", b"v1", b"x"],
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2",
        ),
        pattern(
            &[b"OKOME.KEY", b"rag", b"r"],
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1",
        ),
        pattern(
            &[b"OKOME.KEY", b"planner", b"m", b"p", b"t"],
            "ERR syntax error: kind 'planner' takes 4 parts (model, prompt, toolset_version, \
             repo_hash), or 5 (model, prompt_hash, toolset_version, repo_hash, HASHED), got 3",
        ),
        pattern(
            &[b"OKOME.CACHE.SET", b"tools", b"v1", b"extra", b"{}"],
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2",
        ),
        pattern(
            &[b"OKOME.CACHE.SET", b"rag", b"r", b"{}"],
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1",
        ),
        pattern(
            &[b"OKOME.CACHE.SET", b"rag", b"r", b"c", b"TTL", b"1800"],
            "ERR syntax error: value_json is missing: kind 'rag' takes 2 parts (repo, \
             chunk_hash), then value_json",
        ),
        pattern(
            &[b"OKOME.CACHE.SET", b"tools", b"TTL", b"{}"],
            "ERR syntax error: tool_version cannot be 'TTL': TTL and AGENT are the options of \
             OKOME.CACHE.SET (OKOME.CACHE.SET tools tool_version value_json [TTL s] [AGENT id])",
        ),
        pattern(
            &[b"OKOME.CACHE.SET", b"tools", b"v1", b"{}", b"TTTL", b"600"],
            "ERR syntax error: unknown option 'TTTL' (expected one of: TTL, AGENT)",
        ),
        // Integers, and integers out of range.
        pattern(&[b"OKOME.LOCK", pkb, b"TTL", b"09000"], "ERR ttl is not an integer or out of range"),
        pattern(&[b"OKOME.RATE", b"a", b"x", b"60"], "ERR limit is not an integer or out of range"),
        pattern(
            &[b"OKOME.LOCK", pkb, b"TTL", b"7999"],
            "ERR ttl 7999 is out of range: must be between 8000 and 10000 ms",
        ),
        pattern(
            &[b"OKOME.CACHE.SET", b"health", b"n", b"{}", b"TTL", b"31"],
            "ERR ttl 31 is out of range: must be 30 seconds",
        ),
        pattern(
            &[b"OKOME.PLAN.SET", pkb, b"{}", b"TTL", b"901"],
            "ERR ttl 901 is out of range: must be between 300 and 900 seconds",
        ),
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"LOCKTTL", b"0"],
            "ERR lockttl 0 is out of range: must be between 8000 and 10000 ms",
        ),
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"WAIT", b"0"],
            "ERR wait 0 is out of range: must be between 1 and 600000 ms",
        ),
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"REFRESHAHEAD", b"900001"],
            "ERR refreshahead 900001 is out of range: must be between 0 and 900000 ms",
        ),
        pattern(
            &[b"OKOME.RATE", b"a", b"0", b"60"],
            "ERR limit 0 is out of range: must be between 1 and 1000000000000000 units",
        ),
        pattern(
            &[b"OKOME.RATE", b"a", b"5", b"0"],
            "ERR window 0 is out of range: must be between 1 and 31536000 seconds",
        ),
        pattern(
            &[b"OKOME.RATE", b"a", b"5", b"60", b"COST", b"6"],
            "ERR cost 6 is out of range: must be between 0 and 5 units (0 to the limit)",
        ),
        pattern(
            &[b"OKOME.WBUDGET", b"a", b"0"],
            "ERR write_limit 0 is out of range: must be between 1 and 1000000000000000 units",
        ),
        pattern(
            &[b"OKOME.WBUDGET", b"a", b"3", b"WINDOW", b"0"],
            "ERR window 0 is out of range: must be between 1 and 31536000 seconds",
        ),
        pattern(
            &[b"OKOME.PLAN.SET", pkb, b"{}", b"AGENT", b"a", b"WLIMIT", b"0"],
            "ERR wlimit 0 is out of range: must be between 1 and 1000000000000000 units",
        ),
        pattern(
            &[b"OKOME.PLAN.SET", pkb, b"{}", b"AGENT", b"a", b"WLIMIT", b"1", b"WWINDOW", b"0"],
            "ERR wwindow 0 is out of range: must be between 1 and 31536000 seconds",
        ),
        pattern(
            &[b"OKOME.AGENT.KEYS", b"seed", b"COUNT", b"0"],
            "ERR count 0 is out of range: must be between 1 and 10000 keys",
        ),
        pattern(
            &[b"OKOME.AGENT.PURGE", b"seed", b"COUNT", b"100001"],
            "ERR count 100001 is out of range: must be between 1 and 100000 keys",
        ),
        pattern(
            &[b"OKOME.AGENT.RECORD", b"seed", b"okome:tools:{v1}", b"PXAT", b"0"],
            "ERR pxat 0 is out of range: must be between 1 and 9223372036854775807 ms (a Unix \
             time, as PEXPIRETIME gives it)",
        ),
        // Empty arguments: token alike in LOCK and UNLOCK.
        pattern(&[b"OKOME.LOCK", pkb, b"TOKEN", b""], "ERR token must not be empty"),
        pattern(&[b"OKOME.UNLOCK", pkb, b""], "ERR token must not be empty"),
        pattern(&[b"OKOME.RATE", b"", b"5", b"60"], "ERR agent must not be empty"),
        pattern(&[b"OKOME.PLAN.GET", b"m", b"p", b"t", b""], "ERR repo_hash must not be empty"),
        pattern(&[b"OKOME.CACHE.GET", b"rag", b"r", b""], "ERR chunk_hash must not be empty"),
        pattern(&[b"OKOME.PLAN.SET", pkb, b""], "ERR plan_json must not be empty"),
        // Sizes.
        pattern(
            &[b"OKOME.PLAN.GET", b"m", &big_prompt, b"t", b"r"],
            "ERR prompt is 4194305 bytes, larger than the 4194304-byte limit \
             (okome.max-prompt-bytes)",
        ),
        pattern(
            &[b"OKOME.CACHE.SET", b"tools", b"v2", &big_value],
            "ERR value_json is 4194305 bytes, larger than the 4194304-byte limit \
             (okome.max-value-bytes)",
        ),
        // JSON: where it stops being JSON, as a byte offset from 1.
        pattern(&[b"OKOME.PLAN.SET", pkb, b"{x"], "ERR plan_json is not valid JSON (at byte 2)"),
        pattern(
            &[b"OKOME.CACHE.SET", b"tools", b"v2", b"[1,\n2,\nx]"],
            "ERR value_json is not valid JSON (at byte 8)",
        ),
        pattern(
            &[b"OKOME.CACHE.SET", b"tools", b"v2", b"{"],
            "ERR value_json is not valid JSON (it ends early, after byte 1)",
        ),
        pattern(
            &[b"OKOME.PLAN.SET", pkb, b"\"\xff\""],
            "ERR plan_json is not valid JSON (invalid UTF-8 at byte 2)",
        ),
        // Kinds: the seed's hard rule for CACHE.*, the list for KEY.
        pattern(
            &[b"OKOME.CACHE.SET", b"git_ops", b"x", b"{}"],
            not_cacheable("git_ops"),
        ),
        pattern(&[b"OKOME.CACHE.GET", b"rate", b"a"], not_cacheable("rate")),
        pattern(
            &[b"OKOME.CACHE.GET", b"planner", b"m"],
            "ERR kind 'planner' is read with OKOME.PLAN.GET and written with OKOME.PLAN.SET",
        ),
        pattern(
            &[b"OKOME.KEY", b"lock", b"x"],
            "ERR kind 'lock' is not a kind of okome key: OKOME.KEY takes planner, model_meta, \
             rag, tools, health, rate, write, ledger or gcra",
        ),
        // Prompt hashes.
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r", b"HASHED"],
            "ERR prompt_hash must be the SHA-256 of the prompt as 64 lowercase hex digits \
             (HASHED); got 'p' (1 bytes)",
        ),
        // Keys that are not okome keys of the kind the command takes.
        pattern(
            &[b"OKOME.PLAN.SET", b"foo", b"{}"],
            "ERR 'foo' is not an okome key: it must start with 'okome:'",
        ),
        pattern(
            &[b"OKOME.PLAN.SET", b"okome:nope:a", b"{}"],
            "ERR 'okome:nope:a' is not an okome key: unknown kind (planner, model_meta, rag, \
             tools, health, budget:rate, budget:write, budget:keys, budget:gcra)",
        ),
        pattern(
            &[b"OKOME.LOCK", b"okome:rag:{r}:c:d"],
            "ERR 'okome:rag:{r}:c:d' is not an okome key: kind 'rag' has 2 components (repo, \
             chunk_hash), found 3",
        ),
        pattern(
            &[b"OKOME.LOCK", b"okome:tools:{a}:b"],
            "ERR 'okome:tools:{a}:b' is not an okome key: kind 'tools' has 1 component \
             (tool_version), found 2",
        ),
        pattern(
            &[b"OKOME.LOCK", b"okome:tools:v1"],
            "ERR 'okome:tools:v1' is not an okome key: component tool_version must be a hash \
             tag {...}",
        ),
        pattern(
            &[b"OKOME.LOCK", b"okome:tools:{a b}"],
            "ERR 'okome:tools:{a b}' is not an okome key: component tool_version is empty or \
             not canonically escaped",
        ),
        pattern(
            &[b"OKOME.PLAN.LOOKUP", b"okome:planner:m:{abc}:t:r"],
            "ERR 'okome:planner:m:{abc}:t:r' is not an okome key: prompt_hash must be 64 \
             lowercase hex digits (SHA-256)",
        ),
        pattern(
            &[b"OKOME.PLAN.SET", b"okome:tools:{v1}", b"{}"],
            "ERR 'okome:tools:{v1}' is a tools key, not a planner key",
        ),
        pattern(
            &[b"OKOME.LOCK", b"okome:budget:rate:{a}"],
            "ERR 'okome:budget:rate:{a}' is a rate budget key; only cache keys (planner, \
             model_meta, rag, tools, health) can be locked",
        ),
        pattern(
            &[b"OKOME.AGENT.RECORD", b"a", b"okome:budget:keys:{b}"],
            "ERR 'okome:budget:keys:{b}' is a ledger budget key; only cache keys (planner, \
             model_meta, rag, tools, health) can be recorded",
        ),
        // Keys okome reads but did not write as it writes them.
        pattern(
            &[b"OKOME.AGENT.RECORD", b"a", b"okome:tools:{none}"],
            "ERR key 'okome:tools:{none}' does not exist: only a key that holds a value can be \
             recorded",
        ),
        pattern(
            &[b"OKOME.AGENT.RECORD", b"a", b"okome:tools:{nottl}"],
            "ERR key 'okome:tools:{nottl}' has no TTL: okome writes every cache key with one, so \
             this key was written some other way and cannot be recorded",
        ),
        pattern(
            &[b"OKOME.AGENT.RECORD", b"a", b"okome:tools:{v1}", b"PXAT", b"1"],
            format!("ERR pxat 1 is not the expiry of 'okome:tools:{{v1}}', which expires at {tools_at}"),
        ),
        pattern(
            &[b"OKOME.RATE", b"foreign", b"5", b"60"],
            "ERR 'okome:budget:rate:{foreign}' does not hold an okome budget window (was it \
             written by another client?)",
        ),
        pattern(
            &[b"OKOME.RATE", b"ahead", b"5", b"60"],
            "ERR 'okome:budget:rate:{ahead}' holds an okome budget window whose newest entry is \
             <n> ms in the future, beyond the 60000 ms clock-skew allowance (written by another \
             client, or under a clock that far ahead?); nothing was charged or written",
        ),
        pattern(
            &[b"OKOME.THROTTLE", b"foreign", b"5", b"60", b"1"],
            "ERR 'okome:budget:gcra:{foreign}' does not hold an okome GCRA state (was it \
             written by another client?)",
        ),
        pattern(
            &[b"OKOME.THROTTLE", b"a", b"5", b"60", b"1", b"COST", b"3"],
            "ERR cost 3 is out of range: must be between 0 and 2 units (0 to burst + 1)",
        ),
        pattern(&[b"OKOME.AGENT.KEYS", b"str"], garbage("str", "a string, not a sorted set")),
        pattern(&[b"OKOME.AGENT.KEYS", b"nottl"], garbage("nottl", "a sorted set without a TTL")),
        pattern(
            &[b"OKOME.AGENT.KEYS", b"score"],
            garbage("score", "entry 'okome:tools:{v1}' has score 1.5, not an expiry in Unix ms"),
        ),
        pattern(
            &[b"OKOME.AGENT.KEYS", b"member"],
            garbage("member", "entry 'foo' is not an okome cache key"),
        ),
        pattern(
            &[b"OKOME.AGENT.KEYS", b"ttl"],
            garbage(
                "ttl",
                "a sorted set whose TTL (4102444800000) is not its highest score (4102444700000)",
            ),
        ),
        // Keys of another type.
        pattern(
            &[b"OKOME.RATE", b"list", b"5", b"60"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        pattern(
            &[b"OKOME.CACHE.GET", b"tools", b"list"],
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
    ];
    check(&mut c, &rows);
}

/// `NOPERM`: a derived key the ACL user may not touch. Every key is
/// declared, so Redis refuses the call before okome runs, in its own words
/// (Redis 7.0: `NOPERM this user has no permissions to access one of the
/// keys used as arguments`; Valkey words it differently).
#[test]
fn acl_refusals() {
    let s = Server::start();
    let mut admin = s.conn();
    let _: () = cmd(
        &mut admin,
        &[
            b"ACL",
            b"SETUSER",
            b"planner",
            b"on",
            b">pw",
            b"~okome:planner:*",
            b"+@all",
        ],
    );
    let mut c = s.conn();
    let _: () = cmd(&mut c, &[b"AUTH", b"planner", b"pw"]);
    let rows = vec![
        pattern(&[b"OKOME.RATE", b"a", b"5", b"60"], "NOPERM <...>"),
        pattern(&[b"OKOME.CACHE.GET", b"tools", b"v1"], "NOPERM <...>"),
    ];
    check_on(&mut c, Some(&mut admin), &rows);
}

/// `OOM`: okome's own for a lookup that must write, Redis's for the
/// commands flagged `deny-oom`.
#[test]
fn memory_full() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = cmd(&mut c, &[b"CONFIG", b"SET", b"maxmemory", b"1"]);
    let rows = vec![
        pattern(
            &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r"],
            "OOM command not allowed when used memory > 'maxmemory': this call must write the \
             stampede lock of a miss (okome still serves plan hits that write nothing)",
        ),
        pattern(
            &[
                b"OKOME.PLAN.GET",
                b"m",
                b"p",
                b"t",
                b"r",
                b"AGENT",
                b"a",
                b"LIMIT",
                b"5",
                b"WINDOW",
                b"60",
            ],
            "OOM command not allowed when used memory > 'maxmemory': this call must write the \
             agent's rate window (okome still serves plan hits that write nothing)",
        ),
        pattern(
            &[b"OKOME.RATE", b"a", b"5", b"60"],
            "OOM command not allowed when used memory > 'maxmemory'.",
        ),
    ];
    check(&mut c, &rows);
    let _: () = cmd(&mut c, &[b"CONFIG", b"SET", b"maxmemory", b"0"]);
}

/// Configs: named with their `okome.` prefix, in okome's words inside
/// Redis's `CONFIG SET failed` frame.
#[test]
fn config_errors() {
    let s = Server::start();
    let mut c = s.conn();
    let rows = vec![
        pattern(
            &[b"CONFIG", b"SET", b"okome.planner-ttl-default", b"1000"],
            // The frame is Redis's: for an apply callback's error Redis 7.0
            // names the config without the module's prefix.
            "ERR CONFIG SET failed (possibly related to argument 'planner-ttl-default') - \
             okome.planner-ttl-min <= okome.planner-ttl-default <= okome.planner-ttl-max must \
             hold, got 300 / 1000 / 900",
        ),
        pattern(
            &[b"CONFIG", b"SET", b"okome.refresh-ahead-ms", b"900001"],
            "ERR CONFIG SET failed (possibly related to argument 'okome.refresh-ahead-ms') - \
             argument must be between 0 and 900000 inclusive",
        ),
    ];
    check(&mut c, &rows);
}

/// `loadmodule` arguments okome refuses: the server does not start, and
/// its log names the config with its prefix.
#[test]
fn module_argument_errors() {
    let module = module_path().display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["nope", "1"], "okome: unknown config 'okome.nope'"),
        (
            &["okome.lock-ttl-max"],
            "okome: module argument 'okome.lock-ttl-max' needs a value",
        ),
        (
            &["write-window", "x"],
            "okome: module argument 'okome.write-window': value is not an integer",
        ),
        (
            &["write-window", "0"],
            "okome: okome.write-window 0 is out of range: must be between 1 and 31536000",
        ),
        (
            &["planner-ttl-default", "9999"],
            "okome: okome.planner-ttl-min <= okome.planner-ttl-default <= okome.planner-ttl-max \
             must hold, got 300 / 9999 / 900",
        ),
    ];
    for (module_args, want) in cases {
        let dir = TempDir::new();
        let mut args = vec!["--loadmodule".to_string(), module.clone()];
        args.extend(module_args.iter().map(|s| s.to_string()));
        let out = start_must_fail(dir.path(), &args, false).stdout;
        assert!(
            out.lines().any(|l| l.ends_with(want)),
            "{module_args:?}: no line ending with {want:?} in:\n{out}"
        );
    }
}

/// `UNBLOCKED`: Redis's reply to a `WAIT` ended by `CLIENT UNBLOCK <id>
/// ERROR`.
#[test]
fn a_wait_ended_by_client_unblock_error() {
    let s = Server::start();
    let mut c = s.conn();
    let m = plan_get(&mut c, &["m", "p", "t", "r"]);
    assert_eq!(m.status, "MISS");
    let before = snapshot(&mut c);
    let mut waiter = RawConn::connect(s.port);
    let id = waiter
        .call(&["CLIENT", "ID"], Duration::from_secs(5))
        .int()
        .expect("client id");
    waiter.send(&["OKOME.PLAN.GET", "m", "p", "t", "r", "WAIT", "60000"]);
    wait_blocked(&mut c, 1, Duration::from_secs(5));
    let _: i64 = cmd(
        &mut c,
        &[b"CLIENT", b"UNBLOCK", id.to_string().as_bytes(), b"ERROR"],
    );
    let reply = waiter.read(Duration::from_secs(5)).expect("a reply");
    assert_eq!(
        reply.error(),
        Some("UNBLOCKED client unblocked via CLIENT UNBLOCK")
    );
    assert_eq!(snapshot(&mut c), before);
}

/// Cluster refusals: every key is declared, so Redis itself answers
/// `MOVED` for a call that must run on another node and `CROSSSLOT` for
/// keys of two slots, before okome runs; okome's own `ERR` for a key of
/// another slot that `OKOME.AGENT.RECORD` checks itself.
#[test]
fn cluster_refusals() {
    let cl = Cluster::start();
    let mut any = cl.nodes[0].conn();
    let pk: String = cmd(
        &mut any,
        &[b"OKOME.KEY", b"planner", b"m", b"p", b"t", b"r"],
    );
    let slot = cl.slot(&pk);
    let owner = cl.owner(slot);
    // An agent whose keys lie in another slot than the plan's, and on
    // another node than the plan's.
    let agent = (0..)
        .map(|i| format!("agent-{i}"))
        .find(|a| cl.owner(cl.slot(a)) != owner)
        .expect("an agent on another node");
    let aslot = cl.slot(&agent);
    let tools = "okome:tools:{v1}".to_string();
    let tslot = cl.slot(&tools);
    let mut on_owner = cl.nodes[owner].conn();
    let mut on_other = cl.nodes[(owner + 1) % 3].conn();
    let mut on_agent = cl.nodes[cl.owner(aslot)].conn();
    let crossslot = "CROSSSLOT Keys in request don't hash to the same slot";
    let rows_other = vec![pattern(
        &[b"OKOME.PLAN.GET", b"m", b"p", b"t", b"r"],
        format!("MOVED {slot} 127.0.0.1:{}", cl.nodes[owner].port),
    )];
    check(&mut on_other, &rows_other);
    let rows_owner = vec![
        pattern(
            &[
                b"OKOME.PLAN.LOOKUP",
                pk.as_bytes(),
                b"AGENT",
                agent.as_bytes(),
                b"LIMIT",
                b"5",
                b"WINDOW",
                b"60",
            ],
            crossslot,
        ),
        pattern(
            &[
                b"OKOME.PLAN.SET",
                pk.as_bytes(),
                b"{}",
                b"AGENT",
                agent.as_bytes(),
            ],
            crossslot,
        ),
    ];
    check(&mut on_owner, &rows_owner);
    if tslot != aslot {
        let rows_agent =
            vec![
            pattern(
                &[b"OKOME.AGENT.RECORD", agent.as_bytes(), tools.as_bytes()],
                format!(
                    "ERR okome: '{tools}' is in slot {tslot}, not in the agent's slot {aslot}; \
                     in a cluster, record a key of another slot with OKOME.AGENT.RECORD <agent> \
                     <key> PXAT <its PEXPIRETIME, read on its node>"
                ),
            ),
            pattern(
                &[b"OKOME.AGENT.RECORD", agent.as_bytes(), tools.as_bytes(), b"PXAT", b"1"],
                "ERR pxat 1 is not the expiry of a live tools key: it must lie after now (<n>) \
                 and at most 660000 ms ahead (the kind's longest TTL plus the clock-skew \
                 allowance)",
            ),
        ];
        check(&mut on_agent, &rows_agent);
    }
    {
        let mut on_tools = cl.nodes[cl.owner(tslot)].conn();
        let tledger_agent = (0..)
            .map(|i| format!("a{i}"))
            .find(|a| cl.slot(a) != tslot)
            .expect("an agent of another slot");
        let rows_tools = vec![pattern(
            &[
                b"OKOME.CACHE.SET",
                b"tools",
                b"v1",
                b"{}",
                b"AGENT",
                tledger_agent.as_bytes(),
            ],
            crossslot,
        )];
        check(&mut on_tools, &rows_tools);
    }
}
