//! The suites' drivers, written once over the backend traits: cases, allocation plans,
//! verification before timing, Criterion registration and the paired read reference.
//!
//! - [`bandwidth`]: read / write / copy / triad (+ the GPU driver's copy) at the main size, a
//!   read sweep across the cache cliff; the main `read` is the paired reference of the suite.
//! - [`dense`]: GEMV per weight type and shape, the peers, GEMM batches; a read of the main
//!   size is sampled before and after each type's cases and is their paired reference.

use membound_cuda::StreamOp;
use membound_quant::data::{normal_f32, tiled_matrix};
use membound_spec::DType;
use membound_spec::traffic::{gemm_bytes, gemv_bytes};

use crate::Scale;
use crate::gemv::GemvBackend;
use crate::harness::{Kind, Run, sample_read};
use crate::rotation::{Rotation, copies_for, is_cache_resident};
use crate::stream::{StreamBackend, arrays_held};
use crate::verify::check_close_scaled;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Bytes of each array of the main streaming cases: ≥ 4× the LLC, at least 1 GiB (quick:
/// 128 MiB), a power of two.
pub fn main_array_bytes(scale: Scale, llc: u64) -> u64 {
    let floor = if scale == Scale::Quick {
        128 * MIB
    } else {
        GIB
    };
    (4 * llc).next_power_of_two().max(floor)
}

/// Array sizes of the read sweep (GPUs add 4 GiB at default and full scale).
pub fn sweep_sizes(scale: Scale) -> Vec<u64> {
    let kib = |k: u64| k << 10;
    match scale {
        Scale::Quick => vec![kib(256), 4 * MIB, 64 * MIB],
        Scale::Default => vec![kib(256), MIB, 4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB, GIB],
        Scale::Full => vec![
            kib(64),
            kib(256),
            MIB,
            4 * MIB,
            16 * MIB,
            32 * MIB,
            64 * MIB,
            128 * MIB,
            256 * MIB,
            GIB,
            2 * GIB,
            4 * GIB,
        ],
    }
}

/// `256KiB`, `1GiB`, with `-llc` where the size stays in the last-level cache.
pub fn size_name(bytes: u64, llc: u64) -> String {
    let base = if bytes >= GIB {
        format!("{}GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{}KiB", bytes >> 10)
    };
    if is_cache_resident(bytes, llc) {
        format!("{base}-llc")
    } else {
        base
    }
}

/// One planned streaming case: its name, operation, array size and the bytes it allocates.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamCase {
    /// The case part of the id.
    pub case: String,
    /// The operation.
    pub op: StreamOp,
    /// Bytes of each array.
    pub array_bytes: u64,
    /// Bytes the case holds on the device at once.
    pub alloc_bytes: u64,
}

/// The bandwidth suite's cases for a device with `llc` bytes of last-level cache and `ops`.
pub fn bandwidth_plan(scale: Scale, llc: u64, ops: &[StreamOp], gpu: bool) -> Vec<StreamCase> {
    let main = main_array_bytes(scale, llc);
    let mut v: Vec<StreamCase> = ops
        .iter()
        .map(|&op| StreamCase {
            case: op.name().to_owned(),
            op,
            array_bytes: main,
            alloc_bytes: arrays_held(op) * main,
        })
        .collect();
    let mut sizes = sweep_sizes(scale);
    if gpu && scale == Scale::Default {
        sizes.push(4 * GIB);
    }
    for size in sizes {
        v.push(StreamCase {
            case: format!("read-{}", size_name(size, llc)),
            op: StreamOp::Read,
            array_bytes: size,
            alloc_bytes: size,
        });
    }
    v
}

/// Runs one planned streaming case on `b` (skipped with the reason where it does not fit).
pub fn stream_case<B: StreamBackend>(run: &mut Run, b: &B, sc: &StreamCase) -> Option<usize> {
    if !run.wanted(&sc.case, b.id()) {
        return None;
    }
    if sc.alloc_bytes > b.memory_budget() {
        run.skip(
            &sc.case,
            b.id(),
            format!(
                "needs {:.1} GiB, the device's budget is {:.1} GiB",
                sc.alloc_bytes as f64 / GIB as f64,
                b.memory_budget() as f64 / GIB as f64
            ),
        );
        return None;
    }
    let n = (sc.array_bytes / 4) as usize;
    let mut arrays = match b.arrays(sc.op, n) {
        Ok(a) => a,
        Err(e) => {
            run.fail(&sc.case, b.id(), format!("set-up: {e}"));
            return None;
        }
    };
    if let Err(e) = b.check(sc.op, &mut arrays) {
        run.unverified(&sc.case, b.id(), e);
        return None;
    }
    let kind = if sc.op == StreamOp::Read && sc.case == "read" {
        Kind::Read
    } else {
        Kind::Stream
    };
    let op = sc.op;
    run.bench(
        b,
        &sc.case,
        kind,
        sc.op.traffic().bytes_moved(sc.array_bytes),
        || b.run(op, &mut arrays),
    )
}

