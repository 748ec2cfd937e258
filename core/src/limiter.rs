//! The exact sliding-window limiter behind `OKOME.RATE` and `OKOME.WBUDGET`.
//!
//! A window is a log of admissions: `(timestamp_ms, units)` entries, oldest
//! first, at most one entry per millisecond. A call of `cost` units at time
//! `t` is admitted iff the units admitted in `(t - W, t]` plus `cost` do not
//! exceed `limit`; so no interval of `W` milliseconds ever holds more than
//! `limit` admitted units, whatever the call pattern. A refused call records
//! nothing. Entries that left the window are dropped, so a log holds at most
//! `min(limit, W in ms)` entries.
//!
//! Time is a parameter. If the clock steps backwards (NTP, a promoted replica
//! with a slower clock), the limiter works at `max(now, newest entry)`: units
//! are then counted for longer, never shorter, so a backwards step can only
//! make it stricter.
//!
//! That tolerance is bounded by [`CLOCK_SKEW_ALLOWANCE_MS`]. Every entry is
//! written at the writer's effective time, so an entry later than
//! `now + CLOCK_SKEW_ALLOWANCE_MS` was either made by hand (or by another
//! client) or written under a clock more than the allowance ahead of this
//! one. Such a window is refused, never charged and never extended:
//! [`Window::check_times`] reports it as [`AheadOfClock`] (the commands
//! reply an error naming the key and write nothing), and [`Window::charge`]
//! refuses it on its own, recording nothing. Entries are strictly ascending,
//! so the newest entry bounds them all and the check is one comparison.
//! Hence, for a window accepted at `now`, the effective time is at most
//! `now + CLOCK_SKEW_ALLOWANCE_MS` and the window empties at most
//! `window + CLOCK_SKEW_ALLOWANCE_MS` after `now`: a crafted timestamp near
//! `i64::MAX` can no longer lock an agent out for ever.
//!
//! # Stored form
//!
//! A window is a plain Redis string, written so that an admitted call costs
//! O(1) amortised whatever the limit: counting reads a running total,
//! dropping dead entries moves a cursor, and an admission rewrites only the
//! end of the string. Version 2 (written since issue 14):
//!
//! ```text
//! [2] [dead entries ...] [live entries ...] [trailer: 32 bytes]
//! entry   = 0GGGGUUU                     -- gap 0-15 ms, units 1-8 (UUU + 1)
//!         | 10UUUUUU gap                 -- units 1-64 (UUUUUU + 1)
//!         | 11000000 gap units           -- gap, units: LEB128 varints
//! trailer = head u32 | last u32 | head_base i64 | newest i64 | total u64  (little-endian)
//! ```
//!
//! An entry's gap counts from the entry before it, in ms. A dense window
//! (an admission every millisecond or so) takes a byte per entry, so a
//! `limit 100000` window holding 60 000 entries is about 60 KB.
//!
//! `head` is the offset of the first entry not yet dropped, `head_base` the
//! time its gap counts from (the entry before it, or its own time when it
//! was written first), `last` the offset of the newest entry, `newest` its
//! time and `total` the units of the entries from `head` on (`u64::MAX`
//! means "at least that": counted again by walking, which only hand-made
//! windows with absurd units reach). Bytes before `head` are entries
//! already dropped: never read again, kept until compaction.
//!
//! An admission ([`charge_stored`]) walks from `head` past the entries that
//! left the window (each entry is walked past once in its life), then
//! writes one of:
//! - [`Write::Tail`]: the new (or merged) last entry and the trailer, from
//!   the offset of the first byte that changed to the new end. The value
//!   only grows; replicated as `SETRANGE key offset tail` and `PEXPIREAT`.
//! - [`Write::Whole`]: the window compacted to its live entries, in the
//!   canonical form [`Window::encode`] gives (`head` = 1, the head entry's
//!   gap 0), replicated as `SET key value PXAT t`. Chosen when the dropped
//!   bytes outweigh the live ones (so a rewrite of L live bytes follows at
//!   least L bytes of O(1) appends: amortised O(1)), for a compacted window
//!   of at most [`SMALL_BYTES`] (a full `limit 60` window: rewriting it
//!   whole costs no more than a tail, and it never holds dead bytes), when
//!   every entry left the window, and when migrating a version 1 window.
//!
//! Version 1 (written before issue 14) is read, and migrated to version 2
//! by the first admission: version byte `1`, the oldest entry's timestamp as
//! i64 little-endian, its units as a LEB128 varint, then for each further
//! entry the gap to the previous one and its units, both LEB128.
//!
//! For 60 single-unit calls spread over a minute a version 2 window is about
//! 210 bytes.

use crate::keys::printable;
use crate::Error;
use std::collections::VecDeque;

/// Version byte of the stored form written before issue 14: read, and
/// migrated to [`FORMAT_V2`] on the first admission.
pub const FORMAT_V1: u8 = 1;
/// Version byte of the stored form written now (see the module docs).
pub const FORMAT_V2: u8 = 2;
/// Bytes of the version 2 trailer.
pub const TRAILER_LEN: usize = 32;
/// A window whose compacted value is at most this many bytes is rewritten
/// whole ([`Write::Whole`]) on every admission: it never holds dropped
/// entries (a full `limit 60` window stays within 600 bytes of `MEMORY
/// USAGE`), and one `SET ... PXAT` costs Redis less than `SETRANGE` +
/// `PEXPIREAT` at that size. A full `limit 60` window of a minute is about
/// 210 bytes; of half an hour, at most about 300 (gaps of 16 s to 35 min
/// take 4 bytes). Past it, the tail form replicates fewer bytes.
pub const SMALL_BYTES: usize = 320;
/// Largest `limit` accepted.
pub const MAX_LIMIT: u64 = 100_000;
/// Largest window accepted, seconds (one year).
pub const MAX_WINDOW_S: u64 = 31_536_000;

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

/// One admission: when, and how many units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub at: i64,
    pub units: u64,
}

/// A rate window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    entries: VecDeque<Entry>,
}

/// The outcome of a charge; the reply of `OKOME.RATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Units still admissible in the window after this call.
    pub remaining: u64,
    /// 0 when allowed; else ms until `cost` units fit.
    pub retry_after_ms: u64,
    /// ms until the window is empty (0 if it is).
    pub reset_after_ms: u64,
    /// Whether the window changed and must be stored (only on admission).
    pub changed: bool,
}

/// The stored bytes are not a window (another client wrote the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// A well-formed window whose newest entry lies more than
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
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Result<u64, Corrupt> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(Corrupt)?;
        *bytes = rest;
        let part = u64::from(b & 0x7f);
        if shift == 63 && part > 1 {
            return Err(Corrupt);
        }
        v |= part << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Corrupt)
}

fn ms_u64(d: i64) -> u64 {
    u64::try_from(d).unwrap_or(0)
}

impl Window {
    /// An empty window.
    pub fn new() -> Self {
        Window::default()
    }

    /// Decodes either stored form (the live entries of a version 2 window,
    /// from its head, checked from head to end). Anything malformed is
    /// `Corrupt`.
    pub fn decode(bytes: &[u8]) -> Result<Window, Corrupt> {
        let mut w = Window::new();
        w.decode_from(bytes)?;
        Ok(w)
    }

    /// [`decode`](Window::decode) into this window, reusing its storage.
    /// On error the window is left empty.
    pub fn decode_from(&mut self, bytes: &[u8]) -> Result<(), Corrupt> {
        self.entries.clear();
        let r = match bytes.first() {
            Some(&FORMAT_V1) => self.decode_v1(bytes),
            Some(&FORMAT_V2) => self.decode_v2(bytes),
            _ => Err(Corrupt),
        };
        if r.is_err() {
            self.entries.clear();
        }
        r
    }

    fn decode_v1(&mut self, bytes: &[u8]) -> Result<(), Corrupt> {
        let entries = &mut self.entries;
        let (&version, mut rest) = bytes.split_first().ok_or(Corrupt)?;
        if version != FORMAT_V1 {
            return Err(Corrupt);
        }
        let (head, tail) = rest.split_first_chunk::<8>().ok_or(Corrupt)?;
        rest = tail;
        let mut at = i64::from_le_bytes(*head);
        let units = get_varint(&mut rest)?;
        if units == 0 {
            return Err(Corrupt);
        }
        entries.push_back(Entry { at, units });
        while !rest.is_empty() {
            let gap = get_varint(&mut rest)?;
            let units = get_varint(&mut rest)?;
            if gap == 0 || units == 0 {
                return Err(Corrupt);
            }
            at = add_gap(at, gap)?;
            entries.push_back(Entry { at, units });
        }
        Ok(())
    }

    /// Every entry from the head, checked against the trailer: O(n).
    fn decode_v2(&mut self, bytes: &[u8]) -> Result<(), Corrupt> {
        let (tr, ..) = Trailer::read(bytes)?;
        let end = body_end(bytes)?;
        let mut pos = tr.head;
        let mut at = tr.head_base;
        let mut total = 0u64;
        loop {
            let (gap, units, next) = read_entry(bytes, pos, end)?;
            if gap == 0 && pos != tr.head {
                return Err(Corrupt);
            }
            at = add_gap(at, gap)?;
            total = total.saturating_add(units);
            self.entries.push_back(Entry { at, units });
            if next == end {
                break;
            }
            pos = next;
        }
        if pos != tr.last || at != tr.newest || total != tr.total {
            return Err(Corrupt);
        }
        Ok(())
    }

