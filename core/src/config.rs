//! TTL standards and size limits: the values behind the `okome.*` module
//! configs, with defaults from SPEC.md and the seed's TTL table; and the one
//! table of every range: the hard bounds of each config ([`params`]) and of
//! each numeric command argument ([`OPTIONS`]; which argument takes which is
//! said by the commands' descriptions, [`crate::command`]). The option
//! parser, the config setter, `COMMAND DOCS` and README's tables all read
//! them from here, and tests check that they agree.

use crate::keys::Kind;
use crate::limiter::{MAX_BURST, MAX_LIMIT, MAX_PERIOD_S, MAX_RATE, MAX_WINDOW_S};
use crate::{Error, Result, YEAR_S};

/// An allowed range and a default, in the unit of the standard (seconds for
/// cache TTLs, milliseconds for the lock TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standard {
    pub min: u64,
    pub default: u64,
    pub max: u64,
}

impl Standard {
    pub const fn new(min: u64, default: u64, max: u64) -> Self {
        Standard { min, default, max }
    }

    /// `value` if it lies within the standard, else an error naming `what`.
    pub fn check(&self, what: &'static str, value: i64, unit: &'static str) -> Result<u64> {
        match u64::try_from(value) {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => Err(Error::OutOfRange {
                what,
                value,
                min: self.min,
                max: self.max,
                unit,
            }),
        }
    }

    /// Whether `min <= default <= max`.
    pub fn is_consistent(&self) -> bool {
        self.min <= self.default && self.default <= self.max
    }
}

/// Four MiB: the default largest prompt and largest value.
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

// ---------------------------------------------------------------- ranges

/// A fixed range: the hard bounds of a numeric command argument, of a
/// config, or the seed's standard for a TTL. The same on every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// What it bounds, as README's tables name it.
    pub name: &'static str,
    /// The unit, as errors show it.
    pub unit: &'static str,
    pub min: u64,
    pub max: u64,
    /// The value taken when the argument is absent, if a fixed one.
    pub default: Option<u64>,
    /// Anything else a reader must know (empty if nothing).
    pub note: &'static str,
}

impl Range {
    const fn new(name: &'static str, unit: &'static str, min: u64, max: u64) -> Range {
        Range {
            name,
            unit,
            min,
            max,
            default: None,
            note: "",
        }
    }

    const fn default(mut self, d: u64) -> Range {
        self.default = Some(d);
        self
    }

    const fn note(mut self, n: &'static str) -> Range {
        self.note = n;
        self
    }

    /// `value` if it lies within the range, else an error naming `what`.
    pub fn check(&self, what: &'static str, value: i64) -> Result<u64> {
        self.standard().check(what, value, self.unit)
    }

    /// The range as a [`Standard`] (its default, or else its minimum).
    pub const fn standard(&self) -> Standard {
        let d = match self.default {
            Some(d) => d,
            None => self.min,
        };
        Standard::new(self.min, d, self.max)
    }

    pub fn contains(&self, v: u64) -> bool {
        (self.min..=self.max).contains(&v)
    }

    /// `8000–10000`, or `30` when min = max: how README writes a range.
    pub fn text(&self) -> String {
        span(self.min, self.max, "–")
    }

    /// The argument summary `COMMAND DOCS` shows: `1 to 600000 ms`, then
    /// the default and the note.
    pub fn summary(&self) -> String {
        let mut s = format!("{} {}", span(self.min, self.max, " to "), self.unit);
        if let Some(d) = self.default {
            s.push_str(&format!(", default {d}"));
        }
        if !self.note.is_empty() {
            s.push_str("; ");
            s.push_str(self.note);
        }
        s
    }
}

fn span(min: u64, max: u64, sep: &str) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{min}{sep}{max}")
    }
}

