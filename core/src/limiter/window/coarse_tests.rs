//! Windows longer than 65 536 ms, whose entries are kept in buckets of
//! [`grain_ms`] (see the module docs of [`super`]): against the coarse
//! reference (the same bucket rule, every question answered by counting)
//! and against the exact model of what was admitted, in memory and where
//! it is stored; their size bound; and limits up to 10^15.

use super::tests::{Stored, NOW};
use super::*;
use crate::limiter::model::Reference;
use crate::limiter::{apply, charge_stored, grain_ms, Write, MAX_ENTRIES, MAX_LIMIT};
use proptest::prelude::*;

/// Calls `(clock step, cost)` from `NOW` against `limit` per `window` ms.
/// Each decision must be the coarse reference's, exactly (`recorded`: the
/// admissions at the times the window records them); and, against the
/// exact model of the same admissions at the times they were charged
/// (`charged`):
/// - an admitted call is one the exact model admits (so no interval of the
///   window ever holds more than `limit`);
/// - a refused call waits at least as long as the exact model says, and at
///   most `grain - 1` ms longer (a unit is freed at most that late);
/// - every unit is recorded at most `grain - 1` ms after it was charged.
///
/// Windows stored by the module's rule, and by the tail form everywhere,
/// decide the same and read back as the window in memory.
fn run_coarse((limit, window, calls): (u64, i64, Vec<(i64, u64)>)) -> Result<(), TestCaseError> {
    let grain = grain_ms(window as u64);
    let mut w = Window::new();
    let mut stored = [Stored::new(SMALL_BYTES), Stored::new(0)];
    let (mut recorded, mut charged) = (Reference::default(), Reference::default());
    // The earliest charge time of the units of the newest recorded entry.
    let mut since = i64::MIN;
    let mut now = NOW;
    for &(step, cost) in &calls {
        now += step;
        let q = Quota::new(limit, window as u64, cost.min(limit));
        let d = w.charge(now, q.limit, q.window_ms, q.cost);
        for s in &mut stored {
            s.charge(now, q, None, &d, &w)?;
        }
        let t = recorded.clock(now);
        prop_assert_eq!(d.allowed, recorded.would_admit(t, window, limit, q.cost));
        let exact_wait = charged.wait_at_exits(t, window, limit, q.cost);
        if d.allowed {
            prop_assert_eq!(exact_wait, 0, "admitted only what the exact model admits");
        } else {
            let wait = recorded.wait_at_exits(t, window, limit, q.cost);
            prop_assert_eq!(d.retry_after_ms as i64, t + wait - now);
            prop_assert!(exact_wait <= wait && wait < exact_wait + grain);
        }
        if d.allowed && q.cost > 0 {
            if recorded.newest().is_none_or(|a| !same_bucket(a, t, grain)) {
                since = t;
            }
            recorded.record_in_buckets(t, q.cost, grain);
            charged.log.push((t, q.cost));
            prop_assert!(t - since < grain, "recorded at most grain - 1 late");
        }
        prop_assert_eq!(
            d.remaining,
            limit.saturating_sub(recorded.used_at(t, window))
        );
        let live = w.entries().count() as u64;
        prop_assert!(live <= MAX_ENTRIES.min(limit));
    }
    prop_assert!(charged.never_over(window, limit));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Windows of 65.5 s to 7 min (grains 2 to 7 ms), small limits, steps
    /// within a grain, across a few grains, and across much of the window.
    #[test]
    fn long_windows_match_the_coarse_reference_and_never_over_admit(
        limit in 1u64..40,
        window in 65_537i64..420_000,
        calls in proptest::collection::vec(
            (
                prop_oneof![5 => 0i64..12, 2 => 12i64..400, 1 => 30_000i64..200_000, 1 => -30i64..0],
                0u64..5,
            ),
            1..250,
        ),
    ) {
        run_coarse((limit, window, calls))?;
    }

    /// Limits up to 10^15 and costs to match, over windows short (exact)
    /// and long (coarse): the same promises, and no sum overflows.
    #[test]
    fn limits_up_to_10_15_behave_alike(
        limit in prop_oneof![Just(MAX_LIMIT), 1_000_000_000_000u64..=MAX_LIMIT],
        window in prop_oneof![1_000i64..65_537, 65_537i64..10_000_000],
        calls in proptest::collection::vec(
            (
                prop_oneof![3 => 0i64..50, 1 => 1_000i64..5_000_000],
                prop_oneof![Just(0u64), 1u64..1_000, 1u64..=MAX_LIMIT / 3, Just(MAX_LIMIT)],
            ),
            1..120,
        ),
    ) {
        run_coarse((limit, window, calls))?;
    }
}

/// The windows of `OKOME.RATE` (whole seconds) up to a year: a grain of
/// 1 ms up to 65 s; units freed at most `grain - 1` ms late, which is at
/// most `window / 65536` ms + 1 up to 49.7 days (2^32 ms), and at most
/// `window / 65535` beyond (a year: 481 208 ms, `window / 65536` =
/// 481 201.2): the least any scheme keeping 65 536 entries can promise.
#[test]
fn grains_of_the_windows_a_call_takes() {
    for (s, g) in [
        (1u64, 1i64),
        (60, 1),
        (65, 1),
        (66, 2),
        (3_600, 55),
        (86_400, 1_319),
        (30 * 86_400, 39_552),
        (365 * 86_400, 481_209),
    ] {
        assert_eq!(grain_ms(s * 1_000), g, "{s} s");
    }
    assert_eq!(grain_ms(65_536), 1);
    assert_eq!(grain_ms(65_537), 2);
    assert_eq!(grain_ms(0), 1);
    assert_eq!(grain_ms(u64::MAX), (u64::MAX - 1).div_ceil(65_535) as i64);
    for s in (1..=365 * 86_400u64).step_by(997) {
        let w = s * 1_000;
        let late = (grain_ms(w) - 1) as f64;
        assert!(late <= w as f64 / 65_535.0, "{s} s");
        if w <= 1 << 32 {
            assert!(late <= w as f64 / 65_536.0 + 1.0, "{s} s");
        }
        // No fewer entries can hold a call a millisecond with units at
        // most `late` ms late: (w + late) / (late + 1) on average.
        assert!((w as f64 + late - 1.0) / late > 65_536.0, "{s} s");
    }
}

