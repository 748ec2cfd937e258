//! The stored form of a window, version 2 (written since issue 14).
//!
//! A window is a plain Redis string, written so that an admitted call costs
//! O(1) amortised whatever the limit (see [`super::stored`]): counting
//! reads a running total, dropping dead entries moves a cursor, and an
//! admission rewrites only the end of the string.
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
//! The canonical form ([`Window::encode`]) has no dead entries: `head` = 1,
//! the head entry's gap 0. For 60 single-unit calls spread over a minute it
//! is about 210 bytes.

use super::{Entry, Window};
use crate::limiter::{ms_u64, Corrupt, FORMAT_V2};

/// Bytes of the version 2 trailer.
pub const TRAILER_LEN: usize = 32;

/// Largest gap and units of a one-byte entry.
const SHORT_GAP: u64 = 15;
const SHORT_UNITS: u64 = 8;
/// Largest units carried by the first byte of a long entry.
const LONG_UNITS: u64 = 64;
/// Flag of a long entry whose units follow its gap.
const UNITS_FOLLOW: u8 = 0x40;

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn get_varint(bytes: &mut &[u8]) -> Result<u64, Corrupt> {
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

/// Bytes of `v` as a LEB128 varint.
fn varint_len(v: u64) -> usize {
    let bits = 64usize.saturating_sub(v.leading_zeros() as usize).max(1);
    bits.div_ceil(7)
}

/// `at + gap`, or `Corrupt` past the end of time.
pub(super) fn add_gap(at: i64, gap: u64) -> Result<i64, Corrupt> {
    i64::try_from(gap)
        .ok()
        .and_then(|g| at.checked_add(g))
        .ok_or(Corrupt)
}

/// Appends a version 2 entry: one byte `0GGGGUUU` (gap 0-15, units 1-8:
/// a dense window's entries), else `10UUUUUU` (units 1-64) then the gap,
/// else `11000000` then the gap and the units, both LEB128.
pub(super) fn put_entry(out: &mut Vec<u8>, gap: u64, units: u64) {
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
pub(super) fn entry_len(gap: u64, units: u64) -> usize {
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
pub(super) fn body_end(bytes: &[u8]) -> Result<usize, Corrupt> {
    bytes.len().checked_sub(TRAILER_LEN).ok_or(Corrupt)
}

/// The entry at `pos` of bytes whose entries end at `end`: its gap, its
/// units (never 0) and the offset of the next entry.
pub(super) fn read_entry(
    bytes: &[u8],
    pos: usize,
    end: usize,
) -> Result<(u64, u64, usize), Corrupt> {
    let mut rest = bytes.get(pos..end).ok_or(Corrupt)?;
    let (gap, units) = get_entry(&mut rest)?;
    if units == 0 {
        return Err(Corrupt);
    }
    Ok((gap, units, end.checked_sub(rest.len()).ok_or(Corrupt)?))
}

/// If the 8 bytes at `pos` (all before `before`) are 8 one-byte entries,
/// none with a gap of 0: the sum of their gaps and of their units. Lets the
/// walks over a dense window (one entry a ms or so) skip 8 entries in a few
/// instructions.
pub(super) fn eight_short(bytes: &[u8], pos: usize, before: usize) -> Option<(u64, u64)> {
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

/// The trailer of a version 2 window (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trailer {
    pub head: usize,
    pub last: usize,
    pub head_base: i64,
    pub newest: i64,
    pub total: u64,
}

fn offset_u32(v: usize) -> [u8; 4] {
    // Offsets lie within a Redis string (at most 512 MB); a larger one
    // cannot be written, and reads back as corrupt.
    u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes()
}

impl Trailer {
    /// Starts a canonical window in `out` (cleared or empty): the format
    /// byte and its head entry, at `at`. Returns the trailer of a window
    /// holding only that entry.
    pub fn start(out: &mut Vec<u8>, at: i64, units: u64) -> Trailer {
        out.push(FORMAT_V2);
        put_entry(out, 0, units);
        Trailer {
            head: 1,
            last: 1,
            head_base: at,
            newest: at,
            total: units,
        }
    }

    pub fn put(&self, out: &mut Vec<u8>) {
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
    pub fn read(bytes: &[u8]) -> Result<(Trailer, u64, u64), Corrupt> {
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

/// A canonical window holding one entry.
pub(super) fn single(out: &mut Vec<u8>, at: i64, units: u64) {
    Trailer::start(out, at, units).put(out);
}

impl Window {
    /// The canonical version 2 form: empty for an empty window (the key is
    /// deleted). What [`Algorithm::charge_stored`](super::Algorithm) writes
    /// when it rewrites a window whole.
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
        let mut tr = Trailer::start(out, first.at, first.units);
        for e in iter {
            tr.last = out.len();
            put_entry(out, ms_u64(e.at.saturating_sub(tr.newest)), e.units);
            tr.newest = e.at;
            tr.total = tr.total.saturating_add(e.units);
        }
        tr.put(out);
    }

    /// Every entry from the head, checked against the trailer: O(n).
    pub(super) fn decode_v2(&mut self, bytes: &[u8]) -> Result<(), Corrupt> {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{charged, NOW};
    use super::*;

    #[test]
    fn encoding_is_small_and_round_trips() {
        let w = charged(60, (0..60).map(|i| (NOW + i * 1_000, 1)));
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
}