/// `WAIT ms` of `PLAN.GET` / `PLAN.LOOKUP`: at most ten minutes blocked.
pub const WAIT_MS: Range = Range::new("WAIT", "ms", 1, 600_000);
/// `REFRESHAHEAD ms`, and the config `okome.refresh-ahead-ms` that is its
/// default: at most the seed's longest planner TTL (15 min).
pub const REFRESH_AHEAD_MS: Range =
    Range::new("REFRESHAHEAD", "ms", 0, 900_000).note("0: off; absent: okome.refresh-ahead-ms");
/// `FAILED ms` of `OKOME.UNLOCK`: how long lookups of a plan whose leader
/// failed answer `FAILED`, at most a minute (a short circuit breaker,
/// never a cached result).
pub const FAILURE_MS: Range =
    Range::new("FAILED", "ms", 0, 60_000).note("0: only the callers waiting now");
/// The limit of a rate window or write budget (`limit`, `write_limit`,
/// `LIMIT`, `WLIMIT`).
pub const LIMIT: Range = Range::new("limit", "units", 1, MAX_LIMIT);
/// The window of a rate window or write budget (`window`, `WINDOW`,
/// `WWINDOW`), and the config `okome.write-window`: at most a year.
pub const WINDOW_S: Range = Range::new("window", "seconds", 1, MAX_WINDOW_S);
/// `COST n` of `RATE` / `WBUDGET`: also at most the call's limit.
pub const COST: Range = Range::new("COST", "units", 0, MAX_LIMIT)
    .default(1)
    .note("at most the limit; 0 only reports");
/// `rate` of `OKOME.THROTTLE`: units per period.
pub const RATE: Range = Range::new("rate", "units", 1, MAX_RATE);
/// `period_s` of `OKOME.THROTTLE`: at most a year, as a window.
pub const PERIOD_S: Range = Range::new("period_s", "seconds", 1, MAX_PERIOD_S);
/// `burst` of `OKOME.THROTTLE`: units beyond the rate that pass at once.
pub const BURST: Range = Range::new("burst", "units", 0, MAX_BURST);
/// `COST n` of `OKOME.THROTTLE`: also at most the call's `burst + 1` (a
/// larger cost could never pass).
pub const THROTTLE_COST: Range = Range::new("COST (THROTTLE)", "units", 0, MAX_BURST + 1)
    .default(1)
    .note("at most burst + 1; 0 only reports");
/// `COUNT n` of `OKOME.AGENT.KEYS`: entries per page.
pub const KEYS_COUNT: Range = Range::new("COUNT (AGENT.KEYS)", "keys", 1, 10_000).default(100);
/// `okome.ledger-max-keys`: most entries in an agent's ledger.
pub const LEDGER_MAX_KEYS: Range =
    Range::new("okome.ledger-max-keys", "keys", 1, 100_000).default(DEFAULT_LEDGER_MAX_KEYS);
/// `COUNT n` of `OKOME.AGENT.PURGE`: entries looked at per call, at most a
/// full ledger.
pub const PURGE_COUNT: Range =
    Range::new("COUNT (AGENT.PURGE)", "keys", 1, LEDGER_MAX_KEYS.max).default(1000);

/// `max` of `OKOME.LEASE.ACQUIRE`: leases of one subject live at once. A
/// pool is a sorted set, so a call costs O(log max) (plus the leases it
/// finds expired); 100000 is the largest `limit` too.
pub const LEASE_MAX: Range = Range::new("max", "leases", 1, 100_000);
/// `ttl_ms` of `OKOME.LEASE.ACQUIRE` / `OKOME.LEASE.RENEW`: how long a
/// lease lives unless renewed. The floor, 100 ms, outlives a round trip
/// (as the lock's); the ceiling, a day, bounds how long a holder that died
/// keeps its slot.
pub const LEASE_TTL_MS: Range = Range::new("ttl_ms", "ms", 100, 86_400_000);
/// `numlimits` of `OKOME.TAKE`: the limits one call charges together.
pub const TAKE_LIMITS: Range = Range::new("numlimits", "limits", 1, 16);
/// `RESERVE ttl_ms` of `OKOME.TAKE`: how long a reservation can be
/// settled (its record's TTL): a second to an hour.
pub const RESERVE_MS: Range = Range::new("RESERVE", "ms", 1_000, 3_600_000);
/// `cost` of `OKOME.TAKE` (at most its limit) and `OKOME.SETTLE`: a
/// positional `COST`, with no default.
pub const TAKE_COST: Range = Range::new("cost", "units", 0, MAX_LIMIT);

