//! `OKOME.PLAN.GET`, `OKOME.PLAN.LOOKUP` and `OKOME.PLAN.SET`: the planner
//! cache, with its stampede lock, optional rate charge and write budget.

use super::agent::ledger_key;
use super::budget::{limit, window, window_ms, Charge};
use super::lock::TOKEN;
use super::spec::Ty::*;
use super::spec::{
    arg, budget_key, check_size, check_value, keywords, Arg, Command, Options, Request, Route,
};
use crate::config::{Bounds, Config, LOCK_STANDARD, PLANNER_STANDARD, REFRESH_AHEAD_MS, WAIT_MS};
use crate::declared::{self, Access, Declared};
use crate::keys::{self, lock_key, Kind};
use crate::{Error, Result};

/// A plan lookup: `OKOME.PLAN.GET model prompt toolset_version repo_hash
/// [HASHED] [AGENT id LIMIT n WINDOW s] [LOCKTTL ms | NOLOCK] [WAIT ms]
/// [REFRESHAHEAD ms]`, or `OKOME.PLAN.LOOKUP key [the same options]`.
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

impl Request for PlanGet {
    /// The plan (read), its lock (written on a miss or a refresh, unless
    /// `NOLOCK`) and, with `AGENT`, the agent's rate window.
    fn declared(&self, _cluster: bool) -> Declared {
        declared::lookup(&self.key, self.lock_ttl_ms.is_some())
            .with_opt(Access::ReadWrite, self.rate.as_ref().map(|c| c.key.clone()))
    }
}

/// `OKOME.PLAN.SET key plan_json [TTL s] [TOKEN token] [AGENT id [WLIMIT n [WWINDOW s]]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSet<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub ttl_s: u64,
    pub token: Option<&'a [u8]>,
    /// `FENCED` (with `TOKEN`): store only while the token holds the lock.
    pub fenced: bool,
    /// One write charged to the agent's write budget.
    pub budget: Option<Charge>,
    /// With `AGENT id`: the agent's ledger, where the stored plan is recorded.
    pub ledger: Option<Vec<u8>>,
}

impl Request for PlanSet<'_> {
    /// The plan (written), its lock with `TOKEN`, the write budget with
    /// `WLIMIT` and the ledger with `AGENT`.
    fn declared(&self, _cluster: bool) -> Declared {
        Declared::none()
            .with(Access::Write, self.key.to_vec())
            .with_opt(Access::Write, self.token.map(|_| lock_key(self.key)))
            .with_opt(
                Access::ReadWrite,
                self.budget.as_ref().map(|c| c.key.clone()),
            )
            .with_opt(Access::ReadWrite, self.ledger.clone())
    }
}

/// The flag after `repo_hash` that makes the second argument the prompt's
/// hash (`PLAN.GET`, `KEY planner`).
pub const HASHED: &str = "HASHED";

pub fn is_hashed(word: &[u8]) -> bool {
    word.eq_ignore_ascii_case(HASHED.as_bytes())
}

const AGENT: Arg = arg("agent", Str).token("AGENT");
const LIMIT: Arg = limit("limit").token("LIMIT");
const WINDOW: Arg = window("window").token("WINDOW");
const LOCKTTL: Arg = arg("lockttl", Int).token("LOCKTTL").bounds(LOCK_STANDARD);
const NOLOCK: Arg = arg("nolock", PureToken).token("NOLOCK");
/// `WAIT ms`: how long a caller may block (`PLAN.GET`, `PLAN.LOOKUP`,
/// `LEASE.ACQUIRE`).
pub const WAIT: Arg = arg("wait", Int)
    .token("WAIT")
    .optional()
    .bounds(Bounds::Fixed(WAIT_MS));
const REFRESHAHEAD: Arg = arg("refreshahead", Int)
    .token("REFRESHAHEAD")
    .optional()
    .bounds(Bounds::Fixed(REFRESH_AHEAD_MS));
/// The options of a lookup, after its key (or its four parts).
const LOOKUP_OPTIONS: [Arg; 4] = [
    arg("rate", Block).optional().sub(&[AGENT, LIMIT, WINDOW]),
    arg("lock", OneOf).optional().sub(&[LOCKTTL, NOLOCK]),
    WAIT,
    REFRESHAHEAD,
];

keywords!(LookupOpt {
    LockTtl => LOCKTTL,
    NoLock => NOLOCK,
    Agent => AGENT,
    Limit => LIMIT,
    Window => WINDOW,
    Wait => WAIT,
    RefreshAhead => REFRESHAHEAD,
});

const TTL: Arg = arg("ttl", Int)
    .token("TTL")
    .optional()
    .bounds(PLANNER_STANDARD);
/// `FENCED`: store only while `TOKEN` holds the lock.
const FENCED: Arg = arg("fenced", PureToken).token("FENCED").optional();
/// `TOKEN token [FENCED]`: the lock to release, and whether the store is
/// fenced by it.
const TOKEN_BLOCK: Arg = arg("lock", Block)
    .optional()
    .sub(&[arg("token", Str).token("TOKEN"), FENCED]);
