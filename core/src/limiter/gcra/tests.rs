//! GCRA against its reference model (a token bucket, `model::Bucket`),
//! and its promises one by one.

use super::*;
use crate::limiter::model::{Answer, Bucket};
use crate::limiter::{apply, Window};
use proptest::prelude::*;

const NOW: i64 = 1_700_000_000_000;

/// A key as Redis holds it: the value, and when it expires.
#[derive(Default)]
struct Store {
    value: Vec<u8>,
    expire_at: Option<i64>,
    writes: usize,
}

impl Store {
    /// One call at `now`, the key expiring first if its time has come.
    fn call(&mut self, now: i64, q: Throttle) -> Result<Decision, Unusable> {
        if self.expire_at.is_some_and(|t| t <= now) {
            self.value.clear();
            self.expire_at = None;
        }
        let mut out = b"stale".to_vec();
        let c = Gcra::charge_stored(&self.value, now, q, &mut out)?;
        match c.write {
            Write::Nothing => assert!(out.is_empty(), "nothing to write"),
            Write::Whole { expire_at } => {
                assert!(
                    expire_at > now || expire_at == i64::MAX,
                    "the key stays: {expire_at} at {now}"
                );
                assert_eq!(
                    expire_at,
                    now.saturating_add_unsigned(c.decision.reset_after_ms),
                    "the key expires when the bucket is full"
                );
                apply(&mut self.value, &c.write, &out);
                self.expire_at = Some(expire_at);
                self.writes += 1;
            }
            ref other => panic!("GCRA writes whole: {other:?}"),
        }
        Ok(c.decision)
    }

    fn ok(&mut self, now: i64, q: Throttle) -> Answer {
        let d = self.call(now, q).unwrap();
        (d.allowed, d.remaining, d.retry_after_ms, d.reset_after_ms)
    }
}

fn q(rate: u64, period_ms: u64, burst: u64, cost: u64) -> Throttle {
    Throttle::new(rate, period_ms, burst, cost)
}

/// nginx's `rate=20r/s burst=60 nodelay`: 61 at once, then one every 50 ms.
#[test]
fn nginx_burst_61_at_once_then_one_every_50_ms() {
    let mut s = Store::default();
    let t = q(20, 1000, 60, 1);
    for i in 0..61u64 {
        assert_eq!(s.ok(NOW, t), (true, 60 - i, 0, 50 * (i + 1)), "unit {i}");
    }
    assert_eq!(s.ok(NOW, t), (false, 0, 50, 3050));
    assert_eq!(s.ok(NOW + 49, t), (false, 0, 1, 3001));
    assert_eq!(s.ok(NOW + 50, t), (true, 0, 0, 3050));
    assert_eq!(s.ok(NOW + 50, t), (false, 0, 50, 3050));
    assert_eq!(s.ok(NOW + 100, t), (true, 0, 0, 3050));
    // A peek: what could pass, nothing written.
    let writes = s.writes;
    assert_eq!(s.ok(NOW + 150, q(20, 1000, 60, 0)), (true, 1, 0, 3000));
    assert_eq!(s.writes, writes);
    // After the whole refill, the bucket is full again (the key expired).
    assert_eq!(s.ok(NOW + 100 + 3050, t), (true, 60, 0, 50));
}

/// 3 per second: T = 333.33... ms, exact, no drift over ten minutes of
/// a caller trying every ms: unit k passes at ⌈k × 333.33...⌉ ms, and
/// `[0, k s]` admits exactly `3k + burst + 1`.
#[test]
fn a_fractional_interval_never_drifts() {
    for burst in [1, 2, 5] {
        let mut s = Store::default();
        let t = q(3, 1000, burst, 1);
        let mut admitted = Vec::new();
        for ms in 0..=600_000 {
            while s.ok(NOW + ms, t).0 {
                admitted.push(ms);
            }
        }
        let n = burst as usize + 1;
        assert!(
            admitted[..n].iter().all(|&a| a == 0),
            "{:?}",
            &admitted[..n]
        );
        for (k, &a) in admitted[n..].iter().enumerate() {
            let k = k as i64 + 1;
            assert_eq!(a, (k * 1000 + 2) / 3, "burst {burst} unit {k}");
        }
        assert_eq!(admitted.len(), 3 * 600 + n, "burst {burst}");
    }
}

