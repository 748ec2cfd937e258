//! `OKOME.THROTTLE`: a charge against a subject's burst limit (GCRA,
//! [`crate::limiter::gcra`]), unnamed or named.
//!
//! Its own family beside [`super::budget`]: the same reply and the same
//! peek (`COST 0`, declared as a read), but its own arguments (a rate over
//! a period, a burst), its own ranges and a key that may carry a name.

use super::budget::charged;
use super::spec::{arg, keywords, Arg, Command, Options, Request, Route, Ty::*};
use crate::config::{Bounds, Standard, BURST, PERIOD_S, RATE, THROTTLE_COST};
use crate::declared::Declared;
use crate::keys::{self, Kind};
use crate::limiter::Throttle as Quota;
use crate::Result;

/// One charge against a subject's burst limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// `okome:budget:gcra:{<subject>}`, or `...:{<subject>}:<name>`.
    pub key: Vec<u8>,
    /// `rate` per `period_ms` with `burst`, `cost` units.
    pub quota: Quota,
}

impl Request for Throttle {
    /// A charge reads and writes the state; a peek (`COST 0`) only reads.
    fn declared(&self, _cluster: bool) -> Declared {
        charged(&self.key, self.quota.cost)
    }
}

/// Not a key: the subject, routed as the hash tag of its state.
pub const SUBJECT_ROUTE: Route = Route {
    pos: 1,
    notes: "the subject id (an agent, a model, a tenant, an IP): the hash tag of okome:budget:gcra:{subject}; routes the command in a cluster (the key itself is declared in the appended tail)",
};

const SUBJECT: Arg = arg("subject", Str);
const RATE_ARG: Arg = arg("rate", Int).bounds(Bounds::Fixed(RATE));
const PERIOD: Arg = arg("period_s", Int).bounds(Bounds::Fixed(PERIOD_S));
const BURST_ARG: Arg = arg("burst", Int).bounds(Bounds::Fixed(BURST));
const COST_ARG: Arg = arg("cost", Int)
    .token("COST")
    .optional()
    .bounds(Bounds::Fixed(THROTTLE_COST));
const NAME: Arg = arg("name", Str).token("NAME").optional();

keywords!(ThrottleOpt {
    Cost => COST_ARG,
    Name => NAME,
});

pub const THROTTLE: Command = Command {
    name: "okome.throttle",
    arity: -5,
    flags: "write deny-oom fast",
    summary: "Charges a subject's burst limit (GCRA): rate units per period_s on average, burst + 1 at once from a full bucket; a refused call consumes nothing",
    complexity: "O(1)",
    args: &[SUBJECT, RATE_ARG, PERIOD, BURST_ARG, COST_ARG, NAME],
    route: Some(SUBJECT_ROUTE),
    keys: Some(|args, _, cluster| parse_throttle(args).map(|t| t.declared(cluster))),
};

/// `OKOME.THROTTLE subject rate period_s burst [COST n] [NAME name]`
pub fn parse_throttle(args: &[&[u8]]) -> Result<Throttle> {
    let [subject, rate, period, burst, rest @ ..] = args else {
        return Err(THROTTLE.arity_error());
    };
    let rate = RATE_ARG.fixed(rate)?;
    let period_ms = PERIOD.fixed(period)?.saturating_mul(1000);
    let burst = BURST_ARG.fixed(burst)?;
    let mut opts = Options::<ThrottleOpt>::new(rest);
    let (mut cost, mut name) = (1, None);
    while let Some(k) = opts.keyword()? {
        match k {
            ThrottleOpt::Cost => {
                let v = opts.int(k)?;
                cost = Standard::new(0, 1, burst.saturating_add(1)).check(
                    COST_ARG.name,
                    v,
                    "units (0 to burst + 1)",
                )?;
            }
            ThrottleOpt::Name => name = Some(opts.value(k)?),
        }
    }
    if subject.is_empty() {
        return Err(crate::Error::Empty("subject"));
    }
    Ok(Throttle {
        key: keys::named(Kind::Gcra, subject, name)?,
        quota: Quota::new(rate, period_ms, burst, cost),
    })
}
