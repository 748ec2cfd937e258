//! The argument grammar of every command. Each `parse_*` function takes the
//! arguments after the command name and returns a typed request, or the
//! error reply. Options are case-insensitive keywords; an unknown, repeated
//! or incomplete option is a syntax error.
//!
//! Errors name an argument as the command's syntax and `COMMAND DOCS` do,
//! in lowercase (`ttl`, `token`, `window`, `plan_json`); a keyword appears
//! in capitals only when the keyword itself is at fault.

use crate::config::Config;
use crate::keys::{self, printable, Kind};
use crate::{Error, Result};

/// Parses a base-10 signed 64-bit integer exactly as Redis does: optional
/// `-`, digits, nothing else.
/// `-`, digits, no leading zeros (`0` itself excepted), no `-0`.
pub fn parse_int(what: &'static str, arg: &[u8]) -> Result<i64> {
    let (negative, digits) = match arg.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, arg),
    };
    let canonical = match digits {
        [] => false,
        [b'0'] => !negative,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return Err(Error::NotInteger(what));
    }
    // Accumulated negative, so that i64::MIN parses too.
    let mut v: i64 = 0;
    for &d in digits {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d.wrapping_sub(b'0'))))
            .ok_or(Error::NotInteger(what))?;
    }
    if negative {
        Ok(v)
    } else {
        v.checked_neg().ok_or(Error::NotInteger(what))
    }
}

/// Walks the options after the positional arguments.
struct Options<'a, 'b> {
    rest: &'b [&'a [u8]],
    seen: Vec<&'static str>,
}

