//! The agent ledger: which keys okome wrote on an agent's behalf.
//!
//! A plain Redis sorted set at `okome:budget:keys:{<agent>}` (so `ZRANGE`
//! and redis-cli read it): member = the written key, score = that key's
//! absolute expiry (Unix ms) as written. Its own TTL is its highest score:
//! the ledger expires with its latest-expiring entry. Entries whose expiry
//! has passed are pruned as new ones arrive, and the set holds at most
//! `okome.ledger-max-keys` entries (the soonest-expiring is dropped to make
//! room).
//!
//! Written through the low-level sorted-set API, so every change is
//! replicated here as its effect, with absolute bounds only — `ZADD key
//! score member`, `ZREMRANGEBYSCORE key -inf <t>`, `ZREMRANGEBYRANK key 0
//! <n>`, `PEXPIREAT key t`, `DEL key` — which a replica or an AOF replay
//! applies to the same set with the same result. Each change signals the
//! key and fires the keyspace event of the built-in command it replicates.
//!
//! A ledger okome did not write is refused, writing nothing: a key of
//! another type, a sorted set without a TTL or whose TTL is not its highest
//! score, and an entry that is not a cache key with an integer expiry (the
//! first and last entries are checked, cheaply, whenever the ledger is
//! opened; every entry in full when it is read).

use crate::rkey::{EffectArg, Key, Name};
use crate::zset;
use okome_core::command::Cursor;
use okome_core::keys::{self, printable, Kind};
use okome_core::Error;
use redis_module::{raw, Context};

/// One ledger entry: a key and its expiry as written (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub kind: Kind,
    pub expiry_ms: i64,
}

/// What recording did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Entries dropped because the ledger was full.
    pub dropped: u64,
    /// Entries in the ledger now.
    pub size: u64,
}

/// An agent's ledger, open and checked.
pub struct Ledger {
    key: Key,
    name: Vec<u8>,
    /// The lowest score and the highest expiry (= the ledger's TTL) when it
    /// was opened; `None` for an empty ledger.
    bounds: Option<(f64, i64)>,
}

fn type_name(t: isize) -> &'static str {
    match t {
        raw::REDISMODULE_KEYTYPE_STRING => "a string",
        raw::REDISMODULE_KEYTYPE_LIST => "a list",
        raw::REDISMODULE_KEYTYPE_HASH => "a hash",
        raw::REDISMODULE_KEYTYPE_SET => "a set",
        raw::REDISMODULE_KEYTYPE_STREAM => "a stream",
        raw::REDISMODULE_KEYTYPE_MODULE => "a module type",
        _ => "another type",
    }
}

/// A score that okome could have written: a whole, positive number of ms.
fn expiry_of(score: f64) -> Option<i64> {
    // 2^53: every integer below it is exact in a double.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    (score.is_finite() && score.fract() == 0.0 && score > 0.0 && score < EXACT)
        .then_some(score as i64)
}

impl Ledger {
    /// Opens the ledger at `name` (a declared key: Redis checked it), for
    /// writing if `write`, and checks it is empty or an okome ledger.
    pub fn open(ctx: &Context, name: &[u8], write: bool) -> Result<Ledger, Error> {
        let key = Key::open(ctx, name, write);
        let mut l = Ledger {
            key,
            name: name.to_vec(),
            bounds: None,
        };
        l.bounds = l.check_shape(ctx)?;
        Ok(l)
    }

    /// The error for a ledger okome did not write.
    fn garbage(&self, why: &str) -> Error {
        Error::BadKey(format!(
            "'{}' does not hold an okome agent ledger ({why}; was it written by another client?); nothing was written; DEL it to start a new ledger",
            printable(&self.name)
        ))
    }

