//! Blocked clients, knowing nothing of plans: a client blocks on a key,
//! and gets exactly one reply — when it is woken, at its deadline, or when
//! `CLIENT UNBLOCK` ends its wait — or none if it disconnects.
//!
//! The owner of a key (the planner, for `PLAN.GET ... WAIT`; a lease pool,
//! for `LEASE.ACQUIRE ... WAIT`) supplies two
//! things: a [`Waiter`], which says what a woken or expired client replies
//! (the planner answers a woken client through the same code path as a
//! fresh call), and a [`Probe`], which looks at the key and says whom to
//! wake: everybody, the first in line, or nobody yet (look again later).
//! A command may also end the waits on a key itself with [`News`] that is
//! not in the keyspace ([`tell`]: the planner's leader failed, or computed
//! a plan it may not store): the clients waiting then are woken with it.
//! This is the shape of Redis's own blocking commands: `blocked.c` blocks,
//! times out and unblocks; each command type says how to serve a client.
//!
//! Exactly one reply, by construction:
//! - Redis's own timeout is not used (clients block with no timeout):
//!   Redis answers its sweep's timed-out clients itself, and a client whose
//!   deadline passed just after the module unblocked it would get no reply
//!   at all. Here a module timer per waiter serves the deadline instead.
//! - Every `RM_UnblockClient` with a reply happens from a timer (a probe or
//!   a deadline), never from a command: a command that may end a wait
//!   ([`wake`]) arms the key's probe to run at once. Redis serves a client
//!   unblocked in a timer right after the timers run, before any other
//!   command can touch it.
//! - A waiter leaves the registry exactly once (woken, expired, unblocked
//!   or disconnected), and only the one who removed it unblocks it.
//! - Nothing is written for a client before its reply callback runs: a
//!   lock is taken for a woken client only by the reply that carries its
//!   token, so a client that vanished in between costs no ghost lock.
//!
//! `RM_BlockClientOnKeys` is not used: Redis 7.0 serves module clients
//! blocked on a key only while that key exists, and the plan key does not
//! exist while followers wait for it.
//!
//! Counters: every blocked client ends in exactly one of `wait_woken`,
//! `wait_timed_out`, `wait_disconnected` or `wait_unblocked`.

use crate::reply::{Reply, PANIC_REPLY};
use crate::stats::{self, bump, c};
use redis_module::{raw, Context, RedisError};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a command tells the clients waiting on a key ([`tell`]), for their
/// owner's [`Waiter::woken`] to read back (by downcasting).
pub type News = Rc<dyn Any>;

type Bc = *mut raw::RedisModuleBlockedClient;
type TimerId = raw::RedisModuleTimerID;

/// How a woken client was served, for `INFO okome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// It got the value it waited for.
    Hit,
    /// It got the lock (a token) and becomes the leader; or it got a lease.
    Leader,
    /// Anything else (the key's state changed again, an error).
    Other,
}

/// A woken client's reply, and how it was served.
pub struct Woken {
    pub reply: Reply,
    pub served: Served,
}

impl Woken {
    /// The reply of a woken client whose owner failed with `e`.
    pub fn failed(e: okome_core::Error) -> Woken {
        Woken {
            reply: Err(e),
            served: Served::Other,
        }
    }
}

/// What a blocked client replies.
pub trait Waiter {
    /// The reply of a client that was woken: the owner looks again, as a
    /// fresh call would; or, woken by [`tell`], answers with its `news`.
    fn woken(&self, ctx: &Context, news: Option<&dyn Any>) -> Woken;
    /// The reply at its deadline, or for `CLIENT UNBLOCK [TIMEOUT]`.
    fn expired(&self, ctx: &Context) -> Reply;
    /// What the key's [`Probe`] needs to know of the first waiter in line
    /// (a lease pool's `max`, which is each caller's own); 0 by default.
    fn probe_arg(&self) -> u64 {
        0
    }
}

/// What the owner of a key decides when its waiters are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wake every waiter (the value they wait for is there).
    WakeAll,
    /// Wake the first waiter (it may take over); the others keep waiting
    /// and are looked at again once it has been served.
    WakeFirst,
    /// Nobody yet: look again in this many ms.
    ProbeIn(i64),
}

/// Looks at a key (in the db of its waiters) and says whom to wake, given
/// the first waiter's [`Waiter::probe_arg`].
pub type Probe = fn(&Context, &[u8], u64) -> Verdict;

