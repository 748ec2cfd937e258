//! The exact window against its model, in memory and where it is stored;
//! and the harness the tests of its stored forms share.

use super::v2::{put_varint, Trailer};
use super::*;
use crate::limiter::model::Reference;
use crate::limiter::{apply, Unusable, Write, FORMAT_V1, FORMAT_V2, MAX_LIMIT, MAX_WINDOW_S};
use proptest::prelude::*;

pub(super) const NOW: i64 = 1_700_000_000_000;
pub(super) const A: i64 = CLOCK_SKEW_ALLOWANCE_MS;

/// A window charged with `calls` (time, cost) against `limit` per minute.
pub(super) fn charged(limit: u64, calls: impl IntoIterator<Item = (i64, u64)>) -> Window {
    let mut w = Window::new();
    for (at, cost) in calls {
        w.charge(at, limit, 60_000, cost);
    }
    w
}

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
    let before = w.clone();
    let d = w.charge(10, 10, 1_000, 0);
    assert_eq!((d.allowed, d.remaining, d.reset_after_ms), (true, 3, 990));
    assert_eq!(w, before, "a report records nothing");
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

/// Whether a charge records anything: an admission of some units.
fn records(d: &Decision, cost: u64) -> bool {
    d.allowed && cost > 0
}

/// Runs `calls` (clock step, cost) from `now = 1 000` against the limiter
/// and the reference, decoding the stored form before each call as the
/// module does. A call whose clock lies more than the allowance behind
/// the newest admission must be refused by `check_times` and by `charge`,
/// recording nothing; every other call must match the reference exactly,
/// as it did before the allowance existed.
///
/// Alongside, the same calls go to windows in their stored form, as the
/// module keeps them ([`Stored`]): rewritten whole only when small (the
/// module's threshold), with the tail form wherever it applies (threshold
/// 0), and one written in version 1 halfway through (a window of the
/// previous release, migrated by its next admission). Each must decide
/// exactly as the limiter and read back as its window.
fn run_against_reference(
    (limit, window, calls): (u64, i64, Vec<(i64, u64)>),
) -> Result<(), TestCaseError> {
    let mut w = Window::new();
    let mut r = Reference::default();
    let mut now = 1_000i64;
    let mut stored = [Stored::new(SMALL_BYTES), Stored::new(0), Stored::new(0)];
    for (i, &(step, cost)) in calls.iter().enumerate() {
        now += step;
        let q = Quota::new(limit, window as u64, cost.min(limit));
        w = Window::decode(&w.encode()).unwrap_or_default();
        if i == calls.len() / 2 {
            stored[2].bytes = w.encode_v1();
        }
        let ahead = r
            .newest()
            .filter(|&a| a > now + CLOCK_SKEW_ALLOWANCE_MS)
            .map(|newest| AheadOfClock { newest, now });
        prop_assert_eq!(w.check_times(now), ahead.map_or(Ok(()), Err));
        let before = w.clone();
        let d = w.charge(now, q.limit, q.window_ms, q.cost);
        for s in &mut stored {
            s.charge(now, q, ahead, &d, &w)?;
        }
        if let Some(a) = ahead {
            let refused = Decision {
                allowed: false,
                remaining: 0,
                retry_after_ms: (a.newest - CLOCK_SKEW_ALLOWANCE_MS - now) as u64,
                reset_after_ms: (a.newest + window - now) as u64,
            };
            prop_assert_eq!(d, refused);
            prop_assert_eq!(&w, &before, "a window ahead of the clock is never charged");
            continue;
        }
        check_against(&mut r, now, q, &d)?;
        if !records(&d, q.cost) {
            prop_assert_eq!(&w, &before, "a refusal or a report records nothing");
        }
        // An accepted window empties within window + allowance.
        if let Some(at) = w.empty_at(window as u64) {
            prop_assert!(at <= now + window + CLOCK_SKEW_ALLOWANCE_MS);
        }
        prop_assert_eq!(Window::decode(&w.encode()).unwrap_or_default(), w.clone());
    }
    Ok(())
}

/// Checks the decision `d` of a call at `now` (within the allowance)
/// against the reference `r`, and records it there.
fn check_against(r: &mut Reference, now: i64, q: Quota, d: &Decision) -> Result<(), TestCaseError> {
    let (window, cost) = (q.window(), q.cost);
    let t = r.clock(now);
    let expect = r.would_admit(t, window, q.limit, cost);
    prop_assert_eq!(d.allowed, expect);
    if records(d, cost) {
        r.log.push((t, cost));
    }
    prop_assert_eq!(d.remaining, q.limit.saturating_sub(r.used_at(t, window)));
    if !d.allowed {
        // Exact retry-after: the first instant it would fit.
        let wait = r.wait(t, window, q.limit, cost);
        prop_assert_eq!(d.retry_after_ms as i64, t + wait - now);
    }
    let reset = r.newest().map_or(0, |a| (a + window - now).max(0));
    if r.used_at(t, window) > 0 {
        prop_assert_eq!(d.reset_after_ms as i64, reset);
    }
    // The invariant itself.
    prop_assert!(r.never_over(window, q.limit));
    Ok(())
}