/// With no burst, a bucket of one unit is full at 333.33 ms and its
/// refill stops there: a caller trying every ms passes at 334, then 334
/// ms after that (as the token bucket does; a burst of 1 absorbs it).
#[test]
fn without_a_burst_the_bucket_is_full_between_milliseconds() {
    let mut s = Store::default();
    let t = q(3, 1000, 0, 1);
    let admitted: Vec<i64> = (0..=1002).filter(|&ms| s.ok(NOW + ms, t).0).collect();
    assert_eq!(admitted, [0, 334, 668, 1002]);
}

#[test]
fn a_refusal_or_a_peek_writes_nothing() {
    let mut s = Store::default();
    assert_eq!(s.ok(NOW, q(1, 1000, 1, 0)), (true, 2, 0, 0));
    assert_eq!(s.writes, 0);
    assert_eq!(s.ok(NOW, q(1, 1000, 1, 2)), (true, 0, 0, 2000));
    assert_eq!(s.writes, 1);
    let before = s.value.clone();
    assert_eq!(s.ok(NOW, q(1, 1000, 1, 1)), (false, 0, 1000, 2000));
    assert_eq!(s.ok(NOW + 500, q(1, 1000, 1, 2)), (false, 0, 1500, 1500));
    assert_eq!(s.ok(NOW + 500, q(1, 1000, 1, 0)), (true, 0, 0, 1500));
    assert_eq!((s.writes, &s.value), (1, &before));
}

/// A cost beyond `burst + 1` never passes (the grammar refuses it): a
/// refusal, never a panic.
#[test]
fn a_cost_beyond_the_bucket_is_refused() {
    let mut s = Store::default();
    let d = s.ok(NOW, q(2, 1000, 1, 3));
    assert_eq!(d, (false, 2, 500, 0));
    assert_eq!(s.writes, 0);
}

#[test]
fn the_stored_form_round_trips_and_is_checked() {
    let t = Tat {
        ticks: -5,
        per_ms: 3,
    };
    let b = t.encode();
    assert_eq!(b.len(), STORED_LEN);
    assert_eq!(b[0], FORMAT_GCRA);
    assert_eq!(Tat::decode(&b), Ok(t));
    assert_eq!(t.ceil_ms(), -1);
    for bad in [&b[..24], &[b.as_slice(), &[0]].concat(), &[][..], &[3][..]] {
        assert_eq!(Tat::decode(bad), Err(Corrupt));
    }
    let mut zero = b;
    zero[24] = 0;
    zero[17..24].fill(0);
    assert_eq!(Tat::decode(&zero), Err(Corrupt));
    // A window's value is not a GCRA state, nor is text.
    let mut w = Window::new();
    w.charge(NOW, 5, 60_000, 1);
    let mut out = Vec::new();
    for other in [w.encode(), w.encode_v1(), b"12".to_vec(), zero.to_vec()] {
        let r = Gcra::charge_stored(&other, NOW, q(1, 1000, 0, 1), &mut out);
        assert_eq!(r, Err(Unusable::Corrupt(Corrupt)));
        assert!(out.is_empty());
    }
}

/// Another rate reads the TAT in its own ticks, rounded up.
#[test]
fn another_rate_reads_the_same_time_rounded_up() {
    let t = Tat {
        ticks: 3 * i128::from(NOW) + 1,
        per_ms: 3,
    };
    assert_eq!(t.ticks_at(3), 3 * NOW as i128 + 1);
    assert_eq!(t.ticks_at(1), NOW as i128 + 1);
    assert_eq!(t.ticks_at(6), 6 * NOW as i128 + 2);
    assert_eq!(t.ticks_at(2), 2 * NOW as i128 + 1);
    assert_eq!(t.ceil_ms(), NOW + 1);
}