impl<'a, 'b> Options<'a, 'b> {
    fn new(rest: &'b [&'a [u8]]) -> Self {
        Options {
            rest,
            seen: Vec::new(),
        }
    }

    /// The next option keyword, matched case-insensitively against `known`.
    fn next(&mut self, known: &[&'static str]) -> Result<Option<&'static str>> {
        let Some((word, tail)) = self.rest.split_first() else {
            return Ok(None);
        };
        self.rest = tail;
        let name = known
            .iter()
            .copied()
            .find(|k| k.as_bytes().eq_ignore_ascii_case(word))
            .ok_or_else(|| {
                Error::Syntax(format!(
                    "unknown option '{}' (expected one of: {})",
                    printable(word),
                    known.join(", ")
                ))
            })?;
        if self.seen.contains(&name) {
            return Err(Error::Syntax(format!("option {name} given more than once")));
        }
        self.seen.push(name);
        Ok(Some(name))
    }

    /// The value following option `name`.
    fn value(&mut self, name: &'static str) -> Result<&'a [u8]> {
        let (v, tail) = self
            .rest
            .split_first()
            .ok_or_else(|| Error::Syntax(format!("option {name} needs a value")))?;
        self.rest = tail;
        Ok(v)
    }

    /// The integer following option `name`; an error names its argument
    /// ([`arg_name`]).
    fn int(&mut self, name: &'static str) -> Result<i64> {
        let v = self.value(name)?;
        parse_int(arg_name(name), v)
    }
}

/// The name of the argument an option keyword introduces, as `COMMAND DOCS`
/// lists it: the keyword in lowercase.
fn arg_name(keyword: &'static str) -> &'static str {
    match keyword {
        "TTL" => "ttl",
        "TOKEN" => "token",
        "LOCKTTL" => "lockttl",
        "WAIT" => "wait",
        "REFRESHAHEAD" => "refreshahead",
        "AGENT" => "agent",
        "LIMIT" => "limit",
        "WINDOW" => "window",
        "WLIMIT" => "wlimit",
        "WWINDOW" => "wwindow",
        "COST" => "cost",
        "PXAT" => "pxat",
        "COUNT" => "count",
        "CURSOR" => "cursor",
        other => other,
    }
}

fn check_size(what: &'static str, value: &[u8], max: u64, config: &'static str) -> Result<()> {
    let len = value.len();
    if u64::try_from(len).map_or(true, |l| l > max) {
        return Err(Error::TooLarge {
            what,
            len,
            max: usize::try_from(max).unwrap_or(usize::MAX),
            config,
        });
    }
    Ok(())
}

/// Checks that `value` (the argument `what`: `plan_json`, `value_json`) is
/// one JSON text. JSON text is UTF-8 (RFC 8259 §8.1); `IgnoredAny` alone
/// would skip over invalid bytes inside strings, so UTF-8 is checked first.
/// The error says where, as a byte offset counted from 1, in okome's words
/// (never the parser's).
pub fn check_json(what: &'static str, value: &[u8]) -> Result<()> {
    if value.is_empty() {
        return Err(Error::Empty(what));
    }
    let bad = |detail: String| Error::InvalidJson { what, detail };
    let text = std::str::from_utf8(value).map_err(|e| {
        bad(format!(
            "invalid UTF-8 at byte {}",
            e.valid_up_to().saturating_add(1)
        ))
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| bad(json_detail(text, &e)))
}

/// Where `text` stops being JSON, from the parser's line and column
/// (columns count bytes from 1).
fn json_detail(text: &str, e: &serde_json::Error) -> String {
    if e.classify() == serde_json::error::Category::Eof {
        return format!("it ends early, after byte {}", text.len());
    }
    // The byte after the (line - 1)th newline.
    let line_start = e.line().checked_sub(2).map_or(0, |newlines| {
        text.bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .nth(newlines)
            .map_or(0, |(i, _)| i.saturating_add(1))
    });
    let mut at = line_start.saturating_add(e.column()).max(1);
    if e.to_string().starts_with("control character") {
        // The parser reports some of these one byte early: the control
        // byte is the first one from there.
        at = text
            .bytes()
            .enumerate()
            .skip(at.saturating_sub(1))
            .find(|&(_, b)| b < 0x20)
            .map_or(at, |(i, _)| i.saturating_add(1));
    }
    format!("at byte {at}")
}

fn check_value(what: &'static str, value: &[u8], cfg: &Config) -> Result<()> {
    check_size(what, value, cfg.max_value_bytes, "max-value-bytes")?;
    check_json(what, value)
}

fn token<'a>(opts: &mut Options<'a, '_>) -> Result<&'a [u8]> {
    let t = opts.value("TOKEN")?;
    if t.is_empty() {
        return Err(Error::Empty("token"));
    }
    Ok(t)
}

/// One charge against an agent's rate window or write budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// `okome:budget:rate:{agent}` or `okome:budget:write:{agent}`.
    pub key: Vec<u8>,
    pub limit: u64,
    pub window_ms: u64,
    pub cost: u64,
}

fn limit_arg(what: &'static str, v: i64) -> Result<u64> {
    crate::config::LIMIT.check(what, v)
}

fn window_arg(what: &'static str, v: i64) -> Result<u64> {
    crate::config::WINDOW_S
        .check(what, v)
        .map(|s| s.saturating_mul(1000))
}

fn cost_arg(v: i64, limit: u64) -> Result<u64> {
    crate::config::Standard::new(0, 1, limit).check("cost", v, "units (0 to the limit)")
}

fn budget_key(kind: Kind, agent: &[u8]) -> Result<Vec<u8>> {
    if agent.is_empty() {
        return Err(Error::Empty("agent"));
    }
    keys::build(kind, &[agent])
}

pub const RATE: &str = "okome.rate";

/// `OKOME.RATE agent limit window [COST n]`
pub fn parse_rate(args: &[&[u8]]) -> Result<Charge> {
    let [agent, limit, window, rest @ ..] = args else {
        return Err(Error::Arity(RATE));
    };
    let limit = limit_arg("limit", parse_int("limit", limit)?)?;
    if window.eq_ignore_ascii_case(b"WINDOW") {
        return Err(Error::Syntax(
            "OKOME.RATE takes the window as its third argument (OKOME.RATE agent limit \
             window [COST n]), not as WINDOW s"
                .into(),
        ));
    }
    let window_ms = window_arg("window", parse_int("window", window)?)?;
    let mut opts = Options::new(rest);
    let mut cost = 1;
    while opts.next(&["COST"])?.is_some() {
        cost = cost_arg(opts.int("COST")?, limit)?;
    }
    Ok(Charge {
        key: budget_key(Kind::Rate, agent)?,
        limit,
        window_ms,
        cost,
    })
}

pub const WBUDGET: &str = "okome.wbudget";

/// `OKOME.WBUDGET agent write_limit [WINDOW s] [COST n]`
pub fn parse_wbudget(args: &[&[u8]], cfg: &Config) -> Result<Charge> {
    let [agent, limit, rest @ ..] = args else {
        return Err(Error::Arity(WBUDGET));
    };
    let limit = limit_arg("write_limit", parse_int("write_limit", limit)?)?;
    if rest.first().is_some_and(|w| parse_int("window", w).is_ok()) {
        return Err(Error::Syntax(
            "OKOME.WBUDGET takes the window as WINDOW s (OKOME.WBUDGET agent write_limit \
             [WINDOW s] [COST n]), not as its third argument"
                .into(),
        ));
    }
    let mut opts = Options::new(rest);
    let mut window_ms = cfg.write_window_s.saturating_mul(1000);
    let mut cost = None;
    while let Some(opt) = opts.next(&["WINDOW", "COST"])? {
        match opt {
            "WINDOW" => window_ms = window_arg("window", opts.int("WINDOW")?)?,
            _ => cost = Some(opts.int("COST")?),
        }
    }
    let cost = match cost {
        Some(c) => cost_arg(c, limit)?,
        None => 1,
    };
    Ok(Charge {
        key: budget_key(Kind::Write, agent)?,
        limit,
        window_ms,
        cost,
    })
}

/// `OKOME.PLAN.GET model prompt toolset_version repo_hash [AGENT id LIMIT n WINDOW s] [LOCKTTL ms] [NOLOCK]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanGet {
    /// The planner key.
    pub key: Vec<u8>,
    /// TTL of the lock taken on a miss; `None` with `NOLOCK`.
    pub lock_ttl_ms: Option<u64>,
    /// One request charged to the agent's rate window first.
    pub rate: Option<Charge>,
    /// `WAIT ms`: block while another caller holds the lock.
    pub wait_ms: Option<u64>,
    /// `REFRESHAHEAD ms` (0: off): a hit with less TTL left than this, and
    /// no lock held, becomes `REFRESH` for exactly one caller.
    pub refresh_ahead_ms: u64,
}

pub const PLAN_GET: &str = "okome.plan.get";

/// The flag after `repo_hash` that makes the second argument the prompt's
/// hash (`PLAN.GET`, `KEY planner`).
pub const HASHED: &str = "HASHED";

fn is_hashed(word: &[u8]) -> bool {
    word.eq_ignore_ascii_case(HASHED.as_bytes())
}

/// `OKOME.PLAN.GET model prompt toolset_version repo_hash [HASHED] [options]`:
/// with `HASHED` the second argument is the lowercase hex SHA-256 of the
/// prompt, checked (64 lowercase hex digits) and never hashed here.
pub fn parse_plan_get(args: &[&[u8]], cfg: &Config) -> Result<PlanGet> {
    let [model, prompt, toolset, repo_hash, rest @ ..] = args else {
        return Err(Error::Arity(PLAN_GET));
    };
    let (hashed, rest) = match rest.split_first() {
        Some((flag, tail)) if is_hashed(flag) => (true, tail),
        _ => (false, rest),
    };
    let mut req = parse_lookup_options(rest, cfg).map_err(|e| match e {
        Error::Syntax(m)
            if m.to_ascii_uppercase()
                .starts_with("UNKNOWN OPTION 'HASHED'") =>
        {
            Error::Syntax(
                "HASHED must come right after repo_hash (OKOME.PLAN.GET model prompt_hash \
                 toolset_version repo_hash HASHED [options])"
                    .into(),
            )
        }
        e => e,
    })?;
    req.key = if hashed {
        keys::planner_key_hashed(model, prompt, toolset, repo_hash)?
    } else {
        check_size("prompt", prompt, cfg.max_prompt_bytes, "max-prompt-bytes")?;
        keys::planner_key(model, prompt, toolset, repo_hash)?
    };
    Ok(req)
}

pub const PLAN_LOOKUP: &str = "okome.plan.lookup";

/// `OKOME.PLAN.LOOKUP key [options of PLAN.GET]`: the key-addressed form,
/// for cluster clients (the key comes from `OKOME.KEY planner ...`).
pub fn parse_plan_lookup(args: &[&[u8]], cfg: &Config) -> Result<PlanGet> {
    let [key, rest @ ..] = args else {
        return Err(Error::Arity(PLAN_LOOKUP));
    };
    let mut req = parse_lookup_options(rest, cfg)?;
    keys::parse_kind(key, Kind::Planner)?;
    req.key = key.to_vec();
    Ok(req)
}

/// The options shared by `PLAN.GET` and `PLAN.LOOKUP`; the key is left
/// empty for the caller to fill in.
fn parse_lookup_options(rest: &[&[u8]], cfg: &Config) -> Result<PlanGet> {
    let mut opts = Options::new(rest);
    let mut lock_ttl = None;
    let mut nolock = false;
    let (mut agent, mut limit, mut window) = (None, None, None);
    let (mut wait_ms, mut refresh) = (None, None);
    let known = [
        "LOCKTTL",
        "NOLOCK",
        "AGENT",
        "LIMIT",
        "WINDOW",
        "WAIT",
        "REFRESHAHEAD",
    ];
    while let Some(opt) = opts.next(&known)? {
        match opt {
            "WAIT" => wait_ms = Some(crate::config::WAIT_MS.check("wait", opts.int("WAIT")?)?),
            "REFRESHAHEAD" => {
                refresh = Some(
                    crate::config::REFRESH_AHEAD_MS
                        .check("refreshahead", opts.int("REFRESHAHEAD")?)?,
                )
            }
            "LOCKTTL" => {
                lock_ttl = Some(
                    cfg.lock_ttl_ms
                        .check("lockttl", opts.int("LOCKTTL")?, "ms")?,
                )
            }
            "AGENT" => agent = Some(opts.value("AGENT")?),
            "LIMIT" => limit = Some(limit_arg("limit", opts.int("LIMIT")?)?),
            "WINDOW" => window = Some(window_arg("window", opts.int("WINDOW")?)?),
            _ => nolock = true,
        }
    }
    if nolock && lock_ttl.is_some() {
        return Err(Error::Syntax(
            "LOCKTTL and NOLOCK cannot be combined".into(),
        ));
    }
    if nolock && wait_ms.is_some() {
        return Err(Error::Syntax(
            "WAIT and NOLOCK cannot be combined (a waiter may be handed the lock)".into(),
        ));
    }
    if nolock && refresh.is_some_and(|r| r > 0) {
        return Err(Error::Syntax(
            "REFRESHAHEAD and NOLOCK cannot be combined (a refresh takes the lock)".into(),
        ));
    }
    let rate = match (agent, limit, window) {
        (None, None, None) => None,
        (Some(agent), Some(limit), Some(window_ms)) => Some(Charge {
            key: budget_key(Kind::Rate, agent)?,
            limit,
            window_ms,
            cost: 1,
        }),
        _ => {
            return Err(Error::Syntax(
                "AGENT, LIMIT and WINDOW must be given together".into(),
            ))
        }
    };
    Ok(PlanGet {
        key: Vec::new(),
        lock_ttl_ms: if nolock {
            None
        } else {
            Some(lock_ttl.unwrap_or(cfg.lock_ttl_ms.default))
        },
        rate,
        wait_ms,
        refresh_ahead_ms: if nolock {
            0
        } else {
            refresh.unwrap_or(cfg.refresh_ahead_ms)
        },
    })
}

/// `OKOME.PLAN.SET key plan_json [TTL s] [TOKEN token] [AGENT id WLIMIT n [WWINDOW s]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSet<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub ttl_s: u64,
    pub token: Option<&'a [u8]>,
    /// One write charged to the agent's write budget.
    pub budget: Option<Charge>,
    /// With `AGENT id`: the agent's ledger, where the stored plan is recorded.
    pub ledger: Option<Vec<u8>>,
}

pub const PLAN_SET: &str = "okome.plan.set";

pub fn parse_plan_set<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<PlanSet<'a>> {
    let [key, value, rest @ ..] = args else {
        return Err(Error::Arity(PLAN_SET));
    };
    let mut opts = Options::new(rest);
    let mut ttl_s = cfg.planner_ttl.default;
    let mut tok = None;
    let (mut agent, mut wlimit, mut wwindow) = (None, None, None);
    while let Some(opt) = opts.next(&["TTL", "TOKEN", "AGENT", "WLIMIT", "WWINDOW"])? {
        match opt {
            "TTL" => ttl_s = cfg.planner_ttl.check("ttl", opts.int("TTL")?, "seconds")?,
            "AGENT" => agent = Some(opts.value("AGENT")?),
            "WLIMIT" => wlimit = Some(limit_arg("wlimit", opts.int("WLIMIT")?)?),
            "WWINDOW" => wwindow = Some(window_arg("wwindow", opts.int("WWINDOW")?)?),
            _ => tok = Some(token(&mut opts)?),
        }
    }
    let budget = match (agent, wlimit) {
        (_, None) if wwindow.is_none() => None,
        (Some(agent), Some(limit)) => Some(Charge {
            key: budget_key(Kind::Write, agent)?,
            limit,
            window_ms: wwindow.unwrap_or(cfg.write_window_s.saturating_mul(1000)),
            cost: 1,
        }),
        _ => {
            return Err(Error::Syntax(
                "WLIMIT needs AGENT, and WWINDOW needs AGENT and WLIMIT".into(),
            ))
        }
    };
    let ledger = agent.map(ledger_key).transpose()?;
    keys::parse_kind(key, Kind::Planner)?;
    check_value("plan_json", value, cfg)?;
    Ok(PlanSet {
        key,
        value,
        ttl_s,
        token: tok,
        budget,
        ledger,
    })
}

