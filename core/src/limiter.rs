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
//! Stored form (a plain Redis string): version byte `1`, the oldest entry's
//! timestamp as i64 little-endian, its units as a LEB128 varint, then for each
//! further entry the gap to the previous one and its units, both LEB128. For
//! 60 single-unit calls spread over a minute that is about 190 bytes.

use crate::keys::printable;
use crate::Error;
use std::collections::VecDeque;

/// Version byte of the stored form.
pub const FORMAT_V1: u8 = 1;
/// Largest `limit` accepted.
pub const MAX_LIMIT: u64 = 100_000;
/// Largest window accepted, seconds (one year).
pub const MAX_WINDOW_S: u64 = 31_536_000;

/// How far after `now` a stored window's newest entry may lie, ms: the
/// largest backwards clock step (or clock offset between a primary and the
/// replica promoted in its place) that the limiter absorbs by working at
/// the newest entry's time. A window further ahead is refused as
/// [`AheadOfClock`].
///
/// One minute. Clocks kept by NTP or chrony are within milliseconds of each
/// other; they step (rather than slew) only past 128 ms (ntpd) or at boot
/// (chrony's `makestep`), and a leap second steps by one second, so a minute
/// leaves a margin of more than 50x over any step a synchronised host takes
/// while serving. A larger offset means a host without working time sync:
/// that is reported (the error lasts until the clock is back within the
/// allowance, and writes nothing) rather than silently absorbed. On the
/// other side, the allowance is all a foreign or hand-made window can add to
/// a lockout: an agent is locked out at most `window + 1 min` from now,
/// where anyone able to write the key could lock it out for `window` anyway.
pub const CLOCK_SKEW_ALLOWANCE_MS: i64 = 60_000;

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

/// A well-formed window whose newest entry lies more than
/// [`CLOCK_SKEW_ALLOWANCE_MS`] after `now`: written by hand, by another
/// client, or under a clock that far ahead. See [`Window::check_times`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AheadOfClock {
    /// The newest entry's timestamp, ms.
    pub newest: i64,
    /// The time it was checked against, ms.
    pub now: i64,
}

impl AheadOfClock {
    /// How far the newest entry lies after `now`, ms (saturating).
    pub fn ahead_ms(&self) -> u64 {
        ms_u64(self.newest.saturating_sub(self.now))
    }

