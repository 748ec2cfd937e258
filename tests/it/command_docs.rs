//! `COMMAND DOCS` / `COMMAND INFO` / `COMMAND GETKEYSANDFLAGS` for every
//! command, and the README and redis.conf.example agreeing with the server
//! (shared helpers in `tests/it/support/ops.rs`).

use crate::support::ops::*;
use crate::support::*;

use redis::Value;
use std::collections::BTreeSet;

// ---------------------------------------------------------------- COMMAND

/// One argument of `COMMAND DOCS`, rendered compactly:
/// `name:type`, `=TOKEN`, `#key_spec_index`, `?` optional, `...` multiple,
/// `(sub, ...)` sub-arguments.
fn render_arg(v: &Value) -> String {
    let m = pairs(v);
    let mut s = format!(
        "{}:{}",
        text(field(&m, "name").expect("name")),
        text(field(&m, "type").expect("type"))
    );
    if let Some(t) = field(&m, "token") {
        s += &format!("={}", text(t));
    }
    if let Some(i) = field(&m, "key_spec_index") {
        s += &format!("#{}", int(i));
    }
    if let Some(f) = field(&m, "flags") {
        for flag in strings(f) {
            s += match flag.as_str() {
                "optional" => "?",
                "multiple" => "...",
                other => panic!("unexpected argument flag {other}"),
            };
        }
    }
    if let Some(sub) = field(&m, "arguments") {
        let subs: Vec<String> = array(sub).iter().map(render_arg).collect();
        s += &format!("({})", subs.join(", "));
    }
    s
}

const ARGS: [(&str, &[&str]); 19] = [
    (
        "okome.plan.get",
        &[
            "model:string",
            "prompt:string",
            "toolset_version:string",
            "repo_hash:string",
            "hashed:pure-token=HASHED?",
            "rate:block?(agent:string=AGENT, limit:integer=LIMIT, window:integer=WINDOW)",
            "lock:oneof?(lockttl:integer=LOCKTTL, nolock:pure-token=NOLOCK)",
            "wait:integer=WAIT?",
            "refreshahead:integer=REFRESHAHEAD?",
        ],
    ),
    (
        "okome.plan.lookup",
        &[
            "key:key#0",
            "rate:block?(agent:string=AGENT, limit:integer=LIMIT, window:integer=WINDOW)",
            "lock:oneof?(lockttl:integer=LOCKTTL, nolock:pure-token=NOLOCK)",
            "wait:integer=WAIT?",
            "refreshahead:integer=REFRESHAHEAD?",
        ],
    ),
    (
        "okome.plan.set",
        &[
            "key:key#0",
            "plan_json:string",
            "ttl:integer=TTL?",
            "lock:block?(token:string=TOKEN, fenced:pure-token=FENCED?)",
            "agent:block?(agent:string=AGENT, wbudget:block?(wlimit:integer=WLIMIT, wwindow:integer=WWINDOW?))",
        ],
    ),
    (
        "okome.lock",
        &["key:key#0", "ttl:integer=TTL?", "token:string=TOKEN?"],
    ),
    (
        "okome.unlock",
        &[
            "key:key#0",
            "token:string",
            "failure:block?(ms:integer=FAILED, message:string?)",
        ],
    ),
    (
        "okome.rate",
        &[
            "agent:string",
            "limit:integer",
            "window:integer",
            "cost:integer=COST?",
            "name:string=NAME?",
        ],
    ),
    (
        "okome.wbudget",
        &[
            "agent:string",
            "write_limit:integer",
            "window:integer=WINDOW?",
            "cost:integer=COST?",
        ],
    ),
    (
        "okome.throttle",
        &[
            "subject:string",
            "rate:integer",
            "period_s:integer",
            "burst:integer",
            "cost:integer=COST?",
            "name:string=NAME?",
        ],
    ),
    (
        "okome.take",
        &[
            "numlimits:integer",
            "limits:block...(subject:string, name:string, limit:integer, window_s:integer, cost:integer)",
            "ttl_ms:integer=RESERVE?",
        ],
    ),
    ("okome.settle", &["reservation:string", "cost:integer..."]),
    ("okome.cache.get", &["kind:string", "part:string..."]),
    (
        "okome.cache.set",
        &[
            "kind:string",
            "part:string...",
            "value_json:string",
            "ttl:integer=TTL?",
            "agent:string=AGENT?",
        ],
    ),
    ("okome.key", &["kind:string", "part:string..."]),
    (
        "okome.agent.record",
        &["agent:string", "key:string", "pxat:integer=PXAT?"],
    ),
    (
        "okome.agent.keys",
        &["agent:string", "count:integer=COUNT?", "cursor:string=CURSOR?"],
    ),
    ("okome.agent.purge", &["agent:string", "count:integer=COUNT?"]),
    (
        "okome.lease.acquire",
        &[
            "subject:string",
            "max:integer",
            "ttl_ms:integer",
            "wait:integer=WAIT?",
            "name:string=NAME?",
        ],
    ),
    ("okome.lease.renew", &["lease:string", "ttl_ms:integer"]),
    ("okome.lease.release", &["lease:string"]),
];

