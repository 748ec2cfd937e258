//! Small seedable generators, no crates: a run is replayed from its seed.
//! Two algorithms, because the seeds printed by earlier runs (and the
//! workloads they pick) belong to the one each test always used.

/// Draws derived from a generator's `next`.
pub trait Rng {
    fn next(&mut self) -> u64;

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// xorshift64* (Vigna): the chaos and replication workloads.
pub struct Xorshift64Star(pub u64);

impl Xorshift64Star {
    /// A generator from `seed` (0, which would stay 0, is taken as 1).
    pub fn new(seed: u64) -> Xorshift64Star {
        Xorshift64Star(seed.max(1))
    }
}

impl Rng for Xorshift64Star {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// xorshift64 (Marsaglia's 13/7/17): the hostile-input loop and the
/// ledger's long workload.
pub struct Xorshift64(pub u64);

impl Rng for Xorshift64 {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