/// The bandwidth suite's planned cases on one backend (pair them afterwards with
/// [`pair_with_read`], after any extra cases of the same backend).
pub fn bandwidth<B: StreamBackend>(run: &mut Run, b: &B, gpu: bool) {
    for sc in bandwidth_plan(run.scale, b.llc_bytes(), &b.stream_ops(), gpu) {
        stream_case(run, b, &sc);
    }
}

/// Pairs `backend`'s results from index `from` on with its main `read` case of this run.
pub fn pair_with_read(run: &mut Run, from: usize, backend: &str) {
    let read = run.results[from.min(run.results.len())..]
        .iter()
        .find(|r| r.kind == Kind::Read && r.backend == backend)
        .and_then(|r| r.gbs());
    if let Some(read) = read {
        run.pair(from, backend, &[read]);
    }
}

/// A read reference sampled in the same process as the cases it is paired with.
pub struct PairedRead<B: StreamBackend> {
    arrays: Option<B::Arrays>,
    bytes: u64,
}

impl<B: StreamBackend> PairedRead<B> {
    /// Read arrays of the main size (checked once); `None` inside when they cannot be had.
    pub fn new(run: &mut Run, b: &B) -> PairedRead<B> {
        let bytes = main_array_bytes(run.scale, b.llc_bytes());
        let arrays = b
            .arrays(StreamOp::Read, (bytes / 4) as usize)
            .and_then(|mut a| b.check(StreamOp::Read, &mut a).map(|_| a));
        match arrays {
            Ok(a) => PairedRead {
                arrays: Some(a),
                bytes,
            },
            Err(e) => {
                run.fail("paired-read", b.id(), e);
                PairedRead {
                    arrays: None,
                    bytes,
                }
            }
        }
    }

    /// One sample (GB/s), or `None` when it failed.
    pub fn sample(&mut self, b: &B) -> Option<f64> {
        let arrays = self.arrays.as_mut()?;
        sample_read(b, self.bytes, &mut || b.run(StreamOp::Read, arrays)).ok()
    }
}

/// Decode GEMV shapes (rows = outputs) of the models in models/.
pub fn dense_shapes(scale: Scale) -> Vec<(usize, usize)> {
    match scale {
        Scale::Quick => vec![(4096, 4096)],
        Scale::Default => vec![(4096, 4096), (14336, 4096), (28672, 8192)],
        Scale::Full => vec![
            (4096, 4096),
            (14336, 4096),
            (4096, 14336),
            (25600, 5120),
            (28672, 8192),
        ],
    }
}

/// Prefill batches of the GEMM cases (at 4096x4096, Q8_0 and Q4_K).
pub fn gemm_batches(scale: Scale) -> &'static [usize] {
    match scale {
        Scale::Quick => &[],
        Scale::Default => &[64],
        Scale::Full => &[16, 64, 512],
    }
}

/// Bytes a GEMV case holds on a device at once: the copies of W that defeat the cache (ours,
/// or the peer's after ours are freed), x in f32 and half, its Q8_1 blocks, and y.
pub fn gemv_alloc_bytes(dtype: DType, rows: u64, cols: u64, llc: u64) -> u64 {
    let w = dtype
        .bytes_for(cols)
        .unwrap_or(u64::MAX / 4)
        .saturating_mul(rows);
    let copies = copies_for(w, llc) as u64;
    copies.saturating_mul(w) + 4 * cols + 2 * cols + cols / 32 * 36 + 4 * rows
}

/// The dense suite on one backend, at the scale's shapes.
pub fn dense<B: GemvBackend>(run: &mut Run, b: &B) {
    let shapes = dense_shapes(run.scale);
    dense_shapes_on(run, b, &shapes);
}

