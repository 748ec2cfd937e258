//! ACL matrix: every okome command declares the keys it touches (planner
//! keys, locks, budget windows, cache keys, ledgers), each with its access,
//! so Redis's own ACL decides as for a built-in: a call is allowed exactly
//! when a single selector (the root permissions count as one) allows the
//! command *and* every declared key with its access (R: read like `GET`,
//! W: write without reading like `SET`, RW: both like `INCR`). A refusal is
//! `NOPERM` and writes nothing.
//!
//! `ROWS` is the table: one okome call per row, the keys it declares, and
//! what each user shape of `SHAPES` gets (`ok` or `NO` for `NOPERM`), one
//! column per shape. The expectations are written by hand from the rule;
//! for the shapes whose okome keys all come from one `+@all` selector, the
//! test also derives them from the server (`ACL DRYRUN` of `GET`, `SET` and
//! `INCR` on each declared key) and checks the two agree.

use crate::support::*;

use redis::Connection;

/// The users, one per column of `ROWS` (same order). Each is created with
/// `ACL SETUSER <user> on >pw <rules...>`.
struct Shape {
    /// The column's heading in `ROWS`.
    col: &'static str,
    user: &'static str,
    rules: &'static [&'static str],
    /// All of its okome key permissions come from one selector that has
    /// `+@all`, so `ACL DRYRUN` of `GET`/`SET`/`INCR` on the declared keys
    /// tells what that selector allows: the row's expectation can be
    /// derived from the server.
    dryrun: bool,
}

const SHAPES: &[Shape] = &[
    Shape {
        col: "ok",
        user: "okome",
        rules: &["~okome:*", "+@all"],
        dryrun: true,
    },
    Shape {
        col: "pl",
        user: "planner",
        rules: &["~okome:planner:*", "+@all"],
        dryrun: true,
    },
    Shape {
        col: "ap",
        user: "app",
        rules: &["~app:*", "+@all"],
        dryrun: true,
    },
    Shape {
        col: "rd",
        user: "reader",
        rules: &["%R~okome:*", "+@all"],
        dryrun: true,
    },
    Shape {
        col: "wr",
        user: "writer",
        rules: &["%W~okome:*", "+@all"],
        dryrun: true,
    },
    Shape {
        col: "rw",
        user: "readwriter",
        rules: &["%RW~okome:*", "+@all"],
        dryrun: true,
    },
    // The selector allows the keys, but only to GET: okome must refuse.
    Shape {
        col: "se",
        user: "sel",
        rules: &["~app:*", "+@all", "(+get ~okome:*)"],
        dryrun: false,
    },
    // The selector allows the keys and every command.
    Shape {
        col: "sa",
        user: "selall",
        rules: &["~app:*", "+@all", "(+@all ~okome:*)"],
        dryrun: true,
    },
    // Command-only grants.
    Shape {
        col: "ra",
        user: "ratecmd",
        rules: &["+okome.rate", "~okome:budget:rate:*"],
        dryrun: false,
    },
    Shape {
        col: "cg",
        user: "cacheget",
        rules: &["+okome.cache.get", "%R~okome:tools:*"],
        dryrun: false,
    },
    // Reads everything, writes only locks: a planner follower.
    Shape {
        col: "fo",
        user: "follower",
        rules: &["%R~okome:*", "%W~okome:*:lock", "+@all"],
        dryrun: true,
    },
    // The follower's permissions split over two selectors: no single one
    // allows a plan lookup (read the plan, write its lock).
    Shape {
        col: "sp",
        user: "split",
        rules: &["%R~okome:*", "+@all", "(+@all %W~okome:*:lock)"],
        dryrun: false,
    },
    // A selector that may only peek at budgets through okome.
    Shape {
        col: "pk",
        user: "peek",
        rules: &[
            "~app:*",
            "+@all",
            "(+okome.rate +okome.wbudget %R~okome:budget:*)",
        ],
        dryrun: false,
    },
    // Budgets and ledgers, and model metadata read-only.
    Shape {
        col: "me",
        user: "metareader",
        rules: &["~okome:budget:*", "%R~okome:model_meta:*", "+@all"],
        dryrun: true,
    },
    // Budgets and ledgers, and tool discovery.
    Shape {
        col: "to",
        user: "toolsagent",
        rules: &["~okome:budget:*", "~okome:tools:*", "+@all"],
        dryrun: true,
    },
    // Ledgers through okome at the root; the ledgers' entries only through
    // a selector of built-ins: AGENT.KEYS/PURGE must not use that selector
    // for the entries they check themselves.
    Shape {
        col: "es",
        user: "entrysel",
        rules: &["~okome:budget:*", "+@all", "(+get +set +del ~okome:*)"],
        dryrun: false,
    },
    // The other way round: the ledger commands and ledgers in a selector,
    // the entries at the root.
    Shape {
        col: "ls",
        user: "ledgersel",
        rules: &[
            "~okome:tools:*",
            "~okome:planner:*",
            "+@all",
            "(+okome.agent.keys +okome.agent.purge ~okome:budget:keys:*)",
        ],
        dryrun: false,
    },
];

