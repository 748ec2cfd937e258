//! The argument grammar of every command. Each `parse_*` function takes the
//! arguments after the command name and returns a typed request, or the
//! error reply. Options are case-insensitive keywords; an unknown, repeated
//! or incomplete option is a syntax error.

use crate::config::Config;
use crate::keys::{self, printable, Kind};
use crate::{Error, Result};

/// Parses a base-10 signed 64-bit integer exactly as Redis does: optional
/// `-`, digits, nothing else.
pub fn parse_int(what: &'static str, arg: &[u8]) -> Result<i64> {
    let s = std::str::from_utf8(arg).map_err(|_| Error::NotInteger(what))?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::NotInteger(what));
    }
    s.parse::<i64>().map_err(|_| Error::NotInteger(what))
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

    fn int(&mut self, name: &'static str) -> Result<i64> {
        let v = self.value(name)?;
        parse_int(name, v)
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

/// Checks that `value` is one JSON text.
pub fn check_json(value: &[u8]) -> Result<()> {
    serde_json::from_slice::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| Error::InvalidJson(e.to_string()))
}

fn check_value(value: &[u8], cfg: &Config) -> Result<()> {
    check_size("value", value, cfg.max_value_bytes, "max-value-bytes")?;
    check_json(value)
}

fn token<'a>(opts: &mut Options<'a, '_>) -> Result<&'a [u8]> {
    let t = opts.value("TOKEN")?;
    if t.is_empty() {
        return Err(Error::Empty("TOKEN"));
    }
    Ok(t)
}

/// `OKOME.PLAN.GET model prompt toolset_version repo_hash [LOCKTTL ms] [NOLOCK]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanGet {
    /// The planner key.
    pub key: Vec<u8>,
    /// TTL of the lock taken on a miss; `None` with `NOLOCK`.
    pub lock_ttl_ms: Option<u64>,
}

pub const PLAN_GET: &str = "okome.plan.get";

pub fn parse_plan_get(args: &[&[u8]], cfg: &Config) -> Result<PlanGet> {
    let [model, prompt, toolset, repo_hash, rest @ ..] = args else {
        return Err(Error::Arity(PLAN_GET));
    };
    let mut opts = Options::new(rest);
    let mut lock_ttl = None;
    let mut nolock = false;
    while let Some(opt) = opts.next(&["LOCKTTL", "NOLOCK"])? {
        match opt {
            "LOCKTTL" => {
                lock_ttl = Some(
                    cfg.lock_ttl_ms
                        .check("LOCKTTL", opts.int("LOCKTTL")?, "ms")?,
                )
            }
            _ => nolock = true,
        }
    }
    if nolock && lock_ttl.is_some() {
        return Err(Error::Syntax(
            "LOCKTTL and NOLOCK cannot be combined".into(),
        ));
    }
    check_size("prompt", prompt, cfg.max_prompt_bytes, "max-prompt-bytes")?;
    let key = keys::planner_key(model, prompt, toolset, repo_hash)?;
    Ok(PlanGet {
        key,
        lock_ttl_ms: if nolock {
            None
        } else {
            Some(lock_ttl.unwrap_or(cfg.lock_ttl_ms.default))
        },
    })
}

/// `OKOME.PLAN.SET key plan_json [TTL s] [TOKEN token]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSet<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub ttl_s: u64,
    pub token: Option<&'a [u8]>,
}

pub const PLAN_SET: &str = "okome.plan.set";