#[test]
fn command_docs_for_every_command() {
    let s = Server::start();
    let mut c = s.conn();
    for (name, want_args) in ARGS {
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let top = pairs(&reply);
        assert_eq!(top.len(), 1, "{name}: {reply:?}");
        assert_eq!(top[0].0, name);
        let docs = pairs(&top[0].1);
        let get = |k: &str| {
            field(&docs, k)
                .map(text)
                .unwrap_or_else(|| panic!("{name}: no {k} in COMMAND DOCS: {docs:?}"))
        };
        assert!(!get("summary").trim().is_empty(), "{name}");
        assert_eq!(get("since"), "0.1.0", "{name}");
        assert_eq!(get("group"), "module", "{name}");
        assert_eq!(get("module"), "okome", "{name}");
        let complexity = get("complexity");
        assert!(complexity.starts_with("O("), "{name}: {complexity}");
        let args: Vec<String> = array(field(&docs, "arguments").expect("arguments"))
            .iter()
            .map(render_arg)
            .collect();
        assert_eq!(args, want_args, "{name}");
    }
    for name in ["okome.lock", "okome.cache.get"] {
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let docs = pairs(&pairs(&reply)[0].1);
        assert_eq!(text(field(&docs, "complexity").unwrap()), "O(1)", "{name}");
    }
}

/// name, arity, flags, and the routing key spec (argument position,
/// flags): the argument cluster clients route by, flagged `not_key` (the
/// keys themselves are declared in the tail okome's command filter
/// appends). Every command but `OKOME.KEY` declares its keys, so it is
/// flagged `movablekeys` and has the three keyword key specs of
/// [`DECLARED`] after its routing spec.
type InfoRow = (
    &'static str,
    i64,
    &'static [&'static str],
    Option<(i64, &'static [&'static str])>,
);

const ROUTING: &[&str] = &["RO", "not_key"];

