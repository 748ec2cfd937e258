//! `OKOME.TAKE` and `OKOME.SETTLE`: several rate windows charged all or
//! nothing, optionally as a reservation settled later with the actual
//! costs.
//!
//! A reservation id is its record's key after `okome:budget:resv:`:
//! `{<subject>}:<token>` (the first limit's subject, escaped, and 32
//! lowercase hex digits), so a cluster client routes it as it routes that
//! subject's windows, and `OKOME.SETTLE` finds (and declares) the record
//! from the id alone. The windows the record names are checked while
//! `OKOME.SETTLE` runs, as `AGENT.KEYS` checks a ledger's entries.

use super::budget::{charged, cost_within, limit, window, window_ms, Charge};
use super::lease::is_token;
use super::spec::{arg, keywords, Arg, Command, Options, Request, Route, Ty::*};
use crate::config::{Bounds, RESERVE_MS, TAKE_COST, TAKE_LIMITS};
use crate::declared::{Access, Declared};
use crate::keys::{self, printable, Kind};
use crate::{Error, Result};

/// `OKOME.TAKE numlimits subject name limit window_s cost ... [RESERVE ttl_ms]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// The limits, in argument order; no window twice.
    pub limits: Vec<Charge>,
    /// `RESERVE ttl_ms`: the admitted charge is a reservation.
    pub reserve_ms: Option<u64>,
    /// The first limit's subject: the hash tag of the reservation's record.
    pub subject: Vec<u8>,
}

impl Request for Take {
    /// Each window: read and written, only read for a cost of 0. The
    /// record of a reservation has a random name, so it is checked while
    /// the call runs (ACL, slot), beside the windows.
    fn declared(&self, _cluster: bool) -> Declared {
        self.limits.iter().fold(Declared::none(), |d, c| {
            charged(&c.key, c.cost)
                .iter()
                .fold(d, |d, (a, k)| d.with(a, k.to_vec()))
        })
    }
}

/// `OKOME.SETTLE reservation cost [cost ...]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    /// The reservation's record: `okome:budget:resv:{<subject>}:<token>`.
    pub record: Vec<u8>,
    /// The actual cost of each limit, in TAKE's order.
    pub costs: Vec<u64>,
}

impl Request for Settle {
    /// The record, read and written; the windows it names are checked
    /// while the call runs.
    fn declared(&self, _cluster: bool) -> Declared {
        Declared::none().with(Access::ReadWrite, self.record.clone())
    }
}

const TAKE_ROUTE: Route = Route {
    pos: 2,
    notes: "the first limit's subject: the hash tag of okome:budget:rate:{subject}; routes the command in a cluster (the windows are declared in the appended tail)",
};

const SETTLE_ROUTE: Route = Route {
    pos: 1,
    notes: "the reservation id: its {subject} is the hash tag of its record and of the first limit's windows; routes the command in a cluster (the record is declared in the appended tail)",
};

const NUMLIMITS: Arg = arg("numlimits", Int).bounds(Bounds::Fixed(TAKE_LIMITS));
const LIMIT_ARG: Arg = limit("limit");
const WINDOW_ARG: Arg = window("window_s");
const COST_ARG: Arg = arg("cost", Int).bounds(Bounds::Fixed(TAKE_COST));
const LIMITS: Arg = arg("limits", Block).multiple().sub(&[
    arg("subject", Str),
    arg("name", Str),
    LIMIT_ARG,
    WINDOW_ARG,
    COST_ARG,
]);
const RESERVE: Arg = arg("ttl_ms", Int)
    .token("RESERVE")
    .optional()
    .bounds(Bounds::Fixed(RESERVE_MS));
const RESERVATION: Arg = arg("reservation", Str);
const COSTS: Arg = arg("cost", Int).multiple().bounds(Bounds::Fixed(TAKE_COST));

keywords!(TakeOpt {
    Reserve => RESERVE,
});

