//! The exact sliding window: today's only algorithm.
//!
//! A window is a log of admissions: `(timestamp_ms, units)` entries, oldest
//! first, at most one entry per millisecond. A call of `cost` units at time
//! `t` is admitted iff the units recorded in `(t - W, t]` plus `cost` do not
//! exceed `limit`; so no interval of `W` milliseconds ever holds more than
//! `limit` admitted units, whatever the call pattern. A refused call records
//! nothing. Entries that left the window are dropped.
//!
//! A window of up to 65 536 ms records each admission at its millisecond:
//! exact. A longer one keeps its entries in buckets of
//! [`grain_ms`](super::grain_ms)`(W)` ms (`ceil((W - 1) / 65535)`): an
//! admission in the newest entry's bucket is merged into it at the later
//! time, so a unit is recorded at most `grain - 1` ms late (it counts that
//! much longer, never shorter: never more than `limit` in any interval of
//! `W`), and a log holds at most `min(limit, 65 536)` entries
//! ([`MAX_ENTRIES`](super::MAX_ENTRIES)) whatever the limit and the call
//! rate, as long as the key is charged with one window.
//!
//! Time is a parameter. If the clock steps backwards (NTP, a promoted replica
//! with a slower clock), the limiter works at `max(now, newest entry)`: units
//! are then counted for longer, never shorter, so a backwards step can only
//! make it stricter.
//!
//! That tolerance is bounded by [`CLOCK_SKEW_ALLOWANCE_MS`]. Every entry is
//! written at the writer's effective time, so an entry later than
//! `now + CLOCK_SKEW_ALLOWANCE_MS` was either made by hand (or by another
//! client) or written under a clock more than the allowance ahead of this
//! one. Such a window is refused, never charged and never extended:
//! [`Window::check_times`] reports it as [`AheadOfClock`] (the commands
//! reply an error naming the key and write nothing), and [`Window::charge`]
//! refuses it on its own, recording nothing. Entries are strictly ascending,
//! so the newest entry bounds them all and the check is one comparison.
//! Hence, for a window accepted at `now`, the effective time is at most
//! `now + CLOCK_SKEW_ALLOWANCE_MS` and the window empties at most
//! `window + CLOCK_SKEW_ALLOWANCE_MS` after `now`: a crafted timestamp near
//! `i64::MAX` can no longer lock an agent out for ever.
//!
//! [`Window`] is the window in memory, and [`Window::charge`] the rule
//! itself. Where it is stored, a window is charged without decoding it
//! ([`Algorithm::charge_stored`], in [`stored`]), deciding exactly as
//! `Window::charge`:
//! - [`v2`]: the stored form written now, and its encoding;
//! - [`stored`]: charging it in O(1) amortised, and what it writes;
//! - [`v1`]: the form written before issue 14, read and migrated.

use super::{
    ms_u64, same_bucket, AheadOfClock, Algorithm, Corrupt, Decision, Format, Outcome, Quota,
    CLOCK_SKEW_ALLOWANCE_MS,
};
use std::collections::VecDeque;

#[cfg(test)]
mod coarse_tests;
pub mod settle;
pub mod stored;
#[cfg(test)]
mod tests;
pub mod v1;
pub mod v2;

pub use settle::{settle_stored, Settlement};
pub use stored::{charge_with, SMALL_BYTES};
pub use v2::TRAILER_LEN;

/// One admission: when, and how many units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub at: i64,
    pub units: u64,
}

/// A rate window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    entries: VecDeque<Entry>,
}

impl Algorithm for Window {
    type Quota = Quota;

    /// See [`stored`]: the same decisions as [`Window::charge`], preceded
    /// by [`Window::check_times`].
    fn charge_stored(stored: &[u8], now: i64, quota: Quota, out: &mut Vec<u8>) -> Outcome {
        charge_with(stored, now, quota, out, SMALL_BYTES)
    }
}

impl Window {
    /// An empty window.
    pub fn new() -> Self {
        Window::default()
    }

    /// Decodes either stored form (the live entries of a version 2 window,
    /// from its head, checked from head to end). Anything malformed is
    /// `Corrupt`, an unknown format included.
    pub fn decode(bytes: &[u8]) -> Result<Window, Corrupt> {
        let mut w = Window::new();
        w.decode_from(bytes)?;
        Ok(w)
    }