    /// Checks the ledger's shape; its lowest score and highest expiry.
    fn check_shape(&self, ctx: &Context) -> Result<Option<(f64, i64)>, Error> {
        match self.key.key_type() {
            raw::REDISMODULE_KEYTYPE_EMPTY => Ok(None),
            raw::REDISMODULE_KEYTYPE_ZSET => {
                let Some(ttl_at) = self.key.abs_expire() else {
                    return Err(self.garbage("a sorted set without a TTL"));
                };
                // The first and last entries are read anyway when the
                // ledger is written: check them as entries too.
                let (Some((top, last)), Some((low, first))) = (self.last(ctx), self.first(ctx))
                else {
                    return Err(self.garbage("an empty sorted set"));
                };
                self.quick_entry(low, &first)?;
                let newest = self.quick_entry(top, &last)?;
                if newest != ttl_at {
                    return Err(self.garbage(&format!(
                        "a sorted set whose TTL ({ttl_at}) is not its highest score ({newest})"
                    )));
                }
                Ok(Some((low, ttl_at)))
            }
            t => Err(self.garbage(&format!("{}, not a sorted set", type_name(t)))),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        zset::len(&self.key)
    }

    /// The highest entry, if any.
    fn last(&self, ctx: &Context) -> Option<(f64, Vec<u8>)> {
        self.end(ctx, false)
    }

    /// The lowest entry, if any.
    fn first(&self, ctx: &Context) -> Option<(f64, Vec<u8>)> {
        self.end(ctx, true)
    }

    /// The lowest entry (`lowest`) or the highest, if any.
    fn end(&self, ctx: &Context, lowest: bool) -> Option<(f64, Vec<u8>)> {
        zset::end(ctx, &self.key, lowest)
    }

    /// Calls `f` with the entries whose score is in `[min, max]`, ascending
    /// or descending, until it returns false.
    fn scan(
        &self,
        ctx: &Context,
        min: f64,
        max: f64,
        ascending: bool,
        f: impl FnMut(f64, &[u8]) -> bool,
    ) {
        zset::scan(ctx, &self.key, (min, max), ascending, f)
    }

    /// Checks an entry read from the ledger.
    fn entry(&self, score: f64, member: &[u8]) -> Result<Entry, Error> {
        let expiry_ms = expiry_of(score).ok_or_else(|| {
            self.garbage(&format!(
                "entry '{}' has score {score}, not an expiry in Unix ms",
                printable(member)
            ))
        })?;
        let kind = keys::parse(member)
            .ok()
            .filter(|k| k.cacheable())
            .ok_or_else(|| {
                self.garbage(&format!(
                    "entry '{}' is not an okome cache key",
                    printable(member)
                ))
            })?;
        Ok(Entry {
            key: member.to_vec(),
            kind,
            expiry_ms,
        })
    }

    /// The expiry of the first or last entry, checked in full as
    /// [`Ledger::entry`] checks every entry it reads: a `:lock` key or any
    /// key that is not a well-formed cache key is refused.
    fn quick_entry(&self, score: f64, member: &[u8]) -> Result<i64, Error> {
        self.entry(score, member).map(|e| e.expiry_ms)
    }

    /// Up to `n` entries, soonest-expiring first, each checked.
    pub fn oldest(&self, ctx: &Context, n: u64) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        let mut bad = None;
        self.scan(ctx, f64::NEG_INFINITY, f64::INFINITY, true, |s, m| {
            match self.entry(s, m) {
                Ok(e) => out.push(e),
                Err(e) => bad = Some(e),
            }
            bad.is_none() && (out.len() as u64) < n
        });
        match bad {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// One page of the entries still live at `now`, latest-expiring first,
    /// after `cursor`; and the cursor of the next page, if there is one.
    pub fn page(
        &self,
        ctx: &Context,
        now: i64,
        n: u64,
        cursor: Option<&Cursor>,
    ) -> Result<(Vec<Entry>, Option<Cursor>), Error> {
        let max = cursor.map_or(f64::INFINITY, |c| c.expiry_ms as f64);
        let mut out: Vec<Entry> = Vec::new();
        let mut more = false;
        let mut bad = None;
        self.scan(ctx, now as f64, max, false, |s, m| {
            if let Some(c) = cursor {
                // Descending by (score, member): skip up to the cursor.
                if expiry_of(s) == Some(c.expiry_ms) && m >= c.key.as_slice() {
                    return true;
                }
            }
            if out.len() as u64 >= n {
                more = true;
                return false;
            }
            match self.entry(s, m) {
                Ok(e) => out.push(e),
                Err(e) => bad = Some(e),
            }
            bad.is_none()
        });
        if let Some(e) = bad {
            return Err(e);
        }
        let next = if more {
            out.last().map(|e| Cursor {
                expiry_ms: e.expiry_ms,
                key: e.key.clone(),
            })
        } else {
            None
        };
        Ok((out, next))
    }

    /// Records `member`, expiring at `expire_at`: prunes entries expired at
    /// `now`, makes room if the ledger holds `max_keys` entries, adds or
    /// updates the entry, and sets the ledger's TTL to its highest score.
    pub fn record(
        &self,
        ctx: &Context,
        member: &[u8],
        expire_at: i64,
        now: i64,
        max_keys: u64,
    ) -> Result<Recorded, Error> {
        // The highest expiry: the ledger's TTL. Removals below never take
        // it (expired entries lie below `now`, and it is alive; the
        // soonest-expiring are dropped) unless they empty the ledger.
        let top = self.bounds.map(|(_, high)| high);
        self.prune(ctx, now)?;
        let m = Name::new(member);
        let old = self.score(&m);
        let dropped = match old {
            Some(_) => 0,
            None => self.make_room(ctx, max_keys)?,
        };
        self.add(ctx, &m, member, expire_at)?;
        let top = top.filter(|_| self.len() > 1);
        let newest = match top {
            // The entry that expired last now expires sooner: look again.
            Some(t) if old.and_then(expiry_of) == Some(t) && expire_at < t => {
                self.last(ctx).and_then(|(s, _)| expiry_of(s))
            }
            Some(t) => Some(t.max(expire_at)),
            None => Some(expire_at),
        };
        // A ledger emptied and made again has no TTL; else it had `top`.
        let current = if self.len() <= 1 {
            self.key.abs_expire()
        } else {
            self.bounds.map(|(_, high)| high)
        };
        if let Some(t) = newest.filter(|&t| current != Some(t)) {
            self.key.set_abs_expire(ctx, t)?;
        }
        Ok(Recorded {
            dropped,
            size: self.len(),
        })
    }

    /// Removes the entries whose key has expired at `now`: score < now (a
    /// key expiring at `now` is still alive).
    fn prune(&self, ctx: &Context, now: i64) -> Result<(), Error> {
        let cutoff = now.saturating_sub(1);
        if !self.bounds.is_some_and(|(low, _)| low <= cutoff as f64) {
            return Ok(());
        }
        zset::remove_upto(ctx, &self.key, cutoff).map(|_| ())
    }

    /// Drops the soonest-expiring entries of a ledger that holds
    /// `max_keys` entries or more, so that one more fits; how many.
    fn make_room(&self, ctx: &Context, max_keys: u64) -> Result<u64, Error> {
        let len = self.len();
        if len < max_keys {
            return Ok(0);
        }
        let n = len - max_keys.saturating_sub(1);
        let oldest = self.members(ctx, f64::NEG_INFINITY, f64::INFINITY, n);
        self.remove_ranked(ctx, &oldest)?;
        Ok(oldest.len() as u64)
    }

    /// Adds `member` (made as `m`) with score `expire_at`, or updates its
    /// score, and replicates `ZADD key expire_at member` if it changed.
    fn add(&self, ctx: &Context, m: &Name, member: &[u8], expire_at: i64) -> Result<(), Error> {
        zset::add(ctx, &self.key, m, member, expire_at)
    }

    /// Removes the `n` soonest-expiring entries (the ones [`Ledger::oldest`]
    /// gave), or deletes the ledger if that is all of them.
    pub fn remove_oldest(&self, ctx: &Context, entries: &[Entry]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        if entries.len() as u64 >= self.len() {
            return self.key.delete(ctx);
        }
        let members: Vec<Vec<u8>> = entries.iter().map(|e| e.key.clone()).collect();
        self.remove_ranked(ctx, &members)
    }

    /// Removes `members`, the lowest-ranked entries, and replicates
    /// `ZREMRANGEBYRANK key 0 <n - 1>`.
    fn remove_ranked(&self, ctx: &Context, members: &[Vec<u8>]) -> Result<(), Error> {
        if members.is_empty() {
            return Ok(());
        }
        zset::remove(&self.key, members)?;
        let last = (members.len() as i64).saturating_sub(1);
        let ranks = [EffectArg::Int(0), EffectArg::Int(last)];
        let replicated = self.key.replicate(ctx, c"ZREMRANGEBYRANK", &ranks);
        zset::emptied_or(ctx, &self.key, c"zremrangebyrank");
        replicated
    }

    /// Members with a score in `[min, max]`, ascending, at most `n`.
    fn members(&self, ctx: &Context, min: f64, max: f64, n: u64) -> Vec<Vec<u8>> {
        zset::members(ctx, &self.key, min, max, n)
    }

    fn score(&self, member: &Name) -> Option<f64> {
        zset::score(&self.key, member)
    }
}