pub const TAKE: Command = Command {
    name: "okome.take",
    arity: -7,
    flags: "write deny-oom fast",
    summary: "Charges several rate windows all or nothing (a refusal charges none); with RESERVE, as a reservation OKOME.SETTLE later adjusts to the actual costs",
    complexity: "O(1) amortised per limit, whatever the limit",
    args: &[NUMLIMITS, LIMITS, RESERVE],
    route: Some(TAKE_ROUTE),
    keys: Some(|args, _, cluster| parse_take(args).map(|t| t.declared(cluster))),
};

pub const SETTLE: Command = Command {
    name: "okome.settle",
    arity: -3,
    flags: "write deny-oom fast",
    summary: "Settles a reservation of OKOME.TAKE with the actual cost of each limit: gives back what was not used, charges the excess",
    complexity: "O(N) for N entries in the windows settled",
    args: &[RESERVATION, COSTS],
    route: Some(SETTLE_ROUTE),
    keys: Some(|args, _, cluster| parse_settle(args).map(|s| s.declared(cluster))),
};

/// The words of one limit.
const LIMIT_WORDS: usize = 5;

/// `OKOME.TAKE numlimits subject name limit window_s cost ... [RESERVE ttl_ms]`
pub fn parse_take(args: &[&[u8]]) -> Result<Take> {
    let [n, rest @ ..] = args else {
        return Err(TAKE.arity_error());
    };
    let n = usize::try_from(NUMLIMITS.fixed(n)?).unwrap_or(usize::MAX);
    let words = n.saturating_mul(LIMIT_WORDS);
    let (groups, opts) = rest.split_at_checked(words).ok_or_else(|| {
        Error::Syntax(format!(
            "numlimits {n} needs {words} arguments (subject name limit window_s cost for each), got {}",
            rest.len()
        ))
    })?;
    let mut limits: Vec<Charge> = Vec::with_capacity(n);
    for (i, g) in groups.chunks_exact(LIMIT_WORDS).enumerate() {
        let c = parse_limit(g)?;
        if let Some(j) = limits.iter().position(|l| l.key == c.key) {
            return Err(Error::Syntax(format!(
                "limits {} and {} are the same window '{}': give it once, with the sum of their costs",
                j.saturating_add(1),
                i.saturating_add(1),
                printable(&c.key)
            )));
        }
        limits.push(c);
    }
    let mut opts = Options::<TakeOpt>::new(opts);
    let mut reserve_ms = None;
    while let Some(k) = opts.keyword()? {
        match k {
            TakeOpt::Reserve => reserve_ms = Some(opts.fixed(k)?),
        }
    }
    let subject = groups.first().map(|s| s.to_vec()).unwrap_or_default();
    Ok(Take {
        limits,
        reserve_ms,
        subject,
    })
}

/// One limit: `subject name limit window_s cost`.
fn parse_limit(g: &[&[u8]]) -> Result<Charge> {
    let [subject, name, lim, win, cost] = g else {
        return Err(TAKE.arity_error());
    };
    let limit = LIMIT_ARG.fixed(lim)?;
    let window_ms = window_ms(WINDOW_ARG.fixed(win)?);
    let cost = cost_within(COST_ARG.int(cost)?, limit)?;
    if subject.is_empty() {
        return Err(Error::Empty("subject"));
    }
    Ok(Charge {
        key: keys::rate_key(subject, Some(name))?,
        limit,
        window_ms,
        cost,
    })
}

/// `OKOME.SETTLE reservation cost [cost ...]`
pub fn parse_settle(args: &[&[u8]]) -> Result<Settle> {
    let [id, costs @ ..] = args else {
        return Err(SETTLE.arity_error());
    };
    if costs.is_empty() {
        return Err(SETTLE.arity_error());
    }
    let record = record_key(id)?;
    let costs = costs
        .iter()
        .map(|c| COSTS.fixed(c))
        .collect::<Result<Vec<u64>>>()?;
    Ok(Settle { record, costs })
}

/// The prefix of every record's key, which a reservation id leaves out.
fn record_prefix() -> Vec<u8> {
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(keys::PREFIX.as_bytes());
    p.push(b':');
    p.extend_from_slice(Kind::Resv.path().as_bytes());
    p.push(b':');
    p
}

/// The record of a new reservation of `subject` with `token`.
pub fn new_record_key(subject: &[u8], token: &[u8]) -> Result<Vec<u8>> {
    let mut key = keys::build(Kind::Resv, &[subject])?;
    key.push(b':');
    key.extend_from_slice(token);
    Ok(key)
}

