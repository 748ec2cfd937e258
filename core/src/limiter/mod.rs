//! The limiter behind `OKOME.RATE`, `OKOME.WBUDGET` and the `AGENT ...
//! LIMIT` option of the planner lookups, and `OKOME.THROTTLE`: the types
//! every algorithm shares, the seam an algorithm implements, and a module
//! per algorithm: the exact sliding window ([`window`]) and GCRA, the
//! burst limiter ([`gcra`]).
//!
//! # The seam
//!
//! A budget is one plain Redis string. The glue (`Budget` in
//! `src/commands.rs`) uses it in two steps, so that a call that fails
//! writes nothing:
//!
//! 1. *load*: read the key's bytes (empty: no key) and charge them with the
//!    time of the command and the call's quota ([`Algorithm::charge_stored`]:
//!    [`charge_stored`] for the exact window and its [`Quota`],
//!    [`Gcra`] and its [`Throttle`]). That returns a [`Charged`]: the [`Decision`] (the reply) and
//!    the [`Write`] that stores its outcome, whose bytes are in `out`; or
//!    why the value is [`Unusable`] (an error reply naming the key).
//! 2. *charge*: apply the `Write` to the key (`SET ... PXAT`, `SETRANGE` +
//!    `PEXPIREAT`, or a compaction in place, each replicated as its effect)
//!    and reply the decision.
//!
//! So an algorithm is a pure function of (stored bytes, now, quota) to
//! (decision, write) or unusable: it reads no clock and writes nothing
//! itself. Its contract, which its tests check against a brute-force model
//! (`model.rs`):
//! - no panic, whatever the bytes: anything it cannot read is
//!   [`Unusable::Corrupt`];
//! - a refusal or a report (`cost` 0) is [`Write::Nothing`];
//! - after [`apply`] of its write, the value reads back as the state it
//!   charged, and `expire_at` is when that state limits nothing any more
//!   (the key then goes away on its own);
//! - a value stamped more than [`CLOCK_SKEW_ALLOWANCE_MS`] after `now` is
//!   [`Unusable::Ahead`]: never charged nor extended.
//!
//! # Formats
//!
//! The first byte of a stored value names its [`Format`]. A first byte that
//! names none ([`UnknownFormat`]) is not a budget: like any other malformed
//! value it is [`Unusable::Corrupt`], and the commands reply `ERR '<key>'
//! does not hold an okome budget window (was it written by another
//! client?)`, writing nothing. So is, to an algorithm, a value in a format
//! it does not read (another algorithm's: a GCRA state at a window's key,
//! a window at a GCRA key).
//!
//! # To add an algorithm
//!
//! 1. A file here (as [`gcra`], or a directory, as [`window`]) with a type
//!    implementing [`Algorithm`] (its `Quota`: what a call charges), the
//!    documentation of its stored form, and its tests against a model in
//!    `model.rs`.
//! 2. In this file: its `mod` line and re-export, and a [`Format`] variant
//!    (with its byte in [`Format::of`]) for each form it stores; a byte is
//!    never reused. The compiler then points at each `match` on `Format`,
//!    where the other algorithms refuse it as not theirs.
//! 3. In the glue, `<Name as Algorithm>::charge_stored` for the calls that
//!    ask for it, where [`charge_stored`] is called today.

use crate::keys::printable;
use crate::Error;

pub mod gcra;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod window;

pub use gcra::{Gcra, Tat, Throttle, FORMAT_GCRA, MAX_BURST, MAX_PERIOD_S, MAX_RATE};
pub use window::{charge_with, settle_stored, Entry, Settlement, Window, SMALL_BYTES, TRAILER_LEN};