/// Hard bounds of the cache-TTL configs `okome.<kind>-ttl-*`: a key always
/// expires, within a year.
pub const CACHE_TTL_S: Range = Range::new("okome.<kind>-ttl-*", "seconds", 1, YEAR_S);
/// Hard bounds of the lock configs `okome.lock-ttl-*`. A lock must always
/// have a TTL, and it is what frees a key whose holder died: the floor,
/// 100 ms, still outlives a round trip and an expire cycle at the default
/// `hz 10`, and lets tests make a lock expire in a fraction of a second;
/// the ceiling, 60 s, bounds how long a dead holder blocks the key's
/// followers (and their `WAIT`). A longer computation extends its lock
/// (`OKOME.LOCK key TTL ms TOKEN t`) instead of taking a longer one. Values
/// outside the seed's standard are allowed but logged as a warning.
pub const LOCK_TTL_MS: Range = Range::new("okome.lock-ttl-*", "ms", 100, 60_000);
/// Hard bounds of `okome.max-prompt-bytes` / `okome.max-value-bytes`:
/// Redis's own largest string.
pub const MAX_BYTES: Range =
    Range::new("okome.max-*-bytes", "bytes", 1, 512 * 1024 * 1024).default(DEFAULT_MAX_BYTES);

/// The seed's TTL table: the standards the defaults follow and a
/// configuration outside of which is logged as a warning.
pub const SEED_PLANNER_TTL_S: Range = Range::new("planner TTL", "seconds", 300, 900).default(600);
pub const SEED_MODEL_META_TTL_S: Range =
    Range::new("model_meta TTL", "seconds", 86_400, 86_400).default(86_400);
pub const SEED_RAG_TTL_S: Range = Range::new("rag TTL", "seconds", 1_800, 3_600).default(3_600);
pub const SEED_TOOLS_TTL_S: Range = Range::new("tools TTL", "seconds", 600, 600).default(600);
pub const SEED_HEALTH_TTL_S: Range = Range::new("health TTL", "seconds", 30, 30).default(30);
pub const SEED_LOCK_TTL_MS: Range =
    Range::new("stampede lock TTL", "ms", 8_000, 10_000).default(9_000);

/// Every fixed range of a command argument, in README's order.
pub const OPTIONS: &[Range] = &[
    WAIT_MS,
    REFRESH_AHEAD_MS,
    FAILURE_MS,
    LIMIT,
    WINDOW_S,
    COST,
    RATE,
    PERIOD_S,
    BURST,
    THROTTLE_COST,
    KEYS_COUNT,
    PURGE_COUNT,
    LEASE_MAX,
    LEASE_TTL_MS,
    TAKE_LIMITS,
    RESERVE_MS,
    TAKE_COST,
];

/// Where the bounds of a numeric argument come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// A fixed range.
    Fixed(Range),
    /// Within the standard configured by `okome.<prefix>-min` .. `-max`
    /// (absent: `-default`); those configs' own bounds are `hard`, and the
    /// seed's standard is `seed`.
    Standard {
        prefix: &'static str,
        hard: Range,
        seed: Range,
    },
    /// `OKOME.CACHE.SET ... TTL s`: within the kind's TTL standard.
    KindStandard,
}

/// `okome.lock-ttl-*`: the standard of a lock's TTL (`TTL` of `LOCK`,
/// `LOCKTTL` of a lookup).
pub const LOCK_STANDARD: Bounds = Bounds::Standard {
    prefix: "lock-ttl",
    hard: LOCK_TTL_MS,
    seed: SEED_LOCK_TTL_MS,
};