/// The dense suite on one backend at the given shapes (tests use small ones).
pub fn dense_shapes_on<B: GemvBackend>(run: &mut Run, b: &B, shapes: &[(usize, usize)]) {
    let mut paired = PairedRead::new(run, b);
    for &(rows, cols) in shapes {
        let x = normal_f32(7, cols, 1.0);
        for dtype in b.gemv_dtypes() {
            paired_cases(run, b, &mut paired, |run| {
                gemv_case(run, b, dtype, rows, cols, &x)
            });
        }
        if (rows, cols) == (4096, 4096) {
            for &batch in gemm_batches(run.scale) {
                for dtype in [DType::Q8_0, DType::Q4_K] {
                    paired_cases(run, b, &mut paired, |run| {
                        gemm_case(run, b, dtype, rows, cols, batch)
                    });
                }
            }
        }
    }
}

/// Runs `cases` between two read samples and pairs the results it adds with their mean: the
/// reference is measured seconds, not minutes, from the cases it divides.
fn paired_cases<B: GemvBackend>(
    run: &mut Run,
    b: &B,
    paired: &mut PairedRead<B>,
    cases: impl FnOnce(&mut Run),
) {
    let from = run.results.len();
    let before = paired.sample(b);
    cases(run);
    if run.results.len() == from {
        return; // nothing timed (filtered, skipped or failed): no second sample
    }
    let after = paired.sample(b);
    let samples: Vec<f64> = before.into_iter().chain(after).collect();
    run.pair(from, b.id(), &samples);
}

fn gemv_case<B: GemvBackend>(
    run: &mut Run,
    b: &B,
    dtype: DType,
    rows: usize,
    cols: usize,
    x: &[f32],
) {
    let shape = format!("{rows}x{cols}");
    let case = format!("{}-{shape}", dtype.name());
    let peers = b.peers(dtype);
    let wanted_peers: Vec<&str> = peers
        .iter()
        .copied()
        .filter(|p| run.wanted(&format!("{p}-{case}"), b.id()))
        .collect();
    if !run.wanted(&case, b.id()) && wanted_peers.is_empty() {
        return;
    }
    let alloc = gemv_alloc_bytes(dtype, rows as u64, cols as u64, b.llc_bytes());
    if alloc > b.memory_budget() {
        run.skip(
            &case,
            b.id(),
            format!(
                "needs {:.1} GiB of copies, budget {:.1} GiB",
                alloc as f64 / GIB as f64,
                b.memory_budget() as f64 / GIB as f64
            ),
        );
        return;
    }
    let w = match tiled_matrix(dtype, rows, cols) {
        Ok(w) => w,
        Err(e) => return run.fail(&case, b.id(), format!("quantize: {e}")),
    };
    let n = copies_for(w.len() as u64, b.llc_bytes());
    let set_up = || -> Result<(Vec<B::Matrix>, B::Vectors), String> {
        let ms = (0..n)
            .map(|_| b.matrix(dtype, rows, cols, &w))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((ms, b.vectors(x, rows)?))
    };
    let (ms, mut v) = match set_up() {
        Ok(s) => s,
        Err(e) => return run.fail(&case, b.id(), format!("set-up: {e}")),
    };
    let ours = b.gemv(&ms[0], &mut v).and_then(|_| b.output(&v));
    let ours = match ours.and_then(|y| b.check_gemv(dtype, rows, cols, &w, x, &y).map(|_| y)) {
        Ok(y) => y,
        Err(e) => {
            return run.unverified(&case, b.id(), e);
        }
    };
    let kind = Kind::Gemv {
        dtype: dtype.name().to_owned(),
        shape: shape.clone(),
    };
    let bytes = gemv_bytes(dtype, rows as u64, cols as u64);
    let our_id = run.id(&case, b.id());
    if run.wanted(&case, b.id()) {
        let mut rot = Rotation::new(n);
        run.bench(b, &case, kind, bytes, || b.gemv(&ms[rot.next()], &mut v));
    }
    drop(ms);
    for peer in wanted_peers {
        let pcase = format!("{peer}-{case}");
        let pm = (0..n)
            .map(|_| b.peer_matrix(peer, dtype, rows, cols, &w))
            .collect::<Result<Vec<_>, _>>();
        let pm = match pm {
            Ok(p) => p,
            Err(e) => {
                run.fail(&pcase, b.id(), format!("set-up: {e}"));
                continue;
            }
        };
        let theirs = b.peer_gemv(peer, &pm[0], &mut v).and_then(|_| b.output(&v));
        if let Err(e) =
            theirs.and_then(|y| check_close_scaled(&pcase, &y, &ours, b.peer_tolerance(peer)))
        {
            run.unverified(&pcase, b.id(), e);
            continue;
        }
        let mut rot = Rotation::new(n);
        let kind = Kind::Peer {
            peer: peer.to_owned(),
            of: our_id.clone(),
        };
        run.bench(b, &pcase, kind, bytes, || {
            b.peer_gemv(peer, &pm[rot.next()], &mut v)
        });
    }
}