/// One okome call, the keys it declares (`R`/`W`/`RW key`, `;`-separated;
/// for AGENT.KEYS/PURGE also the ledger's entries, which the module checks
/// itself), and the expected outcome per shape (`ok`, or `NO`: `NOPERM`
/// and nothing written). `$KP` is the planner key of (m, p, v, r), which
/// has no plan; `$KH` that of (m, hot, v, r), which has one; `$HP` the
/// SHA-256 of `p`. See `FIXTURE` for what each cell starts from.
type Row = (&'static str, &'static str, &'static str);

#[rustfmt::skip]
const ROWS: &[Row] = &[
    //                                                                                              ok pl ap rd wr rw se sa ra cg fo sp pk me to es ls
    ("OKOME.PLAN.GET m p v r",                           "R $KP; W $KP:lock",                       "ok ok NO NO NO ok NO ok NO NO ok NO NO NO NO NO ok"),
    ("OKOME.PLAN.GET m p v r NOLOCK",                    "R $KP",                                   "ok ok NO ok NO ok NO ok NO NO ok ok NO NO NO NO ok"),
    ("OKOME.PLAN.GET m p v r LOCKTTL 8000",              "R $KP; W $KP:lock",                       "ok ok NO NO NO ok NO ok NO NO ok NO NO NO NO NO ok"),
    // A hit declares the lock all the same: the keys follow the arguments.
    ("OKOME.PLAN.GET m hot v r",                         "R $KH; W $KH:lock",                       "ok ok NO NO NO ok NO ok NO NO ok NO NO NO NO NO ok"),
    ("OKOME.PLAN.GET m hot v r REFRESHAHEAD 900000",     "R $KH; W $KH:lock",                       "ok ok NO NO NO ok NO ok NO NO ok NO NO NO NO NO ok"),
    ("OKOME.PLAN.GET m $HP v r HASHED NOLOCK",           "R $KP",                                   "ok ok NO ok NO ok NO ok NO NO ok ok NO NO NO NO ok"),
    ("OKOME.PLAN.GET m p v r AGENT a LIMIT 5 WINDOW 60", "R $KP; W $KP:lock; RW okome:budget:rate:{a}", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.PLAN.GET m p v r AGENT a LIMIT 5 WINDOW 60 NOLOCK", "R $KP; RW okome:budget:rate:{a}", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.PLAN.LOOKUP $KP",                            "R $KP; W $KP:lock",                       "ok ok NO NO NO ok NO ok NO NO ok NO NO NO NO NO ok"),
    ("OKOME.PLAN.LOOKUP $KH NOLOCK",                     "R $KH",                                   "ok ok NO ok NO ok NO ok NO NO ok ok NO NO NO NO ok"),
    ("OKOME.PLAN.LOOKUP $KP AGENT a LIMIT 5 WINDOW 60",  "R $KP; W $KP:lock; RW okome:budget:rate:{a}", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO NO NO NO"),
    (r#"OKOME.PLAN.SET $KP {"s":1}"#,                    "W $KP",                                   "ok ok NO NO ok ok NO ok NO NO NO NO NO NO NO NO ok"),
    (r#"OKOME.PLAN.SET $KP {"s":1} TTL 300 TOKEN t0"#,   "W $KP; W $KP:lock",                       "ok ok NO NO ok ok NO ok NO NO NO NO NO NO NO NO ok"),
    (r#"OKOME.PLAN.SET $KP {"s":1} AGENT a"#,            "W $KP; RW okome:budget:keys:{a}",         "ok NO NO NO NO ok NO ok NO NO NO NO NO NO NO NO NO"),
    (r#"OKOME.PLAN.SET $KP {"s":1} AGENT a WLIMIT 5"#,   "W $KP; RW okome:budget:keys:{a}; RW okome:budget:write:{a}", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.LOCK $KH",                                   "W $KH:lock",                              "ok ok NO NO ok ok NO ok NO NO ok ok NO NO NO NO ok"),
    ("OKOME.LOCK okome:tools:{v1} TTL 9000 TOKEN t0",    "W okome:tools:{v1}:lock",                 "ok NO NO NO ok ok NO ok NO NO ok ok NO NO ok NO ok"),
    ("OKOME.UNLOCK $KH t0",                              "W $KH:lock",                              "ok ok NO NO ok ok NO ok NO NO ok ok NO NO NO NO ok"),
    ("OKOME.RATE victim 5 60",                           "RW okome:budget:rate:{victim}",           "ok NO NO NO NO ok NO ok ok NO NO NO NO ok ok ok NO"),
    // COST 0 only reports: a read.
    ("OKOME.RATE victim 5 60 COST 0",                    "R okome:budget:rate:{victim}",            "ok NO NO ok NO ok NO ok ok NO ok ok ok ok ok ok NO"),
    ("OKOME.RATE victim 5 60 COST 2",                    "RW okome:budget:rate:{victim}",           "ok NO NO NO NO ok NO ok ok NO NO NO NO ok ok ok NO"),
    ("OKOME.WBUDGET victim 5",                           "RW okome:budget:write:{victim}",          "ok NO NO NO NO ok NO ok NO NO NO NO NO ok ok ok NO"),
    ("OKOME.WBUDGET victim 5 WINDOW 60 COST 0",          "R okome:budget:write:{victim}",           "ok NO NO ok NO ok NO ok NO NO ok ok ok ok ok ok NO"),
    ("OKOME.THROTTLE victim 5 60 2",                     "RW okome:budget:gcra:{victim}",           "ok NO NO NO NO ok NO ok NO NO NO NO NO ok ok ok NO"),
    ("OKOME.THROTTLE victim 5 60 2 COST 0 NAME n",       "R okome:budget:gcra:{victim}:n",          "ok NO NO ok NO ok NO ok NO NO ok ok NO ok ok ok NO"),
    ("OKOME.CACHE.GET tools v1",                         "R okome:tools:{v1}",                      "ok NO NO ok NO ok NO ok NO ok ok ok NO NO ok NO ok"),
    ("OKOME.CACHE.GET model_meta gpt",                   "R okome:model_meta:{gpt}",                "ok NO NO ok NO ok NO ok NO NO ok ok NO ok NO NO NO"),
    ("OKOME.CACHE.GET rag repo chunk",                   "R okome:rag:{repo}:chunk",                "ok NO NO ok NO ok NO ok NO NO ok ok NO NO NO NO NO"),
    ("OKOME.CACHE.GET health node",                      "R okome:health:{node}",                   "ok NO NO ok NO ok NO ok NO NO ok ok NO NO NO NO NO"),
    ("OKOME.CACHE.SET tools v1 {}",                      "W okome:tools:{v1}",                      "ok NO NO NO ok ok NO ok NO NO NO NO NO NO ok NO ok"),
    ("OKOME.CACHE.SET model_meta gpt {}",                "W okome:model_meta:{gpt}",                "ok NO NO NO ok ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.CACHE.SET rag repo chunk {} TTL 1800",       "W okome:rag:{repo}:chunk",                "ok NO NO NO ok ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.CACHE.SET health node {}",                   "W okome:health:{node}",                   "ok NO NO NO ok ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.CACHE.SET tools v1 {} AGENT a",              "W okome:tools:{v1}; RW okome:budget:keys:{a}", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO ok NO NO"),
    // Recording needs the right to write the key: a ledger holds only keys
    // its agent could write.
    ("OKOME.AGENT.RECORD agA okome:model_meta:{gpt}",    "RW okome:budget:keys:{agA}; RW okome:model_meta:{gpt}", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.AGENT.RECORD agA okome:tools:{v1}",          "RW okome:budget:keys:{agA}; RW okome:tools:{v1}", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO ok NO NO"),
    // The ledger of `admin` lists $KH and okome:tools:{v1}; that of
    // `metaonly` okome:model_meta:{gpt}; `nobody` has none.
    ("OKOME.AGENT.KEYS admin",                           "R okome:budget:keys:{admin}; R okome:tools:{v1}; R $KH", "ok NO NO ok NO ok NO ok NO NO ok ok NO NO NO NO NO"),
    ("OKOME.AGENT.KEYS metaonly",                        "R okome:budget:keys:{metaonly}; R okome:model_meta:{gpt}", "ok NO NO ok NO ok NO ok NO NO ok ok NO ok NO NO NO"),
    ("OKOME.AGENT.KEYS nobody",                          "R okome:budget:keys:{nobody}",            "ok NO NO ok NO ok NO ok NO NO ok ok NO ok ok ok ok"),
    ("OKOME.AGENT.PURGE admin",                          "RW okome:budget:keys:{admin}; W okome:tools:{v1}; W $KH", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.AGENT.PURGE metaonly",                       "RW okome:budget:keys:{metaonly}; W okome:model_meta:{gpt}", "ok NO NO NO NO ok NO ok NO NO NO NO NO NO NO NO NO"),
    ("OKOME.AGENT.PURGE nobody",                         "RW okome:budget:keys:{nobody}",           "ok NO NO NO NO ok NO ok NO NO NO NO NO ok ok ok ok"),
    // Touches no key: allowed to anyone who may run it.
    ("OKOME.KEY planner m p v r",                        "",                                        "ok ok ok ok ok ok ok ok NO NO ok ok ok ok ok ok ok"),
    ("OKOME.KEY rate victim",                            "",                                        "ok ok ok ok ok ok ok ok NO NO ok ok ok ok ok ok ok"),
];

/// What every cell starts from (written by the default user after a
/// `FLUSHALL`): a plan at $KH and okome:tools:{v1} recorded for `admin`,
/// okome:model_meta:{gpt} for `metaonly`, the other cache kinds, and the
/// `victim`'s rate window and write budget with one unit used each.
const FIXTURE: &[&str] = &[
    r#"OKOME.PLAN.SET $KH {"p":1} TTL 300 AGENT admin"#,
    "OKOME.CACHE.SET tools v1 {} AGENT admin",
    "OKOME.CACHE.SET model_meta gpt {} AGENT metaonly",
    "OKOME.CACHE.SET rag repo chunk {}",
    "OKOME.CACHE.SET health node {}",
    "OKOME.RATE victim 5 60",
    "OKOME.WBUDGET victim 5",
    "SET app:x 1",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    R,
    W,
    RW,
}

impl Access {
    /// The built-in with the same access to its key.
    fn twin(self, key: &str) -> Vec<String> {
        let words: &[&str] = match self {
            Access::R => &["GET"],
            Access::W => &["SET", "x"],
            Access::RW => &["INCR"],
        };
        let mut out = vec![words[0].to_string(), key.to_string()];
        out.extend(words[1..].iter().map(|w| w.to_string()));
        out
    }
}

/// The keys of the fixture's placeholders.
struct Vars {
    kp: String,
    kh: String,
    hp: String,
}

impl Vars {
    fn new() -> Vars {
        let planner = |prompt: &str| format!("okome:planner:m:{{{}}}:v:r", sha256_hex(prompt));
        Vars {
            kp: planner("p"),
            kh: planner("hot"),
            hp: sha256_hex("p"),
        }
    }

    fn sub(&self, s: &str) -> String {
        s.replace("$KP", &self.kp)
            .replace("$KH", &self.kh)
            .replace("$HP", &self.hp)
    }

    fn args(&self, template: &str) -> Vec<String> {
        template.split_whitespace().map(|w| self.sub(w)).collect()
    }

    fn keys(&self, template: &str) -> Vec<(Access, String)> {
        template
            .split(';')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                let (access, key) = d.split_once(' ').expect("`ACCESS key`");
                let access = match access {
                    "R" => Access::R,
                    "W" => Access::W,
                    "RW" => Access::RW,
                    other => panic!("unknown access {other:?} in {template:?}"),
                };
                (access, self.sub(key))
            })
            .collect()
    }
}

fn call_str(c: &mut Connection, line: &str, v: &Vars) -> Result<redis::Value, String> {
    call(c, &refs(&v.args(line)))
}

fn set_user(admin: &mut Connection, user: &str, rules: &[&str]) {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", user, "reset", "on", ">pw"])
        .arg(rules)
        .query(admin)
        .unwrap_or_else(|e| panic!("ACL SETUSER {user} {rules:?}: {e}"));
}

/// Starts from an empty keyspace and writes `FIXTURE`.
fn fixture(admin: &mut Connection, v: &Vars) {
    let _: () = redis::cmd("FLUSHALL").query(admin).expect("FLUSHALL");
    for line in FIXTURE {
        if let Err(e) = call_str(admin, line, v) {
            panic!("fixture {line:?}: {e}");
        }
    }
}

/// `ACL DRYRUN user <args>`: `Ok(())` if allowed, else Redis's reason.
fn dryrun(admin: &mut Connection, user: &str, args: &[String]) -> Result<(), String> {
    let r: String = redis::cmd("ACL")
        .arg("DRYRUN")
        .arg(user)
        .arg(args)
        .query(admin)
        .unwrap_or_else(|e| panic!("ACL DRYRUN {user} {args:?}: {e}"));
    if r == "OK" {
        Ok(())
    } else {
        Err(r)
    }
}

fn is_noperm(r: &Result<redis::Value, String>) -> bool {
    matches!(r, Err(e) if e.starts_with("NOPERM"))
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "NOPERM"
    }
}

#[test]
fn every_okome_command_allows_exactly_what_one_selector_allows() {
    let s = Server::start();
    let mut admin = s.conn();
    let v = Vars::new();
    let kp = okome_key(&mut admin, "planner", &["m", "p", "v", "r"]);
    assert_eq!(kp, v.kp, "the planner key the table is written for");

    for sh in SHAPES {
        set_user(&mut admin, sh.user, sh.rules);
    }
    let mut users: Vec<Connection> = SHAPES.iter().map(|sh| as_user(&s, sh.user)).collect();

    let mut failures = Vec::new();
    let mut cells = 0;
    for (line, declared, expected) in ROWS {
        let expected: Vec<&str> = expected.split_whitespace().collect();
        assert_eq!(
            expected.len(),
            SHAPES.len(),
            "row {line:?}: one expectation per shape"
        );
        let args = v.args(line);
        let keys = v.keys(declared);
        for ((sh, c), want) in SHAPES.iter().zip(users.iter_mut()).zip(&expected) {
            let want_ok = match *want {
                "ok" => true,
                "NO" => false,
                other => panic!("row {line:?}: expectation {other:?} is not ok or NO"),
            };
            let cell = format!(
                "{line}  as {} [column {}] ({})",
                sh.user,
                sh.col,
                sh.rules.join(" ")
            );
            cells += 1;

            // Derived from the server: the built-in twins of the declared
            // keys, when one selector grants both them and the command.
            if sh.dryrun {
                let denied: Vec<String> = keys
                    .iter()
                    .filter_map(|(a, k)| {
                        let twin = a.twin(k);
                        dryrun(&mut admin, sh.user, &twin)
                            .err()
                            .map(|why| format!("{}: {why}", twin.join(" ")))
                    })
                    .collect();
                if denied.is_empty() != want_ok {
                    failures.push(format!(
                        "{cell}: the table says {} but the built-ins say {} ({denied:?})",
                        outcome(want_ok),
                        outcome(denied.is_empty())
                    ));
                }
            }

            fixture(&mut admin, &v);
            let before = snapshot(&mut admin);
            let got = call(c, &refs(&args));
            match (&got, want_ok) {
                (Ok(_), true) => {}
                (Err(e), true) => failures.push(format!("{cell}: expected ok, got {e}")),
                (r, false) if is_noperm(r) => {
                    if snapshot(&mut admin) != before {
                        failures.push(format!("{cell}: refused with NOPERM but wrote"));
                    }
                }
                (Ok(r), false) => {
                    let wrote = if snapshot(&mut admin) != before {
                        " and wrote"
                    } else {
                        ""
                    };
                    failures.push(format!("{cell}: expected NOPERM, got {r:?}{wrote}"));
                }
                (Err(e), false) => failures.push(format!("{cell}: expected NOPERM, got {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells disagree with the rule:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn assert_noperm(c: &mut Connection, line: &str, v: &Vars) {
    let r = call_str(c, line, v);
    assert!(is_noperm(&r), "{line}: expected NOPERM, got {r:?}");
}

/// The issue's reproduction: a selector that grants `GET` on okome's keys
/// lets its user read them with `GET`, and nothing else; okome's commands,
/// which root allows but whose keys root does not, are refused.
#[test]
fn a_selector_granting_get_does_not_let_okome_read_or_write() {
    let s = Server::start();
    let mut admin = s.conn();
    let v = Vars::new();
    set_user(&mut admin, "sel", &["~app:*", "+@all", "(+get ~okome:*)"]);
    fixture(&mut admin, &v);
    let mut c = as_user(&s, "sel");
    let before = snapshot(&mut admin);

    // Redis's own answers: the selector allows GET, not SET.
    let got: Option<String> = redis::cmd("GET")
        .arg("okome:tools:{v1}")
        .query(&mut c)
        .expect("GET through the selector");
    assert_eq!(got.as_deref(), Some("{}"));
    assert_noperm(&mut c, "SET okome:budget:rate:{victim} x", &v);

    assert_noperm(&mut c, "OKOME.RATE victim 5 60", &v);
    assert_noperm(&mut c, "OKOME.RATE victim 5 60 COST 0", &v);
    assert_noperm(&mut c, "OKOME.CACHE.SET tools v1 {}", &v);
    assert_noperm(&mut c, "OKOME.CACHE.GET tools v1", &v);
    assert_noperm(&mut c, "OKOME.PLAN.GET m p v r", &v);
    assert!(!exists(&mut admin, &lock_of(&v.kp)), "no lock written");
    // `admin`'s ledger lists $KH and okome:tools:{v1}.
    assert_noperm(&mut c, "OKOME.AGENT.PURGE admin", &v);
    assert!(exists(&mut admin, &v.kh) && exists(&mut admin, "okome:tools:{v1}"));
    assert_eq!(snapshot(&mut admin), before, "nothing written");

    // What root allows it: a command that touches no key.
    let key = call_str(&mut c, "OKOME.KEY rate victim", &v);
    assert_eq!(
        key,
        Ok(redis::Value::BulkString(
            b"okome:budget:rate:{victim}".to_vec()
        ))
    );
}

/// A user who may write but not read okome's keys cannot peek at a window
/// (Redis refuses it `GET`), nor charge one: the reply tells the usage.
#[test]
fn a_write_only_user_can_neither_peek_at_nor_charge_a_window() {
    let s = Server::start();
    let mut admin = s.conn();
    let v = Vars::new();
    set_user(&mut admin, "writer", &["%W~okome:*", "+@all"]);
    let _ = call_str(&mut admin, "OKOME.RATE victim 10 60", &v).expect("RATE");
    let window = "okome:budget:rate:{victim}".to_string();
    assert!(dryrun(&mut admin, "writer", &Access::R.twin(&window)).is_err());
    assert_eq!(
        dryrun(&mut admin, "writer", &Access::W.twin(&window)),
        Ok(())
    );
    assert!(dryrun(&mut admin, "writer", &Access::RW.twin(&window)).is_err());

    let mut c = as_user(&s, "writer");
    let before = snapshot(&mut admin);
    assert_noperm(&mut c, "GET okome:budget:rate:{victim}", &v);
    assert_noperm(&mut c, "OKOME.RATE victim 10 60 COST 0", &v);
    assert_noperm(&mut c, "OKOME.RATE victim 10 60", &v);
    assert_noperm(&mut c, "OKOME.WBUDGET victim 10 COST 0", &v);
    assert_noperm(&mut c, "OKOME.WBUDGET victim 10", &v);
    assert_eq!(snapshot(&mut admin), before, "nothing written");
}

/// Recording a key in a ledger needs the right to write the key: a ledger
/// holds only keys its agent could write (and PURGE deletes them).
#[test]
fn recording_a_key_needs_the_right_to_write_it() {
    let s = Server::start();
    let mut admin = s.conn();
    let v = Vars::new();
    set_user(
        &mut admin,
        "metareader",
        &["~okome:budget:*", "%R~okome:model_meta:*", "+@all"],
    );
    set_user(
        &mut admin,
        "metawriter",
        &["~okome:budget:*", "~okome:model_meta:*", "+@all"],
    );
    let _ = call_str(&mut admin, "OKOME.CACHE.SET model_meta gpt {}", &v).expect("CACHE.SET");
    let meta = "okome:model_meta:{gpt}".to_string();
    assert!(dryrun(&mut admin, "metareader", &Access::RW.twin(&meta)).is_err());

    let mut reader = as_user(&s, "metareader");
    let before = snapshot(&mut admin);
    let got = call_str(&mut reader, "OKOME.CACHE.GET model_meta gpt", &v);
    assert!(got.is_ok(), "it may read the key: {got:?}");
    assert_noperm(
        &mut reader,
        "OKOME.AGENT.RECORD agA okome:model_meta:{gpt}",
        &v,
    );
    assert_eq!(snapshot(&mut admin), before, "nothing recorded");

    let mut writer = as_user(&s, "metawriter");
    let (ttl, size): (i64, i64) = redis::cmd("OKOME.AGENT.RECORD")
        .arg(&["agA", &meta])
        .query(&mut writer)
        .expect("RECORD by a user who may write the key");
    assert!(ttl > 0 && size == 1, "{ttl} {size}");
}

/// The rule is Redis's own: one selector must allow the command and all
/// its keys. `COPY src dst` reads one key and writes another, as a plan
/// lookup reads the plan and writes its lock: the user whose read and
/// write permissions sit in two selectors may do neither.
#[test]
fn one_selector_must_allow_the_command_and_all_its_keys() {
    let s = Server::start();
    let mut admin = s.conn();
    let v = Vars::new();
    set_user(
        &mut admin,
        "follower",
        &["%R~okome:*", "%W~okome:*:lock", "+@all"],
    );
    set_user(
        &mut admin,
        "split",
        &["%R~okome:*", "+@all", "(+@all %W~okome:*:lock)"],
    );
    let lock = format!("{}:lock", v.kp);
    let copy = vec!["COPY".to_string(), v.kp.clone(), lock.clone()];
    assert_eq!(dryrun(&mut admin, "follower", &copy), Ok(()));
    assert!(dryrun(&mut admin, "split", &copy).is_err());
    // Each key alone is allowed to `split`.
    assert_eq!(dryrun(&mut admin, "split", &Access::R.twin(&v.kp)), Ok(()));
    assert_eq!(dryrun(&mut admin, "split", &Access::W.twin(&lock)), Ok(()));

    let mut split = as_user(&s, "split");
    let before = snapshot(&mut admin);
    assert_noperm(&mut split, "OKOME.PLAN.GET m p v r", &v);
    assert_noperm(&mut split, "OKOME.PLAN.LOOKUP $KP", &v);
    assert_eq!(snapshot(&mut admin), before, "no lock written");

    let mut follower = as_user(&s, "follower");
    let m = plan_get(&mut follower, &["m", "p", "v", "r"]);
    assert_eq!((m.status.as_str(), m.key.as_str()), ("MISS", v.kp.as_str()));
    assert!(m.token.is_some() && exists(&mut admin, &lock));
}
