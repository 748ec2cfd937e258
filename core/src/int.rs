//! Integers as Redis reads them.

use crate::{Error, Result};

/// Parses a base-10 signed 64-bit integer exactly as Redis does: optional
/// `-`, digits, no leading zeros (`0` itself excepted), no `-0`.
pub fn parse_int(what: &'static str, arg: &[u8]) -> Result<i64> {
    let (negative, digits) = match arg.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, arg),
    };
    let canonical = match digits {
        [] => false,
        [b'0'] => !negative,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return Err(Error::NotInteger(what));
    }
    // Accumulated negative, so that i64::MIN parses too.
    let mut v: i64 = 0;
    for &d in digits {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d.wrapping_sub(b'0'))))
            .ok_or(Error::NotInteger(what))?;
    }
    if negative {
        Ok(v)
    } else {
        v.checked_neg().ok_or(Error::NotInteger(what))
    }
}
