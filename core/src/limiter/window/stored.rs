//! Charging a window where it is stored ([`charge_with`], the exact
//! window's [`Algorithm::charge_stored`](crate::limiter::Algorithm)): the
//! decisions of [`Window::charge`], preceded by [`Window::check_times`],
//! without decoding the window.
//!
//! An admission walks from `head` past the entries that left the window
//! (each entry is walked past once in its life), then writes one of:
//! - [`Write::Tail`]: the new (or merged) last entry and the trailer, from
//!   the offset of the first byte that changed to the new end. The value
//!   only grows; replicated as `SETRANGE key offset tail` and `PEXPIREAT`.
//! - [`Write::Whole`]: the window compacted to its live entries, in the
//!   canonical form [`Window::encode`] gives (`head` = 1, the head entry's
//!   gap 0), replicated as `SET key value PXAT t`. Chosen when the dropped
//!   bytes outweigh the live ones (so a rewrite of L live bytes follows at
//!   least L bytes of O(1) appends: amortised O(1)), for a compacted window
//!   of at most [`SMALL_BYTES`] (a full `limit 60` window: rewriting it
//!   whole costs no more than a tail, and it never holds dead bytes), when
//!   every entry left the window, and when migrating a version 1 window.
//! - [`Write::Compact`]: the same compaction of a window too large to copy
//!   through `out`: its entries after the head move within the value.
//!
//! Cost: O(1) amortised in the entries of a version 2 window — O(1) to
//! count, plus the entries that left the window since the last admission,
//! plus, for a refused call, the entries walked until `cost` units fit,
//! plus an occasional compaction paid for by the appends before it. A
//! version 1 window is decoded whole, once (it is rewritten in version 2).

use super::v1;
use super::v2::{
    add_gap, body_end, eight_short, entry_len, put_entry, read_entry, single, Trailer, TRAILER_LEN,
};
#[cfg(doc)]
use super::Window;
use crate::limiter::{
    ms_u64, same_bucket, AheadOfClock, Charged, Corrupt, Decision, Format, Quota, Unusable, Write,
    CLOCK_SKEW_ALLOWANCE_MS,
};

/// A window whose compacted value is at most this many bytes is rewritten
/// whole ([`Write::Whole`]) on every admission: it never holds dropped
/// entries (a full `limit 60` window stays within 600 bytes of `MEMORY
/// USAGE`), and one `SET ... PXAT` costs Redis less than `SETRANGE` +
/// `PEXPIREAT` at that size. A full `limit 60` window of a minute is about
/// 210 bytes; of half an hour, at most about 300 (gaps of 16 s to 35 min
/// take 4 bytes). Past it, the tail form replicates fewer bytes.
pub const SMALL_BYTES: usize = 320;

/// Charges `quota` at `now` to the window stored as `stored` (empty: no
/// key), compacting windows up to `small` bytes whole ([`SMALL_BYTES`]
/// where the module charges; tests exercise the tail form on small windows
/// with 0). On admission `out` receives what to write (see [`Write`]);
/// after it, the key reads back as the window [`Window::charge`] leaves,
/// and expires when that window empties. A window ahead of the clock is
/// [`Unusable::Ahead`].
#[doc(hidden)]
pub fn charge_with(
    stored: &[u8],
    now: i64,
    quota: Quota,
    out: &mut Vec<u8>,
    small: usize,
) -> Result<Charged, Unusable> {
    out.clear();
    let c = Call {
        now,
        q: quota,
        w: quota.window(),
        small,
    };
    match Format::of(stored)? {
        None => Ok(c.empty(out)),
        Some(Format::WindowV1) => c.charge(&v1::migrated(stored, now)?, out, true),
        Some(Format::WindowV2) => c.charge(stored, out, false),
        // Another algorithm's state.
        Some(Format::Gcra) => Err(Corrupt.into()),
    }
}

/// One call's parameters.
struct Call {
    now: i64,
    q: Quota,
    /// The window, ms.
    w: i64,
    small: usize,
}

/// A version 2 value as read for one call: its trailer, the gap and units
/// of its newest entry, and where its entries end.
struct Value<'a> {
    bytes: &'a [u8],
    tr: Trailer,
    last_gap: u64,
    last_units: u64,
    end: usize,
}

