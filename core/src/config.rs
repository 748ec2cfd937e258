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
}

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
            Kind::Rate | Kind::Write => None,
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