/// A clock stepped back makes the limiter stricter, never looser; a state
/// further ahead than this call's burst and the allowance is refused.
#[test]
fn clocks_behind_and_states_ahead() {
    let mut s = Store::default();
    let t = q(1, 1000, 1, 1);
    assert_eq!(s.ok(NOW, t), (true, 1, 0, 1000));
    assert_eq!(s.ok(NOW - 500, t), (false, 0, 500, 1500));
    assert_eq!(s.ok(NOW - 500, q(1, 1000, 2, 1)), (true, 0, 0, 2500));
    // Written by a clock 60 s ahead: absorbed. Beyond: refused.
    let edge = NOW + 60_000;
    let mut out = Vec::new();
    let at = |ticks: i128| Tat { ticks, per_ms: 1 }.encode();
    let ok = Gcra::charge_stored(&at(i128::from(edge) + 2000), NOW, t, &mut out).unwrap();
    assert_eq!(
        ok.decision,
        Decision {
            allowed: false,
            remaining: 0,
            retry_after_ms: 61_000,
            reset_after_ms: 62_000,
        }
    );
    for ticks in [i128::from(edge) + 2001, i128::MAX] {
        let r = Gcra::charge_stored(&at(ticks), NOW, q(1, 1000, 1, 0), &mut out);
        let Err(Unusable::Ahead(a)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(a.now, NOW);
        assert!(a.ahead_ms() > 60_000, "{a:?}");
        assert!(out.is_empty());
    }
}

/// The extremes of every argument: no panic, and sane answers.
#[test]
fn extremes_do_not_panic() {
    let big = 1_000_000_000_000_000;
    let year = 31_536_000_000;
    for (rate, period, burst) in [(1, year, big), (big, 1000, big), (big, year, 0), (1, 1, 0)] {
        for now in [i64::MIN, -1, 0, NOW, i64::MAX] {
            let mut s = Store::default();
            let t = q(rate, period, burst, burst + 1);
            let d = s.call(now, t);
            if let Ok(d) = d {
                assert!(d.allowed, "{rate} {period} {burst} {now}: {d:?}");
            }
            let _ = s.call(now, q(rate, period, burst, 1));
        }
    }
    // A bucket refilling for ever: its key lives as long as Redis allows.
    let mut s = Store::default();
    assert!(s.ok(NOW, q(1, year, big, big + 1)).0);
    assert_eq!(s.expire_at, Some(i64::MAX));
    // Zeros the grammar refuses: answers, no panic.
    for t in [q(0, 0, 0, 1), q(0, 1000, 0, 0), q(1, 0, 0, 1)] {
        let _ = Gcra::charge_stored(&[], NOW, t, &mut Vec::new());
    }
}

proptest! {
    /// Over any calls in nondecreasing time (the key expiring as Redis
    /// expires it), every reply equals the token bucket's, and no interval
    /// ever admits more than `burst + 1` plus its refill.
    #[test]
    fn decisions_equal_the_reference(
        rate in 1u64..8,
        period_ms in prop_oneof![Just(1000u64), Just(2000), Just(7)],
        burst in 0u64..5,
        calls in proptest::collection::vec((0i64..900, 0u64..7), 1..60),
    ) {
        let mut s = Store::default();
        let mut m = Bucket::new(rate, period_ms, burst);
        let mut now = NOW;
        for (gap, cost) in calls {
            now += gap;
            let cost = cost.min(burst + 1);
            let got = s.ok(now, q(rate, period_ms, burst, cost));
            prop_assert_eq!(got, m.charge(now, cost), "at {} cost {}", now - NOW, cost);
        }
        prop_assert!(m.never_over(), "{:?}", m.log);
    }

    /// Whatever the bytes and the call: no panic, nothing to write unless
    /// admitted, and an admission reads back.
    #[test]
    fn any_bytes_any_call(
        bytes in proptest::collection::vec(any::<u8>(), 0..30),
        tat in any::<i128>(),
        per_ms in any::<u64>(),
        now in any::<i64>(),
        rate in any::<u64>(),
        period_ms in any::<u64>(),
        burst in any::<u64>(),
        cost in any::<u64>(),
    ) {
        let t = q(rate, period_ms, burst, cost);
        let mut out = Vec::new();
        for stored in [bytes, Tat { ticks: tat, per_ms }.encode().to_vec()] {
            match Gcra::charge_stored(&stored, now, t, &mut out) {
                Ok(Charged { write: Write::Nothing, .. }) | Err(_) => prop_assert!(out.is_empty()),
                Ok(Charged { write, decision }) => {
                    prop_assert!(decision.allowed);
                    let whole = matches!(write, Write::Whole { .. });
                    prop_assert!(whole);
                    prop_assert!(Tat::decode(&out).is_ok());
                }
            }
        }
    }
}
