//! The limiter on arbitrary stored bytes and call sequences: never panics,
//! never admits more than `limit` units in any window, refused calls change
//! nothing, and a window ahead of the clock by more than the allowance is
//! never charged nor extended. The stored form (`charge_stored`, what the
//! module runs) decides exactly as the limiter and reads back as its window.
#![no_main]
use libfuzzer_sys::fuzz_target;
use okome_core::limiter::model::Reference;
use okome_core::limiter::{
    apply, charge_with, Quota, Unusable, Window, Write, CLOCK_SKEW_ALLOWANCE_MS, SMALL_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let five = Quota::new(5, 60_000, 1);
    // The bytes as a stored window, charged at clocks from the start to the
    // end of time: accepted, it empties within window + allowance; refused,
    // it is left as it was.
    if let Ok(stored) = Window::decode(data) {
        for now in [i64::MIN, -1, 0, 1_000_000, i64::MAX] {
            let mut w = stored.clone();
            let accepted = w.check_times(now).is_ok();
            let d = w.charge(now, 5, 60_000, 1);
            if accepted {
                let bound = now.saturating_add(60_000 + CLOCK_SKEW_ALLOWANCE_MS);
                assert!(w.empty_at(60_000).is_none_or(|at| at <= bound));
            } else {
                assert!(!d.allowed);
                assert_eq!(w, stored);
            }
            // The stored form on the same bytes: the same decision, and it
            // reads back as the same window.
            let mut out = Vec::new();
            match charge_with(data, now, five, &mut out, 0) {
                Ok(c) => {
                    assert!(accepted);
                    assert_eq!(c.decision, d);
                    let mut value = data.to_vec();
                    apply(&mut value, &c.write, &out);
                    assert_eq!(Window::decode(&value), Ok(w));
                }
                Err(Unusable::Ahead(_)) => assert!(!accepted),
                Err(Unusable::Corrupt(_)) => panic!("a window that decodes is not corrupt"),
            }
        }
    }
    // Any bytes: never a panic.
    let _ = charge_with(data, 1_000_000, five, &mut Vec::new(), SMALL_BYTES);
    let Some((&head, calls)) = data.split_first() else {
        return;
    };
    let limit = u64::from(head % 16) + 1;
    let window_ms = 50;
    let mut w = Window::new();
    let mut value: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    // Rewrite small windows whole (the module's rule), or use the tail form
    // whenever it applies.
    let small = if head & 0x80 == 0 { SMALL_BYTES } else { 0 };
    let mut now: i64 = 1_000_000;
    let mut admitted = Reference::default();
    for pair in calls.chunks(2) {
        let step = i64::from(pair[0] as i8);
        now += step;
        let cost = u64::from(*pair.get(1).unwrap_or(&1)) % (limit + 1);
        let before = w.clone();
        let d = w.charge(now, limit, window_ms, cost);
        let q = Quota::new(limit, window_ms, cost);
        let stored = charge_with(&value, now, q, &mut out, small);
        match stored {
            Ok(c) => {
                assert_eq!(c.decision, d);
                let len = value.len();
                apply(&mut value, &c.write, &out);
                if let Write::Tail { offset, .. } = c.write {
                    assert!(offset + out.len() >= len, "a tail never shrinks the value");
                }
                assert_eq!(Window::decode(&value).unwrap_or_default(), w);
            }
            Err(e) => assert!(matches!(e, Unusable::Ahead(_)) && !d.allowed),
        }
        if admitted
            .newest()
            .is_some_and(|newest| newest > now + CLOCK_SKEW_ALLOWANCE_MS)
        {
            // The clock went back further than the allowance.
            assert!(w.check_times(now).is_err());
            assert!(!d.allowed);
            assert_eq!(w, before);
            continue;
        }
        if d.allowed && cost > 0 {
            admitted.log.push((admitted.clock(now), cost));
        } else {
            assert_eq!(w, before);
        }
        assert!(admitted.never_over(window_ms as i64, limit));
        assert_eq!(Window::decode(&w.encode()).unwrap_or_default(), w);
    }
});