/// `okome.planner-ttl-*`: the standard of a plan's TTL (`TTL` of
/// `PLAN.SET`).
pub const PLANNER_STANDARD: Bounds = Bounds::Standard {
    prefix: "planner-ttl",
    hard: CACHE_TTL_S,
    seed: SEED_PLANNER_TTL_S,
};

impl Bounds {
    /// The unit of the bounded value, as errors show it.
    pub fn unit(&self) -> &'static str {
        match self {
            Bounds::Fixed(r) => r.unit,
            Bounds::Standard { hard, .. } => hard.unit,
            Bounds::KindStandard => CACHE_TTL_S.unit,
        }
    }

    /// The argument summary `COMMAND DOCS` shows.
    pub fn summary(&self) -> String {
        match self {
            Bounds::Fixed(r) => r.summary(),
            Bounds::Standard { prefix, hard, seed } => format!(
                "okome.{prefix}-min to okome.{prefix}-max {unit} (each configurable within \
                 {hard}; the seed's standard: {seed}), default okome.{prefix}-default",
                unit = hard.unit,
                hard = span(hard.min, hard.max, " to "),
                seed = span(seed.min, seed.max, " to "),
            ),
            Bounds::KindStandard => format!(
                "the kind's okome.<kind>-ttl-min to okome.<kind>-ttl-max seconds (each \
                 configurable within {}), default okome.<kind>-ttl-default",
                span(CACHE_TTL_S.min, CACHE_TTL_S.max, " to ")
            ),
        }
    }
}

/// Everything an operator can tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Planner outputs, seconds (seed: 5-15 min).
    pub planner_ttl: Standard,
    /// Model metadata, seconds (seed: 24 h).
    pub model_meta_ttl: Standard,
    /// RAG chunks, seconds (seed: 30-60 min).
    pub rag_ttl: Standard,
    /// Tool discovery, seconds (seed: 10 min).
    pub tools_ttl: Standard,
    /// Health, seconds (seed: 30 s).
    pub health_ttl: Standard,
    /// Stampede lock, milliseconds (seed: 8-10 s).
    pub lock_ttl_ms: Standard,
    /// Default `OKOME.WBUDGET` window, seconds.
    pub write_window_s: u64,
    /// Largest prompt `OKOME.PLAN.GET` hashes, bytes.
    pub max_prompt_bytes: u64,
    /// Largest value `OKOME.PLAN.SET` / `OKOME.CACHE.SET` stores, bytes.
    pub max_value_bytes: u64,
    /// Default `REFRESHAHEAD`, milliseconds (0: off).
    pub refresh_ahead_ms: u64,
    /// Most keys an agent's ledger holds; when full, the soonest-expiring
    /// member is dropped to make room for a new one.
    pub ledger_max_keys: u64,
}

/// Default of `okome.ledger-max-keys`.
pub const DEFAULT_LEDGER_MAX_KEYS: u64 = 1000;

impl Default for Config {
    fn default() -> Self {
        Config {
            planner_ttl: SEED_PLANNER_TTL_S.standard(),
            model_meta_ttl: SEED_MODEL_META_TTL_S.standard(),
            rag_ttl: SEED_RAG_TTL_S.standard(),
            tools_ttl: SEED_TOOLS_TTL_S.standard(),
            health_ttl: SEED_HEALTH_TTL_S.standard(),
            lock_ttl_ms: SEED_LOCK_TTL_MS.standard(),
            write_window_s: 60,
            max_prompt_bytes: DEFAULT_MAX_BYTES,
            max_value_bytes: DEFAULT_MAX_BYTES,
            refresh_ahead_ms: 0,
            ledger_max_keys: DEFAULT_LEDGER_MAX_KEYS,
        }
    }
}

