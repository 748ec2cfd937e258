//! What a command or a woken waiter replies: shared by the command handlers
//! and the blocking machinery, so that neither imports the other.

use okome_core::Error;
use redis_module::RedisValue;

/// A reply, or an error that names the problem.
pub type Reply = Result<RedisValue, Error>;

/// The reply of a command that panicked (turned into an error instead of
/// aborting the server).
pub const PANIC_REPLY: &str =
    "ERR okome internal error: the command was aborted and wrote nothing further; please report it";

pub fn bulk(bytes: &[u8]) -> RedisValue {
    RedisValue::StringBuffer(bytes.to_vec())
}

/// A word (a status, a state) as a bulk string.
pub fn bulk_str(s: &'static str) -> RedisValue {
    bulk(s.as_bytes())
}

/// A non-negative count or duration as a Redis integer, saturating.
pub fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn int_or_nil(v: Option<u64>) -> RedisValue {
    v.map_or(RedisValue::Null, |v| RedisValue::Integer(ms(v)))
}