/// `OKOME.LOCK key [TTL ms] [TOKEN token]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock<'a> {
    /// The protected key (the lock itself lives at `key:lock`).
    pub key: &'a [u8],
    pub ttl_ms: u64,
    /// `Some`: extend a lock held with this token; `None`: acquire.
    pub token: Option<&'a [u8]>,
}

pub const LOCK: &str = "okome.lock";

/// Checks that `key` is a cacheable okome key (one that can be locked).
fn lockable(key: &[u8]) -> Result<()> {
    cache_key_kind(key, "locked").map(|_| ())
}

/// The kind of `key` if it is a cacheable okome key; else an error saying
/// that only cache keys can be `what` (locked, recorded).
fn cache_key_kind(key: &[u8], what: &str) -> Result<Kind> {
    let kind = keys::parse(key)?;
    if kind.cacheable() {
        Ok(kind)
    } else {
        Err(Error::BadKey(format!(
            "'{}' is a {} budget key; only cache keys (planner, model_meta, rag, tools, health) can be {what}",
            printable(key),
            kind.name()
        )))
    }
}

pub fn parse_lock<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<Lock<'a>> {
    let [key, rest @ ..] = args else {
        return Err(Error::Arity(LOCK));
    };
    let mut opts = Options::new(rest);
    let mut ttl_ms = cfg.lock_ttl_ms.default;
    let mut tok = None;
    while let Some(opt) = opts.next(&["TTL", "TOKEN"])? {
        match opt {
            "TTL" => ttl_ms = cfg.lock_ttl_ms.check("ttl", opts.int("TTL")?, "ms")?,
            _ => tok = Some(token(&mut opts)?),
        }
    }
    lockable(key)?;
    Ok(Lock {
        key,
        ttl_ms,
        token: tok,
    })
}

/// `OKOME.UNLOCK key token`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlock<'a> {
    pub key: &'a [u8],
    pub token: &'a [u8],
}

pub const UNLOCK: &str = "okome.unlock";

pub fn parse_unlock<'a>(args: &[&'a [u8]]) -> Result<Unlock<'a>> {
    let [key, token] = args else {
        return Err(Error::Arity(UNLOCK));
    };
    if token.is_empty() {
        return Err(Error::Empty("token"));
    }
    lockable(key)?;
    Ok(Unlock { key, token })
}

/// The kind named by a `CACHE.*` command: a cacheable kind other than
/// planner. Anything else is refused with the seed's hard rule.
fn cache_kind(name: &[u8]) -> Result<Kind> {
    match Kind::from_name(name) {
        Some(Kind::Planner) => Err(Error::PlannerViaCache),
        Some(k) if k.cacheable() => Ok(k),
        _ => Err(Error::NotCacheable(printable(name))),
    }
}

/// `OKOME.CACHE.GET kind part...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheGet {
    pub kind: Kind,
    pub key: Vec<u8>,
}

pub const CACHE_GET: &str = "okome.cache.get";

pub fn parse_cache_get(args: &[&[u8]]) -> Result<CacheGet> {
    let [kind, parts @ ..] = args else {
        return Err(Error::Arity(CACHE_GET));
    };
    if parts.is_empty() {
        return Err(Error::Arity(CACHE_GET));
    }
    let kind = cache_kind(kind)?;
    let key = keys::build(kind, parts)?;
    Ok(CacheGet { kind, key })
}

/// `OKOME.CACHE.SET kind part... value [TTL s]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSet<'a> {
    pub kind: Kind,
    pub key: Vec<u8>,
    pub value: &'a [u8],
    pub ttl_s: u64,
    /// With `AGENT id`: the agent's ledger, where the stored value is recorded.
    pub ledger: Option<Vec<u8>>,
}

pub const CACHE_SET: &str = "okome.cache.set";

/// The options of `OKOME.CACHE.SET`: no part may be one of them.
const CACHE_SET_OPTIONS: [&str; 2] = ["TTL", "AGENT"];

fn is_cache_set_option(word: &[u8]) -> bool {
    CACHE_SET_OPTIONS
        .iter()
        .any(|o| o.as_bytes().eq_ignore_ascii_case(word))
}

/// `kind part... value_json [TTL s] [AGENT id]`. A part is never an option
/// keyword and a JSON value never is one either, so the parts and the value
/// are exactly the arguments before the first keyword: too many or too few
/// parts are named as such, never blamed on the value or an option.
pub fn parse_cache_set<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<CacheSet<'a>> {
    let [kind, rest @ ..] = args else {
        return Err(Error::Arity(CACHE_SET));
    };
    let kind = cache_kind(kind)?;
    let names = kind.components();
    let n = names.len();
    let positional = rest
        .iter()
        .position(|w| is_cache_set_option(w))
        .unwrap_or(rest.len());
    if let (Some(name), Some(word)) = (names.get(positional), rest.get(positional)) {
        return Err(Error::Syntax(format!(
            "{name} cannot be '{}': TTL and AGENT are the options of OKOME.CACHE.SET \
             (OKOME.CACHE.SET {} {} value_json [TTL s] [AGENT id])",
            printable(word),
            kind.name(),
            names.join(" ")
        )));
    }
    let is_json = |i: Option<usize>| {
        i.and_then(|i| rest.get(i))
            .is_some_and(|v| check_json("value_json", v).is_ok())
    };
    // Too many before the options: with JSON where the value belongs, the
    // rest is an unknown option (below); else too many parts. Too few: with
    // one too few and a last one that is not JSON, the value is missing;
    // else a part is.
    let too_many = positional > n.saturating_add(1) && !is_json(Some(n));
    if positional <= n || too_many {
        if positional == n && !is_json(n.checked_sub(1)) {
            return Err(Error::Syntax(format!(
                "value_json is missing: kind '{}' takes {} ({}), then value_json",
                kind.name(),
                keys::parts(n),
                names.join(", ")
            )));
        }
        return Err(keys::wrong_parts(kind, positional.saturating_sub(1)));
    }
    let (parts, rest) = rest.split_at(n);
    let [value, rest @ ..] = rest else {
        return Err(Error::Arity(CACHE_SET));
    };
    let standard = cfg
        .ttl(kind)
        .ok_or(Error::NotCacheable(kind.name().into()))?;
    let mut opts = Options::new(rest);
    let mut ttl_s = standard.default;
    let mut ledger = None;
    while let Some(opt) = opts.next(&CACHE_SET_OPTIONS)? {
        match opt {
            "TTL" => ttl_s = standard.check("ttl", opts.int("TTL")?, "seconds")?,
            _ => ledger = Some(ledger_key(opts.value("AGENT")?)?),
        }
    }
    let key = keys::build(kind, parts)?;
    check_value("value_json", value, cfg)?;
    Ok(CacheSet {
        kind,
        key,
        value,
        ttl_s,
        ledger,
    })
}

pub const KEY: &str = "okome.key";

/// `OKOME.KEY kind part...`: the canonical key. For `planner` the parts are
/// model, prompt, toolset_version, repo_hash (the prompt is hashed), or
/// model, prompt_hash, toolset_version, repo_hash, `HASHED`.
pub fn parse_key(args: &[&[u8]], cfg: &Config) -> Result<Vec<u8>> {
    let [kind, parts @ ..] = args else {
        return Err(Error::Arity(KEY));
    };
    if parts.is_empty() {
        return Err(Error::Arity(KEY));
    }
    match Kind::from_name(kind).ok_or_else(|| Error::UnknownKind(printable(kind)))? {
        Kind::Planner => match parts {
            [model, prompt, toolset, repo_hash] => {
                check_size("prompt", prompt, cfg.max_prompt_bytes, "max-prompt-bytes")?;
                keys::planner_key(model, prompt, toolset, repo_hash)
            }
            [model, hash, toolset, repo_hash, flag] if is_hashed(flag) => {
                keys::planner_key_hashed(model, hash, toolset, repo_hash)
            }
            _ => Err(Error::Syntax(format!(
                "kind 'planner' takes 4 parts (model, prompt, toolset_version, repo_hash), \
                 or 5 (model, prompt_hash, toolset_version, repo_hash, HASHED), got {}",
                parts.len()
            ))),
        },
        k => keys::build(k, parts),
    }
}