    /// The canonical version 2 form: empty for an empty window (the key is
    /// deleted). What [`charge_stored`] writes when it rewrites a window
    /// whole.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.entries
                .len()
                .saturating_mul(3)
                .saturating_add(3 + TRAILER_LEN),
        );
        self.encode_into(&mut out);
        out
    }

    /// [`encode`](Window::encode) into `out` (cleared first), reusing its
    /// storage.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut iter = self.entries.iter();
        let Some(first) = iter.next() else {
            return;
        };
        out.push(FORMAT_V2);
        put_entry(out, 0, first.units);
        let mut tr = Trailer {
            head: 1,
            last: 1,
            head_base: first.at,
            newest: first.at,
            total: first.units,
        };
        for e in iter {
            tr.last = out.len();
            put_entry(out, ms_u64(e.at.saturating_sub(tr.newest)), e.units);
            tr.newest = e.at;
            tr.total = tr.total.saturating_add(e.units);
        }
        tr.put(out);
    }

    /// The version 1 form (written before issue 14), for tests of the
    /// migration; okome never writes it.
    #[doc(hidden)]
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut iter = self.entries.iter();
        let Some(first) = iter.next() else {
            return out;
        };
        out.push(FORMAT_V1);
        out.extend_from_slice(&first.at.to_le_bytes());
        put_varint(&mut out, first.units);
        let mut prev = first.at;
        for e in iter {
            put_varint(&mut out, ms_u64(e.at.saturating_sub(prev)));
            put_varint(&mut out, e.units);
            prev = e.at;
        }
        out
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Refuses a window that this server's clock cannot have written:
    /// one whose newest (hence every) entry lies more than
    /// [`CLOCK_SKEW_ALLOWANCE_MS`] after `now`. Call it after
    /// [`decode_from`](Window::decode_from) with the time of the command,
    /// before any key is written, and reply [`AheadOfClock::error`] on
    /// `Err`. Cost: one comparison with the newest entry. An empty window,
    /// and entries in the past however old, pass.
    pub fn check_times(&self, now: i64) -> Result<(), AheadOfClock> {
        match self.entries.back() {
            Some(e) if e.at > now.saturating_add(CLOCK_SKEW_ALLOWANCE_MS) => {
                Err(AheadOfClock { newest: e.at, now })
            }
            _ => Ok(()),
        }
    }

    /// When the window will be empty: newest entry + `window_ms`
    /// (saturating). After [`charge`](Window::charge) at `now` (whatever
    /// its outcome), at most `now + window_ms + CLOCK_SKEW_ALLOWANCE_MS`,
    /// unless the window was refused by `check_times(now)`, in which case
    /// `charge` stored nothing.
    pub fn empty_at(&self, window_ms: u64) -> Option<i64> {
        let w = i64::try_from(window_ms).unwrap_or(i64::MAX);
        self.entries.back().map(|e| e.at.saturating_add(w))
    }

    /// Charges `cost` units at `now` against `limit` per `window_ms`.
    /// `cost` must not exceed `limit` (the grammar refuses it); `cost == 0`
    /// only reports.
    ///
    /// A window refused by [`check_times(now)`](Window::check_times) is
    /// never charged nor extended: the call (a report included) is refused,
    /// records nothing (`changed == false`), with `remaining` 0,
    /// `retry_after_ms` the time until the clock is back within the
    /// allowance and `reset_after_ms` the time until the window would be
    /// empty. Callers should still call `check_times` first, so as to reply
    /// an error rather than this refusal.
    pub fn charge(&mut self, now: i64, limit: u64, window_ms: u64, cost: u64) -> Decision {
        let w = i64::try_from(window_ms).unwrap_or(i64::MAX);
        if let Err(ahead) = self.check_times(now) {
            return Decision {
                allowed: false,
                remaining: 0,
                retry_after_ms: ms_u64(
                    ahead
                        .newest
                        .saturating_sub(CLOCK_SKEW_ALLOWANCE_MS)
                        .saturating_sub(now),
                ),
                reset_after_ms: ms_u64(ahead.newest.saturating_add(w).saturating_sub(now)),
                changed: false,
            };
        }
        // A clock that stepped backwards: work at the newest entry's time.
        let t = self.entries.back().map_or(now, |e| e.at.max(now));
        let horizon = t.saturating_sub(w);
        // Entries at or before the horizon have left the window. They are
        // dropped only when a new entry at `t` is recorded, so the newest
        // entry is always at least the time of any pruning: the effective
        // clock never moves back past a horizon already applied.
        let live = || self.entries.iter().filter(move |e| e.at > horizon);
        let used = live().fold(0u64, |acc, e| acc.saturating_add(e.units));
        let until = |at: i64| ms_u64(at.saturating_add(w).saturating_sub(now));
        let reset_after_ms = self.entries.back().map_or(0, |e| until(e.at));
        if cost == 0 {
            return Decision {
                allowed: true,
                remaining: limit.saturating_sub(used),
                retry_after_ms: 0,
                reset_after_ms: if used == 0 { 0 } else { reset_after_ms },
                changed: false,
            };
        }
        if used.saturating_add(cost) <= limit {
            while self.entries.front().is_some_and(|e| e.at <= horizon) {
                self.entries.pop_front();
            }
            match self.entries.back_mut() {
                Some(last) if last.at == t => last.units = last.units.saturating_add(cost),
                _ => self.entries.push_back(Entry { at: t, units: cost }),
            }
            return Decision {
                allowed: true,
                remaining: limit.saturating_sub(used.saturating_add(cost)),
                retry_after_ms: 0,
                reset_after_ms: until(t),
                changed: true,
            };
        }
        // Refused, nothing recorded: find when enough of the oldest units
        // have left the window.
        let mut left = used;
        let mut retry = 0;
        for e in live() {
            left = left.saturating_sub(e.units);
            if left.saturating_add(cost) <= limit {
                retry = until(e.at);
                break;
            }
        }
        Decision {
            allowed: false,
            remaining: limit.saturating_sub(used),
            retry_after_ms: retry,
            reset_after_ms,
            changed: false,
        }
    }
}

/// `at + gap`, or `Corrupt` past the end of time.
fn add_gap(at: i64, gap: u64) -> Result<i64, Corrupt> {
    i64::try_from(gap)
        .ok()
        .and_then(|g| at.checked_add(g))
        .ok_or(Corrupt)
}

/// Bytes of `v` as a LEB128 varint.
fn varint_len(v: u64) -> usize {
    let bits = 64usize.saturating_sub(v.leading_zeros() as usize).max(1);
    bits.div_ceil(7)
}

/// Largest gap and units of a one-byte entry.
const SHORT_GAP: u64 = 15;
const SHORT_UNITS: u64 = 8;
/// Largest units carried by the first byte of a long entry.
const LONG_UNITS: u64 = 64;
/// Flag of a long entry whose units follow its gap.
const UNITS_FOLLOW: u8 = 0x40;

/// Appends a version 2 entry: one byte `0GGGGUUU` (gap 0-15, units 1-8:
/// a dense window's entries), else `10UUUUUU` (units 1-64) then the gap,
/// else `11000000` then the gap and the units, both LEB128.
fn put_entry(out: &mut Vec<u8>, gap: u64, units: u64) {
    let u = units.saturating_sub(1);
    if gap <= SHORT_GAP && units <= SHORT_UNITS && units > 0 {
        out.push(((gap as u8) << 3) | u as u8);
    } else if units <= LONG_UNITS && units > 0 {
        out.push(0x80 | u as u8);
        put_varint(out, gap);
    } else {
        out.push(0x80 | UNITS_FOLLOW);
        put_varint(out, gap);
        put_varint(out, units);
    }
}

/// Bytes [`put_entry`] writes.
fn entry_len(gap: u64, units: u64) -> usize {
    if gap <= SHORT_GAP && units <= SHORT_UNITS && units > 0 {
        1
    } else if units <= LONG_UNITS && units > 0 {
        1usize.saturating_add(varint_len(gap))
    } else {
        1usize
            .saturating_add(varint_len(gap))
            .saturating_add(varint_len(units))
    }
}

/// Reads an entry [`put_entry`] wrote: (gap, units).
fn get_entry(bytes: &mut &[u8]) -> Result<(u64, u64), Corrupt> {
    let (&h, rest) = bytes.split_first().ok_or(Corrupt)?;
    *bytes = rest;
    if h & 0x80 == 0 {
        return Ok((u64::from(h >> 3), u64::from(h & 7).saturating_add(1)));
    }
    let gap = get_varint(bytes)?;
    if h & UNITS_FOLLOW == 0 {
        return Ok((gap, u64::from(h & 0x3f).saturating_add(1)));
    }
    if h & 0x3f != 0 {
        return Err(Corrupt);
    }
    Ok((gap, get_varint(bytes)?))
}

