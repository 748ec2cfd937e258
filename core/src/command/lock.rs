//! `OKOME.LOCK` and `OKOME.UNLOCK`: the stampede lock of a cache key,
//! stored at `key:lock`.

use super::spec::{arg, cache_key_kind, keywords, Arg, Command, Options, Request, Route, Ty::*};
use crate::config::{Config, LOCK_STANDARD};
use crate::declared::{Access, Declared};
use crate::keys::lock_key;
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

/// `OKOME.UNLOCK key token`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlock<'a> {
    pub key: &'a [u8],
    pub token: &'a [u8],
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
    fn declared(&self, _cluster: bool) -> Declared {
        lock_only(self.key)
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

pub const UNLOCK: Command = Command {
    name: "okome.unlock",
    arity: -3,
    flags: "write fast",
    summary: "Releases a stampede lock if it is held with the given token",
    complexity: "O(1)",
    args: &[KEY, arg("token", Str)],
    route: Some(LOCKED_KEY),
    keys: Some(|args, _, cluster| parse_unlock(args).map(|r| r.declared(cluster))),
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

pub fn parse_unlock<'a>(args: &[&'a [u8]]) -> Result<Unlock<'a>> {
    let [key, token] = args else {
        return Err(UNLOCK.arity_error());
    };
    if token.is_empty() {
        return Err(Error::Empty("token"));
    }
    lockable(key)?;
    Ok(Unlock { key, token })
}
