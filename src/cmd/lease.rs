//! `OKOME.LEASE.ACQUIRE`, `OKOME.LEASE.RENEW` and `OKOME.LEASE.RELEASE`: a
//! subject's concurrency leases, the rules of `okome_core::lease` over a
//! sorted set (member = the lease's token, score = its absolute expiry in
//! Unix ms; the set's own TTL is its latest expiry), and the callers that
//! `WAIT` for a free slot (`crate::wait` blocks them, first come first
//! served; the first in line is woken when a slot is free, and takes its
//! lease in the reply it receives).

use crate::acl;
use crate::call::Call;
use crate::cluster;
use crate::reply::{bulk, ms, Reply};
use crate::rkey::{self, Key, Name};
use crate::server;
use crate::stats::{bump, c};
use crate::wait::{self, Served, Verdict, Woken};
use crate::zset;
use okome_core::command::{self, lease_id, LeaseAcquire};
use okome_core::lease::{self, Acquired, Pool};
use okome_core::Error;
use redis_module::{raw, Context, RedisValue};

/// A lease pool, open for writing: the core's [`Pool`] over the sorted set,
/// each change replicated as its effect (`ZADD key t token`, `ZREM key
/// token`, `ZREMRANGEBYSCORE key -inf <now>`, `PEXPIREAT key t`).
struct Stored<'a> {
    ctx: &'a Context,
    key: Key,
}

impl<'a> Stored<'a> {
    /// Opens the pool at `name`; `WRONGTYPE` unless it is empty or a
    /// sorted set.
    fn open(ctx: &'a Context, name: &[u8]) -> Result<Stored<'a>, Error> {
        let key = Key::open(ctx, name, true);
        match key.key_type() {
            raw::REDISMODULE_KEYTYPE_EMPTY | raw::REDISMODULE_KEYTYPE_ZSET => {
                Ok(Stored { ctx, key })
            }
            _ => Err(Error::WrongType),
        }
    }
}

impl Pool for Stored<'_> {
    type Error = Error;
    fn prune(&mut self, now: i64) -> Result<u64, Error> {
        zset::remove_upto(self.ctx, &self.key, now)
    }
    fn held(&self) -> u64 {
        zset::len(&self.key)
    }
    fn earliest(&self) -> Option<i64> {
        zset::end(self.ctx, &self.key, true).map(|(s, _)| s as i64)
    }
    fn latest(&self) -> Option<i64> {
        zset::end(self.ctx, &self.key, false).map(|(s, _)| s as i64)
    }
    fn expiry(&self, token: &[u8]) -> Option<i64> {
        zset::score(&self.key, &Name::new(token)).map(|s| s as i64)
    }
    fn put(&mut self, token: &[u8], expire_at: i64) -> Result<(), Error> {
        zset::add(self.ctx, &self.key, &Name::new(token), token, expire_at)
    }
    fn remove(&mut self, token: &[u8]) -> Result<bool, Error> {
        zset::remove_one(self.ctx, &self.key, token)
    }
    fn ttl(&self) -> Option<i64> {
        self.key.abs_expire()
    }
    fn expire_at(&mut self, at: i64) -> Result<(), Error> {
        self.key.set_abs_expire(self.ctx, at)
    }
}

/// `[lease, in_use, retry_after_ms]`: the lease's id if `token` was taken.
fn answer(pool: &[u8], token: &[u8], got: &Acquired) -> RedisValue {
    bump(if got.taken {
        &c::lease_acquired
    } else {
        &c::lease_refused
    });
    let lease = if got.taken {
        bulk(&lease_id(pool, token))
    } else {
        RedisValue::Null
    };
    RedisValue::Array(vec![
        lease,
        RedisValue::Integer(ms(got.in_use)),
        RedisValue::Integer(ms(got.retry_after_ms)),
    ])
}

/// OKOME.LEASE.ACQUIRE subject max ttl_ms [WAIT ms] [NAME name]
pub fn lease_acquire(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_lease_acquire)?;
    let wait_ms = req.wait_ms.filter(|_| wait::can_block(ctx));
    let token = rkey::new_token();
    let mut pool = Stored::open(ctx, &req.key)?;
    // First come, first served: a caller that may wait goes behind the
    // callers already waiting, even if a slot is free (it is theirs).
    let got = if wait_ms.is_some() && wait::queued(ctx, &req.key) {
        lease::peek(&mut pool, req.max, call.now)?
    } else {
        lease::acquire(&mut pool, &token, req.max, req.ttl_ms, call.now)?
    };
    drop(pool);
    if let (false, Some(wait_ms)) = (got.taken, wait_ms) {
        let probe_in = probe_in(&got, req.max);
        let waiter = Box::new(Waiting { req: req.clone() });
        if wait::block(ctx, &req.key, wait_ms, waiter, probe, probe_in).is_ok() {
            return Ok(RedisValue::NoReply);
        }
    }
    Ok(answer(&req.key, &token, &got))
}

