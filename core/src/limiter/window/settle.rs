//! Settling a reservation on a window (`OKOME.SETTLE`): the units a
//! reservation charged are adjusted to the actual cost, on the stored
//! bytes, as a pure function like `Algorithm::charge_stored`.
//!
//! - Less than reserved: the difference is removed from the entry that
//!   holds the reservation's units ([`Window::refund`]), as if never
//!   admitted.
//! - More: the excess is charged now, whatever the limit (the usage
//!   happened), so later calls wait until the window has room.
//!
//! The window is decoded, adjusted and written whole (`SET ... PXAT`), or
//! deleted when nothing is left in it: O(N) for N entries, paid once per
//! reservation.

use super::{same_bucket, Window};
use crate::limiter::{Charged, Quota, Unusable, Write};

/// What a reservation charged one window, and what it actually cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub limit: u64,
    pub window_ms: u64,
    /// When the reservation's units were recorded (the window's effective
    /// time when it was admitted).
    pub at: i64,
    pub reserved: u64,
    pub actual: u64,
}

impl Window {
    /// Removes up to `units` recorded at `at` by a window of grain
    /// `grain`: from the oldest entry at or after `at` in `at`'s bucket
    /// (its millisecond for an exact window; a merge moves an entry later
    /// within its bucket, never out of it), at most what that entry holds.
    /// An entry left empty is removed. Nothing else is touched: units
    /// already gone from the window (it moved on) are not taken from other
    /// entries, so a window never counts less than the units admitted in
    /// it, and never a negative number. Returns the units removed.
    pub fn refund(&mut self, at: i64, units: u64, grain: i64) -> u64 {
        let Some(i) = self.entries.iter().position(|e| e.at >= at) else {
            return 0;
        };
        let Some(e) = self.entries.get_mut(i) else {
            return 0;
        };
        if !same_bucket(at, e.at, grain) {
            return 0;
        }
        let removed = units.min(e.units);
        e.units = e.units.saturating_sub(removed);
        if e.units == 0 {
            self.entries.remove(i);
        }
        removed
    }

    /// Records `units` at `now` whatever the limit (an excess that was
    /// used), as an admission would.
    pub fn force(&mut self, now: i64, window_ms: u64, units: u64) {
        if units > 0 {
            self.charge(now, u64::MAX, window_ms, units);
        }
    }
}

/// Settles `s` on the window `stored` (empty: no key) at `now`: the
/// decision is a report of the window afterwards (`cost` 0), and the
/// write stores it whole, deletes it if it is empty, or is nothing when
/// the actual cost is the reserved one. `Unusable` as a charge would be.
pub fn settle_stored(
    stored: &[u8],
    now: i64,
    s: Settlement,
    out: &mut Vec<u8>,
) -> Result<Charged, Unusable> {
    out.clear();
    let mut w = if stored.is_empty() {
        Window::new()
    } else {
        Window::decode(stored)?
    };
    w.check_times(now).map_err(Unusable::Ahead)?;
    let q = Quota::new(s.limit, s.window_ms, 0);
    if s.actual < s.reserved {
        w.refund(s.at, s.reserved.saturating_sub(s.actual), q.grain());
    } else {
        w.force(now, s.window_ms, s.actual.saturating_sub(s.reserved));
    }
    let decision = w.charge(now, s.limit, s.window_ms, 0);
    let write = if s.actual == s.reserved {
        Write::Nothing
    } else {
        match w.empty_at(s.window_ms) {
            None => Write::Delete,
            Some(expire_at) => {
                w.encode_into(out);
                Write::Whole { expire_at }
            }
        }
    };
    Ok(Charged { decision, write })
}

#[cfg(test)]
mod tests;