impl Config {
    /// The TTL standard (seconds) of a cacheable kind; `None` for budgets,
    /// whose keys expire with their window.
    pub fn ttl(&self, kind: Kind) -> Option<Standard> {
        match kind {
            Kind::Planner => Some(self.planner_ttl),
            Kind::ModelMeta => Some(self.model_meta_ttl),
            Kind::Rag => Some(self.rag_ttl),
            Kind::Tools => Some(self.tools_ttl),
            Kind::Health => Some(self.health_ttl),
            Kind::Rate | Kind::Write | Kind::Ledger | Kind::Lease | Kind::Gcra | Kind::Resv => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let c = Config::default();
        assert_eq!(c.planner_ttl, Standard::new(300, 600, 900));
        assert_eq!(c.lock_ttl_ms.default, 9_000);
        for k in Kind::ALL {
            if let Some(s) = c.ttl(k) {
                assert!(s.is_consistent(), "{k:?}");
            }
        }
        assert!(c.lock_ttl_ms.is_consistent());
    }

    #[test]
    fn check_names_the_argument() {
        let s = Standard::new(300, 600, 900);
        assert_eq!(s.check("TTL", 300, "seconds"), Ok(300));
        assert_eq!(s.check("TTL", 900, "seconds"), Ok(900));
        let e = s.check("TTL", 299, "seconds").unwrap_err();
        assert_eq!(
            e.to_string(),
            "ERR TTL 299 is out of range: must be between 300 and 900 seconds"
        );
        assert!(s.check("TTL", -1, "seconds").is_err());
        assert!(s.check("TTL", i64::MIN, "seconds").is_err());
    }
}

/// One tunable: a module config `okome.<name>`.
pub struct Param {
    /// Kebab-case name, without the `okome.` prefix.
    pub name: &'static str,
    /// The hard bounds and unit, from the range table (registered with
    /// Redis, which refuses anything outside them: [`Param::min`],
    /// [`Param::max`]).
    pub bounds: Range,
    /// The seed's standard, for the TTL standards: a value outside it is
    /// allowed, and logged as a warning.
    pub seed: Option<Range>,
    /// A byte size (accepts `4mb` and such in `CONFIG SET`).
    pub memory: bool,
    pub help: &'static str,
    pub get: fn(&Config) -> u64,
    pub set: fn(&mut Config, u64),
}

/// `v` as the signed bound Redis registers (every bound is far below
/// `i64::MAX`).
const fn signed(v: u64) -> i64 {
    if v > i64::MAX as u64 {
        i64::MAX
    } else {
        v as i64
    }
}

impl Param {
    const fn new(
        name: &'static str,
        bounds: Range,
        help: &'static str,
        get: fn(&Config) -> u64,
        set: fn(&mut Config, u64),
    ) -> Param {
        Param {
            name,
            bounds,
            seed: None,
            memory: false,
            help,
            get,
            set,
        }
    }

    /// The hard minimum, as the signed value Redis registers.
    pub const fn min(&self) -> i64 {
        signed(self.bounds.min)
    }

