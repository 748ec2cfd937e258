//! What a plan's commands tell the callers waiting for it ([`wait::tell`])
//! when the keyspace cannot: the leader failed (`OKOME.UNLOCK ... FAILED`),
//! or computed a plan that its write budget did not let it store
//! (`PLAN.SET` → `SKIPPED`). `plan` answers them (`FAILED`, `SHARED`).

use crate::wait;
use redis_module::Context;
use std::rc::Rc;

/// The news of a plan.
pub enum Told {
    /// Its leader failed with `message` (empty: none); lookups answer
    /// `FAILED` until `until` (ms since the epoch; no later lookup is
    /// answered if it is now).
    Failed { message: Vec<u8>, until: i64 },
    /// The plan its leader computed but did not store.
    Shared { plan: Vec<u8> },
}

/// Tells the callers waiting for plan `key` that its leader failed; how
/// many were told.
pub fn failed(ctx: &Context, key: &[u8], message: &[u8], until: i64) -> usize {
    let news = Told::Failed {
        message: message.to_vec(),
        until,
    };
    wait::tell(ctx, key, Rc::new(news))
}

/// Hands the callers waiting for plan `key` the plan its leader could not
/// store; how many were handed it. Copies the plan only if somebody waits.
pub fn shared(ctx: &Context, key: &[u8], plan: &[u8]) -> usize {
    if !wait::queued(ctx, key) {
        return 0;
    }
    let news = Told::Shared {
        plan: plan.to_vec(),
    };
    wait::tell(ctx, key, Rc::new(news))
}
