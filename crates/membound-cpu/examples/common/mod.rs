//! What the examples share: generated weight bytes and a best-of timer.

// Each example uses part of this module.
#![allow(dead_code)]

use std::time::Instant;

use membound_quant::data::SplitMix64;
use membound_spec::DType;

/// Best time of `runs` timed runs of `f` after one untimed, in seconds.
pub fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Random weight bytes with small, finite scales (quantizing this much data would be slow).
pub fn weights(dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(1);
    let n = dtype.bytes_for((rows * cols) as u64).expect("whole blocks") as usize;
    let mut b: Vec<u8> = (0..n).map(|_| (rng.next_u64() >> 56) as u8).collect();
    let bb = dtype.block_bytes() as usize;
    let small = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    for blk in b.chunks_exact_mut(bb) {
        match dtype {
            DType::Q8_0 => blk[..2].copy_from_slice(&small),
            DType::Q4_K => {
                blk[..2].copy_from_slice(&small);
                blk[2..4].copy_from_slice(&small);
            }
            DType::Q6_K => blk[208..].copy_from_slice(&small),
            DType::MXFP4 => blk[0] = 120,
            DType::F16 | DType::BF16 => {
                blk.copy_from_slice(&small);
            }
            _ => {}
        }
    }
    if dtype == DType::F32 {
        for v in b.chunks_exact_mut(4) {
            v.copy_from_slice(&0.01f32.to_le_bytes());
        }
    }
    b
}
