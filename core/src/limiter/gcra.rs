//! GCRA, the generic cell rate algorithm: the burst limiter behind
//! `OKOME.THROTTLE` (as redis-cell's `CL.THROTTLE` and nginx's
//! `limit_req ... burst=n nodelay`).
//!
//! # The rule
//!
//! On average `rate` units per `period_ms`: one unit every emission
//! interval `T = period_ms / rate`; and up to `burst` units at once beyond
//! that, so that from a full bucket `burst + 1` units pass at once. The
//! state is one time, the theoretical arrival time (TAT): when the bucket
//! is full again. A call of `cost` units at `now`:
//!
//! - `base = max(TAT, now)` (no key: a full bucket, `base = now`);
//! - `new = base + cost × T`;
//! - admitted iff `new − now ≤ (burst + 1) × T`, and then `TAT = new`;
//!   refused otherwise, recording nothing: `cost` units pass once `now`
//!   reaches `new − (burst + 1) × T` (`retry_after_ms`).
//!
//! `remaining` is the units that could pass now one by one, `⌊((burst + 1)
//! × T − (TAT − now)) / T⌋`, and `reset_after_ms` is `TAT − now`, the time
//! until the bucket is full. `rate 20 per 1 s, burst 60` (nginx's
//! `rate=20r/s burst=60 nodelay`) lets 61 units through at once, then one
//! every 50 ms. In any interval of `d` ms, at most `burst + 1 + ⌊d × rate
//! / period_ms⌋` units are admitted (the property tests check it).
//!
//! # Exact time: ticks of 1/rate ms
//!
//! `T` is rarely a whole number of ms (3 per second: 333.33... ms), and a
//! rounded `T` drifts: rounded down it admits more than `rate` per period
//! in the long run, rounded up fewer. So the limiter counts time in *ticks*
//! of `1 / rate` ms: `now` (whole ms) is `now × rate` ticks and `T` is
//! exactly `period_ms` ticks, and every decision is exact integer
//! arithmetic on `i128` (at most `i64::MAX × 10^15 ≈ 9.2 × 10^33` ticks,
//! far below `i128::MAX ≈ 1.7 × 10^38`). Only what leaves the limiter is
//! rounded, always up (a unit is never promised before it passes):
//! `retry_after_ms`, `reset_after_ms` and the key's expiry. The stored TAT
//! keeps its fraction, so nothing accumulates: 3 per second with a burst
//! admits `burst + 1` at 0, then at 334, 667, 1000, 1334... ms, exactly
//! `3k + burst + 1` units in `[0, k s]`. With `burst 0` the bucket holds
//! one unit: full at 333.33 ms, it fills no further until a call at 334
//! ms takes it, so a caller trying every ms passes every 334 ms (as a
//! token bucket does); a burst of 1 absorbs the fraction.
//!
//! # Stored form
//!
//! A plain Redis string of 25 bytes: the format byte [`FORMAT_GCRA`], the
//! TAT in ticks (`i128`, big-endian) and the ticks per ms it counts in
//! (`u64`, big-endian: the rate of the call that wrote it). A call with
//! another rate reads it in its own ticks, rounded up (later: stricter).
//! An admission writes it whole, `SET key <tat> PXAT <⌈TAT⌉>`: the key
//! expires when the bucket is full, which is what no key means too.
//!
//! # Clocks
//!
//! A clock that steps backwards only makes the limiter stricter (`base =
//! max(TAT, now)`). An admission at `w` leaves `TAT ≤ w + (burst + 1) ×
//! T`, so a TAT beyond `now + (burst + 1) × T +`
//! [`CLOCK_SKEW_ALLOWANCE_MS`] was not written by this call's parameters
//! under a clock within the allowance: written by hand or by another
//! client, with a larger burst or lower rate, or under a clock that far
//! ahead. Like a window ahead of the clock it is [`Unusable::Ahead`]
//! (never charged nor extended; the commands reply an error and write
//! nothing), its `newest` being the earliest time such a writer's clock
//! could have read.

use super::{
    AheadOfClock, Algorithm, Charged, Corrupt, Decision, Format, Outcome, Unusable, Write,
    CLOCK_SKEW_ALLOWANCE_MS,
};

