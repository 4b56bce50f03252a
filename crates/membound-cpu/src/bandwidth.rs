//! STREAM-style bandwidth kernels over large `f32` buffers on an explicit rayon pool: `read`
//! (a sum reduction), `write` (fill), `copy` and `triad` (`a = b + s·c`).
//!
//! Each kernel splits its arrays into one contiguous chunk per pool thread (rounded to whole
//! 64-byte lines), so a thread streams one region as STREAM's static OpenMP schedule does.

use rayon::ThreadPool;
use rayon::prelude::*;

use crate::{CpuError, Isa};

/// The operations and their byte counts are the workspace's one convention
/// (`membound_spec::traffic`): read 1×, write 1×, copy 2×, triad 3× the array bytes;
/// write-allocate traffic is not counted, so write/copy/triad report useful bandwidth.
pub use membound_spec::traffic::StreamOp;

/// Bytes an operation over arrays of `n_bytes` each moves ([`StreamOp::bytes_moved`]).
pub fn bytes_moved(op: StreamOp, n_bytes: u64) -> u64 {
    op.bytes_moved(n_bytes)
}

/// Elements per thread chunk: an even split, rounded up to whole 64-byte lines.
fn chunk_len(pool: &ThreadPool, n: usize) -> usize {
    const LINE: usize = 16;
    n.div_ceil(pool.current_num_threads().max(1))
        .next_multiple_of(LINE)
        .max(LINE)
}

fn same_len(what: &'static str, expected: usize, got: usize) -> Result<(), CpuError> {
    crate::dot::check_len(what, expected, got)
}

/// The sum of `a` (so the reads cannot be optimised away), each thread summing its chunk with
/// independent SIMD accumulators of `isa`; partial sums are added in chunk order.
pub fn read(pool: &ThreadPool, isa: Isa, a: &[f32]) -> Result<f32, CpuError> {
    if !isa.is_available() {
        return Err(CpuError::IsaUnavailable(isa));
    }
    let sum_chunk: fn(&[f32]) -> f32 = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 availability was checked above (both paths have it).
        Isa::Avx2 | Isa::Avx512Vnni => |c: &[f32]| unsafe { read_avx2(c) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON availability was checked above.
        Isa::Neon | Isa::NeonDotprod => |c: &[f32]| unsafe { read_neon(c) },
        _ => read_scalar,
    };
    let chunk = chunk_len(pool, a.len());
    let partial: Vec<f32> = pool.install(|| a.par_chunks(chunk).map(sum_chunk).collect());
    Ok(partial.iter().sum())
}

/// Fills `a` with `value`.
pub fn write(pool: &ThreadPool, a: &mut [f32], value: f32) {
    let chunk = chunk_len(pool, a.len());
    pool.install(|| a.par_chunks_mut(chunk).for_each(|c| c.fill(value)));
}

/// Copies `src` into `dst` (equal lengths).
pub fn copy(pool: &ThreadPool, src: &[f32], dst: &mut [f32]) -> Result<(), CpuError> {
    same_len("copy destination", src.len(), dst.len())?;
    let chunk = chunk_len(pool, src.len());
    pool.install(|| {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s))
    });
    Ok(())
}

/// STREAM triad `a[i] = b[i] + s·c[i]` (equal lengths; a multiply then an add, not fused, so
/// the result is the same on every path).
pub fn triad(
    pool: &ThreadPool,
    a: &mut [f32],
    b: &[f32],
    c: &[f32],
    s: f32,
) -> Result<(), CpuError> {
    same_len("triad input b", a.len(), b.len())?;
    same_len("triad input c", a.len(), c.len())?;
    let chunk = chunk_len(pool, a.len());
    pool.install(|| {
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .zip(c.par_chunks(chunk))
            .for_each(|((a, b), c)| {
                for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + s * c;
                }
            })
    });
    Ok(())
}

