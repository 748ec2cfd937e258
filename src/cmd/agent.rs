//! `OKOME.AGENT.RECORD`, `OKOME.AGENT.KEYS` and `OKOME.AGENT.PURGE`, and
//! recording a write in an agent's ledger (`crate::ledger`) as the other
//! writing commands do.

use crate::acl;
use crate::call::Call;
use crate::cluster;
use crate::ledger::{Entry, Ledger};
use crate::reply::{bulk, bulk_str, ms, Reply};
use crate::rkey::{Holds, Key};
use crate::stats::{bump, c};
use crate::wait;
use okome_core::command;
use okome_core::config::Config;
use okome_core::declared::{Access, Declared};
use okome_core::keys::{self, printable};
use okome_core::Error;
use redis_module::{Context, RedisValue};

/// Records `key`, expiring at `at`, in an open ledger; the ledger's size.
pub fn record(
    ctx: &Context,
    ledger: &Ledger,
    key: &[u8],
    at: i64,
    now: i64,
    cfg: &Config,
) -> Result<u64, Error> {
    let r = ledger.record(ctx, key, at, now, cfg.ledger_max_keys)?;
    bump(&c::ledger_records);
    for _ in 0..r.dropped {
        bump(&c::ledger_dropped);
    }
    Ok(r.size)
}

/// Whether an agent command (routed to, and checked to run on, the slot
/// of `ledger`) may touch `key`: always outside a cluster; in a cluster
/// only in the ledger's own slot. One command never touches two slots,
/// even two that this node serves: Redis 7.4+ and Valkey 8+ keep one
/// keyspace per slot and look a command's keys up in the slot it was
/// routed by.
fn in_ledger_slot(ledger: &[u8], key: &[u8]) -> bool {
    !cluster::enabled() || keys::slot(key) == keys::slot(ledger)
}

/// OKOME.AGENT.RECORD agent key [PXAT ms]
pub fn agent_record(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_agent_record)?;
    let (now, cfg) = (call.now, call.cfg());
    let at = if in_ledger_slot(&req.ledger, req.key) {
        expiry_here(ctx, req.key, req.pxat)?
    } else {
        // Not declared (another slot): the user must still be allowed to
        // write it, as if it were.
        let both = Declared::none()
            .with(Access::ReadWrite, req.ledger.clone())
            .with(Access::ReadWrite, req.key.to_vec());
        acl::check(
            ctx,
            command::AGENT_RECORD.name,
            &both,
            req.key,
            "records it from another slot",
        )?;
        let Some(p) = req.pxat else {
            return Err(Error::Raw(format!(
                "ERR okome: '{}' is in slot {}, not in the agent's slot {}; in a cluster, record a key of another slot with OKOME.AGENT.RECORD <agent> <key> PXAT <its PEXPIRETIME, read on its node>",
                printable(req.key),
                keys::slot(req.key),
                keys::slot(&req.ledger)
            )));
        };
        command::check_pxat(req.kind, p, now, cfg)?;
        p
    };
    let ledger = Ledger::open(ctx, &req.ledger, true)?;
    let size = record(ctx, &ledger, req.key, at, now, cfg)?;
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(at.saturating_sub(now).max(0)),
        RedisValue::Integer(ms(size)),
    ]))
}

/// The expiry of `key`, a key of this node that holds a value with a TTL
/// (`pxat`, if given, must be it): what `AGENT.RECORD` records.
fn expiry_here(ctx: &Context, key: &[u8], pxat: Option<i64>) -> Result<i64, Error> {
    let shown = printable(key);
    let key = Key::open(ctx, key, false);
    if key.string()?.is_none() {
        return Err(Error::BadKey(format!(
            "key '{shown}' does not exist: only a key that holds a value can be recorded"
        )));
    }
    let Some(at) = key.abs_expire() else {
        return Err(Error::BadKey(format!(
            "key '{shown}' has no TTL: okome writes every cache key with one, so this key was written some other way and cannot be recorded"
        )));
    };
    if let Some(p) = pxat.filter(|&p| p != at) {
        return Err(Error::BadKey(format!(
            "pxat {p} is not the expiry of '{shown}', which expires at {at}"
        )));
    }
    Ok(at)
}

/// What a ledger entry's key holds now, as `AGENT.KEYS` and `AGENT.PURGE`
/// see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Still holds the agent's write (the expiry recorded): purged.
    Current,
    /// Written again since (another expiry): left alone.
    Rewritten,
    /// No longer exists (expired, deleted).
    Gone,
    /// In another slot than the agent's (a cluster): not looked at.
    Elsewhere,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Rewritten => "rewritten",
            State::Gone => "gone",
            State::Elsewhere => "elsewhere",
        }
    }
}

/// The state of `e`'s key (an entry of `ledger`), checked by
/// [`check_entries`].
fn state(ctx: &Context, ledger: &[u8], e: &Entry, now: i64) -> State {
    if e.expiry_ms < now {
        return State::Gone;
    }
    if !in_ledger_slot(ledger, &e.key) {
        return State::Elsewhere;
    }
    let key = Key::open(ctx, &e.key, false);
    if key.holds() == Holds::Nothing {
        State::Gone
    } else if key.abs_expire() == Some(e.expiry_ms) {
        State::Current
    } else {
        State::Rewritten
    }
}