/// Version byte of a GCRA state.
pub const FORMAT_GCRA: u8 = Format::Gcra as u8;
/// Length of a stored GCRA state, bytes.
pub const STORED_LEN: usize = 25;
/// Largest `rate` accepted (units per period): 10^15, as a window's limit
/// may be in SPEC (tokens, micro-dollars).
pub const MAX_RATE: u64 = 1_000_000_000_000_000;
/// Largest `burst` accepted, units.
pub const MAX_BURST: u64 = 1_000_000_000_000_000;
/// Longest period accepted, seconds: a year, as a window.
pub const MAX_PERIOD_S: u64 = crate::YEAR_S;

/// The GCRA algorithm ([`Algorithm`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gcra;

/// What a call of `OKOME.THROTTLE` charges: `cost` units against `rate`
/// per `period_ms` with `burst`. The grammar guarantees `rate >= 1`,
/// `period_ms >= 1` and `cost <= burst + 1` (a larger cost could never
/// pass); the limiter stays panic-free without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub rate: u64,
    pub period_ms: u64,
    pub burst: u64,
    pub cost: u64,
}

impl Throttle {
    pub const fn new(rate: u64, period_ms: u64, burst: u64, cost: u64) -> Throttle {
        Throttle {
            rate,
            period_ms,
            burst,
            cost,
        }
    }

    /// The ticks per ms this call counts in: its rate (at least 1).
    pub fn per_ms(&self) -> u64 {
        self.rate.max(1)
    }
}

/// A theoretical arrival time, exactly: `ticks / per_ms` ms after the
/// Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tat {
    pub ticks: i128,
    pub per_ms: u64,
}

impl Tat {
    /// The whole ms `ms`, counted in ticks of `1 / per_ms` ms.
    pub fn new(ms: i64, per_ms: u64) -> Tat {
        Tat {
            ticks: i128::from(ms).saturating_mul(i128::from(per_ms)),
            per_ms,
        }
    }

    /// The stored form (see the module docs).
    pub fn encode(&self) -> [u8; STORED_LEN] {
        let mut b = [0u8; STORED_LEN];
        let (format, rest) = b.split_at_mut(1);
        let (ticks, per_ms) = rest.split_at_mut(16);
        format.copy_from_slice(&[FORMAT_GCRA]);
        ticks.copy_from_slice(&self.ticks.to_be_bytes());
        per_ms.copy_from_slice(&self.per_ms.to_be_bytes());
        b
    }

    /// Reads a stored form; anything else (another length, another
    /// format, 0 ticks per ms) is `Corrupt`.
    pub fn decode(bytes: &[u8]) -> Result<Tat, Corrupt> {
        let (&[FORMAT_GCRA], rest) = bytes.split_at_checked(1).ok_or(Corrupt)? else {
            return Err(Corrupt);
        };
        let ticks: [u8; 16] = rest
            .get(..16)
            .ok_or(Corrupt)?
            .try_into()
            .map_err(|_| Corrupt)?;
        let per_ms: [u8; 8] = rest
            .get(16..)
            .ok_or(Corrupt)?
            .try_into()
            .map_err(|_| Corrupt)?;
        let per_ms = u64::from_be_bytes(per_ms);
        if per_ms == 0 {
            return Err(Corrupt);
        }
        Ok(Tat {
            ticks: i128::from_be_bytes(ticks),
            per_ms,
        })
    }

    /// The same time in ticks of `1 / per_ms` ms, rounded up (saturating).
    pub fn ticks_at(&self, per_ms: u64) -> i128 {
        if per_ms == self.per_ms {
            return self.ticks;
        }
        let from = i128::from(self.per_ms.max(1));
        let whole = self.ticks.checked_div_euclid(from).unwrap_or(0);
        let frac = self.ticks.checked_rem_euclid(from).unwrap_or(0);
        let to = i128::from(per_ms);
        whole
            .saturating_mul(to)
            .saturating_add(ceil_div(frac.saturating_mul(to), from))
    }

    /// The time in whole ms, rounded up (clamped to `i64`).
    pub fn ceil_ms(&self) -> i64 {
        clamp_i64(ceil_div(self.ticks, i128::from(self.per_ms.max(1))))
    }
}

