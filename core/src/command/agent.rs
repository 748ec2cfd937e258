//! `OKOME.AGENT.RECORD`, `OKOME.AGENT.KEYS` and `OKOME.AGENT.PURGE`: an
//! agent's ledger of the cache keys it wrote, `okome:budget:keys:{agent}`.

use super::budget::{AGENT, AGENT_ROUTE};
use super::spec::Ty::*;
use super::spec::{
    arg, budget_key, cache_key_kind, keywords, parse_int, Arg, Command, Options, Request,
};
use crate::config::{Bounds, Config, Standard, KEYS_COUNT, PURGE_COUNT};
use crate::declared::{Access, Declared};
use crate::keys::{printable, slot, Kind};
use crate::limiter::CLOCK_SKEW_ALLOWANCE_MS;
use crate::{Error, Result};

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

impl Request for AgentRecord<'_> {
    /// The ledger, and the recorded key, read and written: recording needs
    /// the right to write the key, so a ledger holds only keys its agent
    /// could have written. In a cluster a key of another slot is not
    /// declared (one call spans one slot); the command checks it itself.
    fn declared(&self, cluster: bool) -> Declared {
        let here = !cluster || slot(self.key) == slot(&self.ledger);
        Declared::none()
            .with(Access::ReadWrite, self.ledger.clone())
            .with_opt(Access::ReadWrite, here.then(|| self.key.to_vec()))
    }
}

/// `OKOME.AGENT.KEYS agent [COUNT n] [CURSOR c]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKeys {
    pub ledger: Vec<u8>,
    pub count: u64,
    pub cursor: Option<Cursor>,
}

impl Request for AgentKeys {
    /// The ledger; the keys it lists are checked by the command.
    fn declared(&self, _cluster: bool) -> Declared {
        Declared::none().with(Access::Read, self.ledger.clone())
    }
}

/// `OKOME.AGENT.PURGE agent [COUNT n]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPurge {
    pub ledger: Vec<u8>,
    /// Most ledger entries looked at in this call.
    pub count: u64,
}

impl Request for AgentPurge {
    /// The ledger; the keys it deletes are checked by the command.
    fn declared(&self, _cluster: bool) -> Declared {
        Declared::none().with(Access::ReadWrite, self.ledger.clone())
    }
}

const PXAT: Arg = arg("pxat", Int).token("PXAT").optional();
const KEYS_COUNT_ARG: Arg = arg("count", Int)
    .token("COUNT")
    .optional()
    .bounds(Bounds::Fixed(KEYS_COUNT));
const CURSOR: Arg = arg("cursor", Str).token("CURSOR").optional();
const PURGE_COUNT_ARG: Arg = arg("count", Int)
    .token("COUNT")
    .optional()
    .bounds(Bounds::Fixed(PURGE_COUNT));

keywords!(RecordOpt { Pxat => PXAT });
keywords!(KeysOpt {
    Count => KEYS_COUNT_ARG,
    Cursor => CURSOR,
});
keywords!(PurgeOpt {
    Count => PURGE_COUNT_ARG
});

pub const AGENT_RECORD: Command = Command {
    name: "okome.agent.record",
    arity: -3,
    flags: "write deny-oom",
    summary: "Records a cache key an agent wrote in its ledger (okome:budget:keys:{agent}), with the key's expiry",
    complexity: "O(log N) for N entries in the ledger, plus O(E log N) for E expired entries pruned",
    args: &[AGENT, arg("key", Str), PXAT],
    route: Some(AGENT_ROUTE),
    keys: Some(|args, _, cluster| parse_agent_record(args).map(|r| r.declared(cluster))),
};

pub const AGENT_KEYS: Command = Command {
    name: "okome.agent.keys",
    arity: -2,
    flags: "readonly",
    summary: "Lists an agent's live ledger entries, latest-expiring first, with remaining TTLs and states, paged",
    complexity: "O(log N + C) for C entries returned of N in the ledger",
    args: &[AGENT, KEYS_COUNT_ARG, CURSOR],
    route: Some(AGENT_ROUTE),
    keys: Some(|args, _, cluster| parse_agent_keys(args).map(|r| r.declared(cluster))),
};

pub const AGENT_PURGE: Command = Command {
    name: "okome.agent.purge",
    arity: -2,
    flags: "write",
    summary: "Deletes the keys still holding an agent's writes (at most COUNT ledger entries per call), then its ledger",
    complexity: "O(C log N) for C entries looked at (COUNT, 1000 by default) of N in the ledger",
    args: &[AGENT, PURGE_COUNT_ARG],
    route: Some(AGENT_ROUTE),
    keys: Some(|args, _, cluster| parse_agent_purge(args).map(|r| r.declared(cluster))),
};

pub fn parse_agent_record<'a>(args: &[&'a [u8]]) -> Result<AgentRecord<'a>> {
    let [agent, key, rest @ ..] = args else {
        return Err(AGENT_RECORD.arity_error());
    };
    let mut opts = Options::<RecordOpt>::new(rest);
    let mut pxat = None;
    while let Some(k) = opts.keyword()? {
        let at = Standard::new(1, 1, i64::MAX.unsigned_abs()).check(
            PXAT.name,
            opts.int(k)?,
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
        .saturating_add(CLOCK_SKEW_ALLOWANCE_MS.unsigned_abs());
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

pub fn parse_agent_keys(args: &[&[u8]]) -> Result<AgentKeys> {
    let [agent, rest @ ..] = args else {
        return Err(AGENT_KEYS.arity_error());
    };
    let mut opts = Options::<KeysOpt>::new(rest);
    let mut count = KEYS_COUNT.standard().default;
    let mut cursor = None;
    while let Some(k) = opts.keyword()? {
        match k {
            KeysOpt::Count => count = opts.fixed(k)?,
            KeysOpt::Cursor => cursor = Cursor::decode(opts.value(k)?)?,
        }
    }
    Ok(AgentKeys {
        ledger: ledger_key(agent)?,
        count,
        cursor,
    })
}

pub fn parse_agent_purge(args: &[&[u8]]) -> Result<AgentPurge> {
    let [agent, rest @ ..] = args else {
        return Err(AGENT_PURGE.arity_error());
    };
    let mut opts = Options::<PurgeOpt>::new(rest);
    let mut count = PURGE_COUNT.standard().default;
    while let Some(k) = opts.keyword()? {
        count = opts.fixed(k)?;
    }
    Ok(AgentPurge {
        ledger: ledger_key(agent)?,
        count,
    })
}
