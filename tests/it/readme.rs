//! The documentation's `redis-cli` transcripts, replayed against a real
//! server: every fenced block of README.md and examples/README.md with a
//! `127.0.0.1:6379>` prompt is run, each command through `redis-cli
//! --no-raw` (so it is split into arguments and its reply printed exactly
//! as a reader's redis-cli would), and the printed reply is compared with
//! the lines under the command. A changed reply is a failing doc.
//!
//! The notation for what varies from run to run (README.md explains it
//! next to its first transcript):
//! - `~N`: a number that varies a little (a TTL counting down, a retry-after
//!   in ms): the reply's number is within 1% of N (at least ±100).
//! - `<name>`: a value that varies wholly (an absolute Unix time): any text
//!   up to the next character of the line.
//! - A bulk reply of exactly 32 lowercase hex digits is a lock token: it
//!   matches any such token, and the README's token, written later in a
//!   command, stands for the one the server gave.
//! - So is a lease id's random part: a colon, then 32 lowercase hex
//!   digits, closing a quoted string (`"{agent-7}:<32 hex>"`).
//! - `KEYS` replies are compared as sets: Redis lists keys in no order.
//! - `client X 127.0.0.1:6379> cmd` runs `cmd` as client `X` (each client
//!   is its own redis-cli); a reply of the single line `(blocks ...)` means
//!   the call must still be waiting, and a later line `client X is
//!   answered ...:` introduces the reply it finally gets.
//!
//! Each transcript starts on a fresh server, unless the line right before
//! its fence is `<!-- transcript: continued -->`: then it runs on the
//! previous transcript's server, after it.

use crate::support::{alone, is_token, repo_file, Server};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROMPT: &str = "127.0.0.1:6379> ";
const CONTINUED: &str = "<!-- transcript: continued -->";

/// One fenced block with prompts.
struct Transcript {
    file: &'static str,
    /// Line number (1-based) of the opening fence.
    line: usize,
    continued: bool,
    steps: Vec<Step>,
}

enum Step {
    /// `[client X] 127.0.0.1:6379> command` and the reply printed under it
    /// (`None`: `(blocks ...)`, the call must not have returned).
    Call {
        line: usize,
        client: Option<String>,
        command: String,
        reply: Option<Vec<String>>,
    },
    /// `client X is answered ...:` and the reply its blocked call gets.
    Answer {
        line: usize,
        client: String,
        reply: Vec<String>,
    },
}

fn transcripts(file: &'static str, text: &str) -> Vec<Transcript> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with("```") {
            i += 1;
            continue;
        }
        let open = i;
        let mut end = i + 1;
        while end < lines.len() && !lines[end].starts_with("```") {
            end += 1;
        }
        let body = &lines[open + 1..end.min(lines.len())];
        if body.iter().any(|l| prompt_of(l).is_some()) {
            let continued = open > 0 && lines[open - 1].trim() == CONTINUED;
            out.push(Transcript {
                file,
                line: open + 1,
                continued,
                steps: steps(file, open + 2, body),
            });
        }
        i = end + 1;
    }
    out
}

/// `(client, command)` of a prompt line.
fn prompt_of(line: &str) -> Option<(Option<String>, String)> {
    if let Some(cmd) = line.strip_prefix(PROMPT) {
        return Some((None, cmd.to_string()));
    }
    let rest = line.strip_prefix("client ")?;
    let (name, rest) = rest.split_once(' ')?;
    let cmd = rest.strip_prefix(PROMPT)?;
    Some((Some(name.to_string()), cmd.to_string()))
}

/// The client named by `client X is answered ...:`.
fn answer_of(line: &str) -> Option<String> {
    let rest = line.strip_prefix("client ")?;
    let (name, rest) = rest.split_once(' ')?;
    (rest.starts_with("is answered") && rest.ends_with(':')).then(|| name.to_string())
}

fn steps(file: &str, first_line: usize, body: &[&str]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let line = first_line + i;
        let head = body[i];
        i += 1;
        let mut reply = Vec::new();
        while i < body.len() && prompt_of(body[i]).is_none() && answer_of(body[i]).is_none() {
            reply.push(body[i].to_string());
            i += 1;
        }
        if let Some((client, command)) = prompt_of(head) {
            let blocks = reply.len() == 1 && reply[0].starts_with("(blocks");
            steps.push(Step::Call {
                line,
                client,
                command,
                reply: (!blocks).then_some(reply),
            });
        } else if let Some(client) = answer_of(head) {
            steps.push(Step::Answer {
                line,
                client,
                reply,
            });
        } else {
            panic!("{file}:{line}: a transcript line before any prompt: {head:?}");
        }
    }
    steps
}

