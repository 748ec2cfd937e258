//! The limiter on arbitrary stored bytes and call sequences: never panics,
//! never admits more than `limit` units in any window, refused calls change
//! nothing, and a window ahead of the clock by more than the allowance is
//! never charged nor extended.
#![no_main]
use libfuzzer_sys::fuzz_target;
use okome_core::limiter::{Window, CLOCK_SKEW_ALLOWANCE_MS};

fuzz_target!(|data: &[u8]| {
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
                assert!(!d.allowed && !d.changed);
                assert_eq!(w, stored);
            }
        }
    }
    let Some((&head, calls)) = data.split_first() else {
        return;
    };
    let limit = u64::from(head % 16) + 1;
    let window_ms = 50;
    let mut w = Window::new();
    let mut now: i64 = 1_000_000;
    let mut admitted: Vec<(i64, u64)> = Vec::new();
    let mut newest = i64::MIN;
    for pair in calls.chunks(2) {
        let step = i64::from(pair[0] as i8);
        now += step;
        let cost = u64::from(*pair.get(1).unwrap_or(&1)) % (limit + 1);
        let before = w.clone();
        let d = w.charge(now, limit, window_ms, cost);
        if newest > now + CLOCK_SKEW_ALLOWANCE_MS {
            // The clock went back further than the allowance.
            assert!(w.check_times(now).is_err());
            assert!(!d.allowed && !d.changed);
            assert_eq!(w, before);
            continue;
        }
        let t = now.max(newest);
        if d.allowed && cost > 0 {
            admitted.push((t, cost));
            newest = t;
        } else {
            assert_eq!(w, before);
        }
        for &(a, _) in &admitted {
            let sum: u64 = admitted
                .iter()
                .filter(|(b, _)| *b >= a && *b < a + window_ms as i64)
                .map(|(_, u)| u)
                .sum();
            assert!(sum <= limit);
        }
        assert_eq!(Window::decode(&w.encode()).unwrap_or_default(), w);
    }
});
