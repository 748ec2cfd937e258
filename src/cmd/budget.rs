//! `OKOME.RATE` and `OKOME.WBUDGET`, and an agent's budget window as the
//! planner charges it too: opened and charged, then written. `OKOME.THROTTLE`
//! (`throttle.rs`) opens and writes its GCRA state through the same
//! [`Budget`].

use crate::call::Call;
use crate::reply::ms;
use crate::rkey::Key;
use crate::stats::{bump, c};
use okome_core::command::{self, Charge};
use okome_core::keys::{printable, Kind};
use okome_core::limiter::{self, Charged, Decision, Unusable, Write};
use okome_core::Error;
use redis_module::Context;
use std::sync::atomic::AtomicU64;

thread_local! {
    /// The buffer a window's new bytes are written into, reused from
    /// command to command so that charging a warm window allocates nothing.
    /// Commands run on Redis's main thread, one at a time.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest scratch buffer kept between commands, bytes.
const SCRATCH_KEPT: usize = 4096;

/// An agent's window, opened for writing and charged: what the charge
/// decides and writes is known before anything is written.
pub struct Budget {
    key: Key,
    charged: Charged,
    /// The bytes to write (see [`Write`]).
    buf: Vec<u8>,
    /// The counters of an admission and a refusal, by the window's kind.
    counters: [&'static AtomicU64; 2],
}

impl Drop for Budget {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        // A large window migrated whole once leaves a large buffer: not
        // kept (tails and compactions need a few dozen bytes).
        if buf.capacity() > SCRATCH_KEPT {
            buf = Vec::new();
        }
        SCRATCH.with(|s| s.set(buf));
    }
}

impl Budget {
    /// Opens the window at `charge.key` and works out the charge at `now`
    /// (O(1) amortised: see `okome_core::limiter`); fails, writing nothing,
    /// on another type or on bytes that are not a window. A window stamped
    /// beyond the clock-skew allowance (hand-made bytes, or a clock far
    /// behind) is refused too: charging it would extend it.
    pub fn load(ctx: &Context, charge: &Charge, now: i64) -> Result<Budget, Error> {
        let (limit, window_ms, cost) = (charge.limit, charge.window_ms, charge.cost);
        Budget::open(
            ctx,
            &charge.key,
            cost > 0,
            |stored, out| limiter::charge_stored(stored, now, limit, window_ms, cost, out),
            unusable,
        )
    }

    /// Opens the budget at `key` (for writing too if `write`) and charges
    /// its value (empty: no key) with `charge`, an algorithm's
    /// `charge_stored` (see `okome_core::limiter`); fails, writing nothing,
    /// on another type or a value `charge` finds unusable (the error
    /// `unusable` gives for it).
    pub fn open(
        ctx: &Context,
        key: &[u8],
        write: bool,
        charge: impl FnOnce(&[u8], &mut Vec<u8>) -> Result<Charged, Unusable>,
        unusable: impl FnOnce(Unusable, &[u8]) -> Error,
    ) -> Result<Budget, Error> {
        let counters = counters(key);
        let key_name = key;
        let key = Key::open(ctx, key_name, write);
        let mut buf = SCRATCH.with(|s| s.take());
        let charged = match key.string() {
            Ok(stored) => {
                charge(stored.unwrap_or_default(), &mut buf).map_err(|e| unusable(e, key_name))
            }
            Err(e) => Err(e),
        };
        match charged {
            Ok(charged) => Ok(Budget {
                key,
                charged,
                buf,
                counters,
            }),
            Err(e) => {
                SCRATCH.with(|s| s.set(buf));
                Err(e)
            }
        }
    }

    /// What the charge decides (nothing written yet).
    pub fn decision(&self) -> Decision {
        self.charged.decision
    }

    /// Applies the charge decided at `load`: on admission, writes the
    /// window (whole, or its tail) with the absolute time at which it
    /// empties, and replicates that effect. Fails if the write was not
    /// made: the call must not say the agent was admitted.
    pub fn charge(self, ctx: &Context) -> Result<Decision, Error> {
        let counters = self.counters;
        let d = self.write(ctx)?;
        let [allowed, refused] = counters;
        bump(if d.allowed { allowed } else { refused });
        Ok(d)
    }

    /// [`charge`](Budget::charge) without counting it: writes what was
    /// decided at `load` (a settlement's adjustment) and returns the
    /// decision.
    pub fn write(self, ctx: &Context) -> Result<Decision, Error> {
        let d = self.charged.decision;
        match self.charged.write {
            Write::Nothing => {}
            Write::Delete => self.key.delete(ctx)?,
            Write::Whole { expire_at } => self.key.set(ctx, &self.buf, expire_at)?,
            Write::Tail { offset, expire_at } => {
                self.key.set_range(ctx, offset, &self.buf, expire_at)?
            }
            Write::Compact {
                head_len,
                ref keep,
                expire_at,
            } => {
                let (head, tail) = self
                    .buf
                    .split_at_checked(head_len)
                    .ok_or_else(|| self.key.refused("write"))?;
                self.key
                    .set_compacted(ctx, head, keep.clone(), tail, expire_at)?
            }
        }
        Ok(d)
    }
}

/// The error for a value at `key` that is not a window this call can
/// charge.
pub fn unusable(e: Unusable, key: &[u8]) -> Error {
    match e {
        Unusable::Ahead(a) => a.error(key),
        Unusable::Corrupt(_) => Error::BadKey(format!(
            "'{}' does not hold an okome budget window (was it written by another client?)",
            printable(key)
        )),
    }
}

/// The counters of a charge of the budget at `key`: `wbudget_*` for a
/// write budget, `throttle_*` for a GCRA state, `rate_*` for a rate
/// window.
fn counters(key: &[u8]) -> [&'static AtomicU64; 2] {
    match Kind::of(key) {
        Some(Kind::Write) => [&c::wbudget_allowed, &c::wbudget_refused],
        Some(Kind::Gcra) => [&c::throttle_allowed, &c::throttle_limited],
        _ => [&c::rate_allowed, &c::rate_limited],
    }
}

/// `[allowed, remaining, retry_after_ms, reset_after_ms]`
pub fn decision_reply(d: &Decision) -> [i64; 4] {
    [
        i64::from(d.allowed),
        ms(d.remaining),
        ms(d.retry_after_ms),
        ms(d.reset_after_ms),
    ]
}

/// OKOME.RATE agent limit window [COST n] [NAME name]
pub fn rate(ctx: &Context, call: &Call) -> Result<[i64; 4], Error> {
    let charge = call.request(command::parse_rate)?;
    let d = Budget::load(ctx, &charge, call.now)?.charge(ctx)?;
    Ok(decision_reply(&d))
}

/// OKOME.WBUDGET agent write_limit [WINDOW s] [COST n]
pub fn wbudget(ctx: &Context, call: &Call) -> Result<[i64; 4], Error> {
    let charge = call.request_cfg(command::parse_wbudget)?;
    let d = Budget::load(ctx, &charge, call.now)?.charge(ctx)?;
    Ok(decision_reply(&d))
}