/// When a new waiter's queue is first looked at: at once if a slot is
/// free, else just after the soonest lease expires.
fn probe_in(got: &Acquired, max: u64) -> i64 {
    if got.in_use < max {
        0
    } else {
        ms(got.retry_after_ms).saturating_add(1)
    }
}

/// OKOME.LEASE.RENEW lease ttl_ms
pub fn lease_renew(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_lease_renew)?;
    let mut pool = Stored::open(ctx, &req.lease.key)?;
    let done = lease::renew(&mut pool, &req.lease.token, req.ttl_ms, call.now)?.done;
    if done {
        bump(&c::lease_renewed);
    }
    Ok(RedisValue::Integer(i64::from(done)))
}

/// OKOME.LEASE.RELEASE lease
pub fn lease_release(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_lease_release)?;
    let mut pool = Stored::open(ctx, &req.key)?;
    let done = lease::release(&mut pool, &req.token, call.now)?.done;
    drop(pool);
    if done {
        bump(&c::lease_released);
        wait::wake(ctx, &req.key);
    }
    Ok(RedisValue::Integer(i64::from(done)))
}

/// How soon a pool's waiters are looked at again while this node may not
/// write (a pause, a replica, loading, memory full).
const RETRY_MS: i64 = 50;

/// What a pool holds at `now`, read only: the live leases and the
/// soonest live expiry.
fn view(ctx: &Context, name: &[u8], now: i64) -> (u64, Option<i64>) {
    let key = Key::open(ctx, name, false);
    if !zset::is_zset(&key) {
        return (0, None);
    }
    let live = (now.saturating_add(1) as f64, f64::INFINITY);
    let mut n = 0u64;
    let mut soonest = None;
    zset::scan(ctx, &key, live, true, |s, _| {
        soonest = soonest.or(Some(s as i64));
        n = n.saturating_add(1);
        true
    });
    (n, soonest)
}

/// Whom to wake among the waiters of pool `key`, the first of whom asks
/// for `max`: the first in line once the pool has room and this node may
/// write (its reply takes the lease); else nobody until the soonest lease
/// expires, or writes are allowed again.
fn probe(ctx: &Context, key: &[u8], max: u64) -> Verdict {
    if server::background_refusal(ctx).is_some() {
        return Verdict::ProbeIn(RETRY_MS);
    }
    let now = rkey::now_ms();
    match view(ctx, key, now) {
        (n, _) if n < max => Verdict::WakeFirst,
        (_, Some(t)) => Verdict::ProbeIn(t.saturating_sub(now).max(0).saturating_add(1)),
        (_, None) => Verdict::ProbeIn(RETRY_MS),
    }
}

/// A `LEASE.ACQUIRE ... WAIT` caller.
struct Waiting {
    req: LeaseAcquire,
}

impl Waiting {
    /// Takes a lease as a fresh call would (without blocking again), if
    /// this node may write now, and replies.
    fn take(&self, ctx: &Context) -> Result<Woken, Error> {
        let req = &self.req;
        // The slot may have moved to another node, or the user's
        // permissions changed, while it waited.
        let keys = okome_core::command::Request::declared(req, cluster::enabled());
        cluster::check(ctx, &keys)?;
        let checked = "checked it again after waiting";
        acl::check(ctx, command::LEASE_ACQUIRE.name, &keys, &req.key, checked)?;
        if let Some(r) = server::background_refusal(ctx) {
            return Err(r.error("a lease"));
        }
        let token = rkey::new_token();
        let mut pool = Stored::open(ctx, &req.key)?;
        let got = lease::acquire(&mut pool, &token, req.max, req.ttl_ms, rkey::now_ms())?;
        let served = if got.taken {
            Served::Leader
        } else {
            Served::Other
        };
        let reply = Ok(answer(&req.key, &token, &got));
        Ok(Woken { reply, served })
    }
}

impl wait::Waiter for Waiting {
    /// A lease pool is never told anything ([`wait::tell`]).
    fn woken(&self, ctx: &Context, _news: Option<&dyn std::any::Any>) -> Woken {
        self.take(ctx).unwrap_or_else(Woken::failed)
    }

    /// `[nil, in_use, retry_after_ms]`, read without writing.
    fn expired(&self, ctx: &Context) -> Reply {
        let now = rkey::now_ms();
        let (in_use, soonest) = view(ctx, &self.req.key, now);
        let retry_after_ms = match soonest {
            Some(t) if in_use >= self.req.max => u64::try_from(t.saturating_sub(now)).unwrap_or(0),
            _ => 0,
        };
        let got = Acquired {
            taken: false,
            in_use,
            retry_after_ms,
            expired: 0,
        };
        Ok(answer(&self.req.key, &[], &got))
    }

    fn probe_arg(&self) -> u64 {
        self.req.max
    }
}
