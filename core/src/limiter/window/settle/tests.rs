//! `settle_stored` against the brute-force model: after a reservation and
//! its settlement, an exact window holds what a window charged directly
//! with the settled cost holds (the excess at the settlement's time).

use super::*;
use crate::limiter::model::Reference;
use crate::limiter::{apply, FORMAT_V2};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;

/// Live entries at `t` of a window `w` ms long, merged per ms.
fn live(log: &[(i64, u64)], t: i64, w: i64) -> Vec<(i64, u64)> {
    let mut out: Vec<(i64, u64)> = Vec::new();
    for &(a, u) in log.iter().filter(|(a, u)| *a > t - w && *u > 0) {
        match out.last_mut() {
            Some(l) if l.0 == a => l.1 += u,
            _ => out.push((a, u)),
        }
    }
    out
}

proptest! {
    #[test]
    fn a_settled_window_is_the_window_charged_with_the_actual_cost(
        limit in 1u64..40,
        window_ms in 1u64..5_000,
        before in prop::collection::vec((0i64..400, 1u64..5), 0..20),
        after in prop::collection::vec((0i64..400, 1u64..5), 0..20),
        reserved in 1u64..40,
        actual in 0u64..60,
        settle_gap in 0i64..3_000,
    ) {
        let reserved = reserved.min(limit);
        let w = i64::try_from(window_ms).unwrap();
        let mut win = Window::new();
        let mut log = Reference::default();
        let mut t = T0;
        let charge = |win: &mut Window, log: &mut Reference, t: i64, cost: u64| {
            let d = win.charge(t, limit, window_ms, cost.min(limit));
            if d.allowed {
                log.log.push((t, cost.min(limit)));
            }
            d.allowed
        };
        for &(gap, cost) in &before {
            t += gap;
            charge(&mut win, &mut log, t, cost);
        }
        t += 1;
        let at = t;
        if !charge(&mut win, &mut log, t, reserved) {
            return Ok(());
        }
        let mine = log.log.len() - 1;
        for &(gap, cost) in &after {
            t += gap;
            charge(&mut win, &mut log, t, cost);
        }
        t += settle_gap;
        let mut bytes = win.encode();
        let mut out = Vec::new();
        let s = Settlement { limit, window_ms, at, reserved, actual };
        let got = settle_stored(&bytes, t, s, &mut out).unwrap();
        apply(&mut bytes, &got.write, &out);
        // The model: the reservation recorded at its settled cost, the
        // excess charged at the settlement.
        log.log[mine].1 = actual.min(reserved);
        if actual > reserved {
            log.log.push((t, actual - reserved));
        }
        let settled = if bytes.is_empty() {
            Window::new()
        } else {
            prop_assert_eq!(bytes[0], FORMAT_V2);
            Window::decode(&bytes).unwrap()
        };
        let entries: Vec<(i64, u64)> = settled.entries().map(|e| (e.at, e.units)).collect();
        prop_assert_eq!(live(&entries, t, w), live(&log.log, t, w));
        let used = log.used_at(t, w);
        prop_assert_eq!(got.decision.remaining, limit.saturating_sub(used));
        // Never over the limit plus the settled excess.
        prop_assert!(log.never_over(w, limit + actual.saturating_sub(reserved)));
    }

    /// A coarse window (buckets of more than 1 ms): the refund never takes
    /// more than the reservation's units, nor from another bucket.
    #[test]
    fn a_refund_stays_in_its_bucket(
        units in prop::collection::vec(1u64..10, 1..10),
        take in 0u64..30,
        grain in 2i64..50,
    ) {
        let mut win = Window::new();
        let mut t = T0;
        for &u in &units {
            win.force(t, 3_600_000, u);
            t += grain;
        }
        let before: Vec<_> = win.entries().copied().collect();
        let at = T0 + grain;
        let got = win.refund(at, take, grain);
        let after: Vec<_> = win.entries().copied().collect();
        let total = |v: &[crate::limiter::Entry]| v.iter().map(|e| e.units).sum::<u64>();
        prop_assert_eq!(total(&before) - total(&after), got);
        prop_assert!(got <= take);
        let expect = before.iter().find(|e| e.at >= at).map_or(0, |e| {
            if same_bucket(at, e.at, grain) { e.units.min(take) } else { 0 }
        });
        prop_assert_eq!(got, expect);
    }
}

#[test]
fn settling_an_untouched_window_writes_nothing_and_deletes_an_emptied_one() {
    let mut win = Window::new();
    win.charge(T0, 10, 60_000, 4);
    let bytes = win.encode();
    let mut out = Vec::new();
    let s = Settlement {
        limit: 10,
        window_ms: 60_000,
        at: T0,
        reserved: 4,
        actual: 4,
    };
    let got = settle_stored(&bytes, T0 + 5, s, &mut out).unwrap();
    assert_eq!(got.write, Write::Nothing);
    assert_eq!(got.decision.remaining, 6);
    let s = Settlement { actual: 0, ..s };
    let got = settle_stored(&bytes, T0 + 5, s, &mut out).unwrap();
    assert_eq!(got.write, Write::Delete);
    assert_eq!(
        (got.decision.remaining, got.decision.reset_after_ms),
        (10, 0)
    );
    // No key: an excess creates the window.
    let s = Settlement { actual: 7, ..s };
    let got = settle_stored(&[], T0 + 5, s, &mut out).unwrap();
    assert_eq!(
        got.write,
        Write::Whole {
            expire_at: T0 + 5 + 60_000
        }
    );
    assert_eq!(got.decision.remaining, 7);
    assert_eq!(
        settle_stored(b"junk", T0, s, &mut out).map(|_| ()),
        Err(Unusable::Corrupt(crate::limiter::Corrupt))
    );
}