    /// The error reply for the window stored at `key`.
    pub fn error(&self, key: &[u8]) -> Error {
        Error::WindowAhead {
            key: printable(key),
            ahead_ms: self.ahead_ms(),
        }
    }
}

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
    /// only reports.
    ///
    /// A window refused by [`check_times(now)`](Window::check_times) is
    /// never charged nor extended: the call (a report included) is refused,
    /// records nothing (`changed == false`), with `remaining` 0,
    /// `retry_after_ms` the time until the clock is back within the
    /// allowance and `reset_after_ms` the time until the window would be
    /// empty. Callers should still call `check_times` first, so as to reply
    /// an error rather than this refusal.
    pub fn charge(&mut self, now: i64, limit: u64, window_ms: u64, cost: u64) -> Decision {
        let w = i64::try_from(window_ms).unwrap_or(i64::MAX);
        if let Err(ahead) = self.check_times(now) {
            return Decision {
                allowed: false,
                remaining: 0,
                retry_after_ms: ms_u64(
                    ahead
                        .newest
                        .saturating_sub(CLOCK_SKEW_ALLOWANCE_MS)
                        .saturating_sub(now),
                ),
                reset_after_ms: ms_u64(ahead.newest.saturating_add(w).saturating_sub(now)),
                changed: false,
            };
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
    }

    impl Reference {
        /// The newest admission (the log is in time order).
        fn newest(&self) -> Option<i64> {
            self.log.last().map(|(a, _)| *a)
        }
        /// The effective time at `now`: never before the newest admission.
        fn clock(&self, now: i64) -> i64 {
            self.newest().map_or(now, |a| a.max(now))
        }
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

    /// Runs `calls` (clock step, cost) from `now = 1 000` against the
    /// limiter and the reference, decoding the stored form before each call
    /// as the module does. A call whose clock lies more than the allowance
    /// behind the newest admission must be refused by `check_times` and by
    /// `charge`, recording nothing; every other call must match the
    /// reference exactly, as it did before the allowance existed.
    fn run_against_reference(
        limit: u64,
        window: i64,
        calls: &[(i64, u64)],
    ) -> Result<(), TestCaseError> {
        let mut w = Window::new();
        let mut r = Reference::default();
        let mut now = 1_000i64;
        for &(step, cost) in calls {
            now += step;
            let cost = cost.min(limit);
            w = Window::decode(&w.encode()).unwrap_or_default();
            let ahead = r
                .newest()
                .filter(|&a| a > now + CLOCK_SKEW_ALLOWANCE_MS)
                .map(|newest| AheadOfClock { newest, now });
            prop_assert_eq!(w.check_times(now), ahead.map_or(Ok(()), Err));
            let before = w.clone();
            let d = w.charge(now, limit, window as u64, cost);
            if let Some(a) = ahead {
                let refused = Decision {
                    allowed: false,
                    remaining: 0,
                    retry_after_ms: (a.newest - CLOCK_SKEW_ALLOWANCE_MS - now) as u64,
                    reset_after_ms: (a.newest + window - now) as u64,
                    changed: false,
                };
                prop_assert_eq!(d, refused);
                prop_assert_eq!(&w, &before, "a window ahead of the clock is never charged");
                continue;
            }
            let t = r.clock(now);
            let expect = r.would_admit(t, window, limit, cost);
            prop_assert_eq!(d.allowed, expect);
            prop_assert_eq!(d.changed, expect && cost > 0);
            if expect && cost > 0 {
                r.log.push((t, cost));
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
            let newest = r.newest();
            let reset = newest.map_or(0, |a| (a + window - now).max(0));
            if r.used_at(t, window) > 0 {
                prop_assert_eq!(d.reset_after_ms as i64, reset);
            }
            // An accepted window empties within window + allowance.
            if let Some(at) = w.empty_at(window as u64) {
                prop_assert!(at <= now + window + CLOCK_SKEW_ALLOWANCE_MS);
            }
            // The invariant itself: no interval of `window` ms holds more
            // than `limit` admitted units.
            for (a, _) in &r.log {
                let sum: u64 = r
                    .log
                    .iter()
                    .filter(|(b, _)| *b >= *a && *b < a + window)
                    .map(|(_, u)| u)
                    .sum();
                prop_assert!(sum <= limit);
            }
            prop_assert_eq!(Window::decode(&w.encode()).unwrap_or_default(), w.clone());
        }
        Ok(())
    }

    /// The stored form of `base` then `(gap, units)` entries, built by hand
    /// (any values, unlike `encode`).
    fn crafted(base: i64, units: u64, rest: &[(u64, u64)]) -> Vec<u8> {
        let mut out = vec![FORMAT_V1];
        out.extend_from_slice(&base.to_le_bytes());
        put_varint(&mut out, units);
        for &(gap, units) in rest {
            put_varint(&mut out, gap);
            put_varint(&mut out, units);
        }
        out
    }

    const NOW: i64 = 1_700_000_000_000;
    const A: i64 = CLOCK_SKEW_ALLOWANCE_MS;

    #[test]
    fn a_window_from_the_far_future_is_refused_never_extended() {
        // Well-formed: the limiter cannot tell it from a real window by its
        // bytes alone, only by its time.
        let bytes = crafted(i64::MAX, 1, &[]);
        let w = Window::decode(&bytes).expect("well-formed");
        for now in [i64::MIN, -1, 0, NOW, i64::MAX - A - 1] {
            assert_eq!(
                w.check_times(now),
                Err(AheadOfClock {
                    newest: i64::MAX,
                    now
                })
            );
            for cost in [0, 1, 5] {
                let mut c = w.clone();
                let d = c.charge(now, 5, 60_000, cost);
                assert!(!d.allowed && !d.changed, "{now} {cost}: {d:?}");
                assert_eq!(d.remaining, 0);
                assert_eq!(c, w, "nothing recorded");
                assert_eq!(c.encode(), bytes);
            }
        }
        let d = w.clone().charge(NOW, 5, 60_000, 1);
        assert_eq!(d.retry_after_ms, (i64::MAX - A - NOW) as u64);
        assert_eq!(d.reset_after_ms, (i64::MAX - NOW) as u64);
        // Only a clock that is itself near the end of time accepts it, and
        // nothing overflows there.
        for now in [i64::MAX - A, i64::MAX - 1, i64::MAX] {
            let mut c = w.clone();
            assert_eq!(c.check_times(now), Ok(()));
            let d = c.charge(now, 5, 60_000, 1);
            assert!(d.allowed && d.changed);
            assert_eq!(c.empty_at(60_000), Some(i64::MAX));
            assert_eq!(Window::decode(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn the_allowance_boundary_is_exact() {
        let w = Window::decode(&crafted(NOW + A, 1, &[])).expect("well-formed");
        assert_eq!(w.check_times(NOW), Ok(()));
        let mut c = w.clone();
        let d = c.charge(NOW, 5, 60_000, 1);
        assert_eq!(
            d,
            Decision {
                allowed: true,
                remaining: 3,
                retry_after_ms: 0,
                reset_after_ms: (A + 60_000) as u64,
                changed: true,
            }
        );
        // Worked at the newest entry's time, so no later than now + allowance.
        assert_eq!(c.empty_at(60_000), Some(NOW + A + 60_000));

        let w = Window::decode(&crafted(NOW + A + 1, 1, &[])).expect("well-formed");
        let ahead = AheadOfClock {
            newest: NOW + A + 1,
            now: NOW,
        };
        assert_eq!(w.check_times(NOW), Err(ahead));
        assert_eq!(ahead.ahead_ms(), (A + 1) as u64);
        let mut c = w.clone();
        let d = c.charge(NOW, 5, 60_000, 1);
        assert_eq!(
            d,
            Decision {
                allowed: false,
                remaining: 0,
                retry_after_ms: 1,
                reset_after_ms: (A + 1 + 60_000) as u64,
                changed: false,
            }
        );
        assert_eq!(c, w);
        // One millisecond later the clock is back within the allowance.
        assert_eq!(w.check_times(NOW + 1), Ok(()));
        // Older entries do not matter: the newest bounds them all.
        let w = Window::decode(&crafted(i64::MIN, 1, &[(u64::MAX / 2, 1)])).expect("well-formed");
        assert_eq!(w.check_times(NOW), Ok(()));
        let w = Window::decode(&crafted(NOW, 1, &[(A as u64 + 1, 1)])).expect("well-formed");
        assert!(w.check_times(NOW).is_err());
    }

    #[test]
    fn a_clock_step_back_beyond_the_allowance_refuses_until_it_catches_up() {
        let mut w = Window::new();
        assert!(w.charge(NOW, 10, 1_000, 1).allowed);
        let stored = w.clone();
        // 5 s beyond the allowance: refused, nothing recorded, retry when the
        // clock is back within the allowance.
        let back = NOW - A - 5_000;
        assert!(w.check_times(back).is_err());
        let d = w.charge(back, 10, 1_000, 1);
        assert_eq!(
            (d.allowed, d.changed, d.retry_after_ms),
            (false, false, 5_000)
        );
        assert_eq!(w, stored);
        // Within the allowance: stricter, as before, at the newest entry's
        // time.
        let d = w.charge(back + 5_000, 10, 1_000, 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 8);
        assert_eq!(d.reset_after_ms, (A + 1_000) as u64);
        assert_eq!(w.entries().last().map(|e| e.at), Some(NOW));
    }

    #[test]
    fn huge_units_and_extreme_times_never_panic() {
        let windows = [
            crafted(i64::MIN, u64::MAX, &[]),
            crafted(i64::MIN, u64::MAX, &[(u64::MAX >> 1, u64::MAX)]),
            crafted(NOW - 10, u64::MAX, &[(5, u64::MAX), (5, u64::MAX)]),
            crafted(NOW, 1, &[(1, u64::MAX)]),
            crafted(i64::MAX - 1, u64::MAX, &[(1, u64::MAX)]),
        ];
        for bytes in &windows {
            let w = Window::decode(bytes).expect("well-formed");
            for now in [i64::MIN, -1, 0, NOW, i64::MAX - A, i64::MAX] {
                for window_ms in [1, 60_000, MAX_WINDOW_S * 1_000, u64::MAX] {
                    for limit in [1, MAX_LIMIT, u64::MAX] {
                        for cost in [0, 1, limit] {
                            let mut c = w.clone();
                            let accepted = c.check_times(now).is_ok();
                            let d = c.charge(now, limit, window_ms, cost);
                            assert!(d.retry_after_ms <= d.reset_after_ms || !accepted);
                            if !accepted || !d.changed {
                                assert_eq!(c, w);
                            }
                            if accepted {
                                let wi = i64::try_from(window_ms).unwrap_or(i64::MAX);
                                let bound = now.saturating_add(wi).saturating_add(A);
                                assert!(c.empty_at(window_ms).is_none_or(|at| at <= bound));
                            }
                            assert_eq!(Window::decode(&c.encode()), Ok(c));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_error_names_the_key_and_the_clock() {
        let e = AheadOfClock {
            newest: i64::MAX,
            now: NOW,
        }
        .error(b"okome:budget:rate:{a}");
        assert_eq!(
            e.to_string(),
            format!(
                "ERR 'okome:budget:rate:{{a}}' holds an okome budget window whose newest entry is \
                 {} ms in the future, beyond the 60000 ms clock-skew allowance (written by another \
                 client, or under a clock that far ahead?); nothing was charged or written",
                i64::MAX - NOW
            )
        );
        // Unprintable key bytes are escaped, as in every other error.
        let e = AheadOfClock { newest: 1, now: 0 }.error(b"okome:budget:rate:{\x00'}");
        assert!(
            e.to_string()
                .starts_with("ERR 'okome:budget:rate:{\\x00\\x27}' holds"),
            "{e}"
        );
    }

    fn step() -> impl Strategy<Value = i64> {
        prop_oneof![
            6 => -30i64..120,
            1 => -(A + 300)..-(A - 300),
            1 => (A - 300)..(A + 300),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_the_brute_force_reference(
            limit in 1u64..8,
            window in 1i64..400,
            // Mostly forwards, sometimes backwards (within the allowance).
            calls in proptest::collection::vec((-30i64..120, 0u64..4), 1..80),
        ) {
            run_against_reference(limit, window, &calls)?;
        }

        #[test]
        fn clock_jumps_around_the_allowance_are_refused_or_exact(
            limit in 1u64..8,
            window in 1i64..400,
            calls in proptest::collection::vec((step(), 0u64..4), 1..80),
        ) {
            run_against_reference(limit, window, &calls)?;
        }

        #[test]
        fn crafted_windows_are_bounded_by_the_allowance(
            base in prop_oneof![
                any::<i64>(),
                Just(i64::MAX),
                Just(i64::MIN),
                (NOW - 200_000)..(NOW + 200_000),
            ],
            units in prop_oneof![1u64..10, any::<u64>()],
            rest in proptest::collection::vec(
                (prop_oneof![1u64..100_000, any::<u64>()], prop_oneof![1u64..10, any::<u64>()]),
                0..6,
            ),
            now in prop_oneof![any::<i64>(), Just(NOW), Just(i64::MAX), Just(i64::MIN)],
            limit in prop_oneof![1u64..10, Just(MAX_LIMIT), any::<u64>()],
            window_ms in prop_oneof![1u64..100_000, Just(MAX_WINDOW_S * 1_000), any::<u64>()],
            cost in any::<u64>(),
        ) {
            let Ok(w) = Window::decode(&crafted(base, units, &rest)) else {
                return Ok(());
            };
            let cost = cost % limit.saturating_add(1);
            let mut c = w.clone();
            let check = c.check_times(now);
            let d = c.charge(now, limit, window_ms, cost);
            let wi = i64::try_from(window_ms).unwrap_or(i64::MAX);
            match check {
                Err(a) => {
                    prop_assert!(!d.allowed && !d.changed);
                    prop_assert_eq!(&c, &w);
                    prop_assert!(a.newest > now.saturating_add(A));
                }
                Ok(()) => {
                    let bound = now.saturating_add(wi).saturating_add(A);
                    prop_assert!(c.empty_at(window_ms).is_none_or(|at| at <= bound));
                    prop_assert!(d.reset_after_ms <= ms_u64(A.saturating_add(wi)));
                    prop_assert!(d.retry_after_ms <= d.reset_after_ms);
                    prop_assert_eq!(d.changed, d.allowed && cost > 0);
                    if !d.changed {
                        prop_assert_eq!(&c, &w);
                    }
                }
            }
            prop_assert_eq!(Window::decode(&c.encode()), Ok(c));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Window::decode(&bytes);
        }
    }
}
