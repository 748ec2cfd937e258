//! The brute-force reference models of the limiters: for the exact window
//! ([`Reference`]), every admission ever, never pruned nor encoded, every
//! question answered by counting; for GCRA ([`Bucket`]), a token bucket
//! answering by stepping ms by ms. What the limiter's unit tests and the `limiter` fuzz target check the
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

/// The burst limiter's reference: a token bucket of `burst + 1` units,
/// refilled at `rate` units per `period_ms`, where GCRA keeps a time. Its
/// level is counted in `1 / period_ms` units, so that it refills by exactly
/// `rate` every ms; every question is answered by stepping ms by ms. Calls
/// must come in nondecreasing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub rate: u64,
    pub period_ms: u64,
    pub burst: u64,
    /// The level at `at`, in `1 / period_ms` units (`None`: full).
    level: u128,
    at: Option<i64>,
    /// Every admission, as `(time ms, units)`.
    pub log: Vec<(i64, u64)>,
}

/// What the bucket answers a call: `(allowed, remaining, retry_after_ms,
/// reset_after_ms)`, as `OKOME.THROTTLE` replies.
pub type Answer = (bool, u64, u64, u64);

/// ms from `a` to `b` (0 if `b` is earlier).
fn span(a: i64, b: i64) -> u128 {
    u128::try_from(b.saturating_sub(a)).unwrap_or(0)
}

impl Bucket {
    pub fn new(rate: u64, period_ms: u64, burst: u64) -> Bucket {
        Bucket {
            rate,
            period_ms,
            burst,
            level: 0,
            at: None,
            log: Vec::new(),
        }
    }

    fn cap(&self) -> u128 {
        u128::from(self.burst.saturating_add(1)).saturating_mul(u128::from(self.period_ms))
    }

    fn units(&self, n: u64) -> u128 {
        u128::from(n).saturating_mul(u128::from(self.period_ms))
    }

    /// The level at `t` (not before the last call).
    pub fn level(&self, t: i64) -> u128 {
        match self.at {
            None => self.cap(),
            Some(a) => {
                let refill = span(a, t).saturating_mul(u128::from(self.rate));
                self.level.saturating_add(refill).min(self.cap())
            }
        }
    }

    fn admits(&self, t: i64, cost: u64) -> bool {
        self.level(t) >= self.units(cost)
    }

    /// ms from `t` until `level` passes `want`, stepping.
    fn until(&self, t: i64, want: u128) -> u64 {
        let mut w = 0i64;
        while self.level(t.saturating_add(w)) < want {
            w = w.saturating_add(1);
        }
        u64::try_from(w).unwrap_or(0)
    }

    /// Charges `cost` units at `t` (`cost` 0: reports).
    pub fn charge(&mut self, t: i64, cost: u64) -> Answer {
        let allowed = self.admits(t, cost);
        let mut retry = 0;
        if !allowed {
            retry = self.until(t, self.units(cost));
        } else if cost > 0 {
            self.level = self.level(t).saturating_sub(self.units(cost));
            self.at = Some(t);
            self.log.push((t, cost));
        }
        let remaining = self
            .level(t)
            .checked_div(u128::from(self.period_ms))
            .unwrap_or(0);
        let remaining = u64::try_from(remaining).unwrap_or(u64::MAX);
        (allowed, remaining, retry, self.until(t, self.cap()))
    }

    /// GCRA's promise: in any interval `[a, c]`, at most `burst + 1 +
    /// ⌊(c − a) × rate / period_ms⌋` units are admitted.
    pub fn never_over(&self) -> bool {
        let mut tails = self.log.iter();
        std::iter::from_fn(|| {
            let tail = tails.as_slice();
            tails.next().map(|_| tail)
        })
        .all(|tail| {
            let a = tail.first().map_or(0, |e| e.0);
            let mut sum = 0u128;
            tail.iter().all(|&(c, u)| {
                sum = sum.saturating_add(u128::from(u));
                let refill = span(a, c)
                    .saturating_mul(u128::from(self.rate))
                    .checked_div(u128::from(self.period_ms))
                    .unwrap_or(0);
                sum <= u128::from(self.burst.saturating_add(1)).saturating_add(refill)
            })
        })
    }
}
