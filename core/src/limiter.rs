//! The exact sliding-window limiter behind `OKOME.RATE` and `OKOME.WBUDGET`.
//!
//! A window is a log of admissions: `(timestamp_ms, units)` entries, oldest
//! first, at most one entry per millisecond. A call of `cost` units at time
//! `t` is admitted iff the units admitted in `(t - W, t]` plus `cost` do not
//! exceed `limit`; so no interval of `W` milliseconds ever holds more than
//! `limit` admitted units, whatever the call pattern. A refused call records
//! nothing. Entries that left the window are dropped, so a log holds at most
//! `min(limit, W in ms)` entries.
//!
//! Time is a parameter. If the clock steps backwards (NTP, a promoted replica
//! with a slower clock), the limiter works at `max(now, newest entry)`: units
//! are then counted for longer, never shorter, so a backwards step can only
//! make it stricter.
//!
//! Stored form (a plain Redis string): version byte `1`, the oldest entry's
//! timestamp as i64 little-endian, its units as a LEB128 varint, then for each
//! further entry the gap to the previous one and its units, both LEB128. For
//! 60 single-unit calls spread over a minute that is about 190 bytes.

use std::collections::VecDeque;

/// Version byte of the stored form.
pub const FORMAT_V1: u8 = 1;
/// Largest `limit` accepted.
pub const MAX_LIMIT: u64 = 100_000;
/// Largest window accepted, seconds (one year).
pub const MAX_WINDOW_S: u64 = 31_536_000;

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

/// The outcome of a charge; the reply of `OKOME.RATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Units still admissible in the window after this call.
    pub remaining: u64,
    /// 0 when allowed; else ms until `cost` units fit.
    pub retry_after_ms: u64,
    /// ms until the window is empty (0 if it is).
    pub reset_after_ms: u64,
    /// Whether the window changed and must be stored (only on admission).
    pub changed: bool,
}

/// The stored bytes are not a window (another client wrote the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Result<u64, Corrupt> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(Corrupt)?;
        *bytes = rest;
        let part = u64::from(b & 0x7f);
        if shift == 63 && part > 1 {
            return Err(Corrupt);
        }
        v |= part << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Corrupt)
}

fn ms_u64(d: i64) -> u64 {
    u64::try_from(d).unwrap_or(0)
}

impl Window {
    /// An empty window.
    pub fn new() -> Self {
        Window::default()
    }

    /// Decodes the stored form. Anything malformed is `Corrupt`.
    pub fn decode(bytes: &[u8]) -> Result<Window, Corrupt> {
        let mut w = Window::new();
        w.decode_from(bytes)?;
        Ok(w)
    }

    /// [`decode`](Window::decode) into this window, reusing its storage
    /// (the hot path allocates nothing once warm). On error the window is
    /// left empty.
    pub fn decode_from(&mut self, bytes: &[u8]) -> Result<(), Corrupt> {
        self.entries.clear();
        let r = self.decode_entries(bytes);
        if r.is_err() {
            self.entries.clear();
        }
        r
    }

    fn decode_entries(&mut self, bytes: &[u8]) -> Result<(), Corrupt> {
        let entries = &mut self.entries;
        let (&version, mut rest) = bytes.split_first().ok_or(Corrupt)?;
        if version != FORMAT_V1 {
            return Err(Corrupt);
        }
        let (head, tail) = rest.split_first_chunk::<8>().ok_or(Corrupt)?;
        rest = tail;
        let mut at = i64::from_le_bytes(*head);
        let units = get_varint(&mut rest)?;
        if units == 0 {
            return Err(Corrupt);
        }
        entries.push_back(Entry { at, units });
        while !rest.is_empty() {
            let gap = get_varint(&mut rest)?;
            let units = get_varint(&mut rest)?;
            if gap == 0 || units == 0 {
                return Err(Corrupt);
            }
            at = i64::try_from(gap)
                .ok()
                .and_then(|g| at.checked_add(g))
                .ok_or(Corrupt)?;
            entries.push_back(Entry { at, units });
        }
        Ok(())
    }