    /// The hard maximum, as the signed value Redis registers.
    pub const fn max(&self) -> i64 {
        signed(self.bounds.max)
    }
}

macro_rules! standard_params {
    ($field:ident, $prefix:literal, $bounds:expr, $seed:expr, $what:literal) => {
        [
            Param {
                seed: Some($seed),
                ..Param::new(
                    concat!($prefix, "-min"),
                    $bounds,
                    concat!("shortest ", $what),
                    |c| c.$field.min,
                    |c, v| c.$field.min = v,
                )
            },
            Param {
                seed: Some($seed),
                ..Param::new(
                    concat!($prefix, "-default"),
                    $bounds,
                    concat!("default ", $what),
                    |c| c.$field.default,
                    |c, v| c.$field.default = v,
                )
            },
            Param {
                seed: Some($seed),
                ..Param::new(
                    concat!($prefix, "-max"),
                    $bounds,
                    concat!("longest ", $what),
                    |c| c.$field.max,
                    |c, v| c.$field.max = v,
                )
            },
        ]
    };
}

/// Every tunable, in documentation order.
pub fn params() -> Vec<Param> {
    let mut v = standards();
    v.extend(limits());
    v
}

/// The TTL standards: three configs each.
fn standards() -> Vec<Param> {
    let mut v = Vec::new();
    v.extend(standard_params!(
        planner_ttl,
        "planner-ttl",
        CACHE_TTL_S,
        SEED_PLANNER_TTL_S,
        "planner TTL, seconds"
    ));
    v.extend(standard_params!(
        model_meta_ttl,
        "model-meta-ttl",
        CACHE_TTL_S,
        SEED_MODEL_META_TTL_S,
        "model_meta TTL, seconds"
    ));
    v.extend(standard_params!(
        rag_ttl,
        "rag-ttl",
        CACHE_TTL_S,
        SEED_RAG_TTL_S,
        "rag TTL, seconds"
    ));
    v.extend(standard_params!(
        tools_ttl,
        "tools-ttl",
        CACHE_TTL_S,
        SEED_TOOLS_TTL_S,
        "tools TTL, seconds"
    ));
    v.extend(standard_params!(
        health_ttl,
        "health-ttl",
        CACHE_TTL_S,
        SEED_HEALTH_TTL_S,
        "health TTL, seconds"
    ));
    v.extend(standard_params!(
        lock_ttl_ms,
        "lock-ttl",
        LOCK_TTL_MS,
        SEED_LOCK_TTL_MS,
        "stampede lock TTL, milliseconds"
    ));
    v
}

/// The other tunables: windows, sizes, defaults of options.
fn limits() -> Vec<Param> {
    vec![
        Param::new(
            "write-window",
            WINDOW_S,
            "default OKOME.WBUDGET / PLAN.SET WWINDOW window, seconds",
            |c| c.write_window_s,
            |c, v| c.write_window_s = v,
        ),
        Param {
            memory: true,
            ..Param::new(
                "max-prompt-bytes",
                MAX_BYTES,
                "largest prompt OKOME.PLAN.GET and OKOME.KEY hash, bytes",
                |c| c.max_prompt_bytes,
                |c, v| c.max_prompt_bytes = v,
            )
        },
        Param {
            memory: true,
            ..Param::new(
                "max-value-bytes",
                MAX_BYTES,
                "largest value OKOME.PLAN.SET and OKOME.CACHE.SET store, bytes",
                |c| c.max_value_bytes,
                |c, v| c.max_value_bytes = v,
            )
        },
        Param::new(
            "refresh-ahead-ms",
            REFRESH_AHEAD_MS,
            "default REFRESHAHEAD of OKOME.PLAN.GET, milliseconds (0: off)",
            |c| c.refresh_ahead_ms,
            |c, v| c.refresh_ahead_ms = v,
        ),
        Param::new(
            "ledger-max-keys",
            LEDGER_MAX_KEYS,
            "most keys an agent ledger (okome:budget:keys:{agent}) holds; the soonest-expiring is dropped when full",
            |c| c.ledger_max_keys,
            |c, v| c.ledger_max_keys = v,
        ),
    ]
}

impl Config {
    /// Checks that every standard has `min <= default <= max`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let standards = [
            ("planner-ttl", self.planner_ttl),
            ("model-meta-ttl", self.model_meta_ttl),
            ("rag-ttl", self.rag_ttl),
            ("tools-ttl", self.tools_ttl),
            ("health-ttl", self.health_ttl),
            ("lock-ttl", self.lock_ttl_ms),
        ];
        for (name, s) in standards {
            if !s.is_consistent() {
                return Err(format!(
                    "okome.{name}-min <= okome.{name}-default <= okome.{name}-max must hold, got {} / {} / {}",
                    s.min, s.default, s.max
                ));
            }
        }
        Ok(())
    }

    /// A warning for each config of a TTL standard whose value lies outside
    /// the seed's standard (allowed, but worth a word in the server log);
    /// with `before`, only for those whose value differs from it.
    pub fn outside_seed(&self, before: Option<&Config>) -> Vec<String> {
        params()
            .iter()
            .filter_map(|p| {
                let seed = p.seed?;
                let v = (p.get)(self);
                if seed.contains(v) || before.is_some_and(|b| (p.get)(b) == v) {
                    return None;
                }
                Some(format!(
                    "okome.{} is {v} {unit}, outside the seed's standard for the {what} ({span} {unit})",
                    p.name,
                    unit = seed.unit,
                    what = seed.name,
                    span = span(seed.min, seed.max, " to "),
                ))
            })
            .collect()
    }

    /// Sets `name` (with or without the `okome.` prefix) to `value`,
    /// within its hard bounds. Does not check consistency ([`validate`]).
    ///
    /// [`validate`]: Config::validate
    pub fn set(&mut self, name: &str, value: i64) -> std::result::Result<(), String> {
        let bare = name.strip_prefix("okome.").unwrap_or(name);
        let params = params();
        let p = params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(bare))
            .ok_or_else(|| format!("unknown config 'okome.{bare}'"))?;
        if value < p.min() || value > p.max() {
            return Err(format!(
                "okome.{} {value} is out of range: must be between {} and {}",
                p.name,
                p.min(),
                p.max()
            ));
        }
        (p.set)(self, u64::try_from(value).unwrap_or(0));
        Ok(())
    }

    /// The configuration given by `loadmodule ... name value [name value ...]`
    /// arguments, on top of the defaults.
    pub fn from_module_args(args: &[&[u8]]) -> std::result::Result<Config, String> {
        let mut c = Config::default();
        let mut rest = args;
        while let Some((name, tail)) = rest.split_first() {
            let name = std::str::from_utf8(name).map_err(|_| {
                format!(
                    "unknown config 'okome.{}' (config names are ASCII)",
                    crate::keys::printable(name.strip_prefix(b"okome.").unwrap_or(name))
                )
            })?;
            let bare = name.strip_prefix("okome.").unwrap_or(name);
            let (value, tail) = tail
                .split_first()
                .ok_or_else(|| format!("module argument 'okome.{bare}' needs a value"))?;
            let v = crate::int::parse_int("value", value)
                .map_err(|_| format!("module argument 'okome.{bare}': value is not an integer"))?;
            c.set(name, v)?;
            rest = tail;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod param_tests {
    use super::*;

    #[test]
    fn every_param_reads_back_what_it_sets() {
        for p in params() {
            let mut c = Config::default();
            (p.set)(&mut c, 12_345);
            assert_eq!((p.get)(&c), 12_345, "{}", p.name);
            let d = (p.get)(&Config::default());
            assert!(
                i64::try_from(d).unwrap() >= p.min() && i64::try_from(d).unwrap() <= p.max(),
                "{}",
                p.name
            );
        }
        let names: Vec<&str> = params().iter().map(|p| p.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "unique names");
    }

    #[test]
    fn module_args() {
        let c = Config::from_module_args(&[
            b"planner-ttl-default",
            b"900",
            b"okome.max-prompt-bytes",
            b"1024",
        ])
        .unwrap();
        assert_eq!((c.planner_ttl.default, c.max_prompt_bytes), (900, 1024));
        assert!(Config::from_module_args(&[b"planner-ttl-default", b"901"])
            .unwrap_err()
            .contains("planner-ttl-min"));
        // Every config is named with its okome. prefix, given or not.
        let e = |a: &[&[u8]]| Config::from_module_args(a).unwrap_err();
        assert_eq!(e(&[b"nope", b"1"]), "unknown config 'okome.nope'");
        assert_eq!(e(&[b"okome.nope", b"1"]), "unknown config 'okome.nope'");
        assert_eq!(
            e(&[b"no\xffpe", b"1"]),
            "unknown config 'okome.no\\xffpe' (config names are ASCII)"
        );
        assert_eq!(
            e(&[b"write-window"]),
            "module argument 'okome.write-window' needs a value"
        );
        assert!(e(&[b"write-window", b"0"]).starts_with("okome.write-window 0 is out of range"));
        assert_eq!(
            e(&[b"okome.write-window", b"x"]),
            "module argument 'okome.write-window': value is not an integer"
        );
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    /// The config setter takes every config's hard bounds from the table:
    /// min and max are taken, min-1 and max+1 refused.
    #[test]
    fn config_set_checks_the_table_bounds() {
        for p in params() {
            let (min, max) = (p.bounds.min, p.bounds.max);
            assert_eq!(
                (p.min(), p.max()),
                (i64::try_from(min).unwrap(), i64::try_from(max).unwrap())
            );
            let mut c = Config::default();
            for v in [min, max] {
                c.set(p.name, i64::try_from(v).unwrap()).unwrap();
                assert_eq!((p.get)(&c), v, "{}", p.name);
            }
            for v in [i128::from(min) - 1, i128::from(max) + 1] {
                let e = c.set(p.name, i64::try_from(v).unwrap()).unwrap_err();
                assert!(e.contains("out of range"), "{}: {e}", p.name);
            }
            let d = (p.get)(&Config::default());
            assert!(p.bounds.contains(d), "{} default {d}", p.name);
            if let Some(seed) = p.seed {
                assert!(seed.contains(d), "{} default {d} outside the seed", p.name);
                assert!(p.bounds.contains(seed.min) && p.bounds.contains(seed.max));
            }
        }
    }

    /// A config and the option it is the default of take the same range.
    #[test]
    fn configs_and_options_agree() {
        let ps = params();
        let bounds = |name: &str| ps.iter().find(|p| p.name == name).unwrap().bounds;
        assert_eq!(bounds("refresh-ahead-ms"), REFRESH_AHEAD_MS);
        assert_eq!(bounds("write-window"), WINDOW_S);
        assert_eq!(bounds("ledger-max-keys").max, PURGE_COUNT.max);
        assert_eq!(bounds("lock-ttl-min"), LOCK_TTL_MS);
        // The standards' seeds are the defaults.
        let c = Config::default();
        assert_eq!(c.lock_ttl_ms, Standard::new(8_000, 9_000, 10_000));
        assert_eq!(c.planner_ttl, Standard::new(300, 600, 900));
        assert_eq!(c.rag_ttl, Standard::new(1_800, 3_600, 3_600));
    }

    #[test]
    fn summaries_and_texts() {
        assert_eq!(WAIT_MS.summary(), "1 to 600000 ms");
        assert_eq!(KEYS_COUNT.summary(), "1 to 10000 keys, default 100");
        assert_eq!(SEED_HEALTH_TTL_S.text(), "30");
        assert_eq!(SEED_LOCK_TTL_MS.text(), "8000–10000");
    }

    /// A standard configured outside the seed's is worth a warning, once.
    #[test]
    fn warnings_outside_the_seed() {
        let d = Config::default();
        assert!(d.outside_seed(None).is_empty());
        let mut c = d;
        c.set("lock-ttl-min", 100).unwrap();
        c.set("okome.health-ttl-max", 60).unwrap();
        assert_eq!(
            c.outside_seed(None),
            [
                "okome.health-ttl-max is 60 seconds, outside the seed's standard for the health \
                 TTL (30 seconds)",
                "okome.lock-ttl-min is 100 ms, outside the seed's standard for the stampede lock \
                 TTL (8000 to 10000 ms)",
            ]
        );
        assert_eq!(c.outside_seed(Some(&d)).len(), 2);
        assert!(c.outside_seed(Some(&c)).is_empty(), "unchanged: no word");
        let mut e = c;
        e.set("lock-ttl-min", 8000).unwrap();
        e.set("lock-ttl-max", 12000).unwrap();
        assert_eq!(
            e.outside_seed(Some(&c)),
            ["okome.lock-ttl-max is 12000 ms, outside the seed's standard for the stampede lock \
              TTL (8000 to 10000 ms)"]
        );
        // Options and configs without a seed never warn.
        e.set("refresh-ahead-ms", 900_000).unwrap();
        assert_eq!(e.outside_seed(Some(&c)).len(), 1);
    }
}