/// Version byte of the exact window's stored form written before issue 14:
/// read, and migrated to [`FORMAT_V2`] on the first admission.
pub const FORMAT_V1: u8 = Format::WindowV1 as u8;
/// Version byte of the exact window's stored form written now.
pub const FORMAT_V2: u8 = Format::WindowV2 as u8;
/// Largest `limit` (and `COST`) accepted: 10^15 (150 000 000 tokens a
/// minute, 10^12 micro-dollars a month, with room to spare). Entries carry
/// their units as varints and every sum saturates, so nothing depends on it
/// but the range table.
pub const MAX_LIMIT: u64 = 1_000_000_000_000_000;
/// Most entries a window holds, whatever its limit, window and call rate
/// (when every call on the key uses the same window): see [`grain_ms`].
pub const MAX_ENTRIES: u64 = 65_536;
/// Largest window accepted, seconds.
pub const MAX_WINDOW_S: u64 = crate::YEAR_S;

/// How far after `now` a stored window's newest entry may lie, ms: the
/// largest backwards clock step (or clock offset between a primary and the
/// replica promoted in its place) that the limiter absorbs by working at
/// the newest entry's time. A window further ahead is refused as
/// [`AheadOfClock`].
///
/// One minute. Clocks kept by NTP or chrony are within milliseconds of each
/// other; they step (rather than slew) only past 128 ms (ntpd) or at boot
/// (chrony's `makestep`), and a leap second steps by one second, so a minute
/// leaves a margin of more than 50x over any step a synchronised host takes
/// while serving. A larger offset means a host without working time sync:
/// that is reported (the error lasts until the clock is back within the
/// allowance, and writes nothing) rather than silently absorbed. On the
/// other side, the allowance is all a foreign or hand-made window can add to
/// a lockout: an agent is locked out at most `window + 1 min` from now,
/// where anyone able to write the key could lock it out for `window` anyway.
pub const CLOCK_SKEW_ALLOWANCE_MS: i64 = 60_000;

/// A rate-limiting algorithm, as the glue uses it (see the module docs).
pub trait Algorithm {
    /// What a call charges: [`Quota`] for the window, [`Throttle`] for GCRA.
    type Quota;

    /// Charges `quota` at `now` (ms) to the value `stored` (empty: no key).
    /// `out` is cleared first; on success it holds the bytes the returned
    /// [`Write`] refers to. Nothing is written on `Err`.
    fn charge_stored(stored: &[u8], now: i64, quota: Self::Quota, out: &mut Vec<u8>) -> Outcome;
}

/// What a charge comes to: the decision and its write, or why the stored
/// value cannot be charged.
pub type Outcome = Result<Charged, Unusable>;

/// What every call of `OKOME.RATE` and `OKOME.WBUDGET` charges: `cost`
/// units against `limit` per `window_ms`. The grammar guarantees
/// `cost <= limit` (`cost` 0 only reports), `limit <= MAX_LIMIT` and
/// `window_ms <= MAX_WINDOW_S * 1000`; algorithms stay correct (and do not
/// panic) without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub window_ms: u64,
    pub cost: u64,
}

impl Quota {
    pub const fn new(limit: u64, window_ms: u64, cost: u64) -> Quota {
        Quota {
            limit,
            window_ms,
            cost,
        }
    }

    /// The window, ms, as a time span (saturating).
    pub fn window(&self) -> i64 {
        i64::try_from(self.window_ms).unwrap_or(i64::MAX)
    }

    /// The width of the buckets this window's entries are kept in, ms:
    /// [`grain_ms`] of its window.
    pub fn grain(&self) -> i64 {
        grain_ms(self.window_ms)
    }

    /// Whether `cost` fits in the limit with `used` units already taken.
    pub fn fits(&self, used: u64) -> bool {
        used.saturating_add(self.cost) <= self.limit
    }

    /// The decision of a report (`cost` 0) with `used` units taken, the
    /// window empty in `reset_after_ms` (0 when nothing is taken).
    pub fn report(&self, used: u64, reset_after_ms: u64) -> Decision {
        Decision {
            allowed: true,
            remaining: self.limit.saturating_sub(used),
            retry_after_ms: 0,
            reset_after_ms: if used == 0 { 0 } else { reset_after_ms },
        }
    }

