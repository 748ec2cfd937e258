//! The limiter on arbitrary stored bytes and call sequences: never panics,
//! never admits more than `limit` units in any window, and refused calls
//! change nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use okome_core::limiter::Window;

fuzz_target!(|data: &[u8]| {
    let _ = Window::decode(data);
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