/// A window charged at the worst spacing for its size: one call a grain,
/// over a window of exactly 65 535 grains + 1 ms, the most buckets a span
/// of the window meets. It holds 65 536 entries, never more, whatever the
/// call rate; a denser call rate only merges more.
#[test]
fn a_long_window_holds_at_most_65536_entries() {
    let window = 65_535 * 2 + 1;
    assert_eq!(grain_ms(window), 2);
    for (step, calls) in [(2i64, 200_000i64), (1, 140_000)] {
        let mut s = Stored::new(SMALL_BYTES);
        let mut most = 0usize;
        for i in 0..calls {
            let q = Quota::new(MAX_LIMIT, window, 1);
            let mut out = std::mem::take(&mut s.out);
            let c =
                charge_stored(&s.bytes, NOW + i * step, q.limit, q.window_ms, 1, &mut out).unwrap();
            assert!(c.decision.allowed);
            apply(&mut s.bytes, &c.write, &out);
            s.out = out;
            if i % 4_096 == 0 || i == calls - 1 {
                most = most.max(Window::decode(&s.bytes).unwrap().entries().count());
            }
        }
        let entries = Window::decode(&s.bytes).unwrap().entries().count();
        assert_eq!(entries, 65_536, "step {step}");
        assert!(most <= 65_536);
        // Dense one-byte entries: the value stays within twice its live
        // bytes (dead bytes never outweigh the live ones).
        assert!(
            s.bytes.len() <= 2 * (65_536 * 2) + TRAILER_LEN,
            "{}",
            s.bytes.len()
        );
    }
}

/// The stored bytes of a window charged 1 000 times a second (one unit a
/// call) for two windows' length: live bytes after it, and the largest
/// value on the way (dead entries included). Calls within one grain merge
/// into one entry at the latest call's time, so for windows coarser than a
/// millisecond one call per grain, at its last millisecond and costing
/// the grain's units, leaves the very same entries.
fn bytes_at_1000_calls_a_second(window_s: u64) -> (usize, usize, usize) {
    let window = window_s * 1_000;
    let grain = grain_ms(window);
    let mut s = Stored::new(SMALL_BYTES);
    let mut largest = 0usize;
    let steps = 2 * window as i64 / grain;
    for i in 1..=steps {
        let mut out = std::mem::take(&mut s.out);
        let now = NOW + i * grain - 1;
        let c = charge_stored(&s.bytes, now, MAX_LIMIT, window, grain as u64, &mut out).unwrap();
        assert!(c.decision.allowed);
        apply(&mut s.bytes, &c.write, &out);
        s.out = out;
        largest = largest.max(s.bytes.len());
    }
    let w = Window::decode(&s.bytes).unwrap();
    (w.entries().count(), w.encode().len(), largest)
}

/// README's memory table (and bench/RESULTS.md): bytes per window at
/// 1 000 calls a second. Run with `--nocapture` to print the rows.
#[test]
fn memory_per_window_at_1000_calls_a_second() {
    for (label, s, entries, live_at_most) in [
        ("1 s", 1u64, 1_000usize, 1_000 + 33),
        ("1 min", 60, 60_000, 60_000 + 33),
        ("1 h", 3_600, 65_455, 2 * 65_455 + 33),
        ("30 days", 30 * 86_400, 65_534, 7 * 65_534 + 33),
    ] {
        let (n, live, largest) = bytes_at_1000_calls_a_second(s);
        println!("window {label}: {n} entries, {live} bytes live, {largest} bytes at most");
        assert_eq!(n, entries, "{label}");
        assert!(live <= live_at_most, "{label}: {live}");
        assert!(largest <= 2 * live, "{label}: {largest}");
    }
}

/// A cost of 10^15 in one entry, and refused calls on a full window of
/// huge entries: the retry is exact, nothing overflows.
#[test]
fn huge_costs_are_single_entries() {
    let mut s = Stored::new(0);
    let q = Quota::new(MAX_LIMIT, 60_000, MAX_LIMIT);
    let mut out = Vec::new();
    let c = charge_stored(&s.bytes, NOW, q.limit, q.window_ms, q.cost, &mut out).unwrap();
    assert_eq!((c.decision.allowed, c.decision.remaining), (true, 0));
    apply(&mut s.bytes, &c.write, &out);
    // Format byte, a long entry (1 + gap 1 + units 8 bytes), the trailer.
    assert_eq!(s.bytes.len(), 1 + 10 + TRAILER_LEN);
    let c = charge_stored(&s.bytes, NOW + 10, q.limit, q.window_ms, 1, &mut out).unwrap();
    assert_eq!(
        c.decision,
        Decision {
            allowed: false,
            remaining: 0,
            retry_after_ms: 59_990,
            reset_after_ms: 59_990
        }
    );
    assert_eq!(c.write, Write::Nothing);
}