    /// The decision of an admission of `cost` when `used` units were taken.
    pub fn admitted(&self, used: u64, reset_after_ms: u64) -> Decision {
        Decision {
            allowed: true,
            remaining: self.limit.saturating_sub(used.saturating_add(self.cost)),
            retry_after_ms: 0,
            reset_after_ms,
        }
    }

    /// The decision of a refusal with `used` units taken.
    pub fn refused(&self, used: u64, retry_after_ms: u64, reset_after_ms: u64) -> Decision {
        Decision {
            allowed: false,
            remaining: self.limit.saturating_sub(used),
            retry_after_ms,
            reset_after_ms,
        }
    }
}

/// The outcome of a charge: the reply of `OKOME.RATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Units still admissible in the window after this call.
    pub remaining: u64,
    /// 0 when allowed; else ms until `cost` units fit.
    pub retry_after_ms: u64,
    /// ms until the window is empty (0 if it is).
    pub reset_after_ms: u64,
}

/// What an admission writes to the budget's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Nothing: a refusal, a report (`cost` 0).
    Nothing,
    /// The key is deleted (`DEL key`): a settlement left the window empty.
    Delete,
    /// The whole new value is in `out`: `SET key out PXAT expire_at`.
    Whole { expire_at: i64 },
    /// `out` replaces the value from `offset` on, growing it (never
    /// shrinking it) to `offset + out.len()`: `SETRANGE key offset out`,
    /// then `PEXPIREAT key expire_at`.
    Tail { offset: usize, expire_at: i64 },
    /// A large value compacted: the new value is `out[..head_len]`, then
    /// the current value's bytes `keep`, then `out[head_len..]`; written
    /// in place (`keep` moves towards the start: `head_len <= keep.start`),
    /// then replicated whole as `SET key value PXAT expire_at`.
    Compact {
        head_len: usize,
        keep: std::ops::Range<usize>,
        expire_at: i64,
    },
}

/// A charge against a stored value: the decision, and what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    pub decision: Decision,
    pub write: Write,
}

/// The stored bytes are not a budget of the algorithm charged (another
/// client wrote the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// A well-formed value whose newest time lies more than
/// [`CLOCK_SKEW_ALLOWANCE_MS`] after `now`: written by hand, by another
/// client, or under a clock that far ahead. See [`Window::check_times`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AheadOfClock {
    /// The newest entry's timestamp, ms.
    pub newest: i64,
    /// The time it was checked against, ms.
    pub now: i64,
}

impl AheadOfClock {
    /// How far the newest entry lies after `now`, ms (saturating).
    pub fn ahead_ms(&self) -> u64 {
        ms_u64(self.newest.saturating_sub(self.now))
    }

    /// The error reply for the window stored at `key`.
    pub fn error(&self, key: &[u8]) -> Error {
        Error::WindowAhead {
            key: printable(key),
            ahead_ms: self.ahead_ms(),
            allowance_ms: CLOCK_SKEW_ALLOWANCE_MS,
        }
    }

    /// The error reply for the GCRA state stored at `key` (`newest`: the
    /// earliest clock that could have written it, see [`gcra`]).
    pub fn gcra_error(&self, key: &[u8]) -> Error {
        Error::ThrottleAhead {
            key: printable(key),
            ahead_ms: self.ahead_ms(),
            allowance_ms: CLOCK_SKEW_ALLOWANCE_MS,
        }
    }
}

/// Why a stored value cannot be charged (nothing is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// The bytes are not a budget of this algorithm (an unknown format
    /// included).
    Corrupt(Corrupt),
    /// A value beyond the clock-skew allowance: see [`Window::check_times`].
    Ahead(AheadOfClock),
}

impl From<Corrupt> for Unusable {
    fn from(c: Corrupt) -> Self {
        Unusable::Corrupt(c)
    }
}

/// The stored form of a value, named by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Format {
    /// The exact window as written before issue 14: read, and rewritten as
    /// [`Format::WindowV2`] by its first admission ([`window::v1`]).
    WindowV1 = 1,
    /// The exact window ([`window`]).
    WindowV2 = 2,
    /// A GCRA state: one theoretical arrival time ([`gcra`]).
    Gcra = 3,
}