/// What a client waits on, and names its queue: a db and a key in it.
type WaitKey = (c_int, Vec<u8>);

struct Entry {
    bc: Bc,
    wait_key: WaitKey,
    client_id: u64,
    deadline: Option<TimerId>,
    /// When the wait ends, on the monotonic clock (see [`on_deadline`]).
    ends_at: Instant,
    waiter: Box<dyn Waiter>,
    /// What a command told it ([`tell`]): it is woken with it at once.
    news: Option<News>,
}

struct Queue {
    /// Waiter ids in arrival order.
    ids: VecDeque<u64>,
    probe: Probe,
    /// The pending probe timer, stopped when the queue empties so that
    /// nothing outlives the waiters.
    timer: Option<TimerId>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    by_bc: BTreeMap<usize, u64>,
    queues: BTreeMap<WaitKey, Queue>,
}

thread_local! {
    /// Blocked clients are made, woken and freed on Redis's main thread.
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
    /// The client Redis is freeing right now (from the client-change
    /// event), to tell a disconnection from `CLIENT UNBLOCK ... ERROR`.
    static FREEING: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` on the registry, then records how many clients wait
/// (`waiting_clients` in `INFO okome`).
fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let out = f(&mut r);
        stats::set_waiting(r.entries.len());
        out
    })
}

/// What leaving the registry left to do: timers to stop.
#[derive(Default)]
struct Leftover {
    /// Probe timers: their data is a boxed [`WaitKey`].
    probes: Vec<TimerId>,
    /// Deadline timers: their data is a plain waiter id.
    deadlines: Vec<TimerId>,
}

impl Registry {
    /// Adds waiter `id` at the end of its queue (made with `probe` if it
    /// is new); whether the queue's probe timer must be armed.
    fn add(&mut self, id: u64, entry: Entry, probe: Probe) -> bool {
        self.by_bc.insert(entry.bc as usize, id);
        let q = self
            .queues
            .entry(entry.wait_key.clone())
            .or_insert_with(|| Queue {
                ids: VecDeque::new(),
                probe,
                timer: None,
            });
        q.ids.push_back(id);
        let arm = q.timer.is_none();
        self.entries.insert(id, entry);
        arm
    }

    /// Removes waiter `id` from its queue; the deadline timer and, if the
    /// queue is now empty, its probe timer go to `left`.
    fn remove(&mut self, id: u64, left: &mut Leftover) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.by_bc.remove(&(e.bc as usize));
        left.deadlines.extend(e.deadline);
        if let Some(q) = self.queues.get_mut(&e.wait_key) {
            q.ids.retain(|&i| i != id);
            if q.ids.is_empty() {
                if let Some(q) = self.queues.remove(&e.wait_key) {
                    left.probes.extend(q.timer);
                }
            }
        }
        Some(e)
    }
}

/// Whether this context may block (not inside MULTI, a script or a
/// function, nor a client that must not block).
pub fn can_block(ctx: &Context) -> bool {
    // SAFETY: plain query of the context.
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.ctx)) } as u32;
    flags
        & (raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING
            | raw::REDISMODULE_CTX_FLAGS_MULTI
            | raw::REDISMODULE_CTX_FLAGS_LUA)
        == 0
}

fn selected_db(ctx: &Context) -> c_int {
    // SAFETY: plain query of the context.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) }
}

fn create_timer(
    ctx: *mut raw::RedisModuleCtx,
    after_ms: i64,
    cb: extern "C" fn(*mut raw::RedisModuleCtx, *mut c_void),
    data: *mut c_void,
) -> Option<TimerId> {
    let period = after_ms.clamp(0, i64::MAX / 2);
    // SAFETY: the callback takes `data` back (or `stop_timers` frees it).
    unsafe { raw::RedisModule_CreateTimer.map(|f| f(ctx, period, Some(cb), data)) }
}

/// Stops timers that have not fired and frees the data of probe timers.
fn stop_timers(ctx: *mut raw::RedisModuleCtx, left: Leftover) {
    let Some(stop) = (unsafe { raw::RedisModule_StopTimer }) else {
        return;
    };
    for (id, is_probe) in left
        .probes
        .into_iter()
        .map(|id| (id, true))
        .chain(left.deadlines.into_iter().map(|id| (id, false)))
    {
        let mut data: *mut c_void = ptr::null_mut();
        // SAFETY: `id` came from CreateTimer and was forgotten when it
        // fired, so it has not; on success `data` is ours.
        unsafe {
            if stop(ctx, id, &mut data) == raw::REDISMODULE_OK as c_int
                && is_probe
                && !data.is_null()
            {
                drop(Box::from_raw(data.cast::<WaitKey>()));
            }
        }
    }
}

/// Blocks the calling client on `key` for at most `wait_ms`; `probe`
/// first looks at the key after `probe_in_ms`. Hands `waiter` back if Redis
/// refused to block.
pub fn block(
    ctx: &Context,
    key: &[u8],
    wait_ms: u64,
    waiter: Box<dyn Waiter>,
    probe: Probe,
    probe_in_ms: i64,
) -> Result<(), Box<dyn Waiter>> {
    let Some((bc, client_id)) = block_client(ctx) else {
        return Err(waiter);
    };
    let wait_key = (selected_db(ctx), key.to_vec());
    let id = with_registry(|r| {
        r.next_id = r.next_id.wrapping_add(1);
        r.next_id
    });
    let ends_at = Instant::now() + Duration::from_millis(wait_ms);
    let deadline = create_timer(
        ctx.ctx,
        i64::try_from(wait_ms).unwrap_or(i64::MAX),
        on_deadline,
        id as usize as *mut c_void,
    );
    let entry = Entry {
        bc,
        wait_key: wait_key.clone(),
        client_id,
        deadline,
        ends_at,
        waiter,
        news: None,
    };
    if with_registry(|r| r.add(id, entry, probe)) {
        schedule(ctx.ctx, wait_key, probe_in_ms);
    }
    bump(&c::wait_blocked);
    Ok(())
}

/// Blocks the calling client (no timeout: see the module's comment), with
/// okome's reply, timeout and disconnect callbacks; the handle and the
/// client's id, or `None` if Redis refused.
fn block_client(ctx: &Context) -> Option<(Bc, u64)> {
    // SAFETY: callbacks have the expected signatures; timeout 0 is "none".
    let bc = unsafe {
        raw::RedisModule_BlockClient?(
            ctx.ctx,
            Some(on_reply),
            Some(on_unblock_timeout),
            Some(free_delivery),
            0,
        )
    };
    if bc.is_null() {
        return None;
    }
    // SAFETY: `bc` was just returned by BlockClient; the context has a client.
    let client_id = unsafe {
        if let Some(f) = raw::RedisModule_SetDisconnectCallback {
            f(bc, Some(on_disconnect));
        }
        raw::RedisModule_GetClientId.map_or(0, |f| f(ctx.ctx))
    };
    Some((bc, client_id))
}

/// Something that may end waits on `key` (in the current db) happened: the
/// key's probe runs at once, from a timer. Cheap when nobody waits.
pub fn wake(ctx: &Context, key: &[u8]) {
    if with_registry(|r| r.queues.is_empty()) {
        return;
    }
    let wait_key = (selected_db(ctx), key.to_vec());
    if with_registry(|r| r.queues.contains_key(&wait_key)) {
        schedule(ctx.ctx, wait_key, 0);
    }
}

/// Ends the waits of the clients waiting on `key` (in the current db) now,
/// each woken with `news` (from a timer at once, as [`wake`]; a client
/// that blocks after this is not told). How many were told.
pub fn tell(ctx: &Context, key: &[u8], news: News) -> usize {
    if with_registry(|r| r.queues.is_empty()) {
        return 0;
    }
    let wait_key = (selected_db(ctx), key.to_vec());
    let told = with_registry(|r| {
        let Some(q) = r.queues.get(&wait_key) else {
            return 0;
        };
        let mut told = 0;
        for id in &q.ids {
            if let Some(e) = r.entries.get_mut(id).filter(|e| e.news.is_none()) {
                e.news = Some(Rc::clone(&news));
                told += 1;
            }
        }
        told
    });
    if told > 0 {
        schedule(ctx.ctx, wait_key, 0);
    }
    told
}

/// Whether clients wait on `key` (in the current db).
pub fn queued(ctx: &Context, key: &[u8]) -> bool {
    with_registry(|r| {
        !r.queues.is_empty() && r.queues.contains_key(&(selected_db(ctx), key.to_vec()))
    })
}

/// (Re)arms the probe timer of `wait_key` to run in `after_ms`.
fn schedule(ctx: *mut raw::RedisModuleCtx, wait_key: WaitKey, after_ms: i64) {
    let mut left = Leftover::default();
    let exists = with_registry(|r| match r.queues.get_mut(&wait_key) {
        Some(q) => {
            left.probes.extend(q.timer.take());
            true
        }
        None => false,
    });
    stop_timers(ctx, left);
    if !exists {
        return;
    }
    let data = Box::into_raw(Box::new(wait_key.clone()));
    let Some(id) = create_timer(ctx, after_ms, on_probe, data.cast::<c_void>()) else {
        // SAFETY: the timer was not made, so `data` is still ours.
        drop(unsafe { Box::from_raw(data) });
        return;
    };
    with_registry(|r| {
        if let Some(q) = r.queues.get_mut(&wait_key) {
            q.timer = Some(id);
        }
    });
}

/// What an unblocked client's reply callback gets.
struct Delivery {
    waiter: Box<dyn Waiter>,
    woken: bool,
    /// What it was told ([`tell`]), if that woke it.
    news: Option<News>,
    /// Set once the reply callback ran; a delivery freed without it means
    /// the client went away first.
    replied: Cell<bool>,
}

fn unblock(bc: Bc, delivery: Option<Delivery>) {
    let data = delivery.map_or(ptr::null_mut(), |d| {
        Box::into_raw(Box::new(d)).cast::<c_void>()
    });
    // SAFETY: `bc` is a blocked client not yet unblocked: it was in the
    // registry and has just been removed from it by the caller.
    unsafe {
        if let Some(f) = raw::RedisModule_UnblockClient {
            f(bc, data);
        }
    }
}

extern "C" fn on_probe(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` came from Box::into_raw in `schedule`.
    let wait_key = *unsafe { Box::from_raw(data.cast::<WaitKey>()) };
    stats::guard(ctx, "wait probe timer", || probe_queue(ctx, wait_key));
}

