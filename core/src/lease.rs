//! Concurrency leases (`OKOME.LEASE.*`): at most `max` leases of a pool
//! live at once, each until its expiry unless renewed or released.
//!
//! # The seam
//!
//! A pool is a set of leases, token → absolute expiry (Unix ms): in Redis a
//! sorted set (member = token, score = expiry), whose own TTL is its latest
//! expiry. The rules here work on any [`Pool`]: the glue implements it over
//! the sorted set (each change replicated as its effect, with absolute
//! scores and bounds); the tests over a map, against a brute-force model.
//! Time is a parameter: nothing here reads a clock.
//!
//! A lease expiring at `t` is live while `now < t`. Every call first prunes
//! the leases expired at `now` (`expiry <= now`), so what the pool holds
//! after a call is exactly what is live, and it counts as `in_use`.

/// A pool of leases, as the store holds it.
pub trait Pool {
    type Error;
    /// Removes every lease with `expiry <= now`; how many.
    fn prune(&mut self, now: i64) -> Result<u64, Self::Error>;
    /// How many leases the pool holds.
    fn held(&self) -> u64;
    /// The soonest expiry held, if any.
    fn earliest(&self) -> Option<i64>;
    /// The latest expiry held, if any.
    fn latest(&self) -> Option<i64>;
    /// The expiry of lease `token`, if the pool holds it.
    fn expiry(&self, token: &[u8]) -> Option<i64>;
    /// Adds lease `token`, or moves its expiry.
    fn put(&mut self, token: &[u8], expire_at: i64) -> Result<(), Self::Error>;
    /// Removes lease `token`; whether the pool held it.
    fn remove(&mut self, token: &[u8]) -> Result<bool, Self::Error>;
    /// The pool's own expiry, if it has one.
    fn ttl(&self) -> Option<i64>;
    /// Sets the pool's own expiry.
    fn expire_at(&mut self, at: i64) -> Result<(), Self::Error>;
}

/// What an acquisition decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// Whether the caller's token is now a lease.
    pub taken: bool,
    /// Leases live after the call.
    pub in_use: u64,
    /// 0 when taken; else ms until the soonest lease expires (a slot frees
    /// then at the latest).
    pub retry_after_ms: u64,
    /// Leases found expired and removed.
    pub expired: u64,
}

/// What a renewal or a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touched {
    /// Whether the lease was live (and so renewed, or released).
    pub done: bool,
    /// Leases found expired and removed.
    pub expired: u64,
}

/// `now + ms`, saturating.
fn after(now: i64, ms: u64) -> i64 {
    now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Sets the pool's expiry to its latest lease's, if it is not already
/// (an emptied pool is gone: nothing to set).
fn settle<P: Pool>(pool: &mut P) -> Result<(), P::Error> {
    match pool.latest() {
        Some(t) if pool.held() > 0 && pool.ttl() != Some(t) => pool.expire_at(t),
        _ => Ok(()),
    }
}

/// Keeps the pool's expiry its latest lease's after a lease that expired
/// at `old` (`None`: none) now expires at `new` (`None`: released), reading
/// the latest lease only when the change may have lowered it. The pool's
/// expiry was its latest lease's before the change (okome keeps it so);
/// a pool without one (new, or written by another client) is settled in
/// full, unless it holds just the new lease.
fn moved<P: Pool>(pool: &mut P, old: Option<i64>, new: Option<i64>) -> Result<(), P::Error> {
    let Some(ttl) = pool.ttl() else {
        return match new {
            Some(at) if pool.held() == 1 => pool.expire_at(at),
            _ => settle(pool),
        };
    };
    match new {
        Some(at) if at > ttl => pool.expire_at(at),
        _ if old == Some(ttl) => settle(pool),
        _ => Ok(()),
    }
}

/// What `acquire` would answer without taking: the pool pruned, and
/// whether it has room under `max`.
pub fn peek<P: Pool>(pool: &mut P, max: u64, now: i64) -> Result<Acquired, P::Error> {
    let expired = pool.prune(now)?;
    let in_use = pool.held();
    let retry_after_ms = if in_use < max {
        0
    } else {
        pool.earliest()
            .map_or(0, |t| u64::try_from(t.saturating_sub(now)).unwrap_or(0))
    };
    Ok(Acquired {
        taken: false,
        in_use,
        retry_after_ms,
        expired,
    })
}

/// Takes lease `token` for `ttl_ms` if fewer than `max` are live at `now`.
pub fn acquire<P: Pool>(
    pool: &mut P,
    token: &[u8],
    max: u64,
    ttl_ms: u64,
    now: i64,
) -> Result<Acquired, P::Error> {
    let seen = peek(pool, max, now)?;
    if seen.in_use >= max {
        return Ok(seen);
    }
    let at = after(now, ttl_ms);
    pool.put(token, at)?;
    moved(pool, None, Some(at))?;
    Ok(Acquired {
        taken: true,
        in_use: pool.held(),
        ..seen
    })
}

/// Extends live lease `token` to expire `ttl_ms` after `now`.
pub fn renew<P: Pool>(
    pool: &mut P,
    token: &[u8],
    ttl_ms: u64,
    now: i64,
) -> Result<Touched, P::Error> {
    let expired = pool.prune(now)?;
    let old = pool.expiry(token);
    if old.is_some() {
        let at = after(now, ttl_ms);
        pool.put(token, at)?;
        moved(pool, old, Some(at))?;
    }
    Ok(Touched {
        done: old.is_some(),
        expired,
    })
}

/// Gives live lease `token` back.
pub fn release<P: Pool>(pool: &mut P, token: &[u8], now: i64) -> Result<Touched, P::Error> {
    let expired = pool.prune(now)?;
    let old = pool.expiry(token);
    let done = old.is_some() && pool.remove(token)?;
    if done {
        moved(pool, old, None)?;
    }
    Ok(Touched { done, expired })
}

/// A pool in memory: what the tests (and the fuzzer) run the rules on.
#[cfg(any(test, feature = "model"))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemPool {
    pub leases: std::collections::BTreeMap<Vec<u8>, i64>,
    pub ttl: Option<i64>,
}