/// A first byte that names no [`Format`]: not a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownFormat(pub u8);

impl Format {
    /// The format of `stored`: `None` for no value (no key), an error for a
    /// first byte that names no format.
    pub fn of(stored: &[u8]) -> Result<Option<Format>, UnknownFormat> {
        match stored.first() {
            None => Ok(None),
            Some(&FORMAT_V1) => Ok(Some(Format::WindowV1)),
            Some(&FORMAT_V2) => Ok(Some(Format::WindowV2)),
            Some(&FORMAT_GCRA) => Ok(Some(Format::Gcra)),
            Some(&other) => Err(UnknownFormat(other)),
        }
    }
}

impl From<UnknownFormat> for Corrupt {
    fn from(_: UnknownFormat) -> Self {
        Corrupt
    }
}

impl From<UnknownFormat> for Unusable {
    fn from(u: UnknownFormat) -> Self {
        Unusable::Corrupt(u.into())
    }
}

/// The exact window's [`Algorithm::charge_stored`], with the quota spelled
/// out: what the glue calls for every budget.
pub fn charge_stored(
    stored: &[u8],
    now: i64,
    limit: u64,
    window_ms: u64,
    cost: u64,
    out: &mut Vec<u8>,
) -> Result<Charged, Unusable> {
    <Window as Algorithm>::charge_stored(stored, now, Quota::new(limit, window_ms, cost), out)
}

/// Applies `write` (with `out`) to `value` as Redis applies its effects:
/// the value a replica or an AOF replay holds afterwards.
pub fn apply(value: &mut Vec<u8>, write: &Write, out: &[u8]) {
    match *write {
        Write::Nothing => {}
        Write::Delete => value.clear(),
        Write::Compact {
            head_len, ref keep, ..
        } => {
            let kept = value.get(keep.clone()).unwrap_or_default().to_vec();
            value.clear();
            value.extend_from_slice(out.get(..head_len).unwrap_or_default());
            value.extend_from_slice(&kept);
            value.extend_from_slice(out.get(head_len..).unwrap_or_default());
        }
        Write::Whole { .. } => {
            value.clear();
            value.extend_from_slice(out);
        }
        Write::Tail { offset, .. } => {
            // SETRANGE: zero-pad up to the offset, overwrite, grow if needed.
            let end = offset.saturating_add(out.len());
            if value.len() < end {
                value.resize(end, 0);
            }
            if let Some(dst) = value.get_mut(offset..end) {
                dst.copy_from_slice(out);
            }
        }
    }
}

/// The width, ms, of the buckets a window of `window_ms` keeps its
/// entries in: `ceil((window_ms - 1) / 65535)`, at least 1. An admission
/// in the bucket of the newest entry (bucket `at.div_euclid(grain)`) is
/// merged into it, and the merged entry takes the *later* time,
/// the admission's; otherwise it is a new entry. So:
/// - a window of up to 65 536 ms has a grain of 1: one entry per
///   millisecond, exact;
/// - every unit is recorded at most `grain - 1` ms after it was charged
///   (in its own bucket): it counts that much longer, never shorter, so
///   the window never admits more than `limit` in any interval of the
///   window, and frees a unit at most `grain - 1` ms late (at most
///   `window / 65536` ms late, plus less than 1 ms, for windows up to 99
///   days; 481 208 ms for a year, against `window / 65536` = 481 201.2:
///   no scheme keeping at most [`MAX_ENTRIES`] entries can do better, since
///   a call every millisecond then needs `(window + late) / (late + 1)`
///   entries on average);
/// - live entries lie in distinct buckets that meet the window's span
///   `(t - window, t]`, which meets at most `ceil((window - 1) / grain) +
///   1 <= 65 536` of them: at most [`MAX_ENTRIES`] entries, whatever the
///   limit and the call rate.
pub fn grain_ms(window_ms: u64) -> i64 {
    const SPANS: u64 = MAX_ENTRIES - 1;
    let g = window_ms.saturating_sub(1).div_ceil(SPANS).max(1);
    i64::try_from(g).unwrap_or(i64::MAX)
}