fn probe_queue(ctx: *mut raw::RedisModuleCtx, wait_key: WaitKey) {
    if wake_told(ctx, &wait_key) {
        return;
    }
    let probe = with_registry(|r| {
        let q = r.queues.get_mut(&wait_key)?;
        // This timer has fired: it must not be stopped later.
        q.timer = None;
        let probe = q.probe;
        let first = q.ids.front().and_then(|id| r.entries.get(id));
        Some((probe, first.map_or(0, |e| e.waiter.probe_arg())))
    });
    let Some((probe, arg)) = probe else {
        return;
    };
    // SAFETY: selecting the db the waiters are in (a timer's own context).
    unsafe {
        if let Some(f) = raw::RedisModule_SelectDb {
            f(ctx, wait_key.0);
        }
    }
    let context = Context::new(ctx);
    let verdict = probe(&context, &wait_key.1, arg);
    let mut left = Leftover::default();
    let (woken, more) = with_registry(|r| {
        let ids: Vec<u64> = match (verdict, r.queues.get(&wait_key)) {
            (Verdict::WakeAll, Some(q)) => q.ids.iter().copied().collect(),
            (Verdict::WakeFirst, Some(q)) => q.ids.front().copied().into_iter().collect(),
            _ => Vec::new(),
        };
        let woken: Vec<Entry> = ids
            .into_iter()
            .filter_map(|id| r.remove(id, &mut left))
            .collect();
        (woken, r.queues.contains_key(&wait_key))
    });
    stop_timers(ctx, left);
    for e in woken {
        deliver_woken(e);
    }
    if more {
        let after = match verdict {
            // Look again once the woken client has been served (Redis
            // serves it before the next timers run).
            Verdict::WakeAll | Verdict::WakeFirst => 1,
            Verdict::ProbeIn(ms) => ms,
        };
        schedule(ctx, wait_key, after);
    }
}