/// A window as Redis holds it: charged through [`charge_with`] and
/// changed only by [`apply`], as the primary, a replica and an AOF replay
/// change it.
pub(super) struct Stored {
    pub bytes: Vec<u8>,
    small: usize,
    pub out: Vec<u8>,
}

impl Stored {
    pub fn new(small: usize) -> Stored {
        Stored {
            bytes: Vec::new(),
            small,
            out: Vec::new(),
        }
    }

    /// Charges, and checks the outcome against the limiter's decision `d`
    /// for the same call and the window `after` it.
    pub(super) fn charge(
        &mut self,
        now: i64,
        q: Quota,
        ahead: Option<AheadOfClock>,
        d: &Decision,
        after: &Window,
    ) -> Result<(), TestCaseError> {
        let before = self.bytes.clone();
        let r = charge_with(&self.bytes, now, q, &mut self.out, self.small);
        if let Some(a) = ahead {
            prop_assert_eq!(r, Err(Unusable::Ahead(a)));
            return Ok(());
        }
        let c = match r {
            Ok(c) => c,
            Err(e) => return Err(TestCaseError::fail(format!("{e:?} on {before:?}"))),
        };
        prop_assert_eq!(&c.decision, d);
        apply(&mut self.bytes, &c.write, &self.out);
        let changed = records(d, q.cost);
        let expires = expire_at(&c.write);
        prop_assert_eq!(expires.is_some(), changed, "written iff admitted");
        if expires.is_some() {
            prop_assert_eq!(expires, after.empty_at(q.window_ms));
        }
        self.check_write(&c.write, &before, after)?;
        if after.is_empty() {
            prop_assert!(self.bytes.is_empty() || !changed);
        } else {
            prop_assert_eq!(&Window::decode(&self.bytes).expect("decodes"), after);
        }
        Ok(())
    }

    /// The value `before` became `self.bytes` by `write`: checks it is
    /// the form that write promises.
    fn check_write(
        &self,
        write: &Write,
        before: &[u8],
        after: &Window,
    ) -> Result<(), TestCaseError> {
        match *write {
            Write::Nothing => prop_assert_eq!(&self.bytes[..], before, "nothing written"),
            Write::Delete => prop_assert!(false, "a charge never deletes"),
            Write::Whole { .. } => {
                prop_assert_eq!(&self.bytes, &after.encode(), "a rewrite is canonical")
            }
            Write::Compact {
                head_len, ref keep, ..
            } => {
                prop_assert_eq!(&self.bytes, &after.encode(), "a compaction is canonical");
                prop_assert!(head_len <= keep.start, "moves towards the start");
                prop_assert!(keep.len() > self.small);
                prop_assert!(before.first() == Some(&FORMAT_V2));
                let (tr, ..) = Trailer::read(before).expect("a trailer");
                prop_assert!(keep.end <= before.len() - TRAILER_LEN && keep.start > tr.head);
            }
            Write::Tail { offset, .. } => {
                prop_assert!(before.first() == Some(&FORMAT_V2));
                prop_assert!(offset + self.out.len() >= before.len(), "never shrinks");
                prop_assert!(self.out.len() <= 20 + TRAILER_LEN, "a tail is small");
                let (tr, ..) = Trailer::read(&self.bytes).expect("a trailer");
                let end = self.bytes.len() - TRAILER_LEN;
                prop_assert!(
                    tr.head - 1 <= end - tr.head,
                    "dead bytes never outweigh live"
                );
                prop_assert!(end - tr.head + 1 + TRAILER_LEN > self.small);
            }
        }
        Ok(())
    }
}

/// When the key `write` writes expires (`None`: nothing written).
pub(super) fn expire_at(write: &Write) -> Option<i64> {
    match *write {
        Write::Nothing | Write::Delete => None,
        Write::Whole { expire_at }
        | Write::Tail { expire_at, .. }
        | Write::Compact { expire_at, .. } => Some(expire_at),
    }
}

/// The stored form of `base` then `(gap, units)` entries, built by hand
/// (any values, unlike `encode`).
pub(super) fn crafted(base: i64, units: u64, rest: &[(u64, u64)]) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    out.extend_from_slice(&base.to_le_bytes());
    put_varint(&mut out, units);
    for &(gap, units) in rest {
        put_varint(&mut out, gap);
        put_varint(&mut out, units);
    }
    out
}

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
            assert!(!d.allowed, "{now} {cost}: {d:?}");
            assert_eq!(d.remaining, 0);
            assert_eq!(c, w, "nothing recorded");
            assert_eq!(c.encode_v1(), bytes);
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
        assert!(d.allowed);
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
    assert_eq!(d, Quota::new(5, 60_000, 1).admitted(1, (A + 60_000) as u64));
    assert_eq!((d.allowed, d.remaining, d.retry_after_ms), (true, 3, 0));
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
    let reset = (A + 1 + 60_000) as u64;
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_ms, d.reset_after_ms),
        (false, 0, 1, reset)
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
    assert_eq!((d.allowed, d.retry_after_ms), (false, 5_000));
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
                        let q = Quota::new(limit, window_ms, cost);
                        bounded_by_the_allowance(bytes, &w, now, q).unwrap();
                    }
                }
            }
        }
    }
}