/// The id of the reservation whose record is `key`.
pub fn reservation_id(key: &[u8]) -> Vec<u8> {
    let prefix = record_prefix();
    key.strip_prefix(prefix.as_slice()).unwrap_or(key).to_vec()
}

/// The record a reservation id names; an error for anything
/// [`reservation_id`] cannot produce.
pub fn record_key(id: &[u8]) -> Result<Vec<u8>> {
    let bad = || {
        Error::BadKey(format!(
            "'{}' is not an okome reservation id ({{subject}}:<32 hex digits>, as OKOME.TAKE \
             ... RESERVE replies it)",
            printable(id)
        ))
    };
    if id.is_empty() {
        return Err(Error::Empty("reservation"));
    }
    let cut = id.iter().rposition(|&b| b == b':').ok_or_else(bad)?;
    let token = id.get(cut.saturating_add(1)..).unwrap_or(&[]);
    if !is_token(token) {
        return Err(bad());
    }
    let mut key = record_prefix();
    key.extend_from_slice(id);
    if keys::parse(&key) != Ok(Kind::Resv) {
        return Err(bad());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&[u8]> {
        s.split(' ').map(str::as_bytes).collect()
    }

    #[test]
    fn take_parses_each_limit() {
        let t = parse_take(&words(
            "2 gpt default 500 60 1 gpt tpm 1000 60 0 RESERVE 1000",
        ))
        .unwrap();
        assert_eq!(t.reserve_ms, Some(1000));
        assert_eq!(t.subject, b"gpt");
        assert_eq!(t.limits[0].key, b"okome:budget:rate:{gpt}");
        assert_eq!(t.limits[1].key, b"okome:budget:rate:{gpt}:tpm");
        assert_eq!(t.limits[1].window_ms, 60_000);
        let d = t.declared(false);
        assert_eq!(
            d.group(Access::ReadWrite),
            [b"okome:budget:rate:{gpt}".to_vec()]
        );
        assert_eq!(
            d.group(Access::Read),
            [b"okome:budget:rate:{gpt}:tpm".to_vec()]
        );
    }

    #[test]
    fn take_refuses_bad_calls() {
        let e = |s: &str| parse_take(&words(s)).unwrap_err().to_string();
        assert_eq!(
            e("1 a n 5 60 1 a m 5 60 1"),
            "ERR syntax error: unknown option 'a' (expected one of: RESERVE)"
        );
        assert_eq!(
            e("2 a n 5 60 1"),
            "ERR syntax error: numlimits 2 needs 10 arguments (subject name limit window_s cost for each), got 5"
        );
        assert_eq!(
            e("2 a n 5 60 1 a n 9 60 2"),
            "ERR syntax error: limits 1 and 2 are the same window 'okome:budget:rate:{a}:n': give it once, with the sum of their costs"
        );
        assert!(
            e("1 a n 5 60 6").contains("cost 6 is out of range"),
            "{}",
            e("1 a n 5 60 6")
        );
        assert!(e("17 a").contains("numlimits 17 is out of range"));
        assert!(e("1 a n 5 60 1 RESERVE 999").contains("999 is out of range"));
    }

    #[test]
    fn an_id_names_its_record() {
        let token = b"0123456789abcdef0123456789abcdef";
        let key = new_record_key(b"a:b", token).unwrap();
        assert_eq!(
            key,
            b"okome:budget:resv:{a%3Ab}:0123456789abcdef0123456789abcdef"
        );
        let id = reservation_id(&key);
        assert_eq!(id, b"{a%3Ab}:0123456789abcdef0123456789abcdef");
        assert_eq!(record_key(&id).unwrap(), key);
        for bad in ["x", "{a}:0123", "{a}", "a:0123456789abcdef0123456789abcdef"] {
            assert!(record_key(bad.as_bytes()).is_err(), "{bad}");
        }
        let s = parse_settle(&[&id, b"1", b"0"]).unwrap();
        assert_eq!(s.costs, [1, 0]);
        assert!(parse_settle(&[&id]).is_err());
    }
}
