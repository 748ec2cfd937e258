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

impl Reference {
    /// Records `units` admitted at `t` as a window of grain `grain` keeps
    /// them (see [`crate::limiter::grain_ms`]): merged into the newest
    /// entry, moved to `t`, when both lie in one bucket of `grain` ms; else
    /// a new entry. With a grain of 1, as the exact window.
    pub fn record_in_buckets(&mut self, t: i64, units: u64, grain: i64) {
        match self.log.last_mut() {
            Some(last) if crate::limiter::same_bucket(last.0, t, grain) => {
                last.0 = t;
                last.1 = last.1.saturating_add(units);
            }
            _ => self.log.push((t, units)),
        }
    }

    /// [`wait`](Reference::wait), trying only the instants at which the
    /// count can drop (`t`, and each admission leaving the window), for
    /// long windows.
    pub fn wait_at_exits(&self, t: i64, w: i64, limit: u64, cost: u64) -> i64 {
        let exits = self.log.iter().map(|(a, _)| a.saturating_add(w));
        std::iter::once(t)
            .chain(exits.filter(|&x| x > t))
            .find(|&x| self.would_admit(x, w, limit, cost))
            .map_or(0, |x| x.saturating_sub(t))
    }

    /// The units recorded in `(t - w, t]` that are still live, as entries:
    /// how many entries a window holds at `t`.
    pub fn live_entries(&self, t: i64, w: i64) -> usize {
        self.log
            .iter()
            .filter(|(a, _)| *a > t.saturating_sub(w))
            .count()
    }
}