/// Charges the window `w`, stored as `bytes`, at `now` in memory and
/// where it is stored: a window accepted at `now` empties within window +
/// allowance, one refused (or refusing) is left as it is, and both forms
/// decide alike.
fn bounded_by_the_allowance(bytes: &[u8], w: &Window, now: i64, q: Quota) -> Result<(), String> {
    let mut c = w.clone();
    let check = c.check_times(now);
    let d = c.charge(now, q.limit, q.window_ms, q.cost);
    let fail = |what: &str| Err(format!("{what}: {d:?} at {now} on {bytes:?}"));
    match check {
        Err(a) if d.allowed || c != *w || a.newest <= now.saturating_add(A) => {
            return fail("charged ahead of the clock")
        }
        Err(_) => {}
        Ok(()) => {
            let bound = now.saturating_add(q.window()).saturating_add(A);
            if c.empty_at(q.window_ms).is_some_and(|at| at > bound)
                || d.reset_after_ms > ms_u64(A.saturating_add(q.window()))
                || d.retry_after_ms > d.reset_after_ms
                || (!records(&d, q.cost) && c != *w)
            {
                return fail("beyond the allowance");
            }
        }
    }
    if Window::decode(&c.encode()) != Ok(c) {
        return fail("encoding");
    }
    for form in [bytes.to_vec(), w.encode()] {
        same_as_limiter(&form, w, now, q, small())?;
    }
    Ok(())
}

/// Some thresholds: the module's, always the tail form, in between.
pub(super) fn small() -> usize {
    [SMALL_BYTES, 0, 40][NOW.unsigned_abs() as usize % 3]
}

/// Charges `bytes` (holding the window `w`) in its stored form and checks
/// it decides as [`Window::charge`] and reads back as its window.
pub(super) fn same_as_limiter(
    bytes: &[u8],
    w: &Window,
    now: i64,
    q: Quota,
    small: usize,
) -> Result<(), String> {
    let mut c = w.clone();
    let accepted = c.check_times(now);
    let d = c.charge(now, q.limit, q.window_ms, q.cost);
    let mut out = Vec::new();
    let r = charge_with(bytes, now, q, &mut out, small);
    let shown = format!("{r:?} vs {d:?} on {bytes:?} at {now}");
    let fail = |what: &str| Err(format!("{what}: {shown}"));
    match (accepted, r) {
        (Err(a), Err(Unusable::Ahead(b))) if a == b => Ok(()),
        (Ok(()), Ok(got)) => {
            if got.decision != d {
                return fail("decision");
            }
            let mut value = bytes.to_vec();
            apply(&mut value, &got.write, &out);
            if got.write == Write::Nothing && value != bytes {
                return fail("wrote on a refusal");
            }
            if Window::decode(&value) != Ok(c.clone()) {
                return fail("reads back as another window");
            }
            Ok(())
        }
        _ => fail("outcome"),
    }
}

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => -30i64..120,
        1 => -(A + 300)..-(A - 300),
        1 => (A - 300)..(A + 300),
    ]
}

/// Calls for [`run_against_reference`]: a limit, a window (ms), and
/// (clock step, cost) pairs.
fn scenario(
    limits: std::ops::Range<u64>,
    windows: std::ops::Range<i64>,
    steps: impl Strategy<Value = i64>,
    costs: std::ops::Range<u64>,
    calls: std::ops::Range<usize>,
) -> impl Strategy<Value = (u64, i64, Vec<(i64, u64)>)> {
    (
        limits,
        windows,
        proptest::collection::vec((steps, costs), calls),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Mostly forwards, sometimes backwards (within the allowance).
    #[test]
    fn matches_the_brute_force_reference(s in scenario(1..8, 1..400, -30i64..120, 0..4, 1..80)) {
        run_against_reference(s)?;
    }

    #[test]
    fn clock_jumps_around_the_allowance_are_refused_or_exact(
        s in scenario(1..8, 1..400, step(), 0..4, 1..80),
    ) {
        run_against_reference(s)?;
    }

    /// The tail form on larger windows: limits up to 300 over windows up
    /// to 3 s, with clock steps back, against the reference.
    #[test]
    fn larger_windows_match_the_brute_force_reference(
        s in scenario(1..300, 1..3_000, -30i64..60, 0..6, 1..400),
    ) {
        run_against_reference(s)?;
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
        let bytes = crafted(base, units, &rest);
        let Ok(w) = Window::decode(&bytes) else {
            return Ok(());
        };
        let q = Quota::new(limit, window_ms, cost % limit.saturating_add(1));
        bounded_by_the_allowance(&bytes, &w, now, q).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Window::decode(&bytes);
        let mut out = Vec::new();
        for small in [0, SMALL_BYTES] {
            let _ = charge_with(&bytes, NOW, Quota::new(5, 60_000, 1), &mut out, small);
        }
    }
}
