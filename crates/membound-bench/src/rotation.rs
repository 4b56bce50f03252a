//! Defeating caches: a working set must be at least [`LLC_FACTOR`]× the last-level cache, or the
//! case says it is cache-resident. Small buffers (one decode GEMV, one expert) are allocated as
//! several distinct copies and used in turn, as a decode step walks different layers.

/// Minimum working set, in multiples of the last-level cache.
pub const LLC_FACTOR: u64 = 4;

/// Copies of a `bytes_per_copy` buffer needed so that all copies together are ≥ 4× `llc_bytes`.
pub fn copies_for(bytes_per_copy: u64, llc_bytes: u64) -> usize {
    if bytes_per_copy == 0 {
        return 1;
    }
    (LLC_FACTOR * llc_bytes).div_ceil(bytes_per_copy).max(1) as usize
}

/// Whether a working set of `bytes` is small enough to stay in a cache of `llc_bytes`.
pub fn is_cache_resident(bytes: u64, llc_bytes: u64) -> bool {
    bytes < LLC_FACTOR * llc_bytes
}

/// Cycles through `n` copies.
#[derive(Debug, Clone)]
pub struct Rotation {
    n: usize,
    next: usize,
}

impl Rotation {
    /// A rotation over `n` (≥ 1) copies.
    pub fn new(n: usize) -> Rotation {
        Rotation {
            n: n.max(1),
            next: 0,
        }
    }

    /// The index of the copy to use next.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> usize {
        let i = self.next;
        self.next = (self.next + 1) % self.n;
        i
    }

    /// Number of copies.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_cover_four_times_the_cache() {
        let llc = 50 << 20;
        assert_eq!(copies_for(34 << 20, llc), 6); // 6 × 34 MiB = 204 MiB ≥ 200 MiB
        assert_eq!(copies_for(1 << 30, llc), 1);
        assert_eq!(copies_for(0, llc), 1);
        assert!(6 * (34 << 20) >= 4 * llc && 5 * (34 << 20) < 4 * llc);
        assert!(is_cache_resident(100 << 20, llc));
        assert!(!is_cache_resident(200 << 20, llc));
        let mut r = Rotation::new(3);
        let seen: Vec<usize> = (0..7).map(|_| r.next()).collect();
        assert_eq!(seen, vec![0, 1, 2, 0, 1, 2, 0]);
    }
}