/// Portable sum with 16 independent lanes (the compiler vectorises the lane-wise adds).
pub(crate) fn read_scalar(a: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let mut it = a.chunks_exact(LANES);
    for c in &mut it {
        for (acc, &v) in acc.iter_mut().zip(c) {
            *acc += v;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// AVX2 sum with eight 8-lane accumulators (64 floats, 256 bytes per iteration).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn read_avx2(a: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut it = a.chunks_exact(64);
    // SAFETY: each load reads 8 floats inside a 64-float chunk; AVX2 is enabled.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in &mut it {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_add_ps(*acc, _mm256_loadu_ps(c.as_ptr().add(8 * k)));
            }
        }
        let mut lanes = [0f32; 8];
        for acc in acc {
            let mut v = [0f32; 8];
            _mm256_storeu_ps(v.as_mut_ptr(), acc);
            for (l, v) in lanes.iter_mut().zip(v) {
                *l += v;
            }
        }
        lanes.iter().sum::<f32>() + read_scalar(it.remainder())
    }
}

/// NEON sum with eight 4-lane accumulators (32 floats per iteration).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
pub(crate) fn read_neon(a: &[f32]) -> f32 {
    use std::arch::aarch64::*;
    let mut it = a.chunks_exact(32);
    // SAFETY: each load reads 4 floats inside a 32-float chunk; NEON is enabled.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 8];
        for c in &mut it {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = vaddq_f32(*acc, vld1q_f32(c.as_ptr().add(4 * k)));
            }
        }
        let s = vaddq_f32(
            vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])),
            vaddq_f32(vaddq_f32(acc[4], acc[5]), vaddq_f32(acc[6], acc[7])),
        );
        vaddvq_f32(s) + read_scalar(it.remainder())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool")
    }

    /// Small integers: every partial sum is exact in f32, so any summation order is exact.
    fn ints(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919) % 17) as f32 - 8.0).collect()
    }

    #[test]
    fn kernels_match_naive_exactly() {
        for threads in [1, 2, 3] {
            let p = pool(threads);
            for n in [0, 1, 15, 16, 63, 64, 65, 1000, 4099] {
                let a = ints(n);
                let want: f32 = a.iter().sum();
                for isa in Isa::available() {
                    assert_eq!(
                        read(&p, isa, &a).unwrap(),
                        want,
                        "read n={n} isa={isa} t={threads}"
                    );
                }
                let mut w = vec![0f32; n];
                write(&p, &mut w, 2.5);
                assert!(w.iter().all(|&v| v == 2.5));
                let mut d = vec![0f32; n];
                copy(&p, &a, &mut d).unwrap();
                assert_eq!(d, a);
                let c: Vec<f32> = a.iter().map(|v| v * 0.5 + 1.0).collect();
                let mut t = vec![0f32; n];
                triad(&p, &mut t, &a, &c, 3.0).unwrap();
                let want: Vec<f32> = a.iter().zip(&c).map(|(b, c)| b + 3.0 * c).collect();
                assert_eq!(t, want);
            }
        }
    }

    #[test]
    fn simd_read_matches_scalar_on_real_data() {
        let a = membound_quant::data::normal_f32(3, 100_003, 1.0);
        let exact: f64 = a.iter().map(|&v| f64::from(v)).sum();
        let p = pool(2);
        for isa in Isa::available() {
            let got = f64::from(read(&p, isa, &a).unwrap());
            assert!(
                (got - exact).abs() < 1e-3 * (1.0 + exact.abs()),
                "{isa}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn length_mismatch_is_an_error_and_bytes_follow_stream() {
        let p = pool(1);
        assert!(copy(&p, &[1.0; 4], &mut [0.0; 3]).is_err());
        assert!(triad(&p, &mut [0.0; 4], &[1.0; 4], &[1.0; 5], 1.0).is_err());
        let n = 1 << 20;
        assert_eq!(
            StreamOp::ALL.map(|op| bytes_moved(op, n)),
            [n, n, 2 * n, 3 * n]
        );
    }
}