    /// [`decode`](Window::decode) into this window, reusing its storage.
    /// On error the window is left empty.
    pub fn decode_from(&mut self, bytes: &[u8]) -> Result<(), Corrupt> {
        self.entries.clear();
        let r = match Format::of(bytes)? {
            None => Err(Corrupt),
            Some(Format::WindowV1) => self.decode_v1(bytes),
            Some(Format::WindowV2) => self.decode_v2(bytes),
            // Another algorithm's state.
            Some(Format::Gcra) => Err(Corrupt),
        };
        if r.is_err() {
            self.entries.clear();
        }
        r
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Refuses a window that this server's clock cannot have written:
    /// one whose newest (hence every) entry lies more than
    /// [`CLOCK_SKEW_ALLOWANCE_MS`] after `now`. Call it after
    /// [`decode_from`](Window::decode_from) with the time of the command,
    /// before any key is written, and reply [`AheadOfClock::error`] on
    /// `Err`. Cost: one comparison with the newest entry. An empty window,
    /// and entries in the past however old, pass.
    pub fn check_times(&self, now: i64) -> Result<(), AheadOfClock> {
        match self.entries.back() {
            Some(e) if e.at > now.saturating_add(CLOCK_SKEW_ALLOWANCE_MS) => {
                Err(AheadOfClock { newest: e.at, now })
            }
            _ => Ok(()),
        }
    }

    /// When the window will be empty: newest entry + `window_ms`
    /// (saturating). After [`charge`](Window::charge) at `now` (whatever
    /// its outcome), at most `now + window_ms + CLOCK_SKEW_ALLOWANCE_MS`,
    /// unless the window was refused by `check_times(now)`, in which case
    /// `charge` stored nothing.
    pub fn empty_at(&self, window_ms: u64) -> Option<i64> {
        let w = i64::try_from(window_ms).unwrap_or(i64::MAX);
        self.entries.back().map(|e| e.at.saturating_add(w))
    }

    /// Charges `cost` units at `now` against `limit` per `window_ms`.
    /// `cost` must not exceed `limit` (the grammar refuses it); `cost == 0`
    /// only reports. The window changes only when it admits `cost > 0`.
    ///
    /// A window refused by [`check_times(now)`](Window::check_times) is
    /// never charged nor extended: the call (a report included) is refused,
    /// records nothing, with `remaining` 0, `retry_after_ms` the time until
    /// the clock is back within the allowance and `reset_after_ms` the time
    /// until the window would be empty. Callers should still call
    /// `check_times` first, so as to reply an error rather than this
    /// refusal.
    pub fn charge(&mut self, now: i64, limit: u64, window_ms: u64, cost: u64) -> Decision {
        let q = Quota::new(limit, window_ms, cost);
        let w = q.window();
        if let Err(ahead) = self.check_times(now) {
            return refused_ahead(ahead, w);
        }
        // A clock that stepped backwards: work at the newest entry's time.
        let t = self.entries.back().map_or(now, |e| e.at.max(now));
        let horizon = t.saturating_sub(w);
        // Entries at or before the horizon have left the window. They are
        // dropped only when a new entry at `t` is recorded, so the newest
        // entry is always at least the time of any pruning: the effective
        // clock never moves back past a horizon already applied.
        let live = || self.entries.iter().filter(move |e| e.at > horizon);
        let used = live().fold(0u64, |acc, e| acc.saturating_add(e.units));
        let until = |at: i64| ms_u64(at.saturating_add(w).saturating_sub(now));
        let reset_after_ms = self.entries.back().map_or(0, |e| until(e.at));
        if cost == 0 {
            return q.report(used, reset_after_ms);
        }
        if q.fits(used) {
            while self.entries.front().is_some_and(|e| e.at <= horizon) {
                self.entries.pop_front();
            }
            // In the newest entry's bucket (its millisecond, for a window
            // of up to 65 536 ms): merged into it, at the later time.
            match self.entries.back_mut() {
                Some(last) if same_bucket(last.at, t, q.grain()) => {
                    last.at = t;
                    last.units = last.units.saturating_add(cost);
                }
                _ => self.entries.push_back(Entry { at: t, units: cost }),
            }
            return q.admitted(used, until(t));
        }
        // Refused, nothing recorded: find when enough of the oldest units
        // have left the window.
        let mut left = used;
        let mut retry = 0;
        for e in live() {
            left = left.saturating_sub(e.units);
            if q.fits(left) {
                retry = until(e.at);
                break;
            }
        }
        q.refused(used, retry, reset_after_ms)
    }
}

/// [`Window::charge`] on a window ahead of the clock: refused, retry when
/// the clock is back within the allowance.
fn refused_ahead(ahead: AheadOfClock, w: i64) -> Decision {
    let now = ahead.now;
    Decision {
        allowed: false,
        remaining: 0,
        retry_after_ms: ms_u64(
            ahead
                .newest
                .saturating_sub(CLOCK_SKEW_ALLOWANCE_MS)
                .saturating_sub(now),
        ),
        reset_after_ms: ms_u64(ahead.newest.saturating_add(w).saturating_sub(now)),
    }
}