/// Where the entries of version 2 bytes end (the trailer's offset).
fn body_end(bytes: &[u8]) -> Result<usize, Corrupt> {
    bytes.len().checked_sub(TRAILER_LEN).ok_or(Corrupt)
}

/// The entry at `pos` of bytes whose entries end at `end`: its gap, its
/// units (never 0) and the offset of the next entry.
fn read_entry(bytes: &[u8], pos: usize, end: usize) -> Result<(u64, u64, usize), Corrupt> {
    let mut rest = bytes.get(pos..end).ok_or(Corrupt)?;
    let (gap, units) = get_entry(&mut rest)?;
    if units == 0 {
        return Err(Corrupt);
    }
    Ok((gap, units, end.checked_sub(rest.len()).ok_or(Corrupt)?))
}

/// The trailer of a version 2 window (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trailer {
    head: usize,
    last: usize,
    head_base: i64,
    newest: i64,
    total: u64,
}

fn offset_u32(v: usize) -> [u8; 4] {
    // Offsets lie within a Redis string (at most 512 MB); a larger one
    // cannot be written, and reads back as corrupt.
    u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes()
}

impl Trailer {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&offset_u32(self.head));
        out.extend_from_slice(&offset_u32(self.last));
        out.extend_from_slice(&self.head_base.to_le_bytes());
        out.extend_from_slice(&self.newest.to_le_bytes());
        out.extend_from_slice(&self.total.to_le_bytes());
    }

    /// Reads the trailer of version 2 bytes and checks what O(1) allows:
    /// the offsets, and that the entry at `last` ends the body, agrees with
    /// `newest` (when it is the head) and fits in `total`. Also returns that
    /// entry's gap and units.
    fn read(bytes: &[u8]) -> Result<(Trailer, u64, u64), Corrupt> {
        if bytes.first() != Some(&FORMAT_V2) {
            return Err(Corrupt);
        }
        let end = body_end(bytes)?;
        let t = bytes.get(end..).ok_or(Corrupt)?;
        let (head, t) = t.split_first_chunk::<4>().ok_or(Corrupt)?;
        let (last, t) = t.split_first_chunk::<4>().ok_or(Corrupt)?;
        let (head_base, t) = t.split_first_chunk::<8>().ok_or(Corrupt)?;
        let (newest, t) = t.split_first_chunk::<8>().ok_or(Corrupt)?;
        let (total, _) = t.split_first_chunk::<8>().ok_or(Corrupt)?;
        let tr = Trailer {
            head: u32::from_le_bytes(*head) as usize,
            last: u32::from_le_bytes(*last) as usize,
            head_base: i64::from_le_bytes(*head_base),
            newest: i64::from_le_bytes(*newest),
            total: u64::from_le_bytes(*total),
        };
        if tr.head == 0 || tr.head > tr.last || tr.last >= end {
            return Err(Corrupt);
        }
        let (gap, units, next) = read_entry(bytes, tr.last, end)?;
        let consistent = next == end
            && tr.total >= units
            && if tr.head == tr.last {
                tr.total == units && add_gap(tr.head_base, gap) == Ok(tr.newest)
            } else {
                gap > 0 && tr.newest > tr.head_base
            };
        if !consistent {
            return Err(Corrupt);
        }
        Ok((tr, gap, units))
    }
}

/// What an admission writes to the window's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Nothing: a refusal, a report (`cost` 0).
    Nothing,
    /// The whole new value is in `out`: `SET key out PXAT expire_at`.
    Whole { expire_at: i64 },
    /// `out` replaces the value from `offset` on, growing it (never
    /// shrinking it) to `offset + out.len()`: `SETRANGE key offset out`,
    /// then `PEXPIREAT key expire_at`.
    Tail { offset: usize, expire_at: i64 },
    /// A large window compacted: the new value is `out[..head_len]`, then
    /// the current value's bytes `keep`, then `out[head_len..]`; written
    /// in place (`keep` moves towards the start: `head_len <= keep.start`),
    /// then replicated whole as `SET key value PXAT expire_at`.
    Compact {
        head_len: usize,
        keep: std::ops::Range<usize>,
        expire_at: i64,
    },
}

/// A charge against a stored window: the decision, and what to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charged {
    pub decision: Decision,
    pub write: Write,
}

/// Why a stored window cannot be charged (nothing is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// The bytes are not a window.
    Corrupt(Corrupt),
    /// A window beyond the clock-skew allowance: see [`Window::check_times`].
    Ahead(AheadOfClock),
}

impl From<Corrupt> for Unusable {
    fn from(c: Corrupt) -> Self {
        Unusable::Corrupt(c)
    }
}

/// Charges `cost` units at `now` against `limit` per `window_ms` to the
/// window stored as `stored` (empty: no key), with the semantics of
/// [`Window::charge`] (exactly: the same decisions), preceded by
/// [`Window::check_times`] (a window ahead of the clock is
/// [`Unusable::Ahead`]). On admission `out` receives what to write (see
/// [`Write`]); after it, the key reads back as the window
/// [`Window::charge`] leaves, and expires when that window empties.
///
/// Cost: O(1) amortised in the entries of a version 2 window — O(1) to
/// count, plus the entries that left the window since the last admission,
/// plus, for a refused call, the entries walked until `cost` units fit,
/// plus an occasional compaction paid for by the appends before it. A
/// version 1 window is decoded whole, once (it is rewritten in version 2).
pub fn charge_stored(
    stored: &[u8],
    now: i64,
    limit: u64,
    window_ms: u64,
    cost: u64,
    out: &mut Vec<u8>,
) -> Result<Charged, Unusable> {
    charge_with(stored, now, limit, window_ms, cost, out, SMALL_BYTES)
}

/// [`charge_stored`] with another [`SMALL_BYTES`] (tests exercise the
/// tail form on small windows with 0).
#[doc(hidden)]
pub fn charge_with(
    stored: &[u8],
    now: i64,
    limit: u64,
    window_ms: u64,
    cost: u64,
    out: &mut Vec<u8>,
    small: usize,
) -> Result<Charged, Unusable> {
    out.clear();
    let c = Call {
        now,
        limit,
        w: i64::try_from(window_ms).unwrap_or(i64::MAX),
        cost,
        small,
    };
    match stored.first() {
        None => Ok(c.empty(out)),
        Some(&FORMAT_V1) => {
            let old = Window::decode(stored)?;
            old.check_times(now).map_err(Unusable::Ahead)?;
            let canonical = old.encode();
            c.charge(&canonical, out, true)
        }
        Some(_) => c.charge(stored, out, false),
    }
}