    /// The stored form; empty for an empty window (the key is deleted).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len().saturating_mul(3).saturating_add(10));
        self.encode_into(&mut out);
        out
    }

    /// [`encode`](Window::encode) into `out` (cleared first), reusing its
    /// storage.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut iter = self.entries.iter();
        let Some(first) = iter.next() else {
            return;
        };
        out.push(FORMAT_V1);
        out.extend_from_slice(&first.at.to_le_bytes());
        put_varint(out, first.units);
        let mut prev = first.at;
        for e in iter {
            put_varint(out, ms_u64(e.at.saturating_sub(prev)));
            put_varint(out, e.units);
            prev = e.at;
        }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the window will be empty: newest entry + `window_ms`.
    pub fn empty_at(&self, window_ms: u64) -> Option<i64> {
        let w = i64::try_from(window_ms).unwrap_or(i64::MAX);
        self.entries.back().map(|e| e.at.saturating_add(w))
    }

    /// Charges `cost` units at `now` against `limit` per `window_ms`.
    /// `cost` must not exceed `limit` (the grammar refuses it); `cost == 0`
    /// only reports.
    pub fn charge(&mut self, now: i64, limit: u64, window_ms: u64, cost: u64) -> Decision {
        let w = i64::try_from(window_ms).unwrap_or(i64::MAX);
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
            return Decision {
                allowed: true,
                remaining: limit.saturating_sub(used),
                retry_after_ms: 0,
                reset_after_ms: if used == 0 { 0 } else { reset_after_ms },
                changed: false,
            };
        }
        if used.saturating_add(cost) <= limit {
            while self.entries.front().is_some_and(|e| e.at <= horizon) {
                self.entries.pop_front();
            }
            match self.entries.back_mut() {
                Some(last) if last.at == t => last.units = last.units.saturating_add(cost),
                _ => self.entries.push_back(Entry { at: t, units: cost }),
            }
            return Decision {
                allowed: true,
                remaining: limit.saturating_sub(used.saturating_add(cost)),
                retry_after_ms: 0,
                reset_after_ms: until(t),
                changed: true,
            };
        }
        // Refused, nothing recorded: find when enough of the oldest units
        // have left the window.
        let mut left = used;
        let mut retry = 0;
        for e in live() {
            left = left.saturating_sub(e.units);
            if left.saturating_add(cost) <= limit {
                retry = until(e.at);
                break;
            }
        }
        Decision {
            allowed: false,
            remaining: limit.saturating_sub(used),
            retry_after_ms: retry,
            reset_after_ms,
            changed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seed_check_sixty_then_refused() {
        let mut w = Window::new();
        let start = 1_700_000_000_000;
        for i in 0..60u64 {
            let d = w.charge(start + i as i64 * 100, 60, 60_000, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, 59 - i);
        }
        let d = w.charge(start + 6_000, 60, 60_000, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        // The first unit (at start) leaves at start + 60 000.
        assert_eq!(d.retry_after_ms, 54_000);
        assert_eq!(d.reset_after_ms, 60_000 - 6_000 + 5_900);
        assert!(!w.charge(start + 59_999, 60, 60_000, 1).allowed);
        assert!(w.charge(start + 60_000, 60, 60_000, 1).allowed);
    }

    #[test]
    fn the_window_edge_that_fixed_windows_get_wrong() {
        // 60 at the end of one minute, then the start of the next: a fixed
        // window admits 120 within one second; an exact window admits 60.
        let mut w = Window::new();
        let t0 = 59_500;
        let admitted = (0..60)
            .filter(|_| w.charge(t0, 60, 60_000, 1).allowed)
            .count()
            + (0..60)
                .filter(|_| w.charge(60_500, 60, 60_000, 1).allowed)
                .count();
        assert_eq!(admitted, 60);
    }

    #[test]
    fn refused_calls_consume_nothing() {
        let mut w = Window::new();
        assert!(w.charge(0, 2, 1_000, 2).allowed);
        for t in 1..1_000 {
            assert!(!w.charge(t, 2, 1_000, 1).allowed);
        }
        assert!(w.charge(1_000, 2, 1_000, 1).allowed);
    }

    #[test]
    fn cost_and_peek() {
        let mut w = Window::new();
        let d = w.charge(0, 10, 1_000, 7);
        assert_eq!((d.allowed, d.remaining), (true, 3));
        let d = w.charge(10, 10, 1_000, 4);
        assert_eq!((d.allowed, d.remaining, d.retry_after_ms), (false, 3, 990));
        let d = w.charge(10, 10, 1_000, 0);
        assert_eq!(
            (d.allowed, d.remaining, d.reset_after_ms, d.changed),
            (true, 3, 990, false)
        );
    }

    #[test]
    fn clock_stepping_back_is_stricter() {
        let mut w = Window::new();
        assert!(w.charge(10_000, 1, 1_000, 1).allowed);
        // The clock jumps back 5 s: the unit still counts until 11 000 of the
        // old clock, i.e. 6 000 ms from the new now.
        let d = w.charge(5_000, 1, 1_000, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 6_000);
        assert!(!w.charge(10_999, 1, 1_000, 1).allowed);
        assert!(w.charge(11_000, 1, 1_000, 1).allowed);
    }

    #[test]
    fn encoding_is_small_and_round_trips() {
        let mut w = Window::new();
        for i in 0..60 {
            w.charge(1_700_000_000_000 + i * 1_000, 60, 60_000, 1);
        }
        let bytes = w.encode();
        assert!(bytes.len() <= 1 + 8 + 1 + 59 * 3, "{}", bytes.len());
        assert_eq!(Window::decode(&bytes), Ok(w));
        assert_eq!(Window::new().encode(), Vec::<u8>::new());
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x02",
            b"\x01\x00",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",
            b"\x01\xff\xff\xff\xff\xff\xff\xff\x7f\x01\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x01",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
            b"hello world",
        ] {
            assert_eq!(Window::decode(bad), Err(Corrupt), "{bad:?}");
        }
    }

    /// The reference: all admissions ever, no pruning, brute force.
    #[derive(Default)]
    struct Reference {
        log: Vec<(i64, u64)>,
        clock: i64,
    }

    impl Reference {
        fn used_at(&self, t: i64, w: i64) -> u64 {
            self.log
                .iter()
                .filter(|(a, _)| *a > t - w)
                .map(|(_, u)| u)
                .sum()
        }
        fn would_admit(&self, t: i64, w: i64, limit: u64, cost: u64) -> bool {
            self.used_at(t, w) + cost <= limit
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_the_brute_force_reference(
            limit in 1u64..8,
            window in 1i64..400,
            calls in proptest::collection::vec((-30i64..120, 0u64..4), 1..80),
        ) {
            let mut w = Window::new();
            let mut r = Reference::default();
            let mut now = 1_000i64;
            for (step, cost) in calls {
                // Mostly forwards, sometimes backwards.
                now += step;
                let cost = cost.min(limit);
                let t = now.max(r.clock);
                let expect = r.would_admit(t, window, limit, cost);
                let before = w.clone();
                let d = w.charge(now, limit, window as u64, cost);
                prop_assert_eq!(d.allowed, expect);
                if expect && cost > 0 {
                    r.log.push((t, cost));
                    r.clock = t;
                }
                prop_assert_eq!(d.remaining, limit.saturating_sub(r.used_at(t, window)));
                if !d.allowed {
                    // Exact retry-after: the first instant it would fit.
                    let mut wait = 0i64;
                    while !r.would_admit(t + wait, window, limit, cost) {
                        wait += 1;
                    }
                    prop_assert_eq!(d.retry_after_ms as i64, t + wait - now);
                    prop_assert_eq!(&w, &before, "a refused call records nothing");
                }
                let newest = r.log.iter().map(|(a, _)| *a).max();
                let reset = newest.map_or(0, |a| (a + window - now).max(0));
                if r.used_at(t, window) > 0 {
                    prop_assert_eq!(d.reset_after_ms as i64, reset);
                }
                // The invariant itself: no interval of `window` ms holds more
                // than `limit` admitted units.
                for (a, _) in &r.log {
                    let sum: u64 = r.log.iter().filter(|(b, _)| *b >= *a && *b < a + window).map(|(_, u)| u).sum();
                    prop_assert!(sum <= limit);
                }
                prop_assert_eq!(Window::decode(&w.encode()).unwrap_or_default(), w.clone());
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Window::decode(&bytes);
        }
    }
}
