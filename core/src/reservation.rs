//! A reservation's record (`OKOME.TAKE ... RESERVE`, `OKOME.SETTLE`): what
//! was reserved on each window, and once settled, the costs it was settled
//! with and the reply it got, so a retried `OKOME.SETTLE` replies the same.
//!
//! Stored as a plain string, `okome:budget:resv:{<subject>}:<token>`,
//! expiring at the reservation's `RESERVE` TTL (a settlement keeps it):
//! a format byte, then integers as 8 bytes little-endian and each window's
//! key as its length and bytes:
//!
//! ```text
//! 'R' n (key_len key limit window_ms cost at){n} settled
//!     [cost{n} (remaining retry_after_ms reset_after_ms){n}]   if settled = 1
//! ```

/// The first byte of a record.
pub const FORMAT_RECORD: u8 = b'R';

/// What a reservation charged one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub key: Vec<u8>,
    pub limit: u64,
    pub window_ms: u64,
    pub cost: u64,
    /// When its units were recorded: the window's effective time.
    pub at: i64,
}

/// A settlement: the actual costs, and each window's
/// `[remaining, retry_after_ms, reset_after_ms]` afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub costs: Vec<u64>,
    pub limits: Vec<[u64; 3]>,
}

/// A reservation's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub limits: Vec<Reserved>,
    pub settled: Option<Settled>,
}

/// The bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRecord;

fn put(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A cursor over a record's bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u64(&mut self) -> Result<u64, NotRecord> {
        let (head, rest) = self.0.split_first_chunk::<8>().ok_or(NotRecord)?;
        self.0 = rest;
        Ok(u64::from_le_bytes(*head))
    }
    fn len(&mut self) -> Result<usize, NotRecord> {
        let n = usize::try_from(self.u64()?).map_err(|_| NotRecord)?;
        // Every item takes at least 8 bytes: a count beyond that is junk.
        if n > self.0.len() {
            return Err(NotRecord);
        }
        Ok(n)
    }
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, NotRecord> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(NotRecord)?;
        self.0 = rest;
        Ok(head.to_vec())
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_RECORD];
        put(&mut out, self.limits.len() as u64);
        for r in &self.limits {
            put(&mut out, r.key.len() as u64);
            out.extend_from_slice(&r.key);
            for v in [r.limit, r.window_ms, r.cost, r.at as u64] {
                put(&mut out, v);
            }
        }
        match &self.settled {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                s.costs.iter().for_each(|&c| put(&mut out, c));
                s.limits.iter().flatten().for_each(|&v| put(&mut out, v));
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, NotRecord> {
        let Some((&FORMAT_RECORD, rest)) = bytes.split_first() else {
            return Err(NotRecord);
        };
        let mut r = Reader(rest);
        let n = r.len()?;
        let mut limits = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.len()?;
            let key = r.bytes(len)?;
            let (limit, window_ms, cost, at) = (r.u64()?, r.u64()?, r.u64()?, r.u64()? as i64);
            limits.push(Reserved {
                key,
                limit,
                window_ms,
                cost,
                at,
            });
        }
        let settled = match r.bytes(1)?.first() {
            Some(0) => None,
            Some(1) => {
                let costs = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
                let limits = (0..n)
                    .map(|_| Ok([r.u64()?, r.u64()?, r.u64()?]))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(Settled { costs, limits })
            }
            _ => return Err(NotRecord),
        };
        if !r.0.is_empty() {
            return Err(NotRecord);
        }
        Ok(Record { limits, settled })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back() {
        let mut rec = Record {
            limits: vec![
                Reserved {
                    key: b"okome:budget:rate:{a}".to_vec(),
                    limit: 5,
                    window_ms: 60_000,
                    cost: 2,
                    at: 1_700_000_000_000,
                },
                Reserved {
                    key: b"okome:budget:rate:{a}:tpm".to_vec(),
                    limit: 1_000_000_000_000_000,
                    window_ms: 1000,
                    cost: 0,
                    at: -1,
                },
            ],
            settled: None,
        };
        assert_eq!(Record::decode(&rec.encode()), Ok(rec.clone()));
        rec.settled = Some(Settled {
            costs: vec![1, 7],
            limits: vec![[4, 0, 59_000], [0, 3, 9]],
        });
        let bytes = rec.encode();
        assert_eq!(Record::decode(&bytes), Ok(rec));
        for cut in 0..bytes.len() {
            assert_eq!(Record::decode(&bytes[..cut]), Err(NotRecord), "{cut}");
        }
        assert_eq!(Record::decode(b"\x02junk"), Err(NotRecord));
    }
}