/// The first entry still in the window, found by the walk from `head`.
struct Live {
    /// Its offset.
    start: usize,
    /// The time its gap counts from.
    base: i64,
    at: i64,
    units: u64,
    /// The offset of the entry after it.
    next: usize,
    /// The units of the entries walked past (left the window).
    dead: u64,
}

/// The last entry an admission writes: merged into the newest entry at
/// the same millisecond (from its offset), else appended after it (from
/// the end of the entries); and the trailer's new `newest` and `total`.
struct Tail {
    start: usize,
    gap: u64,
    units: u64,
    newest: i64,
    total: u64,
}

impl Tail {
    /// Appends the entry, then the trailer of a window whose head entry is
    /// at `head`, its gap counting from `head_base`, and this entry at
    /// `last`.
    fn put(&self, out: &mut Vec<u8>, head: usize, head_base: i64, last: usize) {
        put_entry(out, self.gap, self.units);
        Trailer {
            head,
            last,
            head_base,
            newest: self.newest,
            total: self.total,
        }
        .put(out);
    }
}

/// A refusal or a report: nothing written.
fn nothing(decision: Decision) -> Charged {
    Charged {
        decision,
        write: Write::Nothing,
    }
}

impl Call {
    /// ms from now until `at` + the window (0 if past).
    fn until(&self, at: i64) -> u64 {
        ms_u64(at.saturating_add(self.w).saturating_sub(self.now))
    }

    /// When a window whose newest entry is at `t` empties.
    fn expire_at(&self, t: i64) -> i64 {
        t.saturating_add(self.w)
    }

    /// No key: [`Window::charge`] on an empty window.
    fn empty(&self, out: &mut Vec<u8>) -> Charged {
        if self.q.cost == 0 {
            return nothing(self.q.report(0, 0));
        }
        if !self.q.fits(0) {
            return nothing(self.q.refused(0, 0, 0));
        }
        single(out, self.now, self.q.cost);
        Charged {
            decision: self.q.admitted(0, self.until(self.now)),
            write: Write::Whole {
                expire_at: self.expire_at(self.now),
            },
        }
    }

    /// A version 2 window (`whole`: rewrite it whole on admission).
    fn charge(&self, bytes: &[u8], out: &mut Vec<u8>, whole: bool) -> Result<Charged, Unusable> {
        let (tr, last_gap, last_units) = Trailer::read(bytes)?;
        if tr.newest > self.now.saturating_add(CLOCK_SKEW_ALLOWANCE_MS) {
            return Err(Unusable::Ahead(AheadOfClock {
                newest: tr.newest,
                now: self.now,
            }));
        }
        let v = Value {
            bytes,
            tr,
            last_gap,
            last_units,
            end: body_end(bytes)?,
        };
        // A clock that stepped backwards: work at the newest entry's time.
        let t = tr.newest.max(self.now);
        let horizon = t.saturating_sub(self.w);
        let reset_after_ms = self.until(tr.newest);
        // Walk past the entries that left the window since the last
        // admission (none if every entry did).
        let live = if tr.newest > horizon {
            Some(v.walk(horizon)?)
        } else {
            None
        };
        let used = v.used(live.as_ref())?;
        if self.q.cost == 0 {
            return Ok(nothing(self.q.report(used, reset_after_ms)));
        }
        if !self.q.fits(used) {
            let retry = match &live {
                Some(l) => self.retry(&v, l, used)?,
                None => 0,
            };
            return Ok(nothing(self.q.refused(used, retry, reset_after_ms)));
        }
        let decision = self.q.admitted(used, self.until(t));
        let write = match live {
            None => {
                single(out, t, self.q.cost);
                Write::Whole {
                    expire_at: self.expire_at(t),
                }
            }
            Some(l) => {
                let tail = v.tail(t, self.q.grain(), self.q.cost, used);
                self.admit(&v, &l, &tail, whole, out)?
            }
        };
        Ok(Charged { decision, write })
    }

