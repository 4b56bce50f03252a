//! Every kernel of kernels/*.cu executed on the CPU against the CPU reference, on small shapes
//! with tails: integer paths bit for bit, GEMV rows within the bound of
//! `membound_cuda::gemv::gemv_expected` (the same check a GPU run makes). Skips with the reason
//! where no host C++ compiler existed at build time.

use membound_cuda::Kernel;
use membound_cuda::bandwidth::{read_checksum, triad_reference};
use membound_cuda::gemv::{GEMV_DTYPES, check_rows, gemv_expected, gemv_reference};
use membound_cuda_host::ops::GemvLoads;
use membound_cuda_host::{HostBuffer, HostGpu, available, has_kernel};
use membound_quant::data::{normal_f32, tiled_matrix};
use membound_quant::ops::quantize;
use membound_spec::DType;

fn host() -> Option<HostGpu> {
    match available() {
        Ok(()) => Some(HostGpu::default()),
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

#[test]
fn every_kernel_has_a_host_build() {
    if host().is_none() {
        return;
    }
    for k in Kernel::ALL {
        assert!(
            has_kernel(k.name()),
            "{} missing from the host build",
            k.name()
        );
    }
    assert!(!has_kernel("mb_no_such_kernel"));
}

#[test]
fn stream_kernels_are_exact_on_tails() {
    let Some(g) = host() else { return };
    // Sizes around the 4-wide vectors and the grid (2 SMs x 2 blocks x 256 threads x 4 values).
    for (i, n) in [1usize, 3, 4, 5, 1027, 4096, 4099, 3 * 4096 + 7]
        .into_iter()
        .enumerate()
    {
        let src_h = normal_f32(i as u64, n, 1.0);
        let c_h = normal_f32(i as u64 + 100, n, 1.0);
        let src = HostBuffer::from_slice(&src_h);
        let c = HostBuffer::from_slice(&c_h);

        let (sum, _) = g.read(&src).unwrap();
        assert_eq!(sum, read_checksum(&src_h), "read n={n}");

        let mut dst = HostBuffer::poisoned(4 * n);
        g.copy(&src, &mut dst).unwrap();
        assert_eq!(dst.to_vec::<f32>(), src_h, "copy n={n}");

        g.write(&mut dst, 2.5).unwrap();
        assert!(dst.to_vec::<f32>().iter().all(|&v| v == 2.5), "write n={n}");

        let mut a = HostBuffer::poisoned(4 * n);
        g.triad(&mut a, &src, &c, 0.4).unwrap();
        let want = triad_reference(&src_h, &c_h, 0.4);
        assert_eq!(
            a.to_vec::<f32>()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "triad n={n}"
        );
    }
}

#[test]
fn quantize_q8_1_is_bit_exact() {
    let Some(g) = host() else { return };
    for cols in [32usize, 96, 4096] {
        let mut x = normal_f32(cols as u64, cols, 3.0);
        x[0] = 0.0;
        x[1..32].fill(0.0); // an all-zero block: d = 0
        let xb = HostBuffer::from_slice(&x);
        let mut xq = HostBuffer::poisoned(cols / 32 * 36);
        g.quantize_q8_1(&xb, cols, &mut xq).unwrap();
        assert_eq!(
            xq.bytes(),
            quantize(DType::Q8_1, &x).unwrap(),
            "cols {cols}"
        );
    }
}

/// Runs `y = W·x` on the host GPU; returns y and the load figures.
fn run_gemv(
    g: &HostGpu,
    dtype: DType,
    rows: usize,
    cols: usize,
    w: &[u8],
    x: &[f32],
) -> (Vec<f32>, GemvLoads) {
    let mut y = HostBuffer::poisoned(4 * rows);
    let loads = g
        .gemv(
            dtype,
            rows,
            cols,
            &HostBuffer::from_slice(w),
            &HostBuffer::from_slice(x),
            &mut y,
        )
        .unwrap_or_else(|e| panic!("{dtype} {rows}x{cols}: {e}"));
    (y.to_vec::<f32>(), loads)
}

/// Shapes with tails for each type: rows not a multiple of the rows per block, the smallest
/// row, odd numbers of blocks, and rows long enough that every lane of a warp has work.
fn gemv_shapes(dtype: DType) -> Vec<(usize, usize)> {
    let bs = dtype.block_size() as usize;
    // The last: rows of five tiles and a tail or more, so a double-buffered tile is refilled
    // while the block's warps may still read it (the pipelined loop's trailing barrier).
    let mut v = vec![
        (1, bs),
        (5, 3 * bs),
        (7, 4096),
        (33, 2048 + bs),
        (3, 5 * 4096 + bs),
    ];
    if dtype.block_size() == 1 {
        v.extend([(3, 33), (9, 1001), (2, 8)]);
    }
    v
}

#[test]
fn gemv_matches_reference_on_tails() {
    let Some(g) = host() else { return };
    for dtype in GEMV_DTYPES {
        for (rows, cols) in gemv_shapes(dtype) {
            let seed = (rows * 131 + cols) as u64;
            let w = quantize(dtype, &normal_f32(seed, rows * cols, 0.02)).unwrap();
            let x = normal_f32(seed + 1, cols, 1.0);
            let (y, _) = run_gemv(&g, dtype, rows, cols, &w, &x);
            let want = gemv_expected(dtype, rows, cols, &w, &x).unwrap();
            check_rows(&format!("{dtype} {rows}x{cols}"), &y, &want)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// The dense suite's own Q4_K data, verified as the bench verifies it: the kernels' arithmetic
/// passes, while the old check (the dequantized reference at 2e-3 relative, which ignored the
/// Q8_1 block sums mmvq uses) rejects the same correct output, as it did on every GPU.
#[test]
fn dense_q4_k_case_verifies_as_the_bench_checks_it() {
    let Some(g) = host() else { return };
    let (rows, cols) = (64, 4096);
    let w = tiled_matrix(DType::Q4_K, 4096, cols).unwrap();
    let w = &w[..rows * cols / 256 * 144];
    let x = normal_f32(7, cols, 1.0);
    let (y, _) = run_gemv(&g, DType::Q4_K, rows, cols, w, &x);
    let want = gemv_expected(DType::Q4_K, rows, cols, w, &x).unwrap();
    check_rows("dense q4_k", &y, &want).unwrap();
    let old: Vec<f32> = gemv_reference(DType::Q4_K, rows, cols, w, &x)
        .unwrap()
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let old_check = membound_bench_check(&y, &old);
    assert!(old_check > 2e-3, "the old check would pass: {old_check:e}");
}

/// The old bench check: worst |got − want| / max(|want|, 1e-3 · max|want|).
fn membound_bench_check(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(scale * 1e-3))
        .fold(0f32, f32::max)
}

/// At a decode shape every GEMV kernel's warp-wide loads touch at most 1.25x the sectors an
/// ideal pattern needs (bytes requested / 32): the loads coalesce.
#[test]
fn gemv_loads_coalesce_at_decode_shapes() {
    let Some(g) = host() else { return };
    let (rows, cols) = (8, 4096);
    for dtype in GEMV_DTYPES {
        let w = tiled_matrix(dtype, rows, cols).unwrap();
        let x = normal_f32(3, cols, 1.0);
        let (_, loads) = run_gemv(&g, dtype, rows, cols, &w, &x);
        let ratio = loads.gemv.sector_ratio();
        println!(
            "{dtype}: {:.2} sectors/request, {:.2}x ideal, {:.1} bytes per lane load",
            loads.gemv.sectors_per_request(),
            ratio,
            loads.gemv.bytes_per_lane_load()
        );
        assert!(
            ratio <= 1.25,
            "{dtype} {rows}x{cols}: {ratio:.2}x the ideal sectors ({:?})",
            loads.gemv
        );
        assert!(
            loads.gemv.bytes_requested >= w.len() as u64,
            "{dtype}: weights not all read"
        );
        // Each thread loads at least four 16-byte words before it must wait (the tile copies).
        assert!(
            loads.gemv.max_bytes_between_syncs >= 64,
            "{dtype}: {} bytes between synchronisations",
            loads.gemv.max_bytes_between_syncs
        );
        if dtype.is_quantized() {
            assert!(
                loads.quantize.sector_ratio() <= 1.25,
                "{dtype} quantize: {:?}",
                loads.quantize
            );
        }
    }
}