/// The ledger of `agent`: `okome:budget:keys:{<agent>}`.
pub fn ledger_key(agent: &[u8]) -> Result<Vec<u8>> {
    budget_key(Kind::Ledger, agent)
}

/// `OKOME.AGENT.RECORD agent key [PXAT ms]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord<'a> {
    pub ledger: Vec<u8>,
    /// The recorded key: a cacheable okome key.
    pub key: &'a [u8],
    pub kind: Kind,
    /// The key's absolute expiry (Unix ms), for a key this node cannot
    /// read (in a cluster, a key served by another node).
    pub pxat: Option<i64>,
}

pub const AGENT_RECORD: &str = "okome.agent.record";

pub fn parse_agent_record<'a>(args: &[&'a [u8]]) -> Result<AgentRecord<'a>> {
    let [agent, key, rest @ ..] = args else {
        return Err(Error::Arity(AGENT_RECORD));
    };
    let mut opts = Options::new(rest);
    let mut pxat = None;
    while opts.next(&["PXAT"])?.is_some() {
        let at = crate::config::Standard::new(1, 1, i64::MAX.unsigned_abs()).check(
            "pxat",
            opts.int("PXAT")?,
            "ms (a Unix time, as PEXPIRETIME gives it)",
        )?;
        pxat = Some(i64::try_from(at).unwrap_or(i64::MAX));
    }
    let ledger = ledger_key(agent)?;
    let kind = cache_key_kind(key, "recorded")?;
    Ok(AgentRecord {
        ledger,
        key,
        kind,
        pxat,
    })
}

/// Checks an expiry given with `PXAT` for a key of `kind` that this node
/// cannot read: it lies after `now`, and no further ahead than the kind's
/// longest TTL plus the clock-skew allowance (the key's node may run a
/// slightly different clock).
pub fn check_pxat(kind: Kind, at: i64, now: i64, cfg: &Config) -> Result<()> {
    let longest = cfg
        .ttl(kind)
        .map_or(0, |s| s.max.saturating_mul(1000))
        .saturating_add(crate::limiter::CLOCK_SKEW_ALLOWANCE_MS.unsigned_abs());
    let ahead = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
    if at > now && ahead <= longest {
        return Ok(());
    }
    Err(Error::BadKey(format!(
        "pxat {at} is not the expiry of a live {} key: it must lie after now ({now}) and at most {longest} ms ahead (the kind's longest TTL plus the clock-skew allowance)",
        kind.name()
    )))
}

/// A position in a ledger, newest first: the last entry a page returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The entry's recorded expiry (its score), Unix ms.
    pub expiry_ms: i64,
    /// The entry's key (its member).
    pub key: Vec<u8>,
}

impl Cursor {
    /// `<expiry_ms>:<key>`, as `OKOME.AGENT.KEYS` replies it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.expiry_ms.to_string().into_bytes();
        out.push(b':');
        out.extend_from_slice(&self.key);
        out
    }

    /// The inverse of [`Cursor::encode`]; `0` (start over) is `None`.
    pub fn decode(arg: &[u8]) -> Result<Option<Cursor>> {
        if arg == b"0" {
            return Ok(None);
        }
        let bad = || {
            Error::Syntax(format!(
                "cursor '{}' is not a cursor OKOME.AGENT.KEYS replied (0 starts from the newest key)",
                printable(arg)
            ))
        };
        let colon = arg.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let (score, key) = (arg.get(..colon), arg.get(colon.saturating_add(1)..));
        let (Some(score), Some(key)) = (score, key) else {
            return Err(bad());
        };
        let expiry_ms = parse_int("cursor", score).map_err(|_| bad())?;
        if expiry_ms <= 0 || key.is_empty() {
            return Err(bad());
        }
        Ok(Some(Cursor {
            expiry_ms,
            key: key.to_vec(),
        }))
    }
}

/// `OKOME.AGENT.KEYS agent [COUNT n] [CURSOR c]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKeys {
    pub ledger: Vec<u8>,
    pub count: u64,
    pub cursor: Option<Cursor>,
}

pub const AGENT_KEYS: &str = "okome.agent.keys";

/// Default and largest `COUNT` of `OKOME.AGENT.KEYS`.
pub const KEYS_COUNT: crate::config::Standard = crate::config::KEYS_COUNT.standard();

pub fn parse_agent_keys(args: &[&[u8]]) -> Result<AgentKeys> {
    let [agent, rest @ ..] = args else {
        return Err(Error::Arity(AGENT_KEYS));
    };
    let mut opts = Options::new(rest);
    let mut count = KEYS_COUNT.default;
    let mut cursor = None;
    while let Some(opt) = opts.next(&["COUNT", "CURSOR"])? {
        match opt {
            "COUNT" => count = KEYS_COUNT.check("count", opts.int("COUNT")?, "keys")?,
            _ => cursor = Cursor::decode(opts.value("CURSOR")?)?,
        }
    }
    Ok(AgentKeys {
        ledger: ledger_key(agent)?,
        count,
        cursor,
    })
}

/// `OKOME.AGENT.PURGE agent [COUNT n]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPurge {
    pub ledger: Vec<u8>,
    /// Most ledger entries looked at in this call.
    pub count: u64,
}

pub const AGENT_PURGE: &str = "okome.agent.purge";

/// Default and largest `COUNT` of `OKOME.AGENT.PURGE`.
pub const PURGE_COUNT: crate::config::Standard = crate::config::PURGE_COUNT.standard();