    /// Writes an admission to a window whose first live entry is `l`: its
    /// `tail` and trailer, or the window compacted ([`Call::compact`]).
    fn admit(
        &self,
        v: &Value,
        l: &Live,
        tail: &Tail,
        whole: bool,
        out: &mut Vec<u8>,
    ) -> Result<Write, Corrupt> {
        let tail_len = entry_len(tail.gap, tail.units);
        let live_len = tail.start.saturating_sub(l.start).saturating_add(tail_len);
        let dead_len = l.start.saturating_sub(1);
        let compacted = live_len.saturating_add(1 + TRAILER_LEN);
        if whole || dead_len > live_len || compacted <= self.small {
            return self.compact(v.bytes, l, tail, whole, out);
        }
        tail.put(out, l.start, l.base, tail.start);
        Ok(Write::Tail {
            offset: tail.start,
            expire_at: self.expire_at(tail.newest),
        })
    }

    /// The window compacted to its live entries, in canonical form: the
    /// head entry (its gap 0), the entries after it as they are, the new
    /// last entry and the trailer. Copied through `out` (rewritten whole)
    /// if `whole` or small, else moved within the value.
    fn compact(
        &self,
        bytes: &[u8],
        l: &Live,
        tail: &Tail,
        whole: bool,
        out: &mut Vec<u8>,
    ) -> Result<Write, Corrupt> {
        let expire_at = self.expire_at(tail.newest);
        if tail.start == l.start {
            // The head is the newest entry, merged into: nothing to keep.
            single(out, tail.newest, tail.units);
            return Ok(Write::Whole { expire_at });
        }
        let keep = bytes.get(l.next..tail.start).ok_or(Corrupt)?;
        let head = Trailer::start(out, l.at, l.units);
        let head_len = out.len();
        let inline = whole || keep.len() <= self.small;
        if inline {
            let rest = entry_len(tail.gap, tail.units).saturating_add(TRAILER_LEN);
            out.reserve(keep.len().saturating_add(rest));
            out.extend_from_slice(keep);
        }
        let last = head_len.saturating_add(keep.len());
        tail.put(out, head.head, head.head_base, last);
        Ok(if inline {
            Write::Whole { expire_at }
        } else {
            Write::Compact {
                head_len,
                keep: l.next..tail.start,
                expire_at,
            }
        })
    }

    /// A refused call: ms until enough of the oldest units have left the
    /// window for `cost` to fit (0 if they never do).
    fn retry(&self, v: &Value, l: &Live, used: u64) -> Result<u64, Corrupt> {
        let (bytes, end) = (v.bytes, v.end);
        let (mut at, mut units, mut next) = (l.at, l.units, l.next);
        let mut left = used;
        loop {
            left = left.saturating_sub(units);
            if self.q.fits(left) {
                return Ok(self.until(at));
            }
            // Eight dense entries at once, while `cost` still would not fit
            // after them.
            while let Some((gaps, u)) = eight_short(bytes, next, end) {
                if self.q.fits(left.saturating_sub(u)) {
                    break;
                }
                left = left.saturating_sub(u);
                at = add_gap(at, gaps)?;
                next = next.saturating_add(8);
            }
            if next >= end {
                return Ok(0);
            }
            let (gap, u, n) = read_entry(bytes, next, end)?;
            if gap == 0 {
                return Err(Corrupt);
            }
            at = add_gap(at, gap)?;
            (units, next) = (u, n);
        }
    }
}