/// What the replay has learnt: the README's tokens and placeholders, bound
/// to what the server gave.
#[derive(Default)]
struct Bindings {
    values: BTreeMap<String, String>,
}

impl Bindings {
    /// `command` with every bound README value replaced by the server's.
    fn apply(&self, command: &str) -> String {
        let mut out = command.to_string();
        for (doc, real) in &self.values {
            out = out.replace(doc.as_str(), real);
        }
        out
    }
}

/// Whether `actual` is what `expected` (in the notation above) shows;
/// binds tokens and `<name>` placeholders on success.
fn line_matches(expected: &str, actual: &str, bind: &mut Bindings) -> bool {
    let mut found = Vec::new();
    if !match_from(expected.as_bytes(), actual.as_bytes(), &mut found) {
        return false;
    }
    for (doc, real) in found {
        bind.values.insert(doc, real);
    }
    true
}

fn match_from(e: &[u8], a: &[u8], found: &mut Vec<(String, String)>) -> bool {
    let Some(&c) = e.first() else {
        return a.is_empty();
    };
    // A quoted 32-hex-digit token.
    if c == b'"' && e.len() >= 34 && e[33] == b'"' {
        let doc = String::from_utf8_lossy(&e[1..33]).into_owned();
        if is_token(&doc) {
            if a.len() < 34 || a[0] != b'"' || a[33] != b'"' {
                return false;
            }
            let real = String::from_utf8_lossy(&a[1..33]).into_owned();
            if !is_token(&real) {
                return false;
            }
            found.push((doc, real));
            return match_from(&e[34..], &a[34..], found);
        }
    }
    // A lease id's random part: a colon, then 32 hex digits closing a
    // quoted string.
    if c == b':' && e.len() >= 34 && e[33] == b'"' {
        let doc = String::from_utf8_lossy(&e[1..33]).into_owned();
        if is_token(&doc) {
            if a.len() < 34 || a[0] != b':' || a[33] != b'"' {
                return false;
            }
            let real = String::from_utf8_lossy(&a[1..33]).into_owned();
            if !is_token(&real) {
                return false;
            }
            found.push((doc, real));
            return match_from(&e[33..], &a[33..], found);
        }
    }
    // `~N`: a number within 1% (at least 100) of N.
    if c == b'~' && e.get(1).is_some_and(u8::is_ascii_digit) {
        let digits = e[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        let want: i64 = std::str::from_utf8(&e[1..1 + digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(i64::MAX);
        let sign = usize::from(a.first() == Some(&b'-'));
        let got_digits = a[sign..].iter().take_while(|b| b.is_ascii_digit()).count();
        if got_digits == 0 {
            return false;
        }
        let got: i64 = std::str::from_utf8(&a[..sign + got_digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(i64::MIN);
        let tolerance = (want / 100).max(100);
        if (got - want).abs() > tolerance {
            return false;
        }
        return match_from(&e[1 + digits..], &a[sign + got_digits..], found);
    }
    // `<name>`: anything up to the next expected character.
    if c == b'<' {
        if let Some(close) = e.iter().position(|&b| b == b'>') {
            let name = &e[..=close];
            let is_name = name.len() > 2 && name[1..close].iter().all(|b| !b"<>\"".contains(b));
            if is_name {
                let rest = &e[close + 1..];
                let stop = rest.first().copied();
                let len = a
                    .iter()
                    .position(|&b| Some(b) == stop || b == b' ')
                    .unwrap_or(a.len());
                if len == 0 {
                    return false;
                }
                found.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(&a[..len]).into_owned(),
                ));
                return match_from(rest, &a[len..], found);
            }
        }
    }
    a.first() == Some(&c) && match_from(&e[1..], &a[1..], found)
}

/// The `N) value` parts of a top-level array reply, for order-free checks.
fn elements(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            l.split_once(") ")
                .map_or(l.as_str(), |(_, v)| v)
                .to_string()
        })
        .collect();
    out.sort();
    out
}

fn redis_cli(port: u16, command: &str) -> Child {
    let mut child = Command::new("redis-cli")
        .args(["--no-raw", "-h", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run redis-cli (package redis-tools)");
    let mut stdin = child.stdin.take().expect("redis-cli stdin");
    writeln!(stdin, "{command}").expect("write to redis-cli");
    drop(stdin);
    child
}

fn output_of(child: Child) -> Vec<String> {
    let out = child.wait_with_output().expect("redis-cli output");
    assert!(
        out.status.success(),
        "redis-cli failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn still_running(child: &mut Child, for_at_least: Duration) -> bool {
    let until = Instant::now() + for_at_least;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn check_reply(
    where_: &str,
    command: &str,
    expected: &[String],
    actual: &[String],
    bind: &mut Bindings,
) {
    let is_keys = command
        .split_whitespace()
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case("KEYS"));
    if is_keys && expected.len() == actual.len() {
        assert_eq!(
            elements(expected),
            elements(actual),
            "{where_}: {command}: KEYS replied another set of keys"
        );
        return;
    }
    let same_len = expected.len() == actual.len();
    let all_match = same_len
        && expected
            .iter()
            .zip(actual)
            .all(|(e, a)| line_matches(e, a, bind));
    assert!(
        all_match,
        "{where_}: {command}\n--- the document shows:\n{}\n--- the server replied:\n{}\n",
        expected.join("\n"),
        actual.join("\n")
    );
}

fn replay(t: &Transcript, server: &Server, bind: &mut Bindings) {
    let mut blocked: BTreeMap<String, (Child, String)> = BTreeMap::new();
    for step in &t.steps {
        match step {
            Step::Call {
                line,
                client,
                command,
                reply,
            } => {
                let where_ = format!("{}:{line}", t.file);
                let sent = bind.apply(command);
                let mut child = redis_cli(server.port, &sent);
                match reply {
                    Some(expected) => {
                        let actual = output_of(child);
                        check_reply(&where_, command, expected, &actual, bind);
                    }
                    None => {
                        let name = client.clone().unwrap_or_default();
                        assert!(
                            still_running(&mut child, Duration::from_millis(300)),
                            "{where_}: {command} should block, but replied:\n{}",
                            output_of(child).join("\n")
                        );
                        blocked.insert(name, (child, command.clone()));
                    }
                }
            }
            Step::Answer {
                line,
                client,
                reply,
            } => {
                let where_ = format!("{}:{line}", t.file);
                let (child, command) = blocked
                    .remove(client)
                    .unwrap_or_else(|| panic!("{where_}: client {client} is not blocked"));
                let actual = output_of(child);
                check_reply(&where_, &command, reply, &actual, bind);
            }
        }
    }
    if let Some((name, (mut child, command))) = blocked.into_iter().next() {
        let _ = child.kill();
        panic!(
            "{}:{}: client {name}'s {command} was never answered in the transcript",
            t.file, t.line
        );
    }
}

fn replay_file(file: &'static str, at_least: usize) {
    let text = repo_file(file);
    let all = transcripts(file, &text);
    assert!(
        all.len() >= at_least,
        "{file}: found {} transcripts, expected at least {at_least}",
        all.len()
    );
    let mut current: Option<Server> = None;
    let mut bind = Bindings::default();
    for t in &all {
        if !t.continued || current.is_none() {
            current = Some(Server::start());
            bind = Bindings::default();
        }
        if let Some(server) = &current {
            replay(t, server, &mut bind);
        }
    }
}

#[test]
fn readme_transcripts_replay() {
    let _alone = alone();
    replay_file("README.md", 12);
}

#[test]
fn examples_readme_transcripts_replay() {
    replay_file("examples/README.md", 0);
}

/// examples/README.md shows the Python demo's output as `# ` lines under
/// its command line; the demo must print exactly those (in the notation).
#[test]
fn examples_readme_shows_the_python_demos_output() {
    let text = repo_file("examples/README.md");
    let expected: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("python3 examples/python/okome_demo.py"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .filter_map(|l| l.strip_prefix("# "))
        .map(str::to_string)
        .collect();
    assert!(
        expected.len() >= 5,
        "examples/README.md: the demo's output is missing"
    );
    let server = Server::start();
    let out = crate::support::demo::run_demo(&server.url());
    assert!(out.status.success(), "the demo failed: {out:?}");
    let actual: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    check_reply(
        "examples/README.md",
        "python3 examples/python/okome_demo.py",
        &expected,
        &actual,
        &mut Bindings::default(),
    );
}

/// The replay fails on a reply that differs from the document's.
#[test]
fn a_changed_reply_fails_the_replay() {
    let server = Server::start();
    let good = transcripts("doc", "```\n127.0.0.1:6379> OKOME.RATE a 2 60\n1) (integer) 1\n2) (integer) 1\n3) (integer) 0\n4) (integer) 60000\n```\n");
    replay(&good[0], &server, &mut Bindings::default());
    let stale = transcripts("doc", "```\n127.0.0.1:6379> OKOME.RATE a 2 60\n1) (integer) 1\n2) (integer) 1\n3) (integer) 0\n4) (integer) 60000\n```\n");
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        replay(&stale[0], &server, &mut Bindings::default())
    }));
    assert!(
        failed.is_err(),
        "a second call has 0 remaining, not 1: the replay must fail"
    );
    let blocked = transcripts("doc", "```\nclient B 127.0.0.1:6379> OKOME.RATE b 1 60\n(blocks)\nclient B is answered:\n1) (integer) 1\n2) (integer) 0\n3) (integer) 0\n4) (integer) 60000\n```\n");
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        replay(&blocked[0], &server, &mut Bindings::default())
    }));
    assert!(
        failed.is_err(),
        "a call that replies at once does not block"
    );
}