fn gemm_case<B: GemvBackend>(
    run: &mut Run,
    b: &B,
    dtype: DType,
    rows: usize,
    cols: usize,
    batch: usize,
) {
    let case = format!("gemm-{}-{rows}x{cols}-b{batch}", dtype.name());
    if !run.wanted(&case, b.id()) {
        return;
    }
    let w = match tiled_matrix(dtype, rows, cols) {
        Ok(w) => w,
        Err(e) => return run.fail(&case, b.id(), format!("quantize: {e}")),
    };
    let m = match b.matrix(dtype, rows, cols, &w) {
        Ok(m) => m,
        Err(e) => return run.fail(&case, b.id(), format!("set-up: {e}")),
    };
    let xs = normal_f32(11, batch * cols, 1.0);
    let last = match b.gemm(&m, &xs, batch) {
        None => return, // no GEMM on this backend
        Some(r) => r,
    };
    let checked = last.and_then(|y| {
        let x_last = &xs[(batch - 1) * cols..];
        b.check_gemv(dtype, rows, cols, &w, x_last, &y)
    });
    if let Err(e) = checked {
        return run.unverified(&case, b.id(), e);
    }
    let bytes = gemm_bytes(dtype, rows as u64, cols as u64, batch as u64);
    run.bench(b, &case, Kind::Other, bytes, || {
        b.gemm(&m, &xs, batch)
            .unwrap_or(Err("no GEMM".into()))
            .map(|_| ())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// The desktop's cards: every bandwidth and dense case fits in 90 % of an RTX 4090 (24 GB,
    /// 72 MB L2) and an RTX 5070 Ti (16 GB, 48 MB L2) at every scale, and a case holds only the
    /// arrays its operation uses (a read of 4 GiB holds 4 GiB, not three arrays).
    #[test]
    fn allocation_plans_fit_24_and_16_gb_cards() {
        for (memory, llc) in [(24 * GIB, 72 << 20), (16 * GIB, 48 << 20)] {
            let budget = memory / 10 * 9;
            for scale in [Scale::Quick, Scale::Default, Scale::Full] {
                for sc in bandwidth_plan(scale, llc, &StreamOp::ALL, true) {
                    assert_eq!(
                        sc.alloc_bytes,
                        arrays_held(sc.op) * sc.array_bytes,
                        "{sc:?}"
                    );
                    assert!(sc.alloc_bytes <= budget, "{scale:?} {sc:?} on {memory}");
                }
                for (rows, cols) in dense_shapes(scale) {
                    for dtype in membound_cuda::gemv::GEMV_DTYPES {
                        let a = gemv_alloc_bytes(dtype, rows as u64, cols as u64, llc);
                        assert!(a <= budget, "{scale:?} {dtype} {rows}x{cols}: {a}");
                    }
                }
            }
        }
        let plan = bandwidth_plan(Scale::Default, 72 << 20, &StreamOp::ALL, true);
        let read4 = plan.iter().find(|c| c.case == "read-4GiB").unwrap();
        assert_eq!(read4.alloc_bytes, 4 * GIB);
        let triad = plan.iter().find(|c| c.case == "triad").unwrap();
        assert_eq!(triad.alloc_bytes, 3 * triad.array_bytes);
    }

    #[test]
    fn names_say_when_a_size_is_cache_resident() {
        assert_eq!(size_name(256 << 10, 50 << 20), "256KiB-llc");
        assert_eq!(size_name(GIB, 50 << 20), "1GiB");
        assert_eq!(size_name(128 << 20, 50 << 20), "128MiB-llc");
        assert_eq!(size_name(256 << 20, 50 << 20), "256MiB");
        assert_eq!(main_array_bytes(Scale::Quick, 50 << 20), 256 << 20);
        assert_eq!(main_array_bytes(Scale::Default, 50 << 20), GIB);
    }
}
