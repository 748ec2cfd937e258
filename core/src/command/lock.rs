//! `OKOME.LOCK` and `OKOME.UNLOCK`: the stampede lock of a cache key,
//! stored at `key:lock`.

use super::spec::{
    arg, cache_key_kind, check_size, keywords, Arg, Command, Options, Request, Route, Ty::*,
};
use crate::config::{Bounds, Config, FAILURE_MS, LOCK_STANDARD};
use crate::declared::{Access, Declared};
use crate::keys::{self, failed_key, lock_key, Kind};
use crate::{Error, Result};

/// `OKOME.LOCK key [TTL ms] [TOKEN token]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock<'a> {
    /// The protected key (the lock itself lives at `key:lock`).
    pub key: &'a [u8],
    pub ttl_ms: u64,
    /// `Some`: extend a lock held with this token; `None`: acquire.
    pub token: Option<&'a [u8]>,
}

/// `OKOME.UNLOCK key token [FAILED ms [message]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlock<'a> {
    pub key: &'a [u8],
    pub token: &'a [u8],
    /// `FAILED ms [message]`: the holder's computation failed.
    pub failed: Option<Failure<'a>>,
}

/// `FAILED ms [message]` of `OKOME.UNLOCK`: the leader of a plan failed.
/// Its waiters are answered `FAILED` at once, and lookups that find no plan
/// for `ms` more (the record `key:failed`, only when `ms` > 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<'a> {
    pub ms: u64,
    /// The message lookups answer with (empty: none, replied nil).
    pub message: &'a [u8],
}

/// `OKOME.LOCK`/`OKOME.UNLOCK`: only the lock of `key` is touched.
fn lock_only(key: &[u8]) -> Declared {
    Declared::none().with(Access::Write, lock_key(key))
}

impl Request for Lock<'_> {
    fn declared(&self, _cluster: bool) -> Declared {
        lock_only(self.key)
    }
}

impl Request for Unlock<'_> {
    /// The lock, and with `FAILED ms` (ms > 0) the plan's failure record.
    fn declared(&self, _cluster: bool) -> Declared {
        let record = self.failed.as_ref().filter(|f| f.ms > 0);
        lock_only(self.key).with_opt(Access::Write, record.map(|_| failed_key(self.key)))
    }
}

/// The protected key routes; only its lock `key:lock` is touched, and
/// declared.
const LOCKED_KEY: Route = Route {
    pos: 1,
    notes: "the protected key: routes the command in a cluster; its lock key:lock, the only key touched, is declared in the appended tail",
};

const KEY: Arg = arg("key", Key);
const TTL: Arg = arg("ttl", Int)
    .token("TTL")
    .optional()
    .bounds(LOCK_STANDARD);
/// `TOKEN token`: the holder's token (`OKOME.LOCK`, `OKOME.PLAN.SET`).
pub const TOKEN: Arg = arg("token", Str).token("TOKEN").optional();

keywords!(LockOpt {
    Ttl => TTL,
    Token => TOKEN,
});

pub const LOCK: Command = Command {
    name: "okome.lock",
    arity: -2,
    flags: "write deny-oom fast",
    summary: "Acquires the stampede lock of a key, or extends a lock held with a token",
    complexity: "O(1)",
    args: &[KEY, TTL, TOKEN],
    route: Some(LOCKED_KEY),
    keys: Some(|args, cfg, cluster| parse_lock(args, cfg).map(|r| r.declared(cluster))),
};

/// `FAILED ms`: how long lookups of the plan answer `FAILED`.
const FAILED: Arg = arg("ms", Int)
    .token("FAILED")
    .bounds(Bounds::Fixed(FAILURE_MS));
const MESSAGE: Arg = arg("message", Str).optional();

pub const UNLOCK: Command = Command {
    name: "okome.unlock",
    arity: -3,
    flags: "write fast",
    summary: "Releases a stampede lock if it is held with the given token; with FAILED, answers the plan's waiters and lookups FAILED",
    complexity: "O(1), plus O(N) with FAILED for N callers waiting on the plan",
    args: &[
        KEY,
        arg("token", Str),
        // `FAILED ms [message]` (planner keys): the holder's computation
        // failed.
        arg("failure", Block).optional().sub(&[FAILED, MESSAGE]),
    ],
    route: Some(LOCKED_KEY),
    keys: Some(|args, cfg, cluster| parse_unlock(args, cfg).map(|r| r.declared(cluster))),
};

/// Checks that `key` is a cacheable okome key (one that can be locked).
fn lockable(key: &[u8]) -> Result<()> {
    cache_key_kind(key, "locked").map(|_| ())
}

pub fn parse_lock<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<Lock<'a>> {
    let [key, rest @ ..] = args else {
        return Err(LOCK.arity_error());
    };
    let mut opts = Options::<LockOpt>::new(rest);
    let mut ttl_ms = cfg.lock_ttl_ms.default;
    let mut token = None;
    while let Some(k) = opts.keyword()? {
        match k {
            LockOpt::Ttl => ttl_ms = opts.within(k, cfg.lock_ttl_ms)?,
            LockOpt::Token => token = Some(opts.token(k)?),
        }
    }
    lockable(key)?;
    Ok(Lock { key, ttl_ms, token })
}

pub fn parse_unlock<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<Unlock<'a>> {
    let [key, token, rest @ ..] = args else {
        return Err(UNLOCK.arity_error());
    };
    if token.is_empty() {
        return Err(Error::Empty("token"));
    }
    let failed = parse_failure(rest, cfg)?;
    if failed.is_some() {
        if keys::parse(key)? != Kind::Planner {
            return Err(Error::BadKey(format!(
                "'{}' is not a planner key: FAILED answers the waiters and lookups of a plan \
                 (OKOME.PLAN.GET); other keys are released with OKOME.UNLOCK key token",
                keys::printable(key)
            )));
        }
    } else {
        lockable(key)?;
    }
    Ok(Unlock { key, token, failed })
}

/// The words after `OKOME.UNLOCK key token`: none, or `FAILED ms [message]`.
fn parse_failure<'a>(rest: &[&'a [u8]], cfg: &Config) -> Result<Option<Failure<'a>>> {
    let (word, after) = match rest {
        [] => return Ok(None),
        [word, after @ ..] => (word, after),
    };
    if !word.eq_ignore_ascii_case(b"FAILED") {
        return Err(Error::Syntax(format!(
            "unknown option '{}' (expected: FAILED ms [message])",
            keys::printable(word)
        )));
    }
    let (ms, message): (&[u8], &[u8]) = match after {
        [ms] => (ms, b""),
        [ms, message] => (ms, message),
        [] => return Err(Error::Syntax("option FAILED needs a value".into())),
        _ => {
            return Err(Error::Syntax(
                "FAILED takes ms and at most one message (quote a message with spaces)".into(),
            ))
        }
    };
    let ms = FAILED.fixed(ms)?;
    check_size("message", message, cfg.max_value_bytes, "max-value-bytes")?;
    Ok(Some(Failure { ms, message }))
}