pub fn parse_agent_purge(args: &[&[u8]]) -> Result<AgentPurge> {
    let [agent, rest @ ..] = args else {
        return Err(Error::Arity(AGENT_PURGE));
    };
    let mut opts = Options::new(rest);
    let mut count = PURGE_COUNT.default;
    while opts.next(&["COUNT"])?.is_some() {
        count = PURGE_COUNT.check("count", opts.int("COUNT")?, "keys")?;
    }
    Ok(AgentPurge {
        ledger: ledger_key(agent)?,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> Config {
        Config::default()
    }

    fn pk() -> Vec<u8> {
        keys::planner_key(b"m", b"p", b"t", b"r").unwrap()
    }

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_int("TTL", b"600"), Ok(600));
        assert_eq!(parse_int("TTL", b"-5"), Ok(-5));
        assert_eq!(parse_int("TTL", b"0"), Ok(0));
        assert_eq!(parse_int("TTL", b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_int("TTL", b"-9223372036854775808"), Ok(i64::MIN));
        for bad in [
            &b"9223372036854775808"[..],
            b"-9223372036854775809",
            b"-0",
            b"007",
            b"--1",
        ] {
            assert_eq!(parse_int("TTL", bad), Err(Error::NotInteger("TTL")));
        }
        for bad in [
            &b""[..],
            b"-",
            b"+5",
            b" 5",
            b"5 ",
            b"1e3",
            b"0x10",
            b"99999999999999999999",
            b"\xff",
        ] {
            assert_eq!(parse_int("TTL", bad), Err(Error::NotInteger("TTL")));
        }
    }

    #[test]
    fn plan_get_defaults_and_options() {
        let a: [&[u8]; 4] = [b"m", b"p", b"t", b"r"];
        let g = parse_plan_get(&a, &cfg()).unwrap();
        assert_eq!(g.key, pk());
        assert_eq!(g.lock_ttl_ms, Some(9000));
        let a: [&[u8]; 6] = [b"m", b"p", b"t", b"r", b"lockttl", b"8000"];
        assert_eq!(parse_plan_get(&a, &cfg()).unwrap().lock_ttl_ms, Some(8000));
        let a: [&[u8]; 5] = [b"m", b"p", b"t", b"r", b"NOLOCK"];
        assert_eq!(parse_plan_get(&a, &cfg()).unwrap().lock_ttl_ms, None);
    }

    #[test]
    fn plan_lookup_is_plan_get_by_key() {
        let c = cfg();
        let k = pk();
        let by_key = parse_plan_lookup(
            &[
                &k, b"WAIT", b"100", b"AGENT", b"a", b"LIMIT", b"5", b"WINDOW", b"5",
            ],
            &c,
        )
        .unwrap();
        let by_args = parse_plan_get(
            &[
                b"m", b"p", b"t", b"r", b"WAIT", b"100", b"AGENT", b"a", b"LIMIT", b"5", b"WINDOW",
                b"5",
            ],
            &c,
        )
        .unwrap();
        assert_eq!(by_key, by_args);
        assert_eq!(parse_plan_lookup(&[], &c), Err(Error::Arity(PLAN_LOOKUP)));
        assert!(matches!(
            parse_plan_lookup(&[b"okome:tools:{1}"], &c),
            Err(Error::BadKey(_))
        ));
        assert!(matches!(
            parse_plan_lookup(&[&k, b"NOLOCK", b"WAIT", b"1"], &c),
            Err(Error::Syntax(_))
        ));
    }

    #[test]
    fn wait_and_refresh_ahead() {
        let c = cfg();
        let g = parse_plan_get(
            &[
                b"m",
                b"p",
                b"t",
                b"r",
                b"WAIT",
                b"5000",
                b"REFRESHAHEAD",
                b"60000",
            ],
            &c,
        )
        .unwrap();
        assert_eq!((g.wait_ms, g.refresh_ahead_ms), (Some(5000), 60000));
        let g = parse_plan_get(&[b"m", b"p", b"t", b"r"], &c).unwrap();
        assert_eq!((g.wait_ms, g.refresh_ahead_ms), (None, 0));
        let e = |a: &[&[u8]]| parse_plan_get(a, &c).unwrap_err().to_string();
        assert_eq!(
            e(&[b"m", b"p", b"t", b"r", b"WAIT", b"0"]),
            "ERR wait 0 is out of range: must be between 1 and 600000 ms"
        );
        assert_eq!(
            e(&[b"m", b"p", b"t", b"r", b"WAIT", b"600001"]),
            "ERR wait 600001 is out of range: must be between 1 and 600000 ms"
        );
        assert_eq!(
            e(&[b"m", b"p", b"t", b"r", b"REFRESHAHEAD", b"900001"]),
            "ERR refreshahead 900001 is out of range: must be between 0 and 900000 ms"
        );
        assert!(e(&[b"m", b"p", b"t", b"r", b"WAIT", b"10", b"NOLOCK"])
            .starts_with("ERR syntax error: WAIT and NOLOCK"));
        assert!(
            e(&[b"m", b"p", b"t", b"r", b"REFRESHAHEAD", b"10", b"NOLOCK"])
                .starts_with("ERR syntax error: REFRESHAHEAD and NOLOCK")
        );
        assert!(parse_plan_get(
            &[b"m", b"p", b"t", b"r", b"REFRESHAHEAD", b"0", b"NOLOCK"],
            &c
        )
        .is_ok());
    }

    #[test]
    fn plan_get_errors() {
        let c = cfg();
        let e = |a: &[&[u8]]| parse_plan_get(a, &c).unwrap_err();
        assert_eq!(e(&[b"m", b"p", b"t"]), Error::Arity(PLAN_GET));
        assert_eq!(e(&[b"m", b"p", b"t", b""]), Error::Empty("repo_hash"));
        assert_eq!(e(&[b"", b"p", b"t", b"r"]), Error::Empty("model"));
        assert!(matches!(
            e(&[b"m", b"p", b"t", b"r", b"FOO"]),
            Error::Syntax(_)
        ));
        assert!(matches!(
            e(&[b"m", b"p", b"t", b"r", b"LOCKTTL"]),
            Error::Syntax(_)
        ));
        assert!(matches!(
            e(&[b"m", b"p", b"t", b"r", b"LOCKTTL", b"7999"]),
            Error::OutOfRange { .. }
        ));
        assert_eq!(
            e(&[b"m", b"p", b"t", b"r", b"LOCKTTL", b"x"]),
            Error::NotInteger("lockttl")
        );
        assert!(matches!(
            e(&[b"m", b"p", b"t", b"r", b"NOLOCK", b"NOLOCK"]),
            Error::Syntax(_)
        ));
        assert!(matches!(
            e(&[b"m", b"p", b"t", b"r", b"NOLOCK", b"LOCKTTL", b"9000"]),
            Error::Syntax(_)
        ));
        let mut small = cfg();
        small.max_prompt_bytes = 3;
        let err = parse_plan_get(&[b"m", b"pppp", b"t", b"r"], &small).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ERR prompt is 4 bytes, larger than the 3-byte limit (okome.max-prompt-bytes)"
        );
    }

    #[test]
    fn hashed_prompts() {
        let c = cfg();
        let hash = keys::prompt_hash(b"p");
        let h = hash.as_bytes();
        // The same key as the plain form, options and all.
        let plain = parse_plan_get(&[b"m", b"p", b"t", b"r", b"WAIT", b"5"], &c).unwrap();
        let hashed = parse_plan_get(&[b"m", h, b"t", b"r", b"HASHED", b"WAIT", b"5"], &c).unwrap();
        assert_eq!(hashed, plain);
        assert_eq!(
            parse_plan_get(&[b"m", h, b"t", b"r", b"hashed"], &c)
                .unwrap()
                .key,
            pk()
        );
        assert_eq!(
            parse_key(&[b"planner", b"m", h, b"t", b"r", b"HASHED"], &c).unwrap(),
            pk()
        );
        // Never hashed again: the hash of the hash is another key.
        assert_ne!(
            parse_plan_get(&[b"m", h, b"t", b"r"], &c).unwrap().key,
            pk()
        );
        // Not a hash: named, and shown (its start only).
        let e = |a: &[&[u8]]| parse_plan_get(a, &c).unwrap_err().to_string();
        let upper = hash.to_ascii_uppercase();
        let long = "p".repeat(100_000);
        for (bad, shown) in [
            (&b"p"[..], "'p' (1 bytes)".to_string()),
            (upper.as_bytes(), format!("'{upper}' (64 bytes)")),
            (&h[..63], format!("'{}' (63 bytes)", &hash[..63])),
            (b"", "'' (0 bytes)".to_string()),
            (
                long.as_bytes(),
                format!("'{}...' (100000 bytes)", &long[..72]),
            ),
        ] {
            let msg = e(&[b"m", bad, b"t", b"r", b"HASHED"]);
            assert_eq!(
                msg,
                format!(
                    "ERR prompt_hash must be the SHA-256 of the prompt as 64 lowercase hex \
                     digits (HASHED); got {shown}"
                )
            );
            assert_eq!(
                parse_key(&[b"planner", b"m", bad, b"t", b"r", b"HASHED"], &c)
                    .unwrap_err()
                    .to_string(),
                msg
            );
        }
        let mut g = h.to_vec();
        g[10] = b'g';
        assert!(e(&[b"m", &g, b"t", b"r", b"HASHED"]).starts_with("ERR prompt_hash"));
        // The other components are still checked; the prompt size is not
        // (there is no prompt).
        assert_eq!(
            parse_plan_get(&[b"m", h, b"t", b"", b"HASHED"], &c),
            Err(Error::Empty("repo_hash"))
        );
        let mut small = cfg();
        small.max_prompt_bytes = 3;
        assert!(parse_plan_get(&[b"m", h, b"t", b"r", b"HASHED"], &small).is_ok());
        // HASHED comes right after repo_hash, once.
        assert_eq!(
            e(&[b"m", h, b"t", b"r", b"WAIT", b"5", b"HASHED"]),
            "ERR syntax error: HASHED must come right after repo_hash (OKOME.PLAN.GET model \
             prompt_hash toolset_version repo_hash HASHED [options])"
        );
        assert!(e(&[b"m", h, b"t", b"r", b"HASHED", b"HASHED"]).contains("HASHED must come"));
        // An agent named HASHED is an agent.
        assert!(parse_plan_get(
            &[b"m", b"p", b"t", b"r", b"AGENT", b"HASHED", b"LIMIT", b"1", b"WINDOW", b"1"],
            &c
        )
        .is_ok());
        // PLAN.LOOKUP takes a key, never HASHED; KEY planner only as the
        // fifth part.
        assert!(parse_plan_lookup(&[&pk(), b"HASHED"], &c).is_err());
        assert!(parse_key(&[b"planner", b"m", h, b"t", b"r", b"NOTHASHED"], &c).is_err());
        assert!(parse_key(&[b"planner", b"m", h, b"t", b"HASHED"], &c).is_ok());
    }

    #[test]
    fn plan_set_validates_key_json_ttl_token() {
        let c = cfg();
        let k = pk();
        let ok = parse_plan_set(&[&k, b"{\"a\":1}", b"TTL", b"900", b"TOKEN", b"t"], &c).unwrap();
        assert_eq!((ok.ttl_s, ok.token), (900, Some(&b"t"[..])));
        assert_eq!(parse_plan_set(&[&k, b"[]"], &c).unwrap().ttl_s, 600);
        let e = |a: &[&[u8]]| parse_plan_set(a, &c).unwrap_err();
        // Where the value stops being JSON, as a byte offset from 1; never
        // the parser's own words.
        let json = |v: &[u8]| e(&[&k, v]).to_string();
        for (v, want) in [
            (&b"{bad"[..], "at byte 2"),
            (b"tx", "at byte 2"),
            (b"{} {}", "at byte 4"),
            (b"[1,\n2,\nx]", "at byte 8"),
            (b"[\"\xc3\xa9\", x]", "at byte 8"),
            (b"\"\xff\"", "invalid UTF-8 at byte 2"),
            (b"{\"a\":\"\xc3\"}", "invalid UTF-8 at byte 7"),
            (b"\"ctl\x01\"", "at byte 5"),
            (b"{\"a\":\"\x1f\"}", "at byte 7"),
            (b"{", "it ends early, after byte 1"),
            (b"[1, ", "it ends early, after byte 4"),
        ] {
            assert_eq!(
                json(v),
                format!("ERR plan_json is not valid JSON ({want})"),
                "{}",
                printable(v)
            );
        }
        assert_eq!(e(&[&k, b""]), Error::Empty("plan_json"));
        assert!(matches!(e(&[b"okome:tools:{1}", b"{}"]), Error::BadKey(_)));
        assert!(matches!(e(&[b"foo", b"{}"]), Error::BadKey(_)));
        assert!(matches!(
            e(&[&k, b"{}", b"TTL", b"901"]),
            Error::OutOfRange { .. }
        ));
        assert!(matches!(
            e(&[&k, b"{}", b"TTL", b"0"]),
            Error::OutOfRange { .. }
        ));
        assert_eq!(e(&[&k, b"{}", b"TOKEN", b""]), Error::Empty("token"));
        assert_eq!(e(&[&k]), Error::Arity(PLAN_SET));
        let deep = "[".repeat(100_000);
        assert_eq!(
            e(&[&k, deep.as_bytes()]).to_string(),
            "ERR plan_json is not valid JSON (it ends early, after byte 100000)"
        );
    }

    #[test]
    fn lock_and_unlock() {
        let c = cfg();
        let k = pk();
        let l = parse_lock(&[&k], &c).unwrap();
        assert_eq!((l.ttl_ms, l.token), (9000, None));
        let l = parse_lock(&[&k, b"TTL", b"10000", b"TOKEN", b"abc"], &c).unwrap();
        assert_eq!((l.ttl_ms, l.token), (10000, Some(&b"abc"[..])));
        assert!(parse_lock(&[&k, b"TTL", b"10001"], &c).is_err());
        assert!(parse_lock(&[b"okome:budget:rate:{a}"], &c).is_err());
        assert!(parse_lock(&[&keys::lock_key(&k)], &c).is_err());
        assert!(parse_unlock(&[&k, b"t"]).is_ok());
        assert_eq!(parse_unlock(&[&k, b""]), Err(Error::Empty("token")));
        assert_eq!(parse_unlock(&[&k]), Err(Error::Arity(UNLOCK)));
    }

    #[test]
    fn cache_kinds_and_the_hard_rule() {
        let c = cfg();
        let s =
            parse_cache_set(&[b"rag", b"repo", b"chunk", b"\"x\"", b"TTL", b"1800"], &c).unwrap();
        assert_eq!(
            (s.kind, s.key.as_slice(), s.ttl_s),
            (Kind::Rag, &b"okome:rag:{repo}:chunk"[..], 1800)
        );
        let s = parse_cache_set(&[b"health", b"n", b"{}"], &c).unwrap();
        assert_eq!(s.ttl_s, 30);
        assert!(parse_cache_set(&[b"health", b"n", b"{}", b"TTL", b"31"], &c).is_err());
        // Parts and value are the arguments before the first option: too
        // many or too few parts are named as such.
        let e = |a: &[&[u8]]| parse_cache_set(a, &c).unwrap_err().to_string();
        assert_eq!(
            e(&[b"rag", b"repo", b"{}"]),
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1"
        );
        assert_eq!(
            e(&[b"tools", b"v1", b"extra", b"{}"]),
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2"
        );
        assert_eq!(
            e(&[b"tools", b"v1", b"extra", b"{}", b"ttl", b"600"]),
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2"
        );
        assert_eq!(
            e(&[b"rag", b"repo", b"chunk", b"TTL", b"1800"]),
            "ERR syntax error: value_json is missing: kind 'rag' takes 2 parts (repo, \
             chunk_hash), then value_json"
        );
        // An option keyword is never a part.
        assert_eq!(
            e(&[b"tools", b"TTL", b"{}"]),
            "ERR syntax error: tool_version cannot be 'TTL': TTL and AGENT are the options \
             of OKOME.CACHE.SET (OKOME.CACHE.SET tools tool_version value_json [TTL s] \
             [AGENT id])"
        );
        assert!(e(&[b"rag", b"r", b"agent", b"{}"])
            .starts_with("ERR syntax error: chunk_hash cannot be 'agent'"));
        // After a JSON value, an unknown word is an unknown option.
        assert_eq!(
            e(&[b"tools", b"v1", b"{}", b"TTTL", b"600"]),
            "ERR syntax error: unknown option 'TTTL' (expected one of: TTL, AGENT)"
        );
        // A value or agent named like a keyword is fine where it is.
        assert!(parse_cache_set(&[b"tools", b"v1", b"\"TTL\"", b"AGENT", b"TTL"], &c).is_ok());
        for k in [
            &b"git"[..],
            b"file_writes",
            b"agent_memory",
            b"builds",
            b"tool_results",
            b"rate",
        ] {
            assert!(matches!(
                parse_cache_set(&[k, b"x", b"{}"], &c),
                Err(Error::NotCacheable(_))
            ));
            assert!(matches!(
                parse_cache_get(&[k, b"x"]),
                Err(Error::NotCacheable(_))
            ));
        }
        assert_eq!(
            parse_cache_get(&[b"planner", b"x"]),
            Err(Error::PlannerViaCache)
        );
        assert_eq!(
            parse_cache_get(&[b"tools", b"v1"]).unwrap().key,
            b"okome:tools:{v1}"
        );
        assert!(matches!(
            parse_cache_get(&[b"tools", b"v1", b"x"]),
            Err(Error::Syntax(_))
        ));
    }

    #[test]
    fn rate_and_wbudget_grammar() {
        let c = cfg();
        let r = parse_rate(&[b"a", b"60", b"60"]).unwrap();
        assert_eq!(
            r,
            Charge {
                key: b"okome:budget:rate:{a}".to_vec(),
                limit: 60,
                window_ms: 60_000,
                cost: 1
            }
        );
        assert_eq!(
            parse_rate(&[b"a", b"60", b"60", b"cost", b"0"])
                .unwrap()
                .cost,
            0
        );
        let e = |a: &[&[u8]]| parse_rate(a).unwrap_err().to_string();
        assert_eq!(
            e(&[b"a", b"60"]),
            "ERR wrong number of arguments for 'okome.rate' command"
        );
        assert_eq!(e(&[b"", b"60", b"60"]), "ERR agent must not be empty");
        assert_eq!(
            e(&[b"a", b"0", b"60"]),
            "ERR limit 0 is out of range: must be between 1 and 100000 units"
        );
        assert_eq!(
            e(&[b"a", b"-1", b"60"]),
            "ERR limit -1 is out of range: must be between 1 and 100000 units"
        );
        assert_eq!(
            e(&[b"a", b"60", b"0"]),
            "ERR window 0 is out of range: must be between 1 and 31536000 seconds"
        );
        assert_eq!(
            e(&[b"a", b"60", b"-5"]),
            "ERR window -5 is out of range: must be between 1 and 31536000 seconds"
        );
        assert_eq!(
            e(&[b"a", b"99999999999999999999", b"60"]),
            "ERR limit is not an integer or out of range"
        );
        assert_eq!(
            e(&[b"a", b"6", b"60", b"COST", b"7"]),
            "ERR cost 7 is out of range: must be between 0 and 6 units (0 to the limit)"
        );
        assert_eq!(
            e(&[b"a", b"6", b"60", b"COST", b"-1"]),
            "ERR cost -1 is out of range: must be between 0 and 6 units (0 to the limit)"
        );
        let w = parse_wbudget(&[b"a", b"30"], &c).unwrap();
        assert_eq!(
            (w.key.as_slice(), w.window_ms),
            (&b"okome:budget:write:{a}"[..], 60_000)
        );
        let w = parse_wbudget(&[b"a", b"30", b"COST", b"3", b"WINDOW", b"10"], &c).unwrap();
        assert_eq!((w.window_ms, w.cost), (10_000, 3));
        assert!(parse_wbudget(&[b"a", b"3", b"COST", b"4"], &c).is_err());
        // Each command names the form of the window it takes.
        assert_eq!(
            e(&[b"a", b"60", b"window", b"60"]),
            "ERR syntax error: OKOME.RATE takes the window as its third argument (OKOME.RATE \
             agent limit window [COST n]), not as WINDOW s"
        );
        assert_eq!(
            parse_wbudget(&[b"a", b"2", b"120"], &c)
                .unwrap_err()
                .to_string(),
            "ERR syntax error: OKOME.WBUDGET takes the window as WINDOW s (OKOME.WBUDGET agent \
             write_limit [WINDOW s] [COST n]), not as its third argument"
        );
    }

    #[test]
    fn plan_get_and_set_with_agent() {
        let c = cfg();
        let g = parse_plan_get(
            &[
                b"m", b"p", b"t", b"r", b"AGENT", b"x", b"LIMIT", b"60", b"WINDOW", b"60",
            ],
            &c,
        )
        .unwrap();
        assert_eq!(g.rate.unwrap().key, b"okome:budget:rate:{x}");
        assert!(parse_plan_get(
            &[b"m", b"p", b"t", b"r", b"AGENT", b"x", b"LIMIT", b"60"],
            &c
        )
        .is_err());
        assert!(parse_plan_get(
            &[b"m", b"p", b"t", b"r", b"AGENT", b"", b"LIMIT", b"6", b"WINDOW", b"6"],
            &c
        )
        .is_err());
        let k = pk();
        let s = parse_plan_set(&[&k, b"{}", b"AGENT", b"x", b"WLIMIT", b"30"], &c).unwrap();
        assert_eq!(
            s.budget.unwrap(),
            Charge {
                key: b"okome:budget:write:{x}".to_vec(),
                limit: 30,
                window_ms: 60_000,
                cost: 1
            }
        );
        assert!(parse_plan_set(&[&k, b"{}", b"WLIMIT", b"30"], &c).is_err());
        assert!(parse_plan_set(&[&k, b"{}", b"AGENT", b"x", b"WWINDOW", b"5"], &c).is_err());
        assert!(parse_plan_set(&[&k, b"{}", b"AGENT", b"x", b"WLIMIT", b"0"], &c).is_err());
    }

    #[test]
    fn agent_option_records_in_the_ledger() {
        let c = cfg();
        let k = pk();
        let s = parse_plan_set(&[&k, b"{}", b"AGENT", b"a:1"], &c).unwrap();
        assert_eq!(
            (s.budget, s.ledger),
            (None, Some(b"okome:budget:keys:{a%3A1}".to_vec()))
        );
        let s = parse_plan_set(&[&k, b"{}", b"AGENT", b"a", b"WLIMIT", b"3"], &c).unwrap();
        assert!(s.budget.is_some());
        assert_eq!(s.ledger, Some(b"okome:budget:keys:{a}".to_vec()));
        assert_eq!(parse_plan_set(&[&k, b"{}"], &c).unwrap().ledger, None);
        assert_eq!(
            parse_plan_set(&[&k, b"{}", b"AGENT", b""], &c),
            Err(Error::Empty("agent"))
        );
        let e = parse_plan_set(&[&k, b"{}", b"AGENT", b"a", b"WWINDOW", b"5"], &c)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "ERR syntax error: WLIMIT needs AGENT, and WWINDOW needs AGENT and WLIMIT"
        );
        let s = parse_cache_set(
            &[b"tools", b"v1", b"{}", b"agent", b"a", b"TTL", b"600"],
            &c,
        )
        .unwrap();
        assert_eq!(s.ledger, Some(b"okome:budget:keys:{a}".to_vec()));
        assert_eq!(
            parse_cache_set(&[b"tools", b"v1", b"{}", b"AGENT", b""], &c),
            Err(Error::Empty("agent"))
        );
        assert!(matches!(
            parse_cache_set(&[b"ledger", b"a", b"{}"], &c),
            Err(Error::NotCacheable(_))
        ));
    }

    #[test]
    fn agent_commands() {
        let c = cfg();
        let k = pk();
        let r = parse_agent_record(&[b"a", &k]).unwrap();
        assert_eq!(
            (r.ledger.as_slice(), r.kind, r.pxat),
            (&b"okome:budget:keys:{a}"[..], Kind::Planner, None)
        );
        let r = parse_agent_record(&[b"a", b"okome:tools:{v}", b"PXAT", b"1700000000000"]).unwrap();
        assert_eq!((r.kind, r.pxat), (Kind::Tools, Some(1_700_000_000_000)));
        let e = |a: &[&[u8]]| parse_agent_record(a).unwrap_err().to_string();
        assert_eq!(
            e(&[b"a"]),
            "ERR wrong number of arguments for 'okome.agent.record' command"
        );
        assert_eq!(e(&[b"", &k]), "ERR agent must not be empty");
        assert_eq!(
            e(&[b"a", b"okome:budget:rate:{a}"]),
            "ERR 'okome:budget:rate:{a}' is a rate budget key; only cache keys (planner, model_meta, rag, tools, health) can be recorded"
        );
        assert_eq!(
            e(&[b"a", b"okome:budget:keys:{b}"]),
            "ERR 'okome:budget:keys:{b}' is a ledger budget key; only cache keys (planner, model_meta, rag, tools, health) can be recorded"
        );
        assert!(e(&[b"a", b"foo"]).starts_with("ERR 'foo' is not an okome key"));
        assert!(e(&[b"a", &k, b"PXAT", b"0"]).starts_with("ERR pxat 0 is out of range"));
        // PXAT of a key another node serves: after now, within its kind's
        // longest TTL plus the clock-skew allowance.
        let now = 1_700_000_000_000;
        assert!(check_pxat(Kind::Planner, now + 1, now, &c).is_ok());
        assert!(check_pxat(Kind::Planner, now + 960_000, now, &c).is_ok());
        assert!(check_pxat(Kind::Planner, now + 960_001, now, &c).is_err());
        assert!(check_pxat(Kind::Health, now + 90_001, now, &c).is_err());
        assert!(check_pxat(Kind::Planner, now, now, &c).is_err());

        let kq = parse_agent_keys(&[b"a"]).unwrap();
        assert_eq!((kq.count, kq.cursor), (100, None));
        let cur = Cursor {
            expiry_ms: 1_700_000_000_000,
            key: k.clone(),
        };
        let kq = parse_agent_keys(&[b"a", b"CURSOR", &cur.encode(), b"COUNT", b"5"]).unwrap();
        assert_eq!((kq.count, kq.cursor), (5, Some(cur)));
        assert_eq!(Cursor::decode(b"0"), Ok(None));
        for bad in [
            &b""[..],
            b"x",
            b"12",
            b":k",
            b"0:k",
            b"-1:k",
            b"01:k",
            b"12:",
        ] {
            assert!(
                matches!(Cursor::decode(bad), Err(Error::Syntax(_))),
                "{}",
                printable(bad)
            );
        }
        assert!(parse_agent_keys(&[b"a", b"COUNT", b"0"]).is_err());
        assert!(parse_agent_keys(&[b"a", b"COUNT", b"10001"]).is_err());
        assert_eq!(parse_agent_purge(&[b"a"]).unwrap().count, 1000);
        assert_eq!(parse_agent_purge(&[b"a", b"count", b"7"]).unwrap().count, 7);
        assert!(parse_agent_purge(&[b"a", b"COUNT", b"100001"]).is_err());
        assert_eq!(parse_agent_purge(&[]), Err(Error::Arity(AGENT_PURGE)));
        assert_eq!(parse_agent_keys(&[b""]), Err(Error::Empty("agent")));
    }

    #[test]
    fn key_command() {
        let c = cfg();
        assert_eq!(
            parse_key(&[b"planner", b"m", b"p", b"t", b"r"], &c).unwrap(),
            pk()
        );
        assert_eq!(
            parse_key(&[b"rate", b"a:b"], &c).unwrap(),
            b"okome:budget:rate:{a%3Ab}"
        );
        let e = |a: &[&[u8]]| parse_key(a, &c).unwrap_err().to_string();
        assert_eq!(
            e(&[b"planner", b"m", b"p", b"t"]),
            "ERR syntax error: kind 'planner' takes 4 parts (model, prompt, toolset_version, \
             repo_hash), or 5 (model, prompt_hash, toolset_version, repo_hash, HASHED), got 3"
        );
        // OKOME.KEY lists the kinds it takes: budgets too.
        assert_eq!(
            e(&[b"git", b"x"]),
            Error::UnknownKind("git".into()).to_string()
        );
        assert_eq!(
            e(&[b"lock", b"x"]),
            "ERR kind 'lock' is not a kind of okome key: OKOME.KEY takes planner, model_meta, \
             rag, tools, health, rate, write or ledger"
        );
        for k in Kind::ALL {
            assert!(e(&[b"lock", b"x"]).contains(k.name()));
        }
        assert_eq!(
            e(&[b"rag", b"r"]),
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1"
        );
        assert_eq!(
            parse_key(&[b"tools", b"TTL"], &c).unwrap(),
            b"okome:tools:{TTL}"
        );
    }

    /// Parses `command` with its argument `arg` (its `COMMAND DOCS` name)
    /// set to `v`, everything else valid, and returns what the request holds
    /// for it.
    fn parse_arg(command: &str, arg: &str, v: &str, c: &Config) -> Result<u64> {
        let v = v.as_bytes();
        let k = pk();
        let get = |opt: &[u8], f: fn(&PlanGet) -> u64| -> Result<u64> {
            let mut a: Vec<&[u8]> = match command {
                "okome.plan.get" => vec![b"m", b"p", b"t", b"r"],
                _ => vec![&k],
            };
            let rate: [&[u8]; 6] = [b"AGENT", b"a", b"LIMIT", b"1", b"WINDOW", b"1"];
            match opt {
                b"LIMIT" => a.extend([&b"AGENT"[..], b"a", b"WINDOW", b"1", b"LIMIT", v]),
                b"WINDOW" => a.extend([&b"AGENT"[..], b"a", b"LIMIT", b"1", b"WINDOW", v]),
                _ => {
                    a.extend(rate);
                    a.extend([opt, v]);
                }
            }
            let g = match command {
                "okome.plan.get" => parse_plan_get(&a, c)?,
                _ => parse_plan_lookup(&a, c)?,
            };
            Ok(f(&g))
        };
        let rate = |f: fn(&Charge) -> u64, a: &[&[u8]]| parse_rate(a).map(|r| f(&r));
        let wbudget = |f: fn(&Charge) -> u64, a: &[&[u8]]| parse_wbudget(a, c).map(|r| f(&r));
        match (command, arg) {
            ("okome.plan.get" | "okome.plan.lookup", "limit") => {
                get(b"LIMIT", |g| g.rate.as_ref().map_or(0, |r| r.limit))
            }
            ("okome.plan.get" | "okome.plan.lookup", "window") => get(b"WINDOW", |g| {
                g.rate.as_ref().map_or(0, |r| r.window_ms / 1000)
            }),
            ("okome.plan.get" | "okome.plan.lookup", "wait") => {
                get(b"WAIT", |g| g.wait_ms.unwrap_or(u64::MAX))
            }
            ("okome.plan.get" | "okome.plan.lookup", "refreshahead") => {
                get(b"REFRESHAHEAD", |g| g.refresh_ahead_ms)
            }
            ("okome.plan.get" | "okome.plan.lookup", "lockttl") => {
                get(b"LOCKTTL", |g| g.lock_ttl_ms.unwrap_or(u64::MAX))
            }
            ("okome.plan.set", "ttl") => {
                parse_plan_set(&[&k, b"{}", b"TTL", v], c).map(|s| s.ttl_s)
            }
            ("okome.plan.set", "wlimit") => {
                parse_plan_set(&[&k, b"{}", b"AGENT", b"a", b"WLIMIT", v], c)
                    .map(|s| s.budget.map_or(0, |b| b.limit))
            }
            ("okome.plan.set", "wwindow") => parse_plan_set(
                &[&k, b"{}", b"AGENT", b"a", b"WLIMIT", b"1", b"WWINDOW", v],
                c,
            )
            .map(|s| s.budget.map_or(0, |b| b.window_ms / 1000)),
            ("okome.lock", "ttl") => parse_lock(&[&k, b"TTL", v], c).map(|l| l.ttl_ms),
            ("okome.rate", "limit") => rate(|r| r.limit, &[b"a", v, b"1"]),
            ("okome.rate", "window") => rate(|r| r.window_ms / 1000, &[b"a", b"1", v]),
            ("okome.rate", "cost") => rate(|r| r.cost, &[b"a", b"100000", b"1", b"COST", v]),
            ("okome.wbudget", "write_limit") => wbudget(|r| r.limit, &[b"a", v]),
            ("okome.wbudget", "window") => {
                wbudget(|r| r.window_ms / 1000, &[b"a", b"1", b"WINDOW", v])
            }
            ("okome.wbudget", "cost") => wbudget(|r| r.cost, &[b"a", b"100000", b"COST", v]),
            ("okome.cache.set", "ttl") => {
                parse_cache_set(&[b"rag", b"r", b"c", b"{}", b"TTL", v], c).map(|s| s.ttl_s)
            }
            ("okome.agent.keys", "count") => {
                parse_agent_keys(&[b"a", b"COUNT", v]).map(|k| k.count)
            }
            ("okome.agent.purge", "count") => {
                parse_agent_purge(&[b"a", b"COUNT", v]).map(|k| k.count)
            }
            _ => panic!("no parser case for {command} {arg}: add one"),
        }
    }

    /// The range table and the parser agree: for every bounded argument
    /// of every command, min and max are taken, min-1 and max+1 refused
    /// with the range and unit of the table (a standard: the configured
    /// one, the defaults here and a narrowed one).
    #[test]
    fn the_parser_checks_every_argument_against_the_range_table() {
        use crate::config::{Bounds, ARGS};
        let mut narrowed = cfg();
        narrowed.lock_ttl_ms = crate::config::Standard::new(5_000, 6_000, 7_000);
        narrowed.planner_ttl = crate::config::Standard::new(60, 60, 60);
        narrowed.rag_ttl = crate::config::Standard::new(10, 20, 30);
        for c in [cfg(), narrowed] {
            for a in ARGS {
                let (min, max, unit) = match a.bounds {
                    Bounds::Fixed(r) => (r.min, r.max, r.unit),
                    Bounds::Standard { prefix, hard, seed } => {
                        let s = match prefix {
                            "lock-ttl" => c.lock_ttl_ms,
                            "planner-ttl" => c.planner_ttl,
                            other => panic!("no standard {other}"),
                        };
                        assert!(hard.contains(seed.min) && hard.contains(seed.max));
                        (s.min, s.max, hard.unit)
                    }
                    Bounds::KindStandard => (c.rag_ttl.min, c.rag_ttl.max, "seconds"),
                };
                let at = |v: i128| parse_arg(a.command, a.arg, &v.to_string(), &c);
                let name = format!("{} {}", a.command, a.arg);
                assert_eq!(at(min.into()), Ok(min), "{name} min");
                assert_eq!(at(max.into()), Ok(max), "{name} max");
                for out in [i128::from(min) - 1, i128::from(max) + 1] {
                    match at(out) {
                        Err(Error::OutOfRange {
                            min: m,
                            max: x,
                            unit: u,
                            ..
                        }) => {
                            assert_eq!((m, x), (min, max), "{name} {out}");
                            assert!(u.starts_with(unit), "{name}: unit {u}, table {unit}");
                        }
                        other => panic!("{name} {out}: {other:?}"),
                    }
                }
            }
        }
        // Every fixed range is some argument's, and COST's ceiling is the
        // limit's.
        for r in crate::config::OPTIONS {
            assert!(
                ARGS.iter().any(|a| a.bounds == Bounds::Fixed(r)),
                "{} bounds no argument",
                r.name
            );
        }
        assert_eq!(crate::config::COST.max, crate::config::LIMIT.max);
    }

    proptest! {
        #[test]
        fn integers_parse_as_the_standard_library_does(v in any::<i64>(), junk in "[-0-9a ]{0,22}") {
            prop_assert_eq!(parse_int("n", v.to_string().as_bytes()), Ok(v));
            let std = junk.parse::<i64>().ok().filter(|n| n.to_string() == junk);
            prop_assert_eq!(parse_int("n", junk.as_bytes()).ok(), std);
        }

        #[test]
        fn grammar_never_panics(args in proptest::collection::vec(
            prop_oneof![
                Just(b"TTL".to_vec()), Just(b"TOKEN".to_vec()), Just(b"LOCKTTL".to_vec()),
                Just(b"NOLOCK".to_vec()), Just(b"rag".to_vec()), Just(b"planner".to_vec()),
                Just(b"AGENT".to_vec()), Just(b"LIMIT".to_vec()), Just(b"WINDOW".to_vec()),
                Just(b"WLIMIT".to_vec()), Just(b"COST".to_vec()), Just(b"60".to_vec()),
                Just(b"WAIT".to_vec()), Just(b"REFRESHAHEAD".to_vec()),
                Just(b"HASHED".to_vec()), Just(keys::prompt_hash(b"p").into_bytes()),
                Just(b"-9223372036854775808".to_vec()), Just(b"{}".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..12),
            ], 0..9)) {
            let c = cfg();
            let a: Vec<&[u8]> = args.iter().map(|v| v.as_slice()).collect();
            let _ = parse_plan_get(&a, &c);
            let _ = parse_plan_lookup(&a, &c);
            let _ = parse_plan_set(&a, &c);
            let _ = parse_lock(&a, &c);
            let _ = parse_unlock(&a);
            let _ = parse_cache_get(&a);
            let _ = parse_cache_set(&a, &c);
            let _ = parse_key(&a, &c);
            let _ = parse_rate(&a);
            let _ = parse_wbudget(&a, &c);
            let _ = parse_agent_record(&a);
            let _ = parse_agent_keys(&a);
            let _ = parse_agent_purge(&a);
            if let Some(first) = a.first() {
                let _ = Cursor::decode(first);
            }
        }
    }
}