pub fn parse_plan_set<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<PlanSet<'a>> {
    let [key, value, rest @ ..] = args else {
        return Err(Error::Arity(PLAN_SET));
    };
    let mut opts = Options::new(rest);
    let mut ttl_s = cfg.planner_ttl.default;
    let mut tok = None;
    while let Some(opt) = opts.next(&["TTL", "TOKEN"])? {
        match opt {
            "TTL" => ttl_s = cfg.planner_ttl.check("TTL", opts.int("TTL")?, "seconds")?,
            _ => tok = Some(token(&mut opts)?),
        }
    }
    keys::parse_kind(key, Kind::Planner)?;
    check_value(value, cfg)?;
    Ok(PlanSet {
        key,
        value,
        ttl_s,
        token: tok,
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
    let kind = keys::parse(key)?;
    if kind.cacheable() {
        Ok(())
    } else {
        Err(Error::BadKey(format!(
            "'{}' is a {} budget key; only cache keys (planner, model_meta, rag, tools, health) can be locked",
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
            "TTL" => ttl_ms = cfg.lock_ttl_ms.check("TTL", opts.int("TTL")?, "ms")?,
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

/// The kind named by a `CACHE.*` command: a cacheable kind other than planner.
fn cache_kind(name: &[u8]) -> Result<Kind> {
    match Kind::from_name(name)? {
        Kind::Planner => Err(Error::PlannerViaCache),
        Kind::Rate | Kind::Write => Err(Error::NotCacheable(printable(name))),
        k => Ok(k),
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
}

pub const CACHE_SET: &str = "okome.cache.set";

pub fn parse_cache_set<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<CacheSet<'a>> {
    let [kind, rest @ ..] = args else {
        return Err(Error::Arity(CACHE_SET));
    };
    let kind = cache_kind(kind)?;
    let n = kind.components().len();
    if rest.len() <= n {
        return Err(Error::Arity(CACHE_SET));
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
    while opts.next(&["TTL"])?.is_some() {
        ttl_s = standard.check("TTL", opts.int("TTL")?, "seconds")?;
    }
    let key = keys::build(kind, parts)?;
    check_value(value, cfg)?;
    Ok(CacheSet {
        kind,
        key,
        value,
        ttl_s,
    })
}

pub const KEY: &str = "okome.key";

/// `OKOME.KEY kind part...`: the canonical key. For `planner` the parts are
/// model, prompt, toolset_version, repo_hash (the prompt is hashed).
pub fn parse_key(args: &[&[u8]], cfg: &Config) -> Result<Vec<u8>> {
    let [kind, parts @ ..] = args else {
        return Err(Error::Arity(KEY));
    };
    if parts.is_empty() {
        return Err(Error::Arity(KEY));
    }
    match Kind::from_name(kind)? {
        Kind::Planner => {
            let [model, prompt, toolset, repo_hash] = parts else {
                return Err(Error::Syntax(
                    "kind 'planner' takes 4 parts (model, prompt, toolset_version, repo_hash)"
                        .into(),
                ));
            };
            check_size("prompt", prompt, cfg.max_prompt_bytes, "max-prompt-bytes")?;
            keys::planner_key(model, prompt, toolset, repo_hash)
        }
        k => keys::build(k, parts),
    }
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
            Error::NotInteger("LOCKTTL")
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
    fn plan_set_validates_key_json_ttl_token() {
        let c = cfg();
        let k = pk();
        let ok = parse_plan_set(&[&k, b"{\"a\":1}", b"TTL", b"900", b"TOKEN", b"t"], &c).unwrap();
        assert_eq!((ok.ttl_s, ok.token), (900, Some(&b"t"[..])));
        assert_eq!(parse_plan_set(&[&k, b"[]"], &c).unwrap().ttl_s, 600);
        let e = |a: &[&[u8]]| parse_plan_set(a, &c).unwrap_err();
        assert!(matches!(e(&[&k, b"{bad"]), Error::InvalidJson(_)));
        assert!(matches!(e(&[&k, b""]), Error::InvalidJson(_)));
        assert!(matches!(e(&[&k, b"{} {}"]), Error::InvalidJson(_)));
        assert!(matches!(e(&[b"okome:tools:1", b"{}"]), Error::BadKey(_)));
        assert!(matches!(e(&[b"foo", b"{}"]), Error::BadKey(_)));
        assert!(matches!(
            e(&[&k, b"{}", b"TTL", b"901"]),
            Error::OutOfRange { .. }
        ));
        assert!(matches!(
            e(&[&k, b"{}", b"TTL", b"0"]),
            Error::OutOfRange { .. }
        ));
        assert_eq!(e(&[&k, b"{}", b"TOKEN", b""]), Error::Empty("TOKEN"));
        assert_eq!(e(&[&k]), Error::Arity(PLAN_SET));
        let deep = "[".repeat(100_000);
        assert!(matches!(e(&[&k, deep.as_bytes()]), Error::InvalidJson(_)));
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
        assert!(parse_lock(&[b"okome:budget:rate:a"], &c).is_err());
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
            (Kind::Rag, &b"okome:rag:repo:chunk"[..], 1800)
        );
        let s = parse_cache_set(&[b"health", b"n", b"{}"], &c).unwrap();
        assert_eq!(s.ttl_s, 30);
        assert!(parse_cache_set(&[b"health", b"n", b"{}", b"TTL", b"31"], &c).is_err());
        assert_eq!(
            parse_cache_set(&[b"rag", b"repo", b"{}"], &c),
            Err(Error::Arity(CACHE_SET))
        );
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
            b"okome:tools:v1"
        );
        assert!(matches!(
            parse_cache_get(&[b"tools", b"v1", b"x"]),
            Err(Error::Syntax(_))
        ));
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
            b"okome:budget:rate:a%3Ab"
        );
        assert!(parse_key(&[b"planner", b"m", b"p", b"t"], &c).is_err());
        assert!(parse_key(&[b"git", b"x"], &c).is_err());
    }

    proptest! {
        #[test]
        fn grammar_never_panics(args in proptest::collection::vec(
            prop_oneof![
                Just(b"TTL".to_vec()), Just(b"TOKEN".to_vec()), Just(b"LOCKTTL".to_vec()),
                Just(b"NOLOCK".to_vec()), Just(b"rag".to_vec()), Just(b"planner".to_vec()),
                Just(b"-9223372036854775808".to_vec()), Just(b"{}".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..12),
            ], 0..9)) {
            let c = cfg();
            let a: Vec<&[u8]> = args.iter().map(|v| v.as_slice()).collect();
            let _ = parse_plan_get(&a, &c);
            let _ = parse_plan_set(&a, &c);
            let _ = parse_lock(&a, &c);
            let _ = parse_unlock(&a);
            let _ = parse_cache_get(&a);
            let _ = parse_cache_set(&a, &c);
            let _ = parse_key(&a, &c);
        }
    }
}