/// The probe timer of `wait_key` fired: wakes the clients that were told
/// something ([`tell`]), and looks at the rest once they have been served;
/// whether any was told.
fn wake_told(ctx: *mut raw::RedisModuleCtx, wait_key: &WaitKey) -> bool {
    let mut left = Leftover::default();
    let (told, more) = with_registry(|r| {
        let Some(q) = r.queues.get_mut(wait_key) else {
            return (Vec::new(), false);
        };
        // This timer has fired: it must not be stopped later.
        q.timer = None;
        let ids: Vec<u64> = q
            .ids
            .iter()
            .copied()
            .filter(|id| r.entries.get(id).is_some_and(|e| e.news.is_some()))
            .collect();
        let told: Vec<Entry> = ids
            .into_iter()
            .filter_map(|id| r.remove(id, &mut left))
            .collect();
        (told, r.queues.contains_key(wait_key))
    });
    if told.is_empty() {
        return false;
    }
    stop_timers(ctx, left);
    for e in told {
        deliver_woken(e);
    }
    if more {
        schedule(ctx, wait_key.clone(), 1);
    }
    true
}

/// Unblocks a woken client, with what it was told.
fn deliver_woken(e: Entry) {
    unblock(
        e.bc,
        Some(Delivery {
            waiter: e.waiter,
            woken: true,
            news: e.news,
            replied: Cell::new(false),
        }),
    );
}

