//! `OKOME.RATE` and `OKOME.WBUDGET`: a charge against an agent's exact
//! sliding window (its rate limit, or its cache-write budget).

use super::spec::{arg, budget_key, keywords, Arg, Command, Options, Request, Route, Ty::*};
use crate::config::{Bounds, Config, COST, LIMIT, WINDOW_S};
use crate::declared::{Access, Declared};
use crate::keys::{self, Kind};
use crate::{Error, Result};

/// One charge against an agent's rate window or write budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// `okome:budget:rate:{agent}` or `okome:budget:write:{agent}`.
    pub key: Vec<u8>,
    pub limit: u64,
    pub window_ms: u64,
    pub cost: u64,
}

impl Request for Charge {
    fn declared(&self, _cluster: bool) -> Declared {
        charged(&self.key, self.cost)
    }
}

/// The key a charge of `cost` touches: read and written; only read by a
/// peek (`COST 0`).
pub fn charged(key: &[u8], cost: u64) -> Declared {
    let access = if cost == 0 {
        Access::Read
    } else {
        Access::ReadWrite
    };
    Declared::none().with(access, key.to_vec())
}

/// Not a key: the agent, routed as the hash tag of its windows.
pub const AGENT_ROUTE: Route = Route {
    pos: 1,
    notes: "the agent id: the hash tag of okome:budget:*:{agent}; routes the command in a cluster (the keys themselves are declared in the appended tail)",
};

pub const AGENT: Arg = arg("agent", Str);
/// A window's limit: `limit`, `write_limit`, `LIMIT`, `WLIMIT`.
pub const fn limit(name: &'static str) -> Arg {
    arg(name, Int).bounds(Bounds::Fixed(LIMIT))
}
/// A window's length in seconds: `window`, `WINDOW`, `WWINDOW`.
pub const fn window(name: &'static str) -> Arg {
    arg(name, Int).bounds(Bounds::Fixed(WINDOW_S))
}
const RATE_LIMIT: Arg = limit("limit");
const RATE_WINDOW: Arg = window("window");
const WRITE_LIMIT: Arg = limit("write_limit");
const WRITE_WINDOW: Arg = window("window").token("WINDOW").optional();
const COST_ARG: Arg = arg("cost", Int)
    .token("COST")
    .optional()
    .bounds(Bounds::Fixed(COST));
/// `NAME name`: one of the subject's named windows
/// (`okome:budget:rate:{<agent>}:<name>`); `default` is the unnamed one.
const NAME_ARG: Arg = arg("name", Str).token("NAME").optional();

keywords!(RateOpt {
    Cost => COST_ARG,
    Name => NAME_ARG,
});
keywords!(WbudgetOpt {
    Window => WRITE_WINDOW,
    Cost => COST_ARG,
});

pub const RATE: Command = Command {
    name: "okome.rate",
    arity: -4,
    flags: "write deny-oom fast",
    summary: "Charges a subject's sliding-window rate limit (one of its named windows with NAME); a refused call consumes nothing",
    complexity:
        "O(1) amortised, whatever the limit (a refused call walks the entries until COST units fit, at most 65536)",
    args: &[AGENT, RATE_LIMIT, RATE_WINDOW, COST_ARG, NAME_ARG],
    route: Some(AGENT_ROUTE),
    keys: Some(|args, _, cluster| parse_rate(args).map(|c| c.declared(cluster))),
};

pub const WBUDGET: Command = Command {
    name: "okome.wbudget",
    arity: -3,
    flags: "write deny-oom fast",
    summary: "Charges an agent's cache-write budget (an exact sliding window, 60 s by default)",
    complexity: "O(1) amortised, whatever the limit",
    args: &[AGENT, WRITE_LIMIT, WRITE_WINDOW, COST_ARG],
    route: Some(AGENT_ROUTE),
    keys: Some(|args, cfg, cluster| parse_wbudget(args, cfg).map(|c| c.declared(cluster))),
};

/// A window's length in ms, from its argument in seconds.
pub fn window_ms(seconds: u64) -> u64 {
    seconds.saturating_mul(1000)
}

/// `COST n` (and `OKOME.TAKE`'s `cost`): also at most the call's limit.
pub fn cost_within(v: i64, limit: u64) -> Result<u64> {
    crate::config::Standard::new(0, 1, limit).check(COST_ARG.name, v, "units (0 to the limit)")
}

/// `OKOME.RATE agent limit window [COST n] [NAME name]`
pub fn parse_rate(args: &[&[u8]]) -> Result<Charge> {
    let [agent, limit, window, rest @ ..] = args else {
        return Err(RATE.arity_error());
    };
    let limit = RATE_LIMIT.fixed(limit)?;
    if window.eq_ignore_ascii_case(b"WINDOW") {
        return Err(Error::Syntax(
            "OKOME.RATE takes the window as its third argument (OKOME.RATE agent limit \
             window [COST n]), not as WINDOW s"
                .into(),
        ));
    }
    let window_ms = window_ms(RATE_WINDOW.fixed(window)?);
    let mut opts = Options::<RateOpt>::new(rest);
    let (mut charge, mut name) = (1, None);
    while let Some(k) = opts.keyword()? {
        match k {
            RateOpt::Cost => charge = cost_within(opts.int(k)?, limit)?,
            RateOpt::Name => name = Some(opts.value(k)?),
        }
    }
    Ok(Charge {
        key: keys::rate_key(agent, name)?,
        limit,
        window_ms,
        cost: charge,
    })
}

/// `OKOME.WBUDGET agent write_limit [WINDOW s] [COST n]`
pub fn parse_wbudget(args: &[&[u8]], cfg: &Config) -> Result<Charge> {
    let [agent, limit, rest @ ..] = args else {
        return Err(WBUDGET.arity_error());
    };
    let limit = WRITE_LIMIT.fixed(limit)?;
    if rest.first().is_some_and(|w| RATE_WINDOW.int(w).is_ok()) {
        return Err(Error::Syntax(
            "OKOME.WBUDGET takes the window as WINDOW s (OKOME.WBUDGET agent write_limit \
             [WINDOW s] [COST n]), not as its third argument"
                .into(),
        ));
    }
    let mut opts = Options::<WbudgetOpt>::new(rest);
    let mut window = window_ms(cfg.write_window_s);
    let mut charge = None;
    while let Some(k) = opts.keyword()? {
        match k {
            WbudgetOpt::Window => window = window_ms(opts.fixed(k)?),
            WbudgetOpt::Cost => charge = Some(opts.int(k)?),
        }
    }
    let cost = match charge {
        Some(v) => cost_within(v, limit)?,
        None => 1,
    };
    Ok(Charge {
        key: budget_key(Kind::Write, agent)?,
        limit,
        window_ms: window,
        cost,
    })
}