const INFO: [InfoRow; 19] = [
    (
        "okome.plan.get",
        -5,
        &["write", "module", "movablekeys"],
        None,
    ),
    (
        "okome.plan.lookup",
        -2,
        &["write", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.plan.set",
        -3,
        &["write", "denyoom", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.lock",
        -2,
        &["write", "denyoom", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.unlock",
        -3,
        &["write", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.rate",
        -4,
        &["write", "denyoom", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.wbudget",
        -3,
        &["write", "denyoom", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.throttle",
        -5,
        &["write", "denyoom", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.take",
        -7,
        &["write", "denyoom", "fast", "module", "movablekeys"],
        Some((2, ROUTING)),
    ),
    (
        "okome.settle",
        -3,
        &["write", "denyoom", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.cache.get",
        -3,
        &["readonly", "fast", "module", "movablekeys"],
        Some((2, ROUTING)),
    ),
    (
        "okome.cache.set",
        -4,
        &["write", "denyoom", "module", "movablekeys"],
        Some((2, ROUTING)),
    ),
    ("okome.key", -3, &["stale", "module"], None),
    (
        "okome.agent.record",
        -3,
        &["write", "denyoom", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.agent.keys",
        -2,
        &["readonly", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.agent.purge",
        -2,
        &["write", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.lease.acquire",
        -4,
        &["write", "denyoom", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.lease.renew",
        -3,
        &["write", "denyoom", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
    (
        "okome.lease.release",
        -2,
        &["write", "fast", "module", "movablekeys"],
        Some((1, ROUTING)),
    ),
];

/// The keyword key specs of the declared keys: keyword, flags.
const DECLARED: [(&str, &[&str]); 3] = [
    ("OKOME.R", &["RO", "access"]),
    ("OKOME.W", &["RW", "update"]),
    ("OKOME.RW", &["RW", "access", "update"]),
];

fn assert_spec_flags(spec: &[(String, Value)], want: &[&str], what: &str) {
    assert_eq!(
        strings(field(spec, "flags").unwrap()),
        want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "{what}"
    );
    assert!(
        !text(field(spec, "notes").unwrap()).is_empty(),
        "{what}: notes"
    );
}

#[test]
fn command_info_arity_flags_and_key_specs() {
    let s = Server::start();
    let mut c = s.conn();
    for (name, arity, flags, routing) in INFO {
        let reply: Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let all = array(&reply);
        assert_eq!(all.len(), 1, "{name}");
        let info = array(&all[0]);
        assert_eq!(text(&info[0]), name);
        assert_eq!(int(&info[1]), arity, "{name} arity");
        let got: BTreeSet<String> = strings(&info[2]).into_iter().collect();
        let want: BTreeSet<String> = flags.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{name} flags");
        let positions = (int(&info[3]), int(&info[4]), int(&info[5]));
        let specs = array(&info[8]);
        if name == "okome.key" {
            assert_eq!(positions, (0, 0, 0), "{name}");
            assert!(specs.is_empty(), "{name}: {specs:?}");
            continue;
        }
        let declared = match routing {
            None => {
                assert_eq!(positions, (0, 0, 0), "{name}");
                specs
            }
            Some((pos, kf)) => {
                assert_eq!(positions, (pos, pos, 1), "{name}");
                let spec = pairs(&specs[0]);
                assert_spec_flags(&spec, kf, name);
                let bs = pairs(field(&spec, "begin_search").unwrap());
                assert_eq!(text(field(&bs, "type").unwrap()), "index");
                let bs_spec = pairs(field(&bs, "spec").unwrap());
                assert_eq!(int(field(&bs_spec, "index").unwrap()), pos);
                let fk = pairs(field(&spec, "find_keys").unwrap());
                assert_eq!(text(field(&fk, "type").unwrap()), "range");
                let fk_spec = pairs(field(&fk, "spec").unwrap());
                let range: Vec<i64> = ["lastkey", "keystep", "limit"]
                    .iter()
                    .map(|k| int(field(&fk_spec, k).unwrap()))
                    .collect();
                assert_eq!(range, [0, 1, 0], "{name}");
                &specs[1..]
            }
        };
        assert_eq!(declared.len(), DECLARED.len(), "{name}: {specs:?}");
        for (spec, (keyword, kf)) in declared.iter().zip(DECLARED) {
            let what = format!("{name} {keyword}");
            let spec = pairs(spec);
            assert_spec_flags(&spec, kf, &what);
            let bs = pairs(field(&spec, "begin_search").unwrap());
            assert_eq!(text(field(&bs, "type").unwrap()), "keyword", "{what}");
            let bs_spec = pairs(field(&bs, "spec").unwrap());
            assert_eq!(text(field(&bs_spec, "keyword").unwrap()), keyword);
            assert_eq!(int(field(&bs_spec, "startfrom").unwrap()), -1, "{what}");
            let fk = pairs(field(&spec, "find_keys").unwrap());
            assert_eq!(text(field(&fk, "type").unwrap()), "keynum", "{what}");
            let fk_spec = pairs(field(&fk, "spec").unwrap());
            let keynum: Vec<i64> = ["keynumidx", "firstkey", "keystep"]
                .iter()
                .map(|k| int(field(&fk_spec, k).unwrap()))
                .collect();
            assert_eq!(keynum, [0, 1, 1], "{what}");
        }
    }
}

/// A call as a client sends it, the tail okome's filter appends to it,
/// and the keys with flags `COMMAND GETKEYSANDFLAGS` reports given both.
type GetKeysCase<'a> = (&'a [&'a str], Vec<String>, Vec<(&'a str, &'a [&'a str])>);

/// `COMMAND GETKEYSANDFLAGS` runs no command filter: given a call as a
/// client sends it, it finds no key (the keys are declared in the tail the
/// filter appends); given the call with its tail, it reports exactly the
/// declared keys with the flags of their group.
#[test]
fn command_getkeysandflags() {
    let s = Server::start();
    let mut c = s.conn();
    let pk = okome_key(&mut c, "planner", &["m", "p", "t", "r"]);
    let lock = "okome:tools:{v1}:lock";
    let tail = |r: &[&str], w: &[&str], rw: &[&str]| {
        let mut t = Vec::new();
        for (kw, keys) in [("OKOME.R", r), ("OKOME.W", w), ("OKOME.RW", rw)] {
            t.push(kw.to_string());
            t.push(keys.len().to_string());
            t.extend(keys.iter().map(|k| k.to_string()));
        }
        t
    };
    let cases: [GetKeysCase; 5] = [
        (
            &["okome.plan.set", &pk, "{}"],
            tail(&[], &[&pk], &[]),
            vec![(&pk, &["RW", "update"])],
        ),
        (
            &["okome.lock", "okome:tools:{v1}"],
            tail(&[], &[lock], &[]),
            vec![(lock, &["RW", "update"])],
        ),
        (
            &[
                "okome.lock",
                "okome:tools:{v1}",
                "TTL",
                "9000",
                "TOKEN",
                "t",
            ],
            tail(&[], &[lock], &[]),
            vec![(lock, &["RW", "update"])],
        ),
        (
            &["okome.unlock", "okome:tools:{v1}", "t"],
            tail(&[], &[lock], &[]),
            vec![(lock, &["RW", "update"])],
        ),
        (
            &["okome.rate", "a", "1", "1"],
            tail(&[], &[], &["okome:budget:rate:{a}"]),
            vec![("okome:budget:rate:{a}", &["RW", "access", "update"])],
        ),
    ];
    for (args, tail, want) in cases {
        let e = err(
            &mut c,
            &[&b"COMMAND"[..], b"GETKEYSANDFLAGS"]
                .into_iter()
                .chain(args.iter().map(|a| a.as_bytes()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            e, "ERR Invalid arguments specified for command",
            "{args:?} without its tail"
        );
        let reply: Value = redis::cmd("COMMAND")
            .arg("GETKEYSANDFLAGS")
            .arg(args)
            .arg(&tail)
            .query(&mut c)
            .unwrap();
        let got: Vec<(String, BTreeSet<String>)> = array(&reply)
            .iter()
            .map(|k| {
                let k = array(k);
                (text(&k[0]), strings(&k[1]).into_iter().collect())
            })
            .collect();
        let want: Vec<(String, BTreeSet<String>)> = want
            .iter()
            .map(|(k, f)| (k.to_string(), f.iter().map(|s| s.to_string()).collect()))
            .collect();
        assert_eq!(got, want, "{args:?} {tail:?}");
    }
    // OKOME.KEY touches no key and declares none.
    let e = err(
        &mut c,
        &[b"COMMAND", b"GETKEYSANDFLAGS", b"okome.key", b"rate", b"a"],
    );
    assert!(e.contains("no key arguments"), "{e}");
}

// ---------------------------------------------------------------- docs agree

#[test]
fn readme_documents_exactly_the_registered_commands() {
    let readme = repo_file("README.md");
    let mut documented = BTreeSet::new();
    for line in readme.lines() {
        let Some(rest) = line.strip_prefix("### ") else {
            continue;
        };
        if !rest.starts_with("OKOME.") {
            continue;
        }
        for part in rest.split(" / ") {
            let name = part.split_whitespace().next().expect("a command name");
            assert!(name.starts_with("OKOME."), "heading {line:?}");
            assert!(
                documented.insert(name.to_lowercase()),
                "{name} documented twice"
            );
        }
    }
    let s = Server::start();
    let mut c = s.conn();
    let registered: BTreeSet<String> = redis::cmd("COMMAND")
        .arg(&["LIST", "FILTERBY", "MODULE", "okome"])
        .query(&mut c)
        .unwrap();
    assert_eq!(registered.len(), 19, "{registered:?}");
    assert_eq!(documented, registered);
}

#[test]
fn redis_conf_example_lists_every_config() {
    let example = repo_file("redis.conf.example");
    let tokens: BTreeSet<&str> = example
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '-'))
        .collect();
    let missing: Vec<String> = DEFAULTS
        .iter()
        .map(|(n, _)| format!("okome.{n}"))
        .filter(|n| !tokens.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "redis.conf.example does not mention {missing:?}"
    );
}

#[test]
fn redis_conf_example_loads_and_shows_the_defaults() {
    let dir = TempDir::new();
    let example = repo_file("redis.conf.example")
        .replace("/path/to/libokome.so", &module_path().display().to_string());
    let conf = dir.path().join("redis.conf");
    std::fs::write(&conf, example).unwrap();
    let s = ConfServer::start(dir.path(), &conf);
    let mut c = s.conn();
    assert_eq!(config_get(&mut c, "okome.*"), default_configs());
}

#[test]
fn readme_names_every_config_and_info_field() {
    let readme = repo_file("README.md");
    for (name, _) in DEFAULTS {
        // The table may abbreviate a standard's siblings: `okome.x-min` /
        // `-default` / `-max`.
        let family = name
            .strip_suffix("-default")
            .or_else(|| name.strip_suffix("-max"))
            .map(|base| format!("`okome.{base}-min`"));
        let full = format!("`okome.{name}`");
        assert!(
            readme.contains(&full) || family.is_some_and(|f| readme.contains(&f)),
            "README does not document okome.{name}"
        );
    }
    let s = Server::start();
    let mut c = s.conn();
    for field in info(&mut c).keys() {
        assert!(
            readme.contains(&format!("`{field}`")),
            "README does not document the INFO okome field {field}"
        );
    }
}

/// An argument of `COMMAND DOCS` in the syntax form the README uses, with
/// `_` for a keyword's value: `[AGENT _ LIMIT _ WINDOW _]`.
fn syntax_of(v: &Value) -> String {
    let m = pairs(v);
    let kind = text(field(&m, "type").expect("type"));
    let token = field(&m, "token").map(text);
    let subs = || -> Vec<String> {
        field(&m, "arguments")
            .map(|a| array(a).iter().map(syntax_of).collect())
            .unwrap_or_default()
    };
    let mut s = match (kind.as_str(), token) {
        ("pure-token", Some(t)) => t,
        ("block", _) => subs().join(" "),
        ("oneof", _) => subs().join(" | "),
        (_, Some(t)) => format!("{t} _"),
        (_, None) => text(field(&m, "name").expect("name")),
    };
    let flags = field(&m, "flags").map(strings).unwrap_or_default();
    if flags.iter().any(|f| f == "multiple") {
        s += "...";
    }
    if flags.iter().any(|f| f == "optional") {
        s = format!("[{s}]");
    }
    s
}

/// A README syntax line as words, brackets and bars apart, with `_` for
/// the placeholder after a keyword (`COST n` → `COST _`).
fn syntax_words(line: &str) -> Vec<String> {
    let spaced = line
        .replace('[', " [ ")
        .replace(']', " ] ")
        .replace('|', " | ");
    let mut out: Vec<String> = Vec::new();
    for w in spaced.split_whitespace() {
        let after_keyword = out
            .last()
            .is_some_and(|p| p.len() > 1 && p.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        let placeholder = w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        out.push(if after_keyword && placeholder {
            "_".into()
        } else {
            w.into()
        });
    }
    out
}

/// The syntax lines under each command heading (`OKOME.RATE agent limit
/// window [COST n]`) are what `COMMAND DOCS` says, argument for argument.
#[test]
fn readme_syntax_lines_are_command_docs() {
    let readme = repo_file("README.md");
    let mut lines = readme.lines().peekable();
    let mut shown: Vec<String> = Vec::new();
    while let Some(line) = lines.next() {
        if !line.starts_with("### OKOME.") {
            continue;
        }
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        if lines.next() != Some("```") {
            continue;
        }
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            if l.starts_with("OKOME.") {
                shown.push(l.to_string());
            } else if let Some(last) = shown.last_mut() {
                *last = format!("{last} {}", l.trim());
            }
        }
    }
    let s = Server::start();
    let mut c = s.conn();
    let mut names = BTreeSet::new();
    for line in &shown {
        let name = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_lowercase();
        let reply: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(&name)
            .query(&mut c)
            .unwrap();
        let top = pairs(&reply);
        assert_eq!(
            top.len(),
            1,
            "README syntax line for an unknown command: {line}"
        );
        let docs = pairs(&top[0].1);
        let args: Vec<String> = field(&docs, "arguments")
            .map(|a| array(a).iter().map(syntax_of).collect())
            .unwrap_or_default();
        let want = syntax_words(&format!("{} {}", name.to_uppercase(), args.join(" ")));
        assert_eq!(
            syntax_words(line),
            want,
            "README's syntax line differs from COMMAND DOCS {name}"
        );
        names.insert(name);
    }
    assert_eq!(
        names.len(),
        19,
        "a syntax line for every command: {names:?}"
    );
}