const WLIMIT: Arg = limit("wlimit").token("WLIMIT");
const WWINDOW: Arg = window("wwindow").token("WWINDOW").optional();

keywords!(PlanSetOpt {
    Ttl => TTL,
    Token => TOKEN,
    Fenced => FENCED,
    Agent => AGENT,
    Wlimit => WLIMIT,
    Wwindow => WWINDOW,
});

pub const PLAN_GET: Command = Command {
    name: "okome.plan.get",
    arity: -5,
    flags: "write",
    summary: "Looks up a plan by model, prompt (or its SHA-256 with HASHED), toolset and repo; on a miss takes the stampede lock",
    complexity: "O(N) in the prompt size (SHA-256; O(1) with HASHED), plus O(1) amortised with AGENT",
    args: &[
        arg("model", Str),
        arg("prompt", Str),
        arg("toolset_version", Str),
        arg("repo_hash", Str),
        // The second argument is the prompt's SHA-256 (64 lowercase hex digits).
        arg("hashed", PureToken).token(HASHED).optional(),
        LOOKUP_OPTIONS[0],
        LOOKUP_OPTIONS[1],
        LOOKUP_OPTIONS[2],
        LOOKUP_OPTIONS[3],
    ],
    route: None,
    keys: Some(|args, cfg, cluster| parse_plan_get(args, cfg).map(|r| r.declared(cluster))),
};

pub const PLAN_LOOKUP: Command = Command {
    name: "okome.plan.lookup",
    arity: -2,
    flags: "write",
    summary: "OKOME.PLAN.GET by planner key (from OKOME.KEY): the form cluster clients route by key",
    complexity: "O(1), plus O(1) amortised with AGENT",
    args: &[
        arg("key", Key),
        LOOKUP_OPTIONS[0],
        LOOKUP_OPTIONS[1],
        LOOKUP_OPTIONS[2],
        LOOKUP_OPTIONS[3],
    ],
    route: Some(Route {
        pos: 1,
        notes: "the planner key: routes the command in a cluster; declared with its lock key:lock in the appended tail",
    }),
    keys: Some(|args, cfg, cluster| parse_plan_lookup(args, cfg).map(|r| r.declared(cluster))),
};

pub const PLAN_SET: Command = Command {
    name: "okome.plan.set",
    arity: -3,
    flags: "write deny-oom",
    summary: "Stores a plan as JSON under a planner key, with its TTL standard, and releases the lock (with FENCED, only while the token holds it)",
    complexity: "O(N) in the plan size (JSON validation), plus O(log M) with AGENT for M entries in the agent's ledger, plus O(1) amortised with WLIMIT",
    args: &[
        arg("key", Key),
        arg("plan_json", Str),
        TTL,
        TOKEN_BLOCK,
        // `AGENT id [WLIMIT n [WWINDOW s]]`: record the plan in the agent's
        // ledger, and optionally charge its write budget.
        arg("agent", Block).optional().sub(&[
            AGENT,
            arg("wbudget", Block).optional().sub(&[WLIMIT, WWINDOW]),
        ]),
    ],
    route: Some(Route {
        pos: 1,
        notes: "the planner key: routes the command in a cluster; declared (with its lock key:lock under TOKEN) in the appended tail",
    }),
    keys: Some(|args, cfg, cluster| parse_plan_set(args, cfg).map(|r| r.declared(cluster))),
};

/// `OKOME.PLAN.GET model prompt toolset_version repo_hash [HASHED] [options]`:
/// with `HASHED` the second argument is the lowercase hex SHA-256 of the
/// prompt, checked (64 lowercase hex digits) and never hashed here.
pub fn parse_plan_get(args: &[&[u8]], cfg: &Config) -> Result<PlanGet> {
    let [model, prompt, toolset, repo_hash, rest @ ..] = args else {
        return Err(PLAN_GET.arity_error());
    };
    let (hashed, rest) = match rest.split_first() {
        Some((flag, tail)) if is_hashed(flag) => (true, tail),
        _ => (false, rest),
    };
    let mut req = parse_lookup_options(rest, cfg).map_err(hashed_too_late)?;
    req.key = if hashed {
        keys::planner_key_hashed(model, prompt, toolset, repo_hash)?
    } else {
        check_size("prompt", prompt, cfg.max_prompt_bytes, "max-prompt-bytes")?;
        keys::planner_key(model, prompt, toolset, repo_hash)?
    };
    Ok(req)
}

/// `HASHED` among the options: it belongs right after `repo_hash`.
fn hashed_too_late(e: Error) -> Error {
    match e {
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
    }
}

/// `OKOME.PLAN.LOOKUP key [options of PLAN.GET]`: the key-addressed form,
/// for cluster clients (the key comes from `OKOME.KEY planner ...`).
pub fn parse_plan_lookup(args: &[&[u8]], cfg: &Config) -> Result<PlanGet> {
    let [key, rest @ ..] = args else {
        return Err(PLAN_LOOKUP.arity_error());
    };
    let mut req = parse_lookup_options(rest, cfg)?;
    keys::parse_kind(key, Kind::Planner)?;
    req.key = key.to_vec();
    Ok(req)
}