impl Value<'_> {
    /// Walks from the head past the entries at or before `horizon` (left
    /// the window), eight dense ones at a time where it can: the first
    /// entry still in the window. Call it only when the newest is.
    fn walk(&self, horizon: i64) -> Result<Live, Corrupt> {
        let tr = &self.tr;
        let (mut pos, mut base, mut dead) = (tr.head, tr.head_base, 0u64);
        loop {
            // Eight dense entries at once, while all have left.
            if let Some((gaps, units)) = eight_short(self.bytes, pos, tr.last) {
                let at = add_gap(base, gaps)?;
                if at <= horizon {
                    dead = dead.saturating_add(units);
                    base = at;
                    pos = pos.saturating_add(8);
                    continue;
                }
            }
            let (gap, units, next) = read_entry(self.bytes, pos, self.end)?;
            if gap == 0 && pos != tr.head {
                return Err(Corrupt);
            }
            let at = add_gap(base, gap)?;
            if pos == tr.last && at != tr.newest {
                return Err(Corrupt);
            }
            if at > horizon {
                return Ok(Live {
                    start: pos,
                    base,
                    at,
                    units,
                    next,
                    dead,
                });
            }
            dead = dead.saturating_add(units);
            base = at;
            pos = next;
        }
    }

    /// The units in the window, whose first live entry is `live`: the
    /// trailer's total less the units walked past, or counted again from
    /// `live` where the total saturated.
    fn used(&self, live: Option<&Live>) -> Result<u64, Corrupt> {
        match live {
            None => Ok(0),
            Some(l) if self.tr.total == u64::MAX => self.recount(l),
            Some(l) => self
                .tr
                .total
                .checked_sub(l.dead)
                .filter(|&u| u >= self.last_units)
                .ok_or(Corrupt),
        }
    }

    /// The units from the first live entry on, summed saturating (for a
    /// window whose total saturated).
    fn recount(&self, l: &Live) -> Result<u64, Corrupt> {
        let mut used = l.units;
        let mut next = l.next;
        while next < self.end {
            let (gap, units, n) = read_entry(self.bytes, next, self.end)?;
            if gap == 0 {
                return Err(Corrupt);
            }
            used = used.saturating_add(units);
            next = n;
        }
        Ok(used)
    }

    /// The last entry of an admission of `cost` at `t`, `used` units
    /// before it: merged into the newest entry, moved to `t`, when both
    /// lie in one bucket of `grain` ms (see [`crate::limiter::grain_ms`]).
    fn tail(&self, t: i64, grain: i64, cost: u64, used: u64) -> Tail {
        let total = used.saturating_add(cost);
        if same_bucket(self.tr.newest, t, grain) {
            Tail {
                start: self.tr.last,
                gap: self
                    .last_gap
                    .saturating_add(ms_u64(t.saturating_sub(self.tr.newest))),
                units: self.last_units.saturating_add(cost),
                newest: t,
                total,
            }
        } else {
            Tail {
                start: self.end,
                gap: ms_u64(t.saturating_sub(self.tr.newest)),
                units: cost,
                newest: t,
                total,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{charged, expire_at, same_as_limiter, Stored, A, NOW};
    use super::super::{Entry, Window};
    use super::*;
    use crate::limiter::{apply, charge_stored, Decision, FORMAT_V2, MAX_LIMIT};
    use proptest::prelude::*;

    /// A version 2 window by hand: `dead` entries (already dropped), then
    /// the head and further entries from `head_base`, as (gap, units).
    fn v2(dead: &[(u64, u64)], head_base: i64, live: &[(u64, u64)]) -> Vec<u8> {
        let mut out = vec![FORMAT_V2];
        for &(g, u) in dead {
            put_entry(&mut out, g, u);
        }
        let head = out.len();
        let (mut at, mut total, mut last) = (head_base, 0u64, head);
        for &(g, u) in live {
            last = out.len();
            put_entry(&mut out, g, u);
            at += g as i64;
            total += u;
        }
        Trailer {
            head,
            last,
            head_base,
            newest: at,
            total,
        }
        .put(&mut out);
        out
    }

    #[test]
    fn compaction_happens_when_dead_bytes_outweigh_live_ones() {
        // Live: m entries 20 ms apart from 10 000 (the head 1 byte, the
        // others 2); dead: k entries before them (2 bytes each). A call 20 ms
        // after the newest appends 2 bytes: live 2m + 1 bytes after it.
        let m = 10usize;
        let live: Vec<(u64, u64)> = (0..m).map(|i| (if i == 0 { 0 } else { 20 }, 1)).collect();
        let newest = 10_000 + 20 * (m as i64 - 1);
        let at = newest + 20;
        let expire_at = at + 60_000;
        let q = Quota::new(100, 60_000, 1);
        let call = |dead_entries: usize, small: usize| {
            let dead = vec![(20u64, 1u64); dead_entries];
            let bytes = v2(&dead, 10_000, &live);
            assert_eq!(bytes.len(), 1 + 2 * dead_entries + 2 * m - 1 + TRAILER_LEN);
            let w = Window::decode(&bytes).expect("well-formed");
            let mut out = Vec::new();
            let c = charge_with(&bytes, at, q, &mut out, small).unwrap();
            same_as_limiter(&bytes, &w, at, q, small).unwrap();
            (c.write, out)
        };
        // dead 2m <= live 2m + 1: not outweighed, the tail is written.
        let (write, out) = call(m, 0);
        let end = 1 + 2 * m + 2 * m - 1;
        assert_eq!(
            write,
            Write::Tail {
                offset: end,
                expire_at
            }
        );
        assert_eq!(out.len(), 2 + TRAILER_LEN);
        // dead 2m + 2 > live: compacted, canonical, the dead bytes gone;
        // the entries after the head move within the value.
        let (write, out) = call(m + 1, 0);
        let head = 1 + 2 * (m + 1);
        assert_eq!(
            write,
            Write::Compact {
                head_len: 2,
                keep: head + 1..head + 2 * m - 1,
                expire_at
            }
        );
        assert_eq!(out.len(), 2 + 2 + TRAILER_LEN);
        // Small enough to copy: rewritten whole.
        let compacted = 1 + 2 * m + 1 + TRAILER_LEN;
        let (write, out) = call(m + 1, 2 * m);
        assert!(matches!(write, Write::Whole { .. }), "{write:?}");
        assert_eq!(out.len(), compacted);
        // The small threshold, exactly: a compacted window of `small` bytes
        // is rewritten whole, one byte more is not.
        assert!(matches!(call(1, compacted).0, Write::Whole { .. }));
        assert!(matches!(call(1, compacted - 1).0, Write::Tail { .. }));
    }

    /// Refused calls and calls after a long pause walk a large dense
    /// window 8 entries at a time: still exact.
    #[test]
    fn walks_over_dense_windows_are_exact() {
        let w = charged(
            4_000,
            (0..3_000).map(|i| (NOW + i + i / 7, 1 + (i % 3) as u64)),
        );
        let bytes = w.encode();
        for (now, limit, cost) in [
            (NOW + 3_000, 6_000, 6_000),
            (NOW + 3_000, 6_000, 1),
            (NOW + 3_000, 6_000, 5_999),
            (NOW + 60_000 + 1_234, 6_000, 1),
            (NOW + 60_000 + 3_400, 6_000, 6_000),
            (NOW + 60_000 + 1_001, 7_000, 0),
        ] {
            for small in [0, SMALL_BYTES] {
                let q = Quota::new(limit, 60_000, cost);
                same_as_limiter(&bytes, &w, now, q, small).unwrap();
            }
        }
    }

    #[test]
    fn entries_leaving_the_window_move_the_head_and_count_once() {
        // Four live entries 10 ms apart (units 1, 2, 3, 4) in a 100 ms
        // window; a call at 10 035 + 100 drops the first three.
        let bytes = v2(&[(7, 9)], 10_000, &[(0, 1), (10, 2), (10, 3), (10, 4)]);
        let w = Window::decode(&bytes).expect("well-formed");
        assert_eq!(
            w.entries().map(|e| e.at).collect::<Vec<_>>(),
            [10_000, 10_010, 10_020, 10_030]
        );
        let now = 10_025 + 100;
        for cost in 0..=10 {
            for small in [0, SMALL_BYTES] {
                same_as_limiter(&bytes, &w, now, Quota::new(10, 100, cost), small).unwrap();
            }
        }
        let mut out = Vec::new();
        let c = charge_with(&bytes, now, Quota::new(10, 100, 5), &mut out, 0).unwrap();
        // 4 units live (the entry at 10 030), 5 more fit; the dead bytes
        // (1 + 3 entries, 8 bytes) outweigh the live ones (4): compacted.
        assert_eq!((c.decision.allowed, c.decision.remaining), (true, 1));
        assert!(matches!(c.write, Write::Whole { .. }));
        let mut value = bytes.clone();
        apply(&mut value, &c.write, &out);
        assert_eq!(
            Window::decode(&value)
                .unwrap()
                .entries()
                .copied()
                .collect::<Vec<_>>(),
            [
                Entry {
                    at: 10_030,
                    units: 4
                },
                Entry { at: now, units: 5 }
            ]
        );
    }

    #[test]
    fn every_entry_gone_starts_afresh() {
        let bytes = v2(&[], 5_000, &[(0, 3), (4, 2)]);
        let mut out = Vec::new();
        let c = charge_with(&bytes, 5_004 + 1_000, Quota::new(5, 1_000, 1), &mut out, 0).unwrap();
        assert_eq!(c.decision.remaining, 4);
        assert_eq!(c.write, Write::Whole { expire_at: 7_004 });
        let mut fresh = Window::new();
        fresh.charge(6_004, 5, 1_000, 1);
        assert_eq!(out, fresh.encode());
    }

    /// `limit 100000` at one call per ms over a 60 s window: 60 000 live
    /// entries in steady state, yet every admission writes a few bytes, and
    /// compactions add about 2 bytes per call on average.
    #[test]
    fn a_large_window_costs_constant_amortised() {
        let mut s = Stored::new(SMALL_BYTES);
        let (mut written, mut tails, mut wholes, mut largest) = (0usize, 0usize, 0usize, 0usize);
        let calls = 150_000i64;
        for i in 0..calls {
            let now = NOW + i;
            // (The limiter counts in O(live entries): the live count is
            // known here.)
            let live = (i + 1).min(60_000) as u64;
            let d = Decision {
                allowed: true,
                remaining: MAX_LIMIT - live,
                retry_after_ms: 0,
                reset_after_ms: 60_000,
            };
            let before = s.bytes.len();
            let mut out = std::mem::take(&mut s.out);
            let c = charge_stored(&s.bytes, now, MAX_LIMIT, 60_000, 1, &mut out).unwrap();
            assert_eq!(c.decision, d, "call {i}");
            apply(&mut s.bytes, &c.write, &out);
            match c.write {
                Write::Tail { offset, .. } => {
                    tails += 1;
                    assert!(offset + out.len() >= before);
                }
                Write::Compact { ref keep, .. } => {
                    wholes += 1;
                    written += keep.len();
                }
                _ => wholes += 1,
            }
            written += out.len();
            largest = largest.max(out.len());
            s.out = out;
        }
        let w = Window::decode(&s.bytes).unwrap();
        let ats: Vec<i64> = w.entries().map(|e| e.at).collect();
        assert_eq!(ats, (NOW + calls - 60_000..NOW + calls).collect::<Vec<_>>());
        let per_call = written as f64 / calls as f64;
        assert!(
            per_call < 2.0 + 2.0 + TRAILER_LEN as f64 + 4.0,
            "{per_call} bytes per call"
        );
        assert!(wholes < 700, "{wholes} rewrites, {tails} tails");
        assert!(
            largest <= 512,
            "{largest}: a compaction moves its entries in place"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Arbitrary bytes in the shape of a version 2 window (trailer
        /// fields near the real ones): never a panic; whatever is accepted
        /// and fully well-formed decides as the limiter.
        #[test]
        fn stored_form_on_hostile_bytes(
            body in proptest::collection::vec(any::<u8>(), 1..40),
            head in 0u32..48,
            last in 0u32..48,
            head_base in prop_oneof![Just(NOW), any::<i64>()],
            newest in prop_oneof![NOW..NOW + 200, any::<i64>()],
            total in prop_oneof![0u64..20, any::<u64>()],
            now in prop_oneof![NOW..NOW + 500, any::<i64>()],
            limit in 1u64..20,
            cost in 0u64..20,
            small in prop_oneof![Just(0usize), Just(SMALL_BYTES)],
        ) {
            let mut bytes = vec![FORMAT_V2];
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(&head.to_le_bytes());
            bytes.extend_from_slice(&last.to_le_bytes());
            bytes.extend_from_slice(&head_base.to_le_bytes());
            bytes.extend_from_slice(&newest.to_le_bytes());
            bytes.extend_from_slice(&total.to_le_bytes());
            let mut out = Vec::new();
            let q = Quota::new(limit, 1_000, cost.min(limit));
            let r = charge_with(&bytes, now, q, &mut out, small);
            if let Ok(w) = Window::decode(&bytes) {
                same_as_limiter(&bytes, &w, now, q, small).map_err(TestCaseError::fail)?;
            } else if let Ok(c) = r {
                // Not fully well-formed, but nothing read contradicted it:
                // whatever is written is still bounded by the window.
                if let Some(at) = expire_at(&c.write) {
                    prop_assert!(at <= now.saturating_add(1_000 + A));
                }
            }
        }
    }
}