/// A waiter's deadline timer. Module timers keep time on the server's
/// wall clock (`ustime()`: `gettimeofday`), which a step of the system
/// clock moves; the wait's end is also kept on the monotonic clock (the one
/// a client's timeout runs on), and a timer that fires before it is armed
/// again for the rest (counted in `wait_deadline_early`).
extern "C" fn on_deadline(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    let id = data as usize as u64;
    stats::guard(ctx, "wait deadline timer", || {
        let early = with_registry(|r| {
            let e = r.entries.get_mut(&id)?;
            // This timer has fired: it must not be stopped later.
            e.deadline = None;
            let left = e.ends_at.checked_duration_since(Instant::now())?;
            Some(left).filter(|d| !d.is_zero())
        });
        match early {
            Some(left) => rearm_deadline(ctx, id, left),
            None => serve_deadline(ctx, id),
        }
    });
}

/// Arms waiter `id`'s deadline timer again, to fire in `left` (rounded up
/// to the next ms); serves the deadline now if no timer can be made.
fn rearm_deadline(ctx: *mut raw::RedisModuleCtx, id: u64, left: Duration) {
    bump(&c::wait_deadline_early);
    let ms = i64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i64::MAX);
    match create_timer(ctx, ms.max(1), on_deadline, id as usize as *mut c_void) {
        Some(t) => with_registry(|r| {
            if let Some(e) = r.entries.get_mut(&id) {
                e.deadline = Some(t);
            }
        }),
        None => serve_deadline(ctx, id),
    }
}

/// Waiter `id`'s wait is over: it replies as at its deadline.
fn serve_deadline(ctx: *mut raw::RedisModuleCtx, id: u64) {
    let mut left = Leftover::default();
    let found = with_registry(|r| r.remove(id, &mut left));
    stop_timers(ctx, left);
    if let Some(e) = found {
        unblock(
            e.bc,
            Some(Delivery {
                waiter: e.waiter,
                woken: false,
                news: None,
                replied: Cell::new(false),
            }),
        );
    }
}

/// Runs `f`, the body of the reply callback `callback`, turning a panic
/// into an error reply (logged and counted by [`stats::guard`]).
fn guarded(
    ctx: *mut raw::RedisModuleCtx,
    callback: &str,
    f: impl FnOnce(&Context) -> Reply,
) -> c_int {
    let context = Context::new(ctx);
    let reply = match stats::guard(ctx, callback, || f(&context)) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(RedisError::String(e.to_string())),
        None => Err(RedisError::Str(PANIC_REPLY)),
    };
    context.reply(reply) as c_int
}

extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guarded(ctx, "wait reply", |context| {
        // SAFETY: the private data is the `Delivery` given to UnblockClient.
        let delivery = unsafe {
            raw::RedisModule_GetBlockedClientPrivateData
                .map_or(ptr::null_mut(), |f| f(context.ctx))
                .cast::<Delivery>()
                .as_ref()
        };
        let Some(d) = delivery else {
            return Err(okome_core::Error::BadKey(
                "okome internal error: lost wait state".into(),
            ));
        };
        d.replied.set(true);
        if !d.woken {
            bump(&c::wait_timed_out);
            return d.waiter.expired(context);
        }
        let Woken { reply, served } = d.waiter.woken(context, d.news.as_deref());
        bump(&c::wait_woken);
        bump(match served {
            Served::Hit => &c::wait_woken_hit,
            Served::Leader => &c::wait_woken_leader,
            Served::Other => &c::wait_woken_other,
        });
        reply
    })
}

