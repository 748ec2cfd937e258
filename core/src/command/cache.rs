//! `OKOME.CACHE.GET`, `OKOME.CACHE.SET` and `OKOME.KEY`: the cacheable
//! kinds other than the planner, and the canonical key of any kind.

use super::agent::ledger_key;
use super::plan::is_hashed;
use super::spec::Ty::*;
use super::spec::{
    arg, check_json, check_size, check_value, keywords, Arg, Command, Keyword, Request,
};
use super::spec::{Options, Route};
use crate::config::{Bounds, Config};
use crate::declared::{Access, Declared};
use crate::keys::{self, printable, Kind};
use crate::{Error, Result};

/// `OKOME.CACHE.GET kind part...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheGet {
    pub kind: Kind,
    pub key: Vec<u8>,
}

impl Request for CacheGet {
    fn declared(&self, _cluster: bool) -> Declared {
        Declared::none().with(Access::Read, self.key.clone())
    }
}

/// `OKOME.CACHE.SET kind part... value [TTL s] [AGENT id]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSet<'a> {
    pub kind: Kind,
    pub key: Vec<u8>,
    pub value: &'a [u8],
    pub ttl_s: u64,
    /// With `AGENT id`: the agent's ledger, where the stored value is recorded.
    pub ledger: Option<Vec<u8>>,
}

impl Request for CacheSet<'_> {
    /// The value (written) and, with `AGENT`, the ledger.
    fn declared(&self, _cluster: bool) -> Declared {
        Declared::none()
            .with(Access::Write, self.key.clone())
            .with_opt(Access::ReadWrite, self.ledger.clone())
    }
}

/// Not a key: the first part, routed as the hash tag of the cache key.
const PART_ROUTE: Route = Route {
    pos: 2,
    notes: "the first part: the hash tag of the cache key; routes the command in a cluster (the key itself is declared in the appended tail)",
};

const KIND: Arg = arg("kind", Str);
const PART: Arg = arg("part", Str).multiple();
const TTL: Arg = arg("ttl", Int)
    .token("TTL")
    .optional()
    .bounds(Bounds::KindStandard);
const AGENT: Arg = arg("agent", Str).token("AGENT").optional();

keywords!(CacheSetOpt {
    Ttl => TTL,
    Agent => AGENT,
});

pub const CACHE_GET: Command = Command {
    name: "okome.cache.get",
    arity: -3,
    flags: "readonly fast",
    summary: "Reads a model_meta, rag, tools or health value and its remaining TTL",
    complexity: "O(1)",
    args: &[KIND, PART],
    route: Some(PART_ROUTE),
    keys: Some(|args, _, cluster| parse_cache_get(args).map(|r| r.declared(cluster))),
};

pub const CACHE_SET: Command = Command {
    name: "okome.cache.set",
    arity: -4,
    flags: "write deny-oom",
    summary: "Stores a model_meta, rag, tools or health value as JSON with its TTL standard",
    complexity: "O(N) in the value size (JSON validation), plus O(log M) with AGENT for M entries in the agent's ledger",
    args: &[KIND, PART, arg("value_json", Str), TTL, AGENT],
    route: Some(PART_ROUTE),
    keys: Some(|args, cfg, cluster| parse_cache_set(args, cfg).map(|r| r.declared(cluster))),
};

pub const KEY: Command = Command {
    name: "okome.key",
    arity: -3,
    flags: "allow-stale",
    summary: "Returns the canonical okome key for a kind and its parts; touches no data",
    complexity: "O(N) in the size of the parts (SHA-256 of a planner prompt, none with HASHED)",
    args: &[KIND, PART],
    route: None,
    keys: None,
};

/// The kind named by a `CACHE.*` command: a cacheable kind other than
/// planner. Anything else is refused with the seed's hard rule.
fn cache_kind(name: &[u8]) -> Result<Kind> {
    match Kind::from_name(name) {
        Some(Kind::Planner) => Err(Error::PlannerViaCache),
        Some(k) if k.cacheable() => Ok(k),
        _ => Err(Error::NotCacheable(printable(name))),
    }
}

pub fn parse_cache_get(args: &[&[u8]]) -> Result<CacheGet> {
    let [kind, parts @ ..] = args else {
        return Err(CACHE_GET.arity_error());
    };
    if parts.is_empty() {
        return Err(CACHE_GET.arity_error());
    }
    let kind = cache_kind(kind)?;
    let key = keys::build(kind, parts)?;
    Ok(CacheGet { kind, key })
}

/// `kind part... value_json [TTL s] [AGENT id]`. A part is never an option
/// keyword and a JSON value never is one either, so the parts and the value
/// are exactly the arguments before the first keyword: too many or too few
/// parts are named as such, never blamed on the value or an option.
pub fn parse_cache_set<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<CacheSet<'a>> {
    let [kind, rest @ ..] = args else {
        return Err(CACHE_SET.arity_error());
    };
    let kind = cache_kind(kind)?;
    let n = kind.components().len();
    check_positional(kind, rest)?;
    let (parts, rest) = rest.split_at(n);
    let [value, rest @ ..] = rest else {
        return Err(CACHE_SET.arity_error());
    };
    let standard = cfg
        .ttl(kind)
        .ok_or(Error::NotCacheable(kind.name().into()))?;
    let mut opts = Options::<CacheSetOpt>::new(rest);
    let mut ttl_s = standard.default;
    let mut ledger = None;
    while let Some(k) = opts.keyword()? {
        match k {
            CacheSetOpt::Ttl => ttl_s = opts.within(k, standard)?,
            CacheSetOpt::Agent => ledger = Some(ledger_key(opts.value(k)?)?),
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

/// Checks that the arguments before the first option are the kind's parts
/// and one value, naming what is wrong otherwise; on success `rest` holds
/// at least the parts and the value.
fn check_positional(kind: Kind, rest: &[&[u8]]) -> Result<()> {
    let names = kind.components();
    let n = names.len();
    let positional = rest
        .iter()
        .position(|w| CacheSetOpt::is_keyword(w))
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
    Ok(())
}

/// `OKOME.KEY kind part...`: the canonical key. For `planner` the parts are
/// model, prompt, toolset_version, repo_hash (the prompt is hashed), or
/// model, prompt_hash, toolset_version, repo_hash, `HASHED`.
pub fn parse_key(args: &[&[u8]], cfg: &Config) -> Result<Vec<u8>> {
    let [kind, parts @ ..] = args else {
        return Err(KEY.arity_error());
    };
    if parts.is_empty() {
        return Err(KEY.arity_error());
    }
    match Kind::from_name(kind).ok_or_else(|| Kind::unknown(kind))? {
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