#[test]
fn the_notation_matches_what_it_says() {
    let mut b = Bindings::default();
    assert!(line_matches("(integer) ~8980", "(integer) 8975", &mut b));
    assert!(line_matches("(integer) ~8980", "(integer) 8880", &mut b));
    assert!(!line_matches("(integer) ~8980", "(integer) 8879", &mut b));
    assert!(!line_matches("(integer) ~8980", "(nil)", &mut b));
    assert!(!line_matches("(integer) ~60000", "(integer) 60601", &mut b));
    assert!(line_matches(
        "2) \"<expiry>\"",
        "2) \"1796235494079\"",
        &mut b
    ));
    assert_eq!(
        b.values.get("<expiry>").map(String::as_str),
        Some("1796235494079")
    );
    assert!(line_matches(
        "5) \"b9f7c0577b37ef9bacc3f8f636894f9e\"",
        "5) \"0123456789abcdef0123456789abcdef\"",
        &mut b
    ));
    assert_eq!(
        b.apply("OKOME.UNLOCK k b9f7c0577b37ef9bacc3f8f636894f9e"),
        "OKOME.UNLOCK k 0123456789abcdef0123456789abcdef"
    );
    assert!(!line_matches(
        "5) \"b9f7c0577b37ef9bacc3f8f636894f9e\"",
        "5) (nil)",
        &mut b
    ));
    assert!(line_matches(
        "1) \"{a}:4f1d9c0a7e3b2d6f8a1c5e9b0d7f3a2c\"",
        "1) \"{a}:0123456789abcdef0123456789abcdee\"",
        &mut b
    ));
    assert_eq!(
        b.apply("OKOME.LEASE.RELEASE {a}:4f1d9c0a7e3b2d6f8a1c5e9b0d7f3a2c"),
        "OKOME.LEASE.RELEASE {a}:0123456789abcdef0123456789abcdee"
    );
    assert!(!line_matches(
        "1) \"{a}:4f1d9c0a7e3b2d6f8a1c5e9b0d7f3a2c\"",
        "1) \"{b}:0123456789abcdef0123456789abcdee\"",
        &mut b
    ));
    assert!(!line_matches("1) \"HIT\"", "1) \"MISS\"", &mut b));
    assert!(!line_matches("1) \"HIT\"", "1) \"HIT\" ", &mut b));
    let t = transcripts(
        "x",
        "```\nclient A 127.0.0.1:6379> PING\nPONG\nclient B 127.0.0.1:6379> BLPOP q 0\n(blocks)\nclient B is answered:\n1) \"q\"\n```\n",
    );
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].steps.len(), 3);
}