/// The options of a lookup as given, before they are checked together.
#[derive(Default)]
struct Given<'a> {
    lock_ttl: Option<u64>,
    nolock: bool,
    agent: Option<&'a [u8]>,
    limit: Option<u64>,
    window: Option<u64>,
    wait_ms: Option<u64>,
    refresh: Option<u64>,
}

impl<'a> Given<'a> {
    fn read(rest: &[&'a [u8]], cfg: &Config) -> Result<Given<'a>> {
        let mut opts = Options::<LookupOpt>::new(rest);
        let mut g = Given::default();
        while let Some(k) = opts.keyword()? {
            match k {
                LookupOpt::Wait => g.wait_ms = Some(opts.fixed(k)?),
                LookupOpt::RefreshAhead => g.refresh = Some(opts.fixed(k)?),
                LookupOpt::LockTtl => g.lock_ttl = Some(opts.within(k, cfg.lock_ttl_ms)?),
                LookupOpt::Agent => g.agent = Some(opts.value(k)?),
                LookupOpt::Limit => g.limit = Some(opts.fixed(k)?),
                LookupOpt::Window => g.window = Some(window_ms(opts.fixed(k)?)),
                LookupOpt::NoLock => g.nolock = true,
            }
        }
        Ok(g)
    }

    /// `NOLOCK` excludes what would take or wait for the lock.
    fn check_nolock(&self) -> Result<()> {
        if !self.nolock {
            return Ok(());
        }
        let clash = if self.lock_ttl.is_some() {
            "LOCKTTL and NOLOCK cannot be combined"
        } else if self.wait_ms.is_some() {
            "WAIT and NOLOCK cannot be combined (a waiter may be handed the lock)"
        } else if self.refresh.is_some_and(|r| r > 0) {
            "REFRESHAHEAD and NOLOCK cannot be combined (a refresh takes the lock)"
        } else {
            return Ok(());
        };
        Err(Error::Syntax(clash.into()))
    }

    /// `AGENT id LIMIT n WINDOW s`, all three or none.
    fn rate(&self) -> Result<Option<Charge>> {
        match (self.agent, self.limit, self.window) {
            (None, None, None) => Ok(None),
            (Some(agent), Some(limit), Some(window_ms)) => Ok(Some(Charge {
                key: budget_key(Kind::Rate, agent)?,
                limit,
                window_ms,
                cost: 1,
            })),
            _ => Err(Error::Syntax(
                "AGENT, LIMIT and WINDOW must be given together".into(),
            )),
        }
    }
}

/// The options shared by `PLAN.GET` and `PLAN.LOOKUP`; the key is left
/// empty for the caller to fill in.
fn parse_lookup_options(rest: &[&[u8]], cfg: &Config) -> Result<PlanGet> {
    let g = Given::read(rest, cfg)?;
    g.check_nolock()?;
    let rate = g.rate()?;
    Ok(PlanGet {
        key: Vec::new(),
        lock_ttl_ms: (!g.nolock).then(|| g.lock_ttl.unwrap_or(cfg.lock_ttl_ms.default)),
        rate,
        wait_ms: g.wait_ms,
        refresh_ahead_ms: if g.nolock {
            0
        } else {
            g.refresh.unwrap_or(cfg.refresh_ahead_ms)
        },
    })
}

/// `OKOME.PLAN.SET key plan_json [TTL s] [TOKEN token [FENCED]] [AGENT id [WLIMIT n [WWINDOW s]]]`
pub fn parse_plan_set<'a>(args: &[&'a [u8]], cfg: &Config) -> Result<PlanSet<'a>> {
    let [key, value, rest @ ..] = args else {
        return Err(PLAN_SET.arity_error());
    };
    let mut opts = Options::<PlanSetOpt>::new(rest);
    let mut ttl_s = cfg.planner_ttl.default;
    let mut token = None;
    let mut fenced = false;
    let (mut agent, mut wlimit, mut wwindow) = (None, None, None);
    while let Some(k) = opts.keyword()? {
        match k {
            PlanSetOpt::Ttl => ttl_s = opts.within(k, cfg.planner_ttl)?,
            PlanSetOpt::Agent => agent = Some(opts.value(k)?),
            PlanSetOpt::Wlimit => wlimit = Some(opts.fixed(k)?),
            PlanSetOpt::Wwindow => wwindow = Some(window_ms(opts.fixed(k)?)),
            PlanSetOpt::Token => token = Some(opts.token(k)?),
            PlanSetOpt::Fenced => fenced = true,
        }
    }
    if fenced && token.is_none() {
        return Err(Error::Syntax(
            "FENCED needs TOKEN (it stores only while that token holds the lock)".into(),
        ));
    }
    let budget = match (agent, wlimit) {
        (_, None) if wwindow.is_none() => None,
        (Some(agent), Some(limit)) => Some(Charge {
            key: budget_key(Kind::Write, agent)?,
            limit,
            window_ms: wwindow.unwrap_or(window_ms(cfg.write_window_s)),
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
        token,
        fenced,
        budget,
        ledger,
    })
}