/// The ledger of an agent command and its entries, with how the command
/// touches each.
struct Touched<'a> {
    command: &'static str,
    ledger: &'a [u8],
    ledger_access: Access,
    entries: &'a [Entry],
    access: Access,
}

/// Checks the keys of `l.entries` that an agent command will look at
/// (live, in the ledger's slot) as if the call had declared them with
/// `l.access` beside its ledger: the user's ACL, and in a cluster that this
/// node may serve them now (`TRYAGAIN` while some have moved away in a
/// slot migration). Nothing has been written yet.
fn check_entries(ctx: &Context, l: &Touched, now: i64) -> Result<(), Error> {
    let looked_at: Vec<&Entry> = l
        .entries
        .iter()
        .filter(|e| e.expiry_ms >= now && in_ledger_slot(l.ledger, &e.key))
        .collect();
    let base = Declared::none().with(l.ledger_access, l.ledger.to_vec());
    let found: Vec<(Access, &[u8])> = looked_at
        .iter()
        .map(|e| (l.access, e.key.as_slice()))
        .collect();
    acl::check_found(
        ctx,
        l.command,
        &base,
        &found,
        "found it in the agent's ledger",
    )
}

/// OKOME.AGENT.KEYS agent [COUNT n] [CURSOR c]
pub fn agent_keys(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_agent_keys)?;
    let now = call.now;
    let ledger = Ledger::open(ctx, &req.ledger, false)?;
    let (entries, next) = ledger.page(ctx, now, req.count, req.cursor.as_ref())?;
    drop(ledger);
    let looked = Touched {
        command: command::AGENT_KEYS.name,
        ledger: &req.ledger,
        ledger_access: Access::Read,
        entries: &entries,
        access: Access::Read,
    };
    check_entries(ctx, &looked, now)?;
    let mut items = Vec::with_capacity(entries.len());
    for e in &entries {
        let st = state(ctx, &req.ledger, e, now);
        items.push(RedisValue::Array(vec![
            bulk(&e.key),
            RedisValue::Integer(e.expiry_ms.saturating_sub(now).max(0)),
            bulk_str(st.name()),
        ]));
    }
    let cursor = next.map_or_else(|| b"0".to_vec(), |cursor| cursor.encode());
    Ok(RedisValue::Array(vec![
        RedisValue::StringBuffer(cursor),
        RedisValue::Array(items),
    ]))
}

/// OKOME.AGENT.PURGE agent [COUNT n]
pub fn agent_purge(ctx: &Context, call: &Call) -> Reply {
    let req = call.request(command::parse_agent_purge)?;
    let now = call.now;
    let ledger = Ledger::open(ctx, &req.ledger, true)?;
    let total = ledger.len();
    let entries = ledger.oldest(ctx, req.count)?;
    // Check every key first (ACL included), so a refusal writes nothing.
    let looked = Touched {
        command: command::AGENT_PURGE.name,
        ledger: &req.ledger,
        ledger_access: Access::ReadWrite,
        entries: &entries,
        access: Access::Write,
    };
    check_entries(ctx, &looked, now)?;
    let states: Vec<State> = entries
        .iter()
        .map(|e| state(ctx, &req.ledger, e, now))
        .collect();
    let purged = purge(ctx, &entries, &states)?;
    ledger.remove_oldest(ctx, &entries)?;
    let remaining = total.saturating_sub(entries.len() as u64);
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(purged.deleted),
        RedisValue::Integer(purged.left),
        RedisValue::Integer(purged.gone),
        RedisValue::Integer(ms(remaining)),
        RedisValue::Array(purged.elsewhere),
    ]))
}

/// What `AGENT.PURGE` did with the entries it took from the ledger.
#[derive(Default)]
struct Purged {
    deleted: i64,
    left: i64,
    gone: i64,
    /// `[key, expiry]` of each entry in another slot.
    elsewhere: Vec<RedisValue>,
}

/// Deletes the keys of `entries` that still hold the agent's write
/// (`states`, as [`state`] saw them), waking a deleted plan's waiters.
fn purge(ctx: &Context, entries: &[Entry], states: &[State]) -> Result<Purged, Error> {
    let mut purged = Purged::default();
    for (e, st) in entries.iter().zip(states) {
        match st {
            State::Current => {
                Key::open(ctx, &e.key, true).delete(ctx)?;
                purged.deleted += 1;
                bump(&c::ledger_purged);
                if e.kind == keys::Kind::Planner {
                    wait::wake(ctx, &e.key);
                }
            }
            State::Rewritten => purged.left += 1,
            State::Gone => purged.gone += 1,
            State::Elsewhere => purged.elsewhere.push(RedisValue::Array(vec![
                bulk(&e.key),
                RedisValue::Integer(e.expiry_ms),
            ])),
        }
    }
    Ok(purged)
}