/// `⌈n / d⌉` for `d > 0` (0 otherwise), saturating.
fn ceil_div(n: i128, d: i128) -> i128 {
    let (Some(q), Some(r)) = (n.checked_div_euclid(d), n.checked_rem_euclid(d)) else {
        return 0;
    };
    if r > 0 {
        q.saturating_add(1)
    } else {
        q
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl Algorithm for Gcra {
    type Quota = Throttle;

    /// No key: a full bucket. A window's value is not a GCRA state
    /// (`Corrupt`); a state beyond the clock-skew allowance is `Ahead`.
    /// An admission writes the new TAT whole ([`Write::Whole`], expiring
    /// when the bucket is full); a refusal or a report writes nothing.
    fn charge_stored(stored: &[u8], now: i64, quota: Throttle, out: &mut Vec<u8>) -> Outcome {
        out.clear();
        let call = Call::new(now, quota);
        let tat = match Format::of(stored)? {
            None => call.now,
            Some(Format::Gcra) => Tat::decode(stored)?.ticks_at(call.per_ms),
            Some(Format::WindowV1 | Format::WindowV2) => return Err(Corrupt.into()),
        };
        call.check(tat).map_err(Unusable::Ahead)?;
        Ok(call.charge(tat, out))
    }
}

/// One call, in ticks of `1 / per_ms` ms.
struct Call {
    q: Throttle,
    per_ms: u64,
    now_ms: i64,
    /// `now`, in ticks.
    now: i128,
    /// The emission interval `T`, in ticks: `period_ms`.
    t: i128,
    /// `(burst + 1) × T`: how far the TAT may lie ahead after an admission.
    cap: i128,
}

/// A refusal or a report: nothing written.
fn nothing(decision: Decision) -> Charged {
    Charged {
        decision,
        write: Write::Nothing,
    }
}

impl Call {
    fn new(now_ms: i64, q: Throttle) -> Call {
        let per_ms = q.per_ms();
        let t = i128::from(q.period_ms);
        Call {
            q,
            per_ms,
            now_ms,
            now: Tat::new(now_ms, per_ms).ticks,
            t,
            cap: i128::from(q.burst).saturating_add(1).saturating_mul(t),
        }
    }

    /// Refuses a TAT that this call's parameters could only have written
    /// under a clock more than the allowance ahead (see the module docs).
    fn check(&self, tat: i128) -> Result<(), AheadOfClock> {
        let written = tat.saturating_sub(self.cap);
        let allowance = i128::from(CLOCK_SKEW_ALLOWANCE_MS).saturating_mul(i128::from(self.per_ms));
        if written > self.now.saturating_add(allowance) {
            return Err(AheadOfClock {
                newest: self.ms(written),
                now: self.now_ms,
            });
        }
        Ok(())
    }

    /// The rule (see the module docs), on a TAT already checked.
    fn charge(&self, tat: i128, out: &mut Vec<u8>) -> Charged {
        let base = tat.max(self.now);
        let held = base.saturating_sub(self.now);
        let new = base.saturating_add(i128::from(self.q.cost).saturating_mul(self.t));
        let after = new.saturating_sub(self.now);
        if self.q.cost == 0 {
            return nothing(self.decision(true, held, 0));
        }
        if after > self.cap {
            let retry = self.span_ms(after.saturating_sub(self.cap));
            return nothing(self.decision(false, held, retry));
        }
        let tat = Tat {
            ticks: new,
            per_ms: self.per_ms,
        };
        out.extend_from_slice(&tat.encode());
        Charged {
            decision: self.decision(true, after, 0),
            write: Write::Whole {
                expire_at: tat.ceil_ms(),
            },
        }
    }

    /// The reply with `held` ticks of the bucket taken (the TAT that
    /// stands after the call, less now).
    fn decision(&self, allowed: bool, held: i128, retry_after_ms: u64) -> Decision {
        let free = self.cap.saturating_sub(held).max(0);
        Decision {
            allowed,
            remaining: u64::try_from(free.checked_div(self.t).unwrap_or(0)).unwrap_or(u64::MAX),
            retry_after_ms,
            reset_after_ms: self.span_ms(held),
        }
    }

    /// A span of ticks as ms, rounded up (0 if negative).
    fn span_ms(&self, ticks: i128) -> u64 {
        let ms = ceil_div(ticks, i128::from(self.per_ms)).max(0);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// A time in ticks as ms, rounded up.
    fn ms(&self, ticks: i128) -> i64 {
        clamp_i64(ceil_div(ticks, i128::from(self.per_ms)))
    }
}

#[cfg(test)]
mod tests;