#[cfg(any(test, feature = "model"))]
impl Pool for MemPool {
    type Error = std::convert::Infallible;
    fn prune(&mut self, now: i64) -> Result<u64, Self::Error> {
        let before = self.leases.len();
        self.leases.retain(|_, t| *t > now);
        if self.leases.is_empty() {
            self.ttl = None;
        }
        Ok(before.saturating_sub(self.leases.len()) as u64)
    }
    fn held(&self) -> u64 {
        self.leases.len() as u64
    }
    fn earliest(&self) -> Option<i64> {
        self.leases.values().copied().min()
    }
    fn latest(&self) -> Option<i64> {
        self.leases.values().copied().max()
    }
    fn expiry(&self, token: &[u8]) -> Option<i64> {
        self.leases.get(token).copied()
    }
    fn put(&mut self, token: &[u8], expire_at: i64) -> Result<(), Self::Error> {
        self.leases.insert(token.to_vec(), expire_at);
        Ok(())
    }
    fn remove(&mut self, token: &[u8]) -> Result<bool, Self::Error> {
        let had = self.leases.remove(token).is_some();
        if self.leases.is_empty() {
            self.ttl = None;
        }
        Ok(had)
    }
    fn ttl(&self) -> Option<i64> {
        self.ttl
    }
    fn expire_at(&mut self, at: i64) -> Result<(), Self::Error> {
        self.ttl = Some(at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok<T>(r: Result<T, std::convert::Infallible>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => match e {},
        }
    }

    /// Table-driven: each row sets `now` and says what the call answers.
    #[test]
    fn a_pool_of_two() {
        let mut p = MemPool::default();
        let a = |p: &mut MemPool, t: &[u8], now| ok(acquire(p, t, 2, 1000, now));
        let got = a(&mut p, b"a", 0);
        assert_eq!((got.taken, got.in_use, got.retry_after_ms), (true, 1, 0));
        assert_eq!(p.ttl, Some(1000));
        let got = a(&mut p, b"b", 400);
        assert_eq!((got.taken, got.in_use), (true, 2));
        assert_eq!(p.ttl, Some(1400));
        let got = a(&mut p, b"c", 500);
        assert_eq!((got.taken, got.in_use, got.retry_after_ms), (false, 2, 500));
        // `a` expires at 1000: live while now < 1000.
        assert_eq!(a(&mut p, b"c", 999).retry_after_ms, 1);
        let got = a(&mut p, b"c", 1000);
        assert_eq!((got.taken, got.in_use, got.expired), (true, 2, 1));
        // Renewing moves the pool's expiry with its latest lease.
        assert!(ok(renew(&mut p, b"b", 5000, 1100)).done);
        assert_eq!(p.ttl, Some(6100));
        assert!(!ok(renew(&mut p, b"a", 5000, 1100)).done);
        // Releasing the latest brings the pool's expiry back.
        assert!(ok(release(&mut p, b"b", 1200)).done);
        assert_eq!(p.ttl, Some(2000));
        assert!(!ok(release(&mut p, b"b", 1200)).done);
        assert!(ok(release(&mut p, b"c", 1200)).done);
        assert_eq!(p, MemPool::default(), "an emptied pool is gone");
        // A pool without an expiry (written by another client) is settled
        // in full.
        p.leases.insert(b"x".to_vec(), 9000);
        assert!(a(&mut p, b"y", 2000).taken);
        assert_eq!(p.ttl, Some(9000));
    }

    /// The brute-force model: a list of (token, expiry), each call keeping
    /// only the leases live at its time, then counting them.
    #[derive(Default)]
    struct Model {
        leases: Vec<(u8, i64)>,
    }

    impl Model {
        fn live(&mut self, now: i64) {
            self.leases.retain(|&(_, t)| t > now);
        }
        fn acquire(&mut self, token: u8, max: u64, ttl: u64, now: i64) -> (bool, u64, u64) {
            self.live(now);
            let n = self.leases.len() as u64;
            if n >= max {
                let soonest = self.leases.iter().map(|&(_, t)| t).min().unwrap();
                return (false, n, (soonest - now) as u64);
            }
            self.leases.push((token, now + ttl as i64));
            (true, n + 1, 0)
        }
        fn renew(&mut self, token: u8, ttl: u64, now: i64) -> bool {
            self.live(now);
            let found = self.leases.iter_mut().find(|(t, _)| *t == token);
            found.map(|l| l.1 = now + ttl as i64).is_some()
        }
        fn release(&mut self, token: u8, now: i64) -> bool {
            self.live(now);
            let before = self.leases.len();
            self.leases.retain(|&(t, _)| t != token);
            self.leases.len() < before
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire {
            max: u64,
            ttl: u64,
        },
        Renew {
            token: u8,
            ttl: u64,
        },
        Release {
            token: u8,
        },
        /// The clock moves (backwards too: a stepped clock).
        Step(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..5, 1u64..60).prop_map(|(max, ttl)| Op::Acquire { max, ttl }),
            2 => (0u8..12, 1u64..60).prop_map(|(token, ttl)| Op::Renew { token, ttl }),
            2 => (0u8..12).prop_map(|token| Op::Release { token }),
            3 => (-10i64..40).prop_map(Op::Step),
        ]
    }

    proptest! {
        /// For any interleaving, the pool answers as the model, holds what
        /// the model holds, never more than the `max` of an acquisition
        /// that took, and expires with its latest lease.
        #[test]
        fn leases_never_exceed_max(ops in proptest::collection::vec(op(), 1..80)) {
            let (mut pool, mut model, mut now) = (MemPool::default(), Model::default(), 1000i64);
            for op in ops {
                match op {
                    Op::Acquire { max, ttl } => {
                        // A fresh token, as the server's random ones are.
                        let next = (0u8..12).find(|t| !pool.leases.contains_key(&[*t][..])).unwrap();
                        let token = [next];
                        let got = ok(acquire(&mut pool, &token, max, ttl, now));
                        let want = model.acquire(next, max, ttl, now);
                        prop_assert_eq!((got.taken, got.in_use, got.retry_after_ms), want);
                        if got.taken {
                            prop_assert!(pool.held() <= max);
                        }
                    }
                    Op::Renew { token, ttl } => {
                        let got = ok(renew(&mut pool, &[token], ttl, now)).done;
                        prop_assert_eq!(got, model.renew(token, ttl, now));
                    }
                    Op::Release { token } => {
                        let got = ok(release(&mut pool, &[token], now)).done;
                        prop_assert_eq!(got, model.release(token, now));
                    }
                    Op::Step(d) => now += d,
                }
                let mut held: Vec<(u8, i64)> = pool.leases.iter().map(|(k, &t)| (k[0], t)).collect();
                let mut want = model.leases.clone();
                held.sort();
                want.sort();
                prop_assert_eq!(&held, &want);
                prop_assert_eq!(pool.ttl, pool.latest());
            }
        }
    }
}
