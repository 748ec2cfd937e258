//! The brute-force reference model of an exact rate limit: every admission
//! ever, never pruned nor encoded, every question answered by counting.
//! What the limiter's unit tests and the `limiter` fuzz target check the
//! algorithms against; compiled only for them (`cfg(test)`, or the `model`
//! feature, which the fuzz crate enables).

/// Every admission ever, oldest first, as `(time ms, units)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reference {
    pub log: Vec<(i64, u64)>,
}

impl Reference {
    /// The newest admission (the log is in time order).
    pub fn newest(&self) -> Option<i64> {
        self.log.last().map(|(a, _)| *a)
    }

    /// The effective time at `now`: never before the newest admission.
    pub fn clock(&self, now: i64) -> i64 {
        self.newest().map_or(now, |a| a.max(now))
    }

    /// The units admitted in `(t - w, t]`.
    pub fn used_at(&self, t: i64, w: i64) -> u64 {
        self.log
            .iter()
            .filter(|(a, _)| *a > t.saturating_sub(w))
            .fold(0, |sum, (_, u)| sum.saturating_add(*u))
    }

    pub fn would_admit(&self, t: i64, w: i64, limit: u64, cost: u64) -> bool {
        self.used_at(t, w).saturating_add(cost) <= limit
    }

    /// How long after `t` `cost` units first fit, ms, trying every ms
    /// (`cost` must not exceed `limit`).
    pub fn wait(&self, t: i64, w: i64, limit: u64, cost: u64) -> i64 {
        let mut wait = 0i64;
        while !self.would_admit(t.saturating_add(wait), w, limit, cost) {
            wait = wait.saturating_add(1);
        }
        wait
    }

    /// The exact window's promise: no interval of `w` ms holds more than
    /// `limit` admitted units.
    pub fn never_over(&self, w: i64, limit: u64) -> bool {
        self.log.iter().all(|&(a, _)| {
            let within = self
                .log
                .iter()
                .filter(|(b, _)| *b >= a && *b < a.saturating_add(w));
            within.fold(0u64, |sum, (_, u)| sum.saturating_add(*u)) <= limit
        })
    }
}
