//! `OKOME.LEASE.ACQUIRE`, `OKOME.LEASE.RENEW` and `OKOME.LEASE.RELEASE`:
//! a subject's concurrency leases, `okome:budget:lease:{<subject>}` (or
//! `...:{<subject>}:<name>`), and the lease ids that name one lease in it.
//!
//! A lease id is the pool's key after `okome:budget:lease:`, a `:` and the
//! lease's token (32 lowercase hex digits, 128 random bits):
//! `{agent-7}:9f1c...` or `{agent-7}:gpu:9f1c...`. Its first `{...}` is the
//! pool's hash tag, so a cluster client routes the id as it routes the
//! pool's key, and `RENEW`/`RELEASE` find (and declare) the pool from the
//! id alone. Escaped components hold no `:`, so the id splits back exactly.

use super::plan::WAIT;
use super::spec::{arg, keywords, Arg, Command, Options, Request, Route, Ty::*};
use crate::config::{Bounds, LEASE_MAX, LEASE_TTL_MS};
use crate::declared::{Access, Declared};
use crate::keys::{self, escape_into, printable, Kind, DEFAULT_NAME};
use crate::{Error, Result};

/// Length of a lease's token: 32 lowercase hex digits (128 bits).
pub const LEASE_TOKEN_LEN: usize = 32;

/// `OKOME.LEASE.ACQUIRE subject max ttl_ms [WAIT ms] [NAME name]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAcquire {
    /// The pool: `okome:budget:lease:{<subject>}[:<name>]`.
    pub key: Vec<u8>,
    pub max: u64,
    pub ttl_ms: u64,
    pub wait_ms: Option<u64>,
}

/// One lease: its pool and its token (`OKOME.LEASE.RENEW` /
/// `OKOME.LEASE.RELEASE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The pool the lease lives in.
    pub key: Vec<u8>,
    /// The member of the pool: 32 lowercase hex digits.
    pub token: Vec<u8>,
}

/// `OKOME.LEASE.RENEW lease ttl_ms`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRenew {
    pub lease: Lease,
    pub ttl_ms: u64,
}

/// Every lease command reads and writes its pool, and touches nothing else.
fn pool_only(key: &[u8]) -> Declared {
    Declared::none().with(Access::ReadWrite, key.to_vec())
}

impl Request for LeaseAcquire {
    fn declared(&self, _cluster: bool) -> Declared {
        pool_only(&self.key)
    }
}

impl Request for Lease {
    fn declared(&self, _cluster: bool) -> Declared {
        pool_only(&self.key)
    }
}

impl Request for LeaseRenew {
    fn declared(&self, _cluster: bool) -> Declared {
        pool_only(&self.lease.key)
    }
}

/// Not a key: the subject, routed as the hash tag of its pools.
const SUBJECT_ROUTE: Route = Route {
    pos: 1,
    notes: "the subject: the hash tag of okome:budget:lease:{subject}; routes the command in a cluster (the pool's key is declared in the appended tail)",
};

/// Not a key: the lease id, whose `{...}` is its pool's hash tag.
const LEASE_ROUTE: Route = Route {
    pos: 1,
    notes: "the lease id: its {subject} is the hash tag of its pool okome:budget:lease:{subject}; routes the command in a cluster (the pool's key is declared in the appended tail)",
};

const SUBJECT: Arg = arg("subject", Str);
const MAX: Arg = arg("max", Int).bounds(Bounds::Fixed(LEASE_MAX));
const TTL: Arg = arg("ttl_ms", Int).bounds(Bounds::Fixed(LEASE_TTL_MS));
const NAME: Arg = arg("name", Str).token("NAME").optional();
const LEASE: Arg = arg("lease", Str);

keywords!(AcquireOpt {
    Wait => WAIT,
    Name => NAME,
});

pub const LEASE_ACQUIRE: Command = Command {
    name: "okome.lease.acquire",
    arity: -4,
    flags: "write deny-oom fast",
    summary: "Takes one of at most max concurrent leases of a subject, each expiring after ttl_ms unless renewed; with WAIT, blocks until one is free",
    complexity: "O(log N) for N leases held, plus O(1) for each expired lease removed",
    args: &[SUBJECT, MAX, TTL, WAIT, NAME],
    route: Some(SUBJECT_ROUTE),
    keys: Some(|args, _, cluster| parse_lease_acquire(args).map(|r| r.declared(cluster))),
};

pub const LEASE_RENEW: Command = Command {
    name: "okome.lease.renew",
    arity: -3,
    flags: "write deny-oom fast",
    summary: "Extends a lease to expire ttl_ms from now; 0 if it is gone",
    complexity: "O(log N) for N leases held, plus O(1) for each expired lease removed",
    args: &[LEASE, TTL],
    route: Some(LEASE_ROUTE),
    keys: Some(|args, _, cluster| parse_lease_renew(args).map(|r| r.declared(cluster))),
};

