//! `OKOME.THROTTLE`: a subject's burst limit (GCRA), opened, charged and
//! written as a budget ([`Budget`]): a refusal or a peek writes nothing,
//! an admission writes the new state whole, replicated as `SET key <state>
//! PXAT <when the bucket is full>`.

use super::budget::{decision_reply, Budget};
use crate::call::Call;
use okome_core::command;
use okome_core::keys::printable;
use okome_core::limiter::{Algorithm, Gcra, Unusable};
use okome_core::Error;
use redis_module::Context;

/// OKOME.THROTTLE subject rate period_s burst [COST n] [NAME name]
pub fn throttle(ctx: &Context, call: &Call) -> Result<[i64; 4], Error> {
    let t = call.request(command::parse_throttle)?;
    let (now, quota) = (call.now, t.quota);
    let budget = Budget::open(
        ctx,
        &t.key,
        quota.cost > 0,
        |stored, out| Gcra::charge_stored(stored, now, quota, out),
        unusable,
    )?;
    Ok(decision_reply(&budget.charge(ctx)?))
}

/// The error for a value at `key` that is not a GCRA state this call can
/// charge.
fn unusable(e: Unusable, key: &[u8]) -> Error {
    match e {
        Unusable::Ahead(a) => a.gcra_error(key),
        Unusable::Corrupt(_) => Error::BadKey(format!(
            "'{}' does not hold an okome GCRA state (was it written by another client?)",
            printable(key)
        )),
    }
}