/// Whether an admission at `t` merges into the newest entry, at `newest`
/// (`newest <= t`): both in the same bucket of width `grain` (for a grain
/// of 1, the same millisecond).
pub fn same_bucket(newest: i64, t: i64, grain: i64) -> bool {
    let g = grain.max(1);
    newest.checked_div_euclid(g) == t.checked_div_euclid(g)
}

/// A span of time as ms to wait: 0 if it is negative.
fn ms_u64(d: i64) -> u64 {
    u64::try_from(d).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    /// A first byte that names no format is an error, never read as some
    /// format: the value is `Corrupt` whatever follows it, for a report as
    /// for a charge, and nothing is written. (The commands then reply
    /// `ERR '<key>' does not hold an okome budget window (was it written by
    /// another client?)`, as for any malformed window.)
    #[test]
    fn an_unknown_format_is_corrupt() {
        let mut w = Window::new();
        for i in 0..3 {
            w.charge(NOW + i, 5, 60_000, 1);
        }
        let known = [w.encode(), w.encode_v1()];
        let gcra = Tat::new(NOW, 1).encode();
        assert_eq!(Format::of(&gcra), Ok(Some(Format::Gcra)));
        // Another algorithm's value is not a window.
        assert_eq!(Window::decode(&gcra), Err(Corrupt));
        let mut out = Vec::new();
        for cost in [0, 1] {
            let r = charge_stored(&gcra, NOW, 5, 60_000, cost, &mut out);
            assert_eq!(r, Err(Unusable::Corrupt(Corrupt)));
        }
        assert_eq!(Format::of(&known[0]), Ok(Some(Format::WindowV2)));
        assert_eq!(Format::of(&known[1]), Ok(Some(Format::WindowV1)));
        assert_eq!(Format::of(&[]), Ok(None));
        for bytes in &known {
            // The next format, one far ahead, none, the first byte of the
            // text another client might write.
            for first in [FORMAT_GCRA + 1, 0xff, 0, b'n'] {
                let mut bytes = bytes.clone();
                bytes[0] = first;
                assert_eq!(Format::of(&bytes), Err(UnknownFormat(first)));
                assert_eq!(Window::decode(&bytes), Err(Corrupt));
                let t = Throttle::new(1, 1000, 0, 1);
                assert_eq!(
                    Gcra::charge_stored(&bytes, NOW, t, &mut out),
                    Err(Unusable::Corrupt(Corrupt))
                );
                for cost in [0, 1] {
                    out.extend_from_slice(b"stale");
                    let r = charge_stored(&bytes, NOW, 5, 60_000, cost, &mut out);
                    assert_eq!(r, Err(Unusable::Corrupt(Corrupt)), "{first} {cost}");
                    assert!(out.is_empty(), "nothing to write");
                }
            }
        }
    }

    #[test]
    fn the_error_names_the_key_and_the_clock() {
        let e = AheadOfClock {
            newest: i64::MAX,
            now: NOW,
        }
        .error(b"okome:budget:rate:{a}");
        assert_eq!(
            e.to_string(),
            format!(
                "ERR 'okome:budget:rate:{{a}}' holds an okome budget window whose newest entry is \
                 {} ms in the future, beyond the 60000 ms clock-skew allowance (written by another \
                 client, or under a clock that far ahead?); nothing was charged or written",
                i64::MAX - NOW
            )
        );
        // Unprintable key bytes are escaped, as in every other error.
        let e = AheadOfClock { newest: 1, now: 0 }.error(b"okome:budget:rate:{\x00'}");
        assert!(
            e.to_string()
                .starts_with("ERR 'okome:budget:rate:{\\x00\\x27}' holds"),
            "{e}"
        );
    }
}