pub const LEASE_RELEASE: Command = Command {
    name: "okome.lease.release",
    arity: -2,
    flags: "write fast",
    summary:
        "Gives a lease back, freeing its slot for the longest waiter at once; 0 if it was gone",
    complexity: "O(log N) for N leases held, plus O(1) for each expired lease removed",
    args: &[LEASE],
    route: Some(LEASE_ROUTE),
    keys: Some(|args, _, cluster| parse_lease_release(args).map(|r| r.declared(cluster))),
};

/// The pool of `subject` named `name` (`None`, or `default`: the
/// subject's unnamed pool).
pub fn pool_key(subject: &[u8], name: Option<&[u8]>) -> Result<Vec<u8>> {
    if subject.is_empty() {
        return Err(Error::Empty("subject"));
    }
    let mut key = keys::build(Kind::Lease, &[subject])?;
    if let Some(n) = name.filter(|n| !n.eq_ignore_ascii_case(DEFAULT_NAME)) {
        key.push(b':');
        escape_into(&mut key, n);
    }
    Ok(key)
}

/// The prefix of every pool's key, which a lease id leaves out.
fn pool_prefix() -> Vec<u8> {
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(keys::PREFIX.as_bytes());
    p.push(b':');
    p.extend_from_slice(Kind::Lease.path().as_bytes());
    p.push(b':');
    p
}

/// The id of the lease `token` in pool `key` (a key [`pool_key`] made).
pub fn lease_id(key: &[u8], token: &[u8]) -> Vec<u8> {
    let prefix = pool_prefix();
    let rest = key.strip_prefix(prefix.as_slice()).unwrap_or(key);
    let mut id = Vec::with_capacity(rest.len().saturating_add(LEASE_TOKEN_LEN + 1));
    id.extend_from_slice(rest);
    id.push(b':');
    id.extend_from_slice(token);
    id
}

