//! TTL standards and size limits: the values behind the `okome.*` module
//! configs. Plain data with defaults from SPEC.md and the seed's TTL table.

use crate::keys::Kind;
use crate::{Error, Result};

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
            planner_ttl: Standard::new(300, 600, 900),
            model_meta_ttl: Standard::new(86_400, 86_400, 86_400),
            rag_ttl: Standard::new(1_800, 3_600, 3_600),
            tools_ttl: Standard::new(600, 600, 600),
            health_ttl: Standard::new(30, 30, 30),
            lock_ttl_ms: Standard::new(8_000, 9_000, 10_000),
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
            Kind::Rate | Kind::Write | Kind::Ledger => None,
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
    /// Hard bounds of the value (Redis refuses anything outside them).
    pub min: i64,
    pub max: i64,
    /// A byte size (accepts `4mb` and such in `CONFIG SET`).
    pub memory: bool,
    pub help: &'static str,
    pub get: fn(&Config) -> u64,
    pub set: fn(&mut Config, u64),
}

const YEAR_S: i64 = 31_536_000;

macro_rules! standard_params {
    ($field:ident, $prefix:literal, $unit:literal, $lo:expr, $hi:expr, $what:literal) => {
        [
            Param {
                name: concat!($prefix, "-min"),
                min: $lo,
                max: $hi,
                memory: false,
                help: concat!("shortest ", $what, ", ", $unit),
                get: |c| c.$field.min,
                set: |c, v| c.$field.min = v,
            },
            Param {
                name: concat!($prefix, "-default"),
                min: $lo,
                max: $hi,
                memory: false,
                help: concat!("default ", $what, ", ", $unit),
                get: |c| c.$field.default,
                set: |c, v| c.$field.default = v,
            },
            Param {
                name: concat!($prefix, "-max"),
                min: $lo,
                max: $hi,
                memory: false,
                help: concat!("longest ", $what, ", ", $unit),
                get: |c| c.$field.max,
                set: |c, v| c.$field.max = v,
            },
        ]
    };
}

/// Every tunable, in documentation order.
pub fn params() -> Vec<Param> {
    let mut v = Vec::new();
    v.extend(standard_params!(
        planner_ttl,
        "planner-ttl",
        "seconds",
        1,
        YEAR_S,
        "planner TTL"
    ));
    v.extend(standard_params!(
        model_meta_ttl,
        "model-meta-ttl",
        "seconds",
        1,
        YEAR_S,
        "model_meta TTL"
    ));
    v.extend(standard_params!(
        rag_ttl, "rag-ttl", "seconds", 1, YEAR_S, "rag TTL"
    ));
    v.extend(standard_params!(
        tools_ttl,
        "tools-ttl",
        "seconds",
        1,
        YEAR_S,
        "tools TTL"
    ));
    v.extend(standard_params!(
        health_ttl,
        "health-ttl",
        "seconds",
        1,
        YEAR_S,
        "health TTL"
    ));
    v.extend(standard_params!(
        lock_ttl_ms,
        "lock-ttl",
        "milliseconds",
        100,
        3_600_000,
        "stampede lock TTL"
    ));
    v.push(Param {
        name: "write-window",
        min: 1,
        max: YEAR_S,
        memory: false,
        help: "default OKOME.WBUDGET / PLAN.SET WWINDOW window, seconds",
        get: |c| c.write_window_s,
        set: |c, v| c.write_window_s = v,
    });
    v.push(Param {
        name: "max-prompt-bytes",
        min: 1,
        max: 512 * 1024 * 1024,
        memory: true,
        help: "largest prompt OKOME.PLAN.GET and OKOME.KEY hash, bytes",
        get: |c| c.max_prompt_bytes,
        set: |c, v| c.max_prompt_bytes = v,
    });
    v.push(Param {
        name: "max-value-bytes",
        min: 1,
        max: 512 * 1024 * 1024,
        memory: true,
        help: "largest value OKOME.PLAN.SET and OKOME.CACHE.SET store, bytes",
        get: |c| c.max_value_bytes,
        set: |c, v| c.max_value_bytes = v,
    });
    v.push(Param {
        name: "refresh-ahead-ms",
        min: 0,
        max: YEAR_S * 1000,
        memory: false,
        help: "default REFRESHAHEAD of OKOME.PLAN.GET, milliseconds (0: off)",
        get: |c| c.refresh_ahead_ms,
        set: |c, v| c.refresh_ahead_ms = v,
    });
    v.push(Param {
        name: "ledger-max-keys",
        min: 1,
        max: 100_000,
        memory: false,
        help: "most keys an agent ledger (okome:budget:keys:{agent}) holds; the soonest-expiring is dropped when full",
        get: |c| c.ledger_max_keys,
        set: |c, v| c.ledger_max_keys = v,
    });
    v
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
            .ok_or_else(|| format!("unknown okome config '{name}'"))?;
        if value < p.min || value > p.max {
            return Err(format!(
                "okome.{} {value} is out of range: must be between {} and {}",
                p.name, p.min, p.max
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
            let name =
                std::str::from_utf8(name).map_err(|_| "config names are ASCII".to_string())?;
            let (value, tail) = tail
                .split_first()
                .ok_or_else(|| format!("module argument '{name}' needs a value"))?;
            let v = crate::args::parse_int("value", value)
                .map_err(|_| format!("module argument '{name}': value is not an integer"))?;
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
                i64::try_from(d).unwrap() >= p.min && i64::try_from(d).unwrap() <= p.max,
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
        assert!(Config::from_module_args(&[b"nope", b"1"])
            .unwrap_err()
            .contains("unknown"));
        assert!(Config::from_module_args(&[b"write-window"]).is_err());
        assert!(Config::from_module_args(&[b"write-window", b"0"])
            .unwrap_err()
            .contains("out of range"));
        assert!(Config::from_module_args(&[b"write-window", b"x"]).is_err());
    }
}
