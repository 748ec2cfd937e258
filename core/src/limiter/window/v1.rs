//! The stored form of a window written before issue 14 (version 1): read,
//! and migrated to version 2 ([`super::v2`]) by the first admission; a
//! report or a refusal leaves it as it is. Okome never writes it (only
//! tests do, through [`Window::encode_v1`]).
//!
//! ```text
//! [1] [oldest entry's time: i64 little-endian] [its units: LEB128]
//!     ([gap to the previous entry, ms: LEB128] [units: LEB128]) ...
//! ```

use super::v2::{add_gap, get_varint, put_varint};
use super::{Entry, Window};
use crate::limiter::{ms_u64, Corrupt, Unusable, FORMAT_V1};

impl Window {
    pub(super) fn decode_v1(&mut self, bytes: &[u8]) -> Result<(), Corrupt> {
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

    /// The version 1 form, for tests of the migration; okome never writes
    /// it.
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
}

/// A version 1 value in the canonical version 2 form, to be charged and
/// rewritten whole: decoded whole, once. Refused as the version 2 form
/// would be: corrupt, or ahead of the clock at `now`.
pub(super) fn migrated(stored: &[u8], now: i64) -> Result<Vec<u8>, Unusable> {
    let old = Window::decode(stored)?;
    old.check_times(now).map_err(Unusable::Ahead)?;
    Ok(old.encode())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{charged, crafted, same_as_limiter, A, NOW};
    use super::*;
    use crate::limiter::{charge_stored, charge_with, AheadOfClock, Quota, Write, FORMAT_V2};

    #[test]
    fn a_version_1_window_is_read_and_migrated_by_its_first_admission() {
        let w = charged(50, (0..40).map(|i| (NOW + i * 7, 1 + (i as u64 % 3))));
        let v1 = w.encode_v1();
        assert_eq!(v1.first(), Some(&FORMAT_V1));
        let mut out = Vec::new();
        // A report or a refusal writes nothing: the window stays version 1.
        for (cost, limit) in [(0, 50), (50, 50)] {
            let c = charge_stored(&v1, NOW + 300, limit, 60_000, cost, &mut out).unwrap();
            assert_eq!(c.write, Write::Nothing);
            same_as_limiter(&v1, &w, NOW + 300, Quota::new(limit, 60_000, cost), 0).unwrap();
        }
        // An admission rewrites it whole, in version 2, even where a tail
        // would do.
        let c = charge_with(&v1, NOW + 300, Quota::new(1_000, 60_000, 1), &mut out, 0).unwrap();
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
}