/// `CLIENT UNBLOCK <id> [TIMEOUT]`: the client replies as at its deadline.
extern "C" fn on_unblock_timeout(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: inside a timeout callback the handle is the blocked client.
    let bc = unsafe { raw::RedisModule_GetBlockedClientHandle.map_or(ptr::null_mut(), |f| f(ctx)) };
    let mut left = Leftover::default();
    let found = with_registry(|r| {
        let id = *r.by_bc.get(&(bc as usize))?;
        r.remove(id, &mut left)
    });
    stop_timers(ctx, left);
    let Some(e) = found else {
        // Not ours to answer (already woken): Redis only calls this for a
        // client that has not been unblocked, so this does not happen.
        return raw::REDISMODULE_OK as c_int;
    };
    bump(&c::wait_unblocked);
    let rc = guarded(ctx, "CLIENT UNBLOCK timeout", |context| {
        e.waiter.expired(context)
    });
    unblock(e.bc, None);
    rc
}

/// The client disconnected, or `CLIENT UNBLOCK <id> ERROR` ended its wait
/// (Redis replies the error itself).
extern "C" fn on_disconnect(ctx: *mut raw::RedisModuleCtx, bc: Bc) {
    stats::guard(ctx, "wait disconnect", || {
        let mut left = Leftover::default();
        let found = with_registry(|r| {
            let id = *r.by_bc.get(&(bc as usize))?;
            r.remove(id, &mut left)
        });
        stop_timers(ctx, left);
        if let Some(e) = found {
            let gone = FREEING.with(Cell::get) == e.client_id && e.client_id != 0;
            bump(if gone {
                &c::wait_disconnected
            } else {
                &c::wait_unblocked
            });
            unblock(e.bc, None);
        }
    });
}

extern "C" fn free_delivery(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` came from Box::into_raw in `unblock`.
    let d = unsafe { Box::from_raw(data.cast::<Delivery>()) };
    if !d.replied.get() {
        // Unblocked with a reply, but the client went away before Redis
        // could serve it: nothing was written for it.
        bump(&c::wait_disconnected);
    }
}

/// The client-change event: remembers which client Redis is freeing, so
/// that [`on_disconnect`] can tell a disconnection from `CLIENT UNBLOCK`.
extern "C" fn on_client_change(
    _ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    if subevent != raw::REDISMODULE_SUBEVENT_CLIENT_CHANGE_DISCONNECTED || data.is_null() {
        return;
    }
    // SAFETY: for this event the data is a RedisModuleClientInfo.
    let id = unsafe { (*data.cast::<raw::RedisModuleClientInfo>()).id };
    FREEING.with(|f| f.set(id));
}

/// `FLUSHALL`/`FLUSHDB` done, or `SWAPDB`: the keys waited on may have
/// changed all at once, so every queue is looked at now rather than when
/// its lock would have expired.
extern "C" fn on_keyspace_swapped(
    ctx: *mut raw::RedisModuleCtx,
    eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if eid.id == raw::REDISMODULE_EVENT_FLUSHDB && subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_END
    {
        return;
    }
    stats::guard(ctx, "flush and swapdb event", || {
        let wait_keys: Vec<WaitKey> = with_registry(|r| r.queues.keys().cloned().collect());
        for wait_key in wait_keys {
            schedule(ctx, wait_key, 0);
        }
    });
}

/// Subscribes to the events the machinery needs (at load).
pub fn init(ctx: &Context) -> bool {
    type Callback =
        extern "C" fn(*mut raw::RedisModuleCtx, raw::RedisModuleEvent, u64, *mut c_void);
    let events: [(u64, Callback); 3] = [
        (raw::REDISMODULE_EVENT_CLIENT_CHANGE, on_client_change),
        (raw::REDISMODULE_EVENT_FLUSHDB, on_keyspace_swapped),
        (raw::REDISMODULE_EVENT_SWAPDB, on_keyspace_swapped),
    ];
    events.into_iter().all(|(id, cb)| {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        // SAFETY: a valid event and a callback with the expected signature.
        unsafe {
            raw::RedisModule_SubscribeToServerEvent
                .is_some_and(|f| f(ctx.ctx, event, Some(cb)) == raw::REDISMODULE_OK as c_int)
        }
    })
}