/// Whether `t` is a lease's token: 32 lowercase hex digits.
pub fn is_token(t: &[u8]) -> bool {
    t.len() == LEASE_TOKEN_LEN && t.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The lease an id names: its pool and token; an error for anything
/// [`lease_id`] cannot produce.
pub fn decode_lease(id: &[u8]) -> Result<Lease> {
    let bad = || {
        Error::BadKey(format!(
            "'{}' is not an okome lease id ({{subject}}:<32 hex digits> or \
             {{subject}}:name:<32 hex digits>, as OKOME.LEASE.ACQUIRE replies it)",
            printable(id)
        ))
    };
    if id.is_empty() {
        return Err(Error::Empty("lease"));
    }
    let cut = id.iter().rposition(|&b| b == b':').ok_or_else(bad)?;
    let (pool, token) = (id.get(..cut).ok_or_else(bad)?, id.get(cut..).unwrap_or(&[]));
    let token = token.get(1..).unwrap_or(&[]);
    if !is_token(token) {
        return Err(bad());
    }
    let mut key = pool_prefix();
    key.extend_from_slice(pool);
    if keys::parse(&key) != Ok(Kind::Lease) {
        return Err(bad());
    }
    Ok(Lease {
        key,
        token: token.to_vec(),
    })
}

/// `OKOME.LEASE.ACQUIRE subject max ttl_ms [WAIT ms] [NAME name]`
pub fn parse_lease_acquire(args: &[&[u8]]) -> Result<LeaseAcquire> {
    let [subject, max, ttl, rest @ ..] = args else {
        return Err(LEASE_ACQUIRE.arity_error());
    };
    let max = MAX.fixed(max)?;
    let ttl_ms = TTL.fixed(ttl)?;
    let mut opts = Options::<AcquireOpt>::new(rest);
    let (mut wait_ms, mut name) = (None, None);
    while let Some(k) = opts.keyword()? {
        match k {
            AcquireOpt::Wait => wait_ms = Some(opts.fixed(k)?),
            AcquireOpt::Name => name = Some(opts.token(k)?),
        }
    }
    Ok(LeaseAcquire {
        key: pool_key(subject, name)?,
        max,
        ttl_ms,
        wait_ms,
    })
}

/// `OKOME.LEASE.RENEW lease ttl_ms`
pub fn parse_lease_renew(args: &[&[u8]]) -> Result<LeaseRenew> {
    let [id, ttl] = args else {
        return Err(LEASE_RENEW.arity_error());
    };
    let lease = decode_lease(id)?;
    let ttl_ms = TTL.fixed(ttl)?;
    Ok(LeaseRenew { lease, ttl_ms })
}

/// `OKOME.LEASE.RELEASE lease`
pub fn parse_lease_release(args: &[&[u8]]) -> Result<Lease> {
    let [id] = args else {
        return Err(LEASE_RELEASE.arity_error());
    };
    decode_lease(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn pools_and_ids() {
        assert_eq!(pool_key(b"a", None).unwrap(), b"okome:budget:lease:{a}");
        assert_eq!(
            pool_key(b"a:b", Some(b"gpu 1")).unwrap(),
            b"okome:budget:lease:{a%3Ab}:gpu%201"
        );
        assert_eq!(
            pool_key(b"a", Some(b"DEFAULT")).unwrap(),
            b"okome:budget:lease:{a}"
        );
        assert_eq!(pool_key(b"", None), Err(Error::Empty("subject")));
        let key = pool_key(b"a", Some(b"gpu")).unwrap();
        let id = lease_id(&key, T);
        assert_eq!(id, b"{a}:gpu:0123456789abcdef0123456789abcdef");
        assert_eq!(keys::slot(&id), keys::slot(&key));
        assert_eq!(
            decode_lease(&id).unwrap(),
            Lease {
                key,
                token: T.to_vec()
            }
        );
        assert_eq!(keys::parse(b"okome:budget:lease:{a}:gpu"), Ok(Kind::Lease));
        assert!(keys::parse(b"okome:budget:lease:{a}:gpu:x").is_err());
        assert!(keys::parse(b"okome:budget:lease:{a}:").is_err());
    }

    #[test]
    fn bad_ids_are_refused_with_their_text() {
        let e = |id: &[u8]| decode_lease(id).unwrap_err().to_string();
        assert_eq!(
            e(b"nope"),
            "ERR 'nope' is not an okome lease id ({subject}:<32 hex digits> or \
             {subject}:name:<32 hex digits>, as OKOME.LEASE.ACQUIRE replies it)"
        );
        assert_eq!(e(b""), "ERR lease must not be empty");
        let bad_ids = "{a}:0123456789ABCDEF0123456789abcdef {a}:0123456789abcdef0123456789abcde \
             a:0123456789abcdef0123456789abcdef {}:0123456789abcdef0123456789abcdef \
             {a}:x:y:0123456789abcdef0123456789abcdef {a}::0123456789abcdef0123456789abcdef \
             :0123456789abcdef0123456789abcdef {a%2}:0123456789abcdef0123456789abcdef";
        for bad in bad_ids.split_whitespace().map(str::as_bytes) {
            assert!(decode_lease(bad).is_err(), "{}", printable(bad));
        }
    }

    #[test]
    fn grammar() {
        let a = |args: &[&[u8]]| parse_lease_acquire(args);
        let r = a(&[b"s", b"3", b"1000", b"wait", b"50", b"NAME", b"n"]).unwrap();
        assert_eq!(
            r,
            LeaseAcquire {
                key: b"okome:budget:lease:{s}:n".to_vec(),
                max: 3,
                ttl_ms: 1000,
                wait_ms: Some(50)
            }
        );
        let e = |args: &[&[u8]]| a(args).unwrap_err().to_string();
        assert_eq!(
            e(&[b"s", b"0", b"1000"]),
            "ERR max 0 is out of range: must be between 1 and 100000 leases"
        );
        assert_eq!(
            e(&[b"s", b"1", b"99"]),
            "ERR ttl_ms 99 is out of range: must be between 100 and 86400000 ms"
        );
        assert_eq!(
            e(&[b"s", b"x", b"1000"]),
            "ERR max is not an integer or out of range"
        );
        assert_eq!(
            e(&[b"s", b"1", b"1000", b"WAIT", b"0"]),
            "ERR wait 0 is out of range: must be between 1 and 600000 ms"
        );
        assert_eq!(
            e(&[b"s", b"1", b"1000", b"TTL", b"5"]),
            "ERR syntax error: unknown option 'TTL' (expected one of: WAIT, NAME)"
        );
        assert_eq!(
            e(&[b"s", b"1", b"1000", b"NAME"]),
            "ERR syntax error: option NAME needs a value"
        );
        assert_eq!(
            e(&[b"s", b"1", b"1000", b"NAME", b""]),
            "ERR name must not be empty"
        );
        assert_eq!(
            e(&[b"s", b"1"]),
            "ERR wrong number of arguments for 'okome.lease.acquire' command"
        );
        let id = b"{s}:0123456789abcdef0123456789abcdef";
        assert_eq!(parse_lease_renew(&[id, b"500"]).unwrap().ttl_ms, 500);
        assert_eq!(
            parse_lease_release(&[id]).unwrap().key,
            b"okome:budget:lease:{s}"
        );
    }

    proptest! {
        #[test]
        fn ids_round_trip(
            subject in proptest::collection::vec(any::<u8>(), 1..16),
            name in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..8)),
            token in "[0-9a-f]{32}",
        ) {
            let key = pool_key(&subject, name.as_deref()).unwrap();
            let id = lease_id(&key, token.as_bytes());
            prop_assert_eq!(keys::slot(&id), keys::slot(&key));
            let lease = decode_lease(&id).unwrap();
            prop_assert_eq!(lease.key, key);
            prop_assert_eq!(lease.token, token.into_bytes());
        }

        #[test]
        fn decoding_never_panics(id in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_lease(&id);
        }
    }
}