/// Applies `write` (with `out`) to `value` as Redis applies its effects:
/// the value a replica or an AOF replay holds afterwards.
pub fn apply(value: &mut Vec<u8>, write: &Write, out: &[u8]) {
    match *write {
        Write::Nothing => {}
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

/// One call's parameters.
struct Call {
    now: i64,
    limit: u64,
    w: i64,
    cost: u64,
    small: usize,
}

/// The first entry still in the window, found by the walk from `head`.
struct Live {
    /// Its offset.
    start: usize,
    /// The time its gap counts from.
    base: i64,
    at: i64,
    units: u64,
    /// The offset of the entry after it.
    next: usize,
}

impl Call {
    /// ms from now until `at` + the window (0 if past).
    fn until(&self, at: i64) -> u64 {
        ms_u64(at.saturating_add(self.w).saturating_sub(self.now))
    }

    /// A window holding one entry, in canonical form.
    fn single(out: &mut Vec<u8>, at: i64, units: u64) {
        out.push(FORMAT_V2);
        put_entry(out, 0, units);
        Trailer {
            head: 1,
            last: 1,
            head_base: at,
            newest: at,
            total: units,
        }
        .put(out);
    }

    fn report(&self, used: u64, reset_after_ms: u64) -> Charged {
        Charged {
            decision: Decision {
                allowed: true,
                remaining: self.limit.saturating_sub(used),
                retry_after_ms: 0,
                reset_after_ms: if used == 0 { 0 } else { reset_after_ms },
                changed: false,
            },
            write: Write::Nothing,
        }
    }

    fn admitted(&self, used: u64, t: i64) -> Decision {
        Decision {
            allowed: true,
            remaining: self.limit.saturating_sub(used.saturating_add(self.cost)),
            retry_after_ms: 0,
            reset_after_ms: self.until(t),
            changed: true,
        }
    }

    fn refused(&self, used: u64, retry_after_ms: u64, reset_after_ms: u64) -> Charged {
        Charged {
            decision: Decision {
                allowed: false,
                remaining: self.limit.saturating_sub(used),
                retry_after_ms,
                reset_after_ms,
                changed: false,
            },
            write: Write::Nothing,
        }
    }

    /// No key: [`Window::charge`] on an empty window.
    fn empty(&self, out: &mut Vec<u8>) -> Charged {
        if self.cost == 0 {
            return self.report(0, 0);
        }
        if self.cost > self.limit {
            return self.refused(0, 0, 0);
        }
        Call::single(out, self.now, self.cost);
        Charged {
            decision: self.admitted(0, self.now),
            write: Write::Whole {
                expire_at: self.now.saturating_add(self.w),
            },
        }
    }

    /// A version 2 window (`whole`: rewrite it whole on admission).
    fn charge(&self, bytes: &[u8], out: &mut Vec<u8>, whole: bool) -> Result<Charged, Unusable> {
        let (tr, last_gap, last_units) = Trailer::read(bytes)?;
        if tr.newest > self.now.saturating_add(CLOCK_SKEW_ALLOWANCE_MS) {
            return Err(Unusable::Ahead(AheadOfClock {
                newest: tr.newest,
                now: self.now,
            }));
        }
        let end = body_end(bytes)?;
        // A clock that stepped backwards: work at the newest entry's time.
        let t = tr.newest.max(self.now);
        let horizon = t.saturating_sub(self.w);
        let reset_after_ms = self.until(tr.newest);
        // Walk past the entries that left the window since the last
        // admission (none if every entry did).
        let mut live = None;
        let mut dead = 0u64;
        if tr.newest > horizon {
            let (mut pos, mut base) = (tr.head, tr.head_base);
            loop {
                // Eight dense entries at once, while all have left.
                if let Some((gaps, units)) = eight_short(bytes, pos, tr.last) {
                    let at = add_gap(base, gaps)?;
                    if at <= horizon {
                        dead = dead.saturating_add(units);
                        base = at;
                        pos = pos.saturating_add(8);
                        continue;
                    }
                }
                let (gap, units, next) = read_entry(bytes, pos, end)?;
                if gap == 0 && pos != tr.head {
                    return Err(Corrupt.into());
                }
                let at = add_gap(base, gap)?;
                if pos == tr.last && at != tr.newest {
                    return Err(Corrupt.into());
                }
                if at > horizon {
                    live = Some(Live {
                        start: pos,
                        base,
                        at,
                        units,
                        next,
                    });
                    break;
                }
                dead = dead.saturating_add(units);
                base = at;
                pos = next;
            }
        }
        let used = match &live {
            None => 0,
            Some(l) if tr.total == u64::MAX => recount(bytes, l, end)?,
            Some(_) => tr
                .total
                .checked_sub(dead)
                .filter(|&u| u >= last_units)
                .ok_or(Corrupt)?,
        };
        if self.cost == 0 {
            return Ok(self.report(used, reset_after_ms));
        }
        if used.saturating_add(self.cost) > self.limit {
            let retry = match &live {
                Some(l) => self.retry(bytes, l, end, used)?,
                None => 0,
            };
            return Ok(self.refused(used, retry, reset_after_ms));
        }
        let decision = self.admitted(used, t);
        let expire_at = t.saturating_add(self.w);
        let Some(l) = live else {
            Call::single(out, t, self.cost);
            return Ok(Charged {
                decision,
                write: Write::Whole { expire_at },
            });
        };
        let total = used.saturating_add(self.cost);
        // The new last entry: merged into the newest one at the same
        // millisecond, else appended after it.
        let merge = tr.newest == t;
        let (tail_start, gap, units) = if merge {
            (tr.last, last_gap, last_units.saturating_add(self.cost))
        } else {
            (end, ms_u64(t.saturating_sub(tr.newest)), self.cost)
        };
        let tail_len = entry_len(gap, units);
        let live_len = tail_start.saturating_sub(l.start).saturating_add(tail_len);
        let dead_len = l.start.saturating_sub(1);
        let compacted = live_len.saturating_add(1 + TRAILER_LEN);
        if whole || dead_len > live_len || compacted <= self.small {
            if merge && l.start == tr.last {
                Call::single(out, t, units);
                return Ok(Charged {
                    decision,
                    write: Write::Whole { expire_at },
                });
            }
            // The canonical head entry, the entries after it as they are,
            // the new last entry and the trailer.
            let keep = bytes.get(l.next..tail_start).ok_or(Corrupt)?;
            out.push(FORMAT_V2);
            put_entry(out, 0, l.units);
            let head_len = out.len();
            let last = head_len.saturating_add(keep.len());
            let inline = whole || keep.len() <= self.small;
            if inline {
                out.reserve(compacted);
                out.extend_from_slice(keep);
            }
            put_entry(out, gap, units);
            Trailer {
                head: 1,
                last,
                head_base: l.at,
                newest: t,
                total,
            }
            .put(out);
            let write = if inline {
                Write::Whole { expire_at }
            } else {
                // A large window: the kept entries move within the value
                // rather than through `out`.
                Write::Compact {
                    head_len,
                    keep: l.next..tail_start,
                    expire_at,
                }
            };
            return Ok(Charged { decision, write });
        }
        put_entry(out, gap, units);
        Trailer {
            head: l.start,
            last: tail_start,
            head_base: l.base,
            newest: t,
            total,
        }
        .put(out);
        Ok(Charged {
            decision,
            write: Write::Tail {
                offset: tail_start,
                expire_at,
            },
        })
    }

    /// A refused call: ms until enough of the oldest units have left the
    /// window for `cost` to fit (0 if they never do).
    fn retry(&self, bytes: &[u8], l: &Live, end: usize, used: u64) -> Result<u64, Corrupt> {
        let (mut at, mut units, mut next) = (l.at, l.units, l.next);
        let mut left = used;
        loop {
            left = left.saturating_sub(units);
            if left.saturating_add(self.cost) <= self.limit {
                return Ok(self.until(at));
            }
            // Eight dense entries at once, while `cost` still would not fit
            // after them.
            while let Some((gaps, u)) = eight_short(bytes, next, end) {
                if left.saturating_sub(u).saturating_add(self.cost) <= self.limit {
                    break;
                }
                left = left.saturating_sub(u);
                at = add_gap(at, gaps)?;
                next = next.saturating_add(8);
            }
            if next >= end {
                return Ok(0);
            }
            let (gap, u, n) = read_entry(bytes, next, end)?;
            if gap == 0 {
                return Err(Corrupt);
            }
            at = add_gap(at, gap)?;
            (units, next) = (u, n);
        }
    }
}

/// If the 8 bytes at `pos` (all before `before`) are 8 one-byte entries,
/// none with a gap of 0: the sum of their gaps and of their units. Lets the
/// walks over a dense window (one entry a ms or so) skip 8 entries in a few
/// instructions.
fn eight_short(bytes: &[u8], pos: usize, before: usize) -> Option<(u64, u64)> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    if pos.checked_add(8)? > before {
        return None;
    }
    let chunk = bytes.get(pos..pos.checked_add(8)?)?;
    let w = u64::from_le_bytes(chunk.try_into().ok()?);
    // One-byte entries have the high bit clear; a gap of 0 is a byte below
    // 8, the only bytes that adding 0x78 leaves below 0x80.
    if w & HIGH != 0 || w.wrapping_add(0x78 * ONES) & HIGH != HIGH {
        return None;
    }
    // Bytewise sums (each fits a byte): multiply by ONES, take the top byte.
    let sum = |v: u64| v.wrapping_mul(ONES) >> 56;
    let gaps = sum((w >> 3) & (0x0f * ONES));
    let units = sum(w & (0x07 * ONES)).wrapping_add(8);
    Some((gaps, units))
}

/// The units from the first live entry on, summed saturating (for a
/// window whose total saturated).
fn recount(bytes: &[u8], l: &Live, end: usize) -> Result<u64, Corrupt> {
    let mut used = l.units;
    let mut next = l.next;
    while next < end {
        let (gap, units, n) = read_entry(bytes, next, end)?;
        if gap == 0 {
            return Err(Corrupt);
        }
        used = used.saturating_add(units);
        next = n;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seed_check_sixty_then_refused() {
        let mut w = Window::new();
        let start = 1_700_000_000_000;
        for i in 0..60u64 {
            let d = w.charge(start + i as i64 * 100, 60, 60_000, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, 59 - i);
        }
        let d = w.charge(start + 6_000, 60, 60_000, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        // The first unit (at start) leaves at start + 60 000.
        assert_eq!(d.retry_after_ms, 54_000);
        assert_eq!(d.reset_after_ms, 60_000 - 6_000 + 5_900);
        assert!(!w.charge(start + 59_999, 60, 60_000, 1).allowed);
        assert!(w.charge(start + 60_000, 60, 60_000, 1).allowed);
    }

    #[test]
    fn the_window_edge_that_fixed_windows_get_wrong() {
        // 60 at the end of one minute, then the start of the next: a fixed
        // window admits 120 within one second; an exact window admits 60.
        let mut w = Window::new();
        let t0 = 59_500;
        let admitted = (0..60)
            .filter(|_| w.charge(t0, 60, 60_000, 1).allowed)
            .count()
            + (0..60)
                .filter(|_| w.charge(60_500, 60, 60_000, 1).allowed)
                .count();
        assert_eq!(admitted, 60);
    }

    #[test]
    fn refused_calls_consume_nothing() {
        let mut w = Window::new();
        assert!(w.charge(0, 2, 1_000, 2).allowed);
        for t in 1..1_000 {
            assert!(!w.charge(t, 2, 1_000, 1).allowed);
        }
        assert!(w.charge(1_000, 2, 1_000, 1).allowed);
    }

    #[test]
    fn cost_and_peek() {
        let mut w = Window::new();
        let d = w.charge(0, 10, 1_000, 7);
        assert_eq!((d.allowed, d.remaining), (true, 3));
        let d = w.charge(10, 10, 1_000, 4);
        assert_eq!((d.allowed, d.remaining, d.retry_after_ms), (false, 3, 990));
        let d = w.charge(10, 10, 1_000, 0);
        assert_eq!(
            (d.allowed, d.remaining, d.reset_after_ms, d.changed),
            (true, 3, 990, false)
        );
    }

    #[test]
    fn clock_stepping_back_is_stricter() {
        let mut w = Window::new();
        assert!(w.charge(10_000, 1, 1_000, 1).allowed);
        // The clock jumps back 5 s: the unit still counts until 11 000 of the
        // old clock, i.e. 6 000 ms from the new now.
        let d = w.charge(5_000, 1, 1_000, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 6_000);
        assert!(!w.charge(10_999, 1, 1_000, 1).allowed);
        assert!(w.charge(11_000, 1, 1_000, 1).allowed);
    }

    #[test]
    fn encoding_is_small_and_round_trips() {
        let mut w = Window::new();
        for i in 0..60 {
            w.charge(1_700_000_000_000 + i * 1_000, 60, 60_000, 1);
        }
        let bytes = w.encode();
        assert!(
            bytes.len() <= 1 + 2 + 59 * 3 + TRAILER_LEN,
            "{}",
            bytes.len()
        );
        assert_eq!(Window::decode(&bytes), Ok(w.clone()));
        assert_eq!(Window::new().encode(), Vec::<u8>::new());
        // The version 1 form still reads back as the same window.
        let v1 = w.encode_v1();
        assert!(v1.len() <= 1 + 8 + 1 + 59 * 3, "{}", v1.len());
        assert_eq!(Window::decode(&v1), Ok(w));
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x02",
            b"\x01\x00",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",
            b"\x01\xff\xff\xff\xff\xff\xff\xff\x7f\x01\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x01",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
            b"hello world",
        ] {
            assert_eq!(Window::decode(bad), Err(Corrupt), "{bad:?}");
        }
    }

    /// The reference: all admissions ever, no pruning, brute force.
    #[derive(Default)]
    struct Reference {
        log: Vec<(i64, u64)>,
    }

    impl Reference {
        /// The newest admission (the log is in time order).
        fn newest(&self) -> Option<i64> {
            self.log.last().map(|(a, _)| *a)
        }
        /// The effective time at `now`: never before the newest admission.
        fn clock(&self, now: i64) -> i64 {
            self.newest().map_or(now, |a| a.max(now))
        }
        fn used_at(&self, t: i64, w: i64) -> u64 {
            self.log
                .iter()
                .filter(|(a, _)| *a > t - w)
                .map(|(_, u)| u)
                .sum()
        }
        fn would_admit(&self, t: i64, w: i64, limit: u64, cost: u64) -> bool {
            self.used_at(t, w) + cost <= limit
        }
    }

    /// Runs `calls` (clock step, cost) from `now = 1 000` against the
    /// limiter and the reference, decoding the stored form before each call
    /// as the module does. A call whose clock lies more than the allowance
    /// behind the newest admission must be refused by `check_times` and by
    /// `charge`, recording nothing; every other call must match the
    /// reference exactly, as it did before the allowance existed.
    ///
    /// Alongside, the same calls go to windows in their stored form, as the
    /// module keeps them ([`Stored`]): rewritten whole only when small
    /// (the module's threshold), with the tail form wherever it applies
    /// (threshold 0), and one written in version 1 halfway through (a window
    /// of the previous release, migrated by its next admission). Each must
    /// decide exactly as the limiter and read back as its window.
    fn run_against_reference(
        limit: u64,
        window: i64,
        calls: &[(i64, u64)],
    ) -> Result<(), TestCaseError> {
        let mut w = Window::new();
        let mut r = Reference::default();
        let mut now = 1_000i64;
        let mut stored = [Stored::new(SMALL_BYTES), Stored::new(0), Stored::new(0)];
        for (i, &(step, cost)) in calls.iter().enumerate() {
            now += step;
            let cost = cost.min(limit);
            w = Window::decode(&w.encode()).unwrap_or_default();
            if i == calls.len() / 2 {
                stored[2].bytes = w.encode_v1();
            }
            let ahead = r
                .newest()
                .filter(|&a| a > now + CLOCK_SKEW_ALLOWANCE_MS)
                .map(|newest| AheadOfClock { newest, now });
            prop_assert_eq!(w.check_times(now), ahead.map_or(Ok(()), Err));
            let before = w.clone();
            let d = w.charge(now, limit, window as u64, cost);
            for s in &mut stored {
                s.charge(now, limit, window as u64, cost, ahead, &d, &w)?;
            }
            if let Some(a) = ahead {
                let refused = Decision {
                    allowed: false,
                    remaining: 0,
                    retry_after_ms: (a.newest - CLOCK_SKEW_ALLOWANCE_MS - now) as u64,
                    reset_after_ms: (a.newest + window - now) as u64,
                    changed: false,
                };
                prop_assert_eq!(d, refused);
                prop_assert_eq!(&w, &before, "a window ahead of the clock is never charged");
                continue;
            }
            let t = r.clock(now);
            let expect = r.would_admit(t, window, limit, cost);
            prop_assert_eq!(d.allowed, expect);
            prop_assert_eq!(d.changed, expect && cost > 0);
            if expect && cost > 0 {
                r.log.push((t, cost));
            }
            prop_assert_eq!(d.remaining, limit.saturating_sub(r.used_at(t, window)));
            if !d.allowed {
                // Exact retry-after: the first instant it would fit.
                let mut wait = 0i64;
                while !r.would_admit(t + wait, window, limit, cost) {
                    wait += 1;
                }
                prop_assert_eq!(d.retry_after_ms as i64, t + wait - now);
                prop_assert_eq!(&w, &before, "a refused call records nothing");
            }
            let newest = r.newest();
            let reset = newest.map_or(0, |a| (a + window - now).max(0));
            if r.used_at(t, window) > 0 {
                prop_assert_eq!(d.reset_after_ms as i64, reset);
            }
            // An accepted window empties within window + allowance.
            if let Some(at) = w.empty_at(window as u64) {
                prop_assert!(at <= now + window + CLOCK_SKEW_ALLOWANCE_MS);
            }
            // The invariant itself: no interval of `window` ms holds more
            // than `limit` admitted units.
            for (a, _) in &r.log {
                let sum: u64 = r
                    .log
                    .iter()
                    .filter(|(b, _)| *b >= *a && *b < a + window)
                    .map(|(_, u)| u)
                    .sum();
                prop_assert!(sum <= limit);
            }
            prop_assert_eq!(Window::decode(&w.encode()).unwrap_or_default(), w.clone());
        }
        Ok(())
    }

    /// A window as Redis holds it: charged through [`charge_with`] and
    /// changed only by [`apply`], as the primary, a replica and an AOF
    /// replay change it.
    struct Stored {
        bytes: Vec<u8>,
        small: usize,
        out: Vec<u8>,
    }

    impl Stored {
        fn new(small: usize) -> Stored {
            Stored {
                bytes: Vec::new(),
                small,
                out: Vec::new(),
            }
        }

        /// Charges, and checks the outcome against the limiter's decision
        /// `d` for the same call and the window `after` it.
        #[allow(clippy::too_many_arguments)]
        fn charge(
            &mut self,
            now: i64,
            limit: u64,
            window_ms: u64,
            cost: u64,
            ahead: Option<AheadOfClock>,
            d: &Decision,
            after: &Window,
        ) -> Result<Charged, TestCaseError> {
            let before = self.bytes.clone();
            let r = charge_with(
                &self.bytes,
                now,
                limit,
                window_ms,
                cost,
                &mut self.out,
                self.small,
            );
            if let Some(a) = ahead {
                prop_assert_eq!(r, Err(Unusable::Ahead(a)));
                return Ok(Charged {
                    decision: *d,
                    write: Write::Nothing,
                });
            }
            let c = match r {
                Ok(c) => c,
                Err(e) => return Err(TestCaseError::fail(format!("{e:?} on {before:?}"))),
            };
            prop_assert_eq!(&c.decision, d);
            apply(&mut self.bytes, &c.write, &self.out);
            let expire_at = after.empty_at(window_ms);
            match c.write {
                Write::Nothing => {
                    prop_assert!(!d.changed);
                    prop_assert_eq!(&self.bytes, &before, "nothing written");
                }
                Write::Whole { expire_at: at } => {
                    prop_assert!(d.changed);
                    prop_assert_eq!(Some(at), expire_at);
                    prop_assert_eq!(&self.bytes, &after.encode(), "a rewrite is canonical");
                }
                Write::Compact {
                    head_len,
                    ref keep,
                    expire_at: at,
                } => {
                    prop_assert!(d.changed);
                    prop_assert_eq!(Some(at), expire_at);
                    prop_assert_eq!(&self.bytes, &after.encode(), "a compaction is canonical");
                    prop_assert!(head_len <= keep.start, "moves towards the start");
                    prop_assert!(keep.len() > self.small);
                    prop_assert!(before.first() == Some(&FORMAT_V2));
                    let (tr, ..) = Trailer::read(&before).expect("a trailer");
                    prop_assert!(keep.end <= before.len() - TRAILER_LEN && keep.start > tr.head);
                }
                Write::Tail {
                    offset,
                    expire_at: at,
                } => {
                    prop_assert!(d.changed);
                    prop_assert_eq!(Some(at), expire_at);
                    prop_assert!(before.first() == Some(&FORMAT_V2));
                    prop_assert!(offset + self.out.len() >= before.len(), "never shrinks");
                    prop_assert!(self.out.len() <= 20 + TRAILER_LEN, "a tail is small");
                    let (tr, ..) = Trailer::read(&self.bytes).expect("a trailer");
                    let end = self.bytes.len() - TRAILER_LEN;
                    prop_assert!(
                        tr.head - 1 <= end - tr.head,
                        "dead bytes never outweigh live"
                    );
                    prop_assert!(end - tr.head + 1 + TRAILER_LEN > self.small);
                }
            }
            if after.is_empty() {
                prop_assert!(self.bytes.is_empty() || !d.changed);
            } else {
                prop_assert_eq!(&Window::decode(&self.bytes).expect("decodes"), after);
            }
            Ok(c)
        }
    }

    /// The stored form of `base` then `(gap, units)` entries, built by hand
    /// (any values, unlike `encode`).
    fn crafted(base: i64, units: u64, rest: &[(u64, u64)]) -> Vec<u8> {
        let mut out = vec![FORMAT_V1];
        out.extend_from_slice(&base.to_le_bytes());
        put_varint(&mut out, units);
        for &(gap, units) in rest {
            put_varint(&mut out, gap);
            put_varint(&mut out, units);
        }
        out
    }

    const NOW: i64 = 1_700_000_000_000;
    const A: i64 = CLOCK_SKEW_ALLOWANCE_MS;

    #[test]
    fn a_window_from_the_far_future_is_refused_never_extended() {
        // Well-formed: the limiter cannot tell it from a real window by its
        // bytes alone, only by its time.
        let bytes = crafted(i64::MAX, 1, &[]);
        let w = Window::decode(&bytes).expect("well-formed");
        for now in [i64::MIN, -1, 0, NOW, i64::MAX - A - 1] {
            assert_eq!(
                w.check_times(now),
                Err(AheadOfClock {
                    newest: i64::MAX,
                    now
                })
            );
            for cost in [0, 1, 5] {
                let mut c = w.clone();
                let d = c.charge(now, 5, 60_000, cost);
                assert!(!d.allowed && !d.changed, "{now} {cost}: {d:?}");
                assert_eq!(d.remaining, 0);
                assert_eq!(c, w, "nothing recorded");
                assert_eq!(c.encode_v1(), bytes);
            }
        }
        let d = w.clone().charge(NOW, 5, 60_000, 1);
        assert_eq!(d.retry_after_ms, (i64::MAX - A - NOW) as u64);
        assert_eq!(d.reset_after_ms, (i64::MAX - NOW) as u64);
        // Only a clock that is itself near the end of time accepts it, and
        // nothing overflows there.
        for now in [i64::MAX - A, i64::MAX - 1, i64::MAX] {
            let mut c = w.clone();
            assert_eq!(c.check_times(now), Ok(()));
            let d = c.charge(now, 5, 60_000, 1);
            assert!(d.allowed && d.changed);
            assert_eq!(c.empty_at(60_000), Some(i64::MAX));
            assert_eq!(Window::decode(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn the_allowance_boundary_is_exact() {
        let w = Window::decode(&crafted(NOW + A, 1, &[])).expect("well-formed");
        assert_eq!(w.check_times(NOW), Ok(()));
        let mut c = w.clone();
        let d = c.charge(NOW, 5, 60_000, 1);
        assert_eq!(
            d,
            Decision {
                allowed: true,
                remaining: 3,
                retry_after_ms: 0,
                reset_after_ms: (A + 60_000) as u64,
                changed: true,
            }
        );
        // Worked at the newest entry's time, so no later than now + allowance.
        assert_eq!(c.empty_at(60_000), Some(NOW + A + 60_000));

        let w = Window::decode(&crafted(NOW + A + 1, 1, &[])).expect("well-formed");
        let ahead = AheadOfClock {
            newest: NOW + A + 1,
            now: NOW,
        };
        assert_eq!(w.check_times(NOW), Err(ahead));
        assert_eq!(ahead.ahead_ms(), (A + 1) as u64);
        let mut c = w.clone();
        let d = c.charge(NOW, 5, 60_000, 1);
        assert_eq!(
            d,
            Decision {
                allowed: false,
                remaining: 0,
                retry_after_ms: 1,
                reset_after_ms: (A + 1 + 60_000) as u64,
                changed: false,
            }
        );
        assert_eq!(c, w);
        // One millisecond later the clock is back within the allowance.
        assert_eq!(w.check_times(NOW + 1), Ok(()));
        // Older entries do not matter: the newest bounds them all.
        let w = Window::decode(&crafted(i64::MIN, 1, &[(u64::MAX / 2, 1)])).expect("well-formed");
        assert_eq!(w.check_times(NOW), Ok(()));
        let w = Window::decode(&crafted(NOW, 1, &[(A as u64 + 1, 1)])).expect("well-formed");
        assert!(w.check_times(NOW).is_err());
    }

    #[test]
    fn a_clock_step_back_beyond_the_allowance_refuses_until_it_catches_up() {
        let mut w = Window::new();
        assert!(w.charge(NOW, 10, 1_000, 1).allowed);
        let stored = w.clone();
        // 5 s beyond the allowance: refused, nothing recorded, retry when the
        // clock is back within the allowance.
        let back = NOW - A - 5_000;
        assert!(w.check_times(back).is_err());
        let d = w.charge(back, 10, 1_000, 1);
        assert_eq!(
            (d.allowed, d.changed, d.retry_after_ms),
            (false, false, 5_000)
        );
        assert_eq!(w, stored);
        // Within the allowance: stricter, as before, at the newest entry's
        // time.
        let d = w.charge(back + 5_000, 10, 1_000, 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 8);
        assert_eq!(d.reset_after_ms, (A + 1_000) as u64);
        assert_eq!(w.entries().last().map(|e| e.at), Some(NOW));
    }

    #[test]
    fn huge_units_and_extreme_times_never_panic() {
        let windows = [
            crafted(i64::MIN, u64::MAX, &[]),
            crafted(i64::MIN, u64::MAX, &[(u64::MAX >> 1, u64::MAX)]),
            crafted(NOW - 10, u64::MAX, &[(5, u64::MAX), (5, u64::MAX)]),
            crafted(NOW, 1, &[(1, u64::MAX)]),
            crafted(i64::MAX - 1, u64::MAX, &[(1, u64::MAX)]),
        ];
        for bytes in &windows {
            let w = Window::decode(bytes).expect("well-formed");
            for now in [i64::MIN, -1, 0, NOW, i64::MAX - A, i64::MAX] {
                for window_ms in [1, 60_000, MAX_WINDOW_S * 1_000, u64::MAX] {
                    for limit in [1, MAX_LIMIT, u64::MAX] {
                        for cost in [0, 1, limit] {
                            let mut c = w.clone();
                            let accepted = c.check_times(now).is_ok();
                            let d = c.charge(now, limit, window_ms, cost);
                            assert!(d.retry_after_ms <= d.reset_after_ms || !accepted);
                            if !accepted || !d.changed {
                                assert_eq!(c, w);
                            }
                            if accepted {
                                let wi = i64::try_from(window_ms).unwrap_or(i64::MAX);
                                let bound = now.saturating_add(wi).saturating_add(A);
                                assert!(c.empty_at(window_ms).is_none_or(|at| at <= bound));
                            }
                            assert_eq!(Window::decode(&c.encode()), Ok(c.clone()));
                            for form in [bytes.clone(), w.encode()] {
                                same_as_limiter(&form, &w, now, limit, window_ms, cost, small())
                                    .unwrap();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Some thresholds: the module's, always the tail form, in between.
    fn small() -> usize {
        [SMALL_BYTES, 0, 40][NOW.unsigned_abs() as usize % 3]
    }

    /// Charges `bytes` (holding the window `w`) in its stored form and
    /// checks it decides as [`Window::charge`] and reads back as its window.
    fn same_as_limiter(
        bytes: &[u8],
        w: &Window,
        now: i64,
        limit: u64,
        window_ms: u64,
        cost: u64,
        small: usize,
    ) -> Result<(), String> {
        let mut c = w.clone();
        let accepted = c.check_times(now);
        let d = c.charge(now, limit, window_ms, cost);
        let mut out = Vec::new();
        let r = charge_with(bytes, now, limit, window_ms, cost, &mut out, small);
        let shown = format!("{r:?} vs {d:?} on {bytes:?} at {now}");
        let fail = |what: &str| Err(format!("{what}: {shown}"));
        match (accepted, r) {
            (Err(a), Err(Unusable::Ahead(b))) if a == b => Ok(()),
            (Ok(()), Ok(got)) => {
                if got.decision != d {
                    return fail("decision");
                }
                let mut value = bytes.to_vec();
                apply(&mut value, &got.write, &out);
                if got.write == Write::Nothing && value != bytes {
                    return fail("wrote on a refusal");
                }
                if Window::decode(&value) != Ok(c.clone()) {
                    return fail("reads back as another window");
                }
                Ok(())
            }
            _ => fail("outcome"),
        }
    }

    /// A version 2 window by hand: `dead` entries (already dropped), then
    /// the head and further entries from `head_base`, as (gap, units).
    fn v2(dead: &[(u64, u64)], head_base: i64, live: &[(u64, u64)]) -> Vec<u8> {
        let mut out = vec![FORMAT_V2];
        for &(g, u) in dead {
            put_entry(&mut out, g, u);
        }
        let head = out.len();
        let (mut at, mut total, mut last) = (head_base, 0u64, head);
        for &(g, u) in live {
            last = out.len();
            put_entry(&mut out, g, u);
            at += g as i64;
            total += u;
        }
        Trailer {
            head,
            last,
            head_base,
            newest: at,
            total,
        }
        .put(&mut out);
        out
    }

    #[test]
    fn compaction_happens_when_dead_bytes_outweigh_live_ones() {
        // Live: m entries 20 ms apart from 10 000 (the head 1 byte, the
        // others 2); dead: k entries before them (2 bytes each). A call 20 ms
        // after the newest appends 2 bytes: live 2m + 1 bytes after it.
        let m = 10usize;
        let live: Vec<(u64, u64)> = (0..m).map(|i| (if i == 0 { 0 } else { 20 }, 1)).collect();
        let newest = 10_000 + 20 * (m as i64 - 1);
        let at = newest + 20;
        let expire_at = at + 60_000;
        let call = |dead_entries: usize, small: usize| {
            let dead = vec![(20u64, 1u64); dead_entries];
            let bytes = v2(&dead, 10_000, &live);
            assert_eq!(bytes.len(), 1 + 2 * dead_entries + 2 * m - 1 + TRAILER_LEN);
            let w = Window::decode(&bytes).expect("well-formed");
            let mut out = Vec::new();
            let c = charge_with(&bytes, at, 100, 60_000, 1, &mut out, small).unwrap();
            same_as_limiter(&bytes, &w, at, 100, 60_000, 1, small).unwrap();
            (c.write, out)
        };
        // dead 2m <= live 2m + 1: not outweighed, the tail is written.
        let (write, out) = call(m, 0);
        let end = 1 + 2 * m + 2 * m - 1;
        assert_eq!(
            write,
            Write::Tail {
                offset: end,
                expire_at
            }
        );
        assert_eq!(out.len(), 2 + TRAILER_LEN);
        // dead 2m + 2 > live: compacted, canonical, the dead bytes gone;
        // the entries after the head move within the value.
        let (write, out) = call(m + 1, 0);
        let head = 1 + 2 * (m + 1);
        assert_eq!(
            write,
            Write::Compact {
                head_len: 2,
                keep: head + 1..head + 2 * m - 1,
                expire_at
            }
        );
        assert_eq!(out.len(), 2 + 2 + TRAILER_LEN);
        // Small enough to copy: rewritten whole.
        let compacted = 1 + 2 * m + 1 + TRAILER_LEN;
        let (write, out) = call(m + 1, 2 * m);
        assert!(matches!(write, Write::Whole { .. }), "{write:?}");
        assert_eq!(out.len(), compacted);
        // The small threshold, exactly: a compacted window of `small` bytes
        // is rewritten whole, one byte more is not.
        assert!(matches!(call(1, compacted).0, Write::Whole { .. }));
        assert!(matches!(call(1, compacted - 1).0, Write::Tail { .. }));
    }

    #[test]
    fn eight_dense_entries_are_summed_at_once() {
        let mut b = Vec::new();
        let entries = [
            (1, 1),
            (15, 8),
            (3, 2),
            (1, 1),
            (7, 5),
            (2, 3),
            (9, 8),
            (1, 7),
        ];
        for (g, u) in entries {
            put_entry(&mut b, g, u);
        }
        let (g, u) = entries.iter().fold((0, 0), |(g, u), e| (g + e.0, u + e.1));
        assert_eq!(eight_short(&b, 0, 8), Some((g, u)));
        assert_eq!(eight_short(&b, 0, 7), None, "would pass the bound");
        assert_eq!(eight_short(&b, 1, 9), None, "past the end");
        for (at, bad) in [(3, 0u8), (5, 0x07), (0, 0x80), (7, 0xff)] {
            let mut c = b.clone();
            c[at] = bad;
            assert_eq!(eight_short(&c, 0, 8), None, "{at} {bad:#x}");
        }
    }

    /// Refused calls and calls after a long pause walk a large dense
    /// window 8 entries at a time: still exact.
    #[test]
    fn walks_over_dense_windows_are_exact() {
        let mut w = Window::new();
        for i in 0..3_000i64 {
            w.charge(NOW + i + i / 7, 4_000, 60_000, 1 + (i % 3) as u64);
        }
        let bytes = w.encode();
        for (now, limit, cost) in [
            (NOW + 3_000, 6_000, 6_000),
            (NOW + 3_000, 6_000, 1),
            (NOW + 3_000, 6_000, 5_999),
            (NOW + 60_000 + 1_234, 6_000, 1),
            (NOW + 60_000 + 3_400, 6_000, 6_000),
            (NOW + 60_000 + 1_001, 7_000, 0),
        ] {
            for small in [0, SMALL_BYTES] {
                same_as_limiter(&bytes, &w, now, limit, 60_000, cost, small).unwrap();
            }
        }
    }

    /// Entries take one byte when dense (gap up to 15 ms, up to 8 units),
    /// else a byte and their LEB128 gap (and units past 64).
    #[test]
    fn entries_are_one_byte_when_dense() {
        for (gap, units, len) in [
            (0, 1, 1),
            (15, 8, 1),
            (16, 8, 2),
            (15, 9, 2),
            (1_000, 1, 3),
            (1_000, 64, 3),
            (1_000, 65, 4),
            (0, 100_000, 5),
            (u64::MAX, u64::MAX, 1 + 10 + 10),
        ] {
            let mut out = Vec::new();
            put_entry(&mut out, gap, units);
            assert_eq!(
                (out.len(), entry_len(gap, units)),
                (len, len),
                "{gap} {units}"
            );
            let mut rest = &out[..];
            assert_eq!(get_entry(&mut rest), Ok((gap, units)));
            assert!(rest.is_empty());
        }
        // A long entry with units after its gap has no units in its first byte.
        assert_eq!(get_entry(&mut &[0xc1, 1, 1][..]), Err(Corrupt));
    }

    #[test]
    fn entries_leaving_the_window_move_the_head_and_count_once() {
        // Four live entries 10 ms apart (units 1, 2, 3, 4) in a 100 ms
        // window; a call at 10 035 + 100 drops the first three.
        let bytes = v2(&[(7, 9)], 10_000, &[(0, 1), (10, 2), (10, 3), (10, 4)]);
        let w = Window::decode(&bytes).expect("well-formed");
        assert_eq!(
            w.entries().map(|e| e.at).collect::<Vec<_>>(),
            [10_000, 10_010, 10_020, 10_030]
        );
        let now = 10_025 + 100;
        for cost in 0..=10 {
            for small in [0, SMALL_BYTES] {
                same_as_limiter(&bytes, &w, now, 10, 100, cost, small).unwrap();
            }
        }
        let mut out = Vec::new();
        let c = charge_with(&bytes, now, 10, 100, 5, &mut out, 0).unwrap();
        // 4 units live (the entry at 10 030), 5 more fit; the dead bytes
        // (1 + 3 entries, 8 bytes) outweigh the live ones (4): compacted.
        assert_eq!((c.decision.allowed, c.decision.remaining), (true, 1));
        assert!(matches!(c.write, Write::Whole { .. }));
        let mut value = bytes.clone();
        apply(&mut value, &c.write, &out);
        assert_eq!(
            Window::decode(&value)
                .unwrap()
                .entries()
                .copied()
                .collect::<Vec<_>>(),
            [
                Entry {
                    at: 10_030,
                    units: 4
                },
                Entry { at: now, units: 5 }
            ]
        );
    }

    #[test]
    fn every_entry_gone_starts_afresh() {
        let bytes = v2(&[], 5_000, &[(0, 3), (4, 2)]);
        let mut out = Vec::new();
        let c = charge_with(&bytes, 5_004 + 1_000, 5, 1_000, 1, &mut out, 0).unwrap();
        assert_eq!(c.decision.remaining, 4);
        assert_eq!(c.write, Write::Whole { expire_at: 7_004 });
        let mut fresh = Window::new();
        fresh.charge(6_004, 5, 1_000, 1);
        assert_eq!(out, fresh.encode());
    }

    #[test]
    fn a_version_1_window_is_read_and_migrated_by_its_first_admission() {
        let mut w = Window::new();
        for i in 0..40 {
            w.charge(NOW + i * 7, 50, 60_000, 1 + (i as u64 % 3));
        }
        let v1 = w.encode_v1();
        assert_eq!(v1.first(), Some(&FORMAT_V1));
        let mut out = Vec::new();
        // A report or a refusal writes nothing: the window stays version 1.
        for (cost, limit) in [(0, 50), (50, 50)] {
            let c = charge_stored(&v1, NOW + 300, limit, 60_000, cost, &mut out).unwrap();
            assert_eq!(c.write, Write::Nothing);
            same_as_limiter(&v1, &w, NOW + 300, limit, 60_000, cost, 0).unwrap();
        }
        // An admission rewrites it whole, in version 2, even where a tail
        // would do.
        let c = charge_with(&v1, NOW + 300, 1_000, 60_000, 1, &mut out, 0).unwrap();
        assert!(matches!(c.write, Write::Whole { .. }));
        assert_eq!(out.first(), Some(&FORMAT_V2));
        let mut after = w.clone();
        after.charge(NOW + 300, 1_000, 60_000, 1);
        assert_eq!(out, after.encode());
        // A version 1 window from the far future is refused as ever.
        let ahead = Window::decode(&crafted(NOW + A + 1, 1, &[])).unwrap();
        assert_eq!(
            charge_stored(&ahead.encode_v1(), NOW, 5, 60_000, 1, &mut out),
            Err(Unusable::Ahead(AheadOfClock {
                newest: NOW + A + 1,
                now: NOW
            }))
        );
    }

    /// `limit 100000` at one call per ms over a 60 s window: 60 000 live
    /// entries in steady state, yet every admission writes a few bytes, and
    /// compactions add about 2 bytes per call on average.
    #[test]
    fn a_large_window_costs_constant_amortised() {
        let mut s = Stored::new(SMALL_BYTES);
        let (mut written, mut tails, mut wholes, mut largest) = (0usize, 0usize, 0usize, 0usize);
        let calls = 150_000i64;
        for i in 0..calls {
            let now = NOW + i;
            // (The limiter counts in O(live entries): the live count is
            // known here.)
            let live = (i + 1).min(60_000) as u64;
            let d = Decision {
                allowed: true,
                remaining: MAX_LIMIT - live,
                retry_after_ms: 0,
                reset_after_ms: 60_000,
                changed: true,
            };
            let before = s.bytes.len();
            let mut out = std::mem::take(&mut s.out);
            let c = charge_stored(&s.bytes, now, MAX_LIMIT, 60_000, 1, &mut out).unwrap();
            assert_eq!(c.decision, d, "call {i}");
            apply(&mut s.bytes, &c.write, &out);
            match c.write {
                Write::Tail { offset, .. } => {
                    tails += 1;
                    assert!(offset + out.len() >= before);
                }
                Write::Compact { ref keep, .. } => {
                    wholes += 1;
                    written += keep.len();
                }
                _ => wholes += 1,
            }
            written += out.len();
            largest = largest.max(out.len());
            s.out = out;
        }
        let w = Window::decode(&s.bytes).unwrap();
        let ats: Vec<i64> = w.entries().map(|e| e.at).collect();
        assert_eq!(ats, (NOW + calls - 60_000..NOW + calls).collect::<Vec<_>>());
        let per_call = written as f64 / calls as f64;
        assert!(
            per_call < 2.0 + 2.0 + TRAILER_LEN as f64 + 4.0,
            "{per_call} bytes per call"
        );
        assert!(wholes < 700, "{wholes} rewrites, {tails} tails");
        assert!(
            largest <= 512,
            "{largest}: a compaction moves its entries in place"
        );
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

    fn step() -> impl Strategy<Value = i64> {
        prop_oneof![
            6 => -30i64..120,
            1 => -(A + 300)..-(A - 300),
            1 => (A - 300)..(A + 300),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_the_brute_force_reference(
            limit in 1u64..8,
            window in 1i64..400,
            // Mostly forwards, sometimes backwards (within the allowance).
            calls in proptest::collection::vec((-30i64..120, 0u64..4), 1..80),
        ) {
            run_against_reference(limit, window, &calls)?;
        }

        #[test]
        fn clock_jumps_around_the_allowance_are_refused_or_exact(
            limit in 1u64..8,
            window in 1i64..400,
            calls in proptest::collection::vec((step(), 0u64..4), 1..80),
        ) {
            run_against_reference(limit, window, &calls)?;
        }

        #[test]
        fn crafted_windows_are_bounded_by_the_allowance(
            base in prop_oneof![
                any::<i64>(),
                Just(i64::MAX),
                Just(i64::MIN),
                (NOW - 200_000)..(NOW + 200_000),
            ],
            units in prop_oneof![1u64..10, any::<u64>()],
            rest in proptest::collection::vec(
                (prop_oneof![1u64..100_000, any::<u64>()], prop_oneof![1u64..10, any::<u64>()]),
                0..6,
            ),
            now in prop_oneof![any::<i64>(), Just(NOW), Just(i64::MAX), Just(i64::MIN)],
            limit in prop_oneof![1u64..10, Just(MAX_LIMIT), any::<u64>()],
            window_ms in prop_oneof![1u64..100_000, Just(MAX_WINDOW_S * 1_000), any::<u64>()],
            cost in any::<u64>(),
        ) {
            let Ok(w) = Window::decode(&crafted(base, units, &rest)) else {
                return Ok(());
            };
            let cost = cost % limit.saturating_add(1);
            let mut c = w.clone();
            let check = c.check_times(now);
            let d = c.charge(now, limit, window_ms, cost);
            let wi = i64::try_from(window_ms).unwrap_or(i64::MAX);
            match check {
                Err(a) => {
                    prop_assert!(!d.allowed && !d.changed);
                    prop_assert_eq!(&c, &w);
                    prop_assert!(a.newest > now.saturating_add(A));
                }
                Ok(()) => {
                    let bound = now.saturating_add(wi).saturating_add(A);
                    prop_assert!(c.empty_at(window_ms).is_none_or(|at| at <= bound));
                    prop_assert!(d.reset_after_ms <= ms_u64(A.saturating_add(wi)));
                    prop_assert!(d.retry_after_ms <= d.reset_after_ms);
                    prop_assert_eq!(d.changed, d.allowed && cost > 0);
                    if !d.changed {
                        prop_assert_eq!(&c, &w);
                    }
                }
            }
            prop_assert_eq!(Window::decode(&c.encode()), Ok(c));
            let bytes = crafted(base, units, &rest);
            for form in [bytes.clone(), w.encode()] {
                same_as_limiter(&form, &w, now, limit, window_ms, cost, small())
                    .map_err(TestCaseError::fail)?;
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Window::decode(&bytes);
            let mut out = Vec::new();
            for small in [0, SMALL_BYTES] {
                let _ = charge_with(&bytes, NOW, 5, 60_000, 1, &mut out, small);
            }
        }

        /// Arbitrary bytes in the shape of a version 2 window (trailer
        /// fields near the real ones): never a panic; whatever is accepted
        /// and fully well-formed decides as the limiter.
        #[test]
        fn stored_form_on_hostile_bytes(
            body in proptest::collection::vec(any::<u8>(), 1..40),
            head in 0u32..48,
            last in 0u32..48,
            head_base in prop_oneof![Just(NOW), any::<i64>()],
            newest in prop_oneof![NOW..NOW + 200, any::<i64>()],
            total in prop_oneof![0u64..20, any::<u64>()],
            now in prop_oneof![NOW..NOW + 500, any::<i64>()],
            limit in 1u64..20,
            cost in 0u64..20,
            small in prop_oneof![Just(0usize), Just(SMALL_BYTES)],
        ) {
            let mut bytes = vec![FORMAT_V2];
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(&head.to_le_bytes());
            bytes.extend_from_slice(&last.to_le_bytes());
            bytes.extend_from_slice(&head_base.to_le_bytes());
            bytes.extend_from_slice(&newest.to_le_bytes());
            bytes.extend_from_slice(&total.to_le_bytes());
            let mut out = Vec::new();
            let cost = cost.min(limit);
            let r = charge_with(&bytes, now, limit, 1_000, cost, &mut out, small);
            if let Ok(w) = Window::decode(&bytes) {
                same_as_limiter(&bytes, &w, now, limit, 1_000, cost, small)
                    .map_err(TestCaseError::fail)?;
            } else if let Ok(c) = r {
                // Not fully well-formed, but nothing read contradicted it:
                // whatever is written is still bounded by the window.
                if let Write::Whole { expire_at } | Write::Tail { expire_at, .. } = c.write {
                    prop_assert!(expire_at <= now.saturating_add(1_000 + A));
                }
            }
        }

        /// The tail form on larger windows: limits up to 300 over windows up
        /// to 3 s, with clock steps back, against the reference.
        #[test]
        fn larger_windows_match_the_brute_force_reference(
            limit in 1u64..300,
            window in 1i64..3_000,
            calls in proptest::collection::vec((-30i64..60, 0u64..6), 1..400),
        ) {
            run_against_reference(limit, window, &calls)?;
        }
    }
}
