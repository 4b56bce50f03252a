//! Every kernel on a real GPU against the CPU reference on the same inputs. Without a driver or
//! a device each test prints why and passes (the NVRTC check, tests/nvrtc.rs, still proves the
//! kernels compile).
//!
//! Integer paths (read checksum, write, copy, triad with explicit fma, Q8_1 quantization) must
//! match bit for bit. GEMV results are compared per row with a bound derived from how they are
//! computed (see `gemv_tolerance`).

use membound_cuda::bandwidth::{read_checksum, triad_reference};
use membound_cuda::gemv::{GEMV_DTYPES, Q8_1_BLOCK_BYTES};
use membound_cuda::{CudaError, Gpu, Probe, probe};
use membound_quant::data::normal_f32;
use membound_quant::ops::{dequantize, quantize};
use membound_spec::DType;

mod common;
use common::{assert_rows, expected_rows};

fn gpu() -> Option<Gpu> {
    match probe() {
        Probe::Unavailable { reason } => {
            println!("skipped, no GPU: {reason}");
            None
        }
        Probe::Devices { devices } => match Gpu::new(0) {
            Ok(g) => {
                println!("{}: {}", g.info().label(), g.build_description());
                Some(g)
            }
            // A GPU without NVRTC on the loader path cannot build kernels: say so and skip.
            // Any other failure (a kernel that does not compile, a driver error) fails.
            Err(e @ (CudaError::NvrtcUnavailable(_) | CudaError::Unavailable(_))) => {
                println!("skipped, {} found but unusable: {e}", devices[0].label());
                None
            }
            Err(e) => panic!("{} found but Gpu::new(0) failed: {e}", devices[0].label()),
        },
    }
}

#[test]
fn probe_reports_consistent_devices() {
    let Some(g) = gpu() else { return };
    let info = g.info();
    assert!(
        info.sm.0 >= 7 && info.sm_count > 0 && info.memory_bytes > (1 << 30),
        "{info:?}"
    );
    // Unified-memory parts (GB10) may report no memory clock or bus width: only L2 is required.
    assert!(info.l2_bytes > 0, "{info:?}");
    if info.bus_width_bits == 0 || info.memory_clock_khz == 0 {
        println!("{}: no memory clock / bus width reported", info.label());
    }
    assert!(info.nvrtc_version.is_some());
    assert_eq!(probe().devices()[0], *info);
    match membound_cuda::read_clocks(info) {
        Ok(c) => assert!(c.sm_mhz > 0 && c.max_sm_mhz >= c.sm_mhz, "{c:?}"),
        Err(e) => println!("clocks not readable here: {e}"),
    }
}

#[test]
fn bandwidth_ops_are_exact() {
    let Some(g) = gpu() else { return };
    for (i, n) in [1usize, 3, 4, 5, 1000, 1027, (1 << 20) + 3, 10_000_019]
        .into_iter()
        .enumerate()
    {
        let seed = i as u64;
        let src_h = normal_f32(seed, n, 1.0);
        let c_h = normal_f32(seed + 100, n, 1.0);
        let src = g.upload(&src_h).unwrap();
        let c = g.upload(&c_h).unwrap();

        g.read(&src).unwrap();
        assert_eq!(
            g.read_result().unwrap(),
            read_checksum(&src_h),
            "read n={n}"
        );

        // Guard values after the n elements catch overruns of copy and dtod.
        let mut dst = g.upload(&vec![f32::from_bits(0x7fc0_dead); n + 8]).unwrap();
        g.copy(&src, &mut dst).unwrap();
        let back = g.download(&dst).unwrap();
        assert!(
            back[..n]
                .iter()
                .zip(&src_h)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "copy n={n}"
        );
        assert!(
            back[n..].iter().all(|v| v.to_bits() == 0x7fc0_dead),
            "copy wrote past n={n}"
        );

        let mut dst2 = g.upload(&vec![f32::from_bits(0x7fc0_dead); n + 8]).unwrap();
        g.dtod_copy(&src, &mut dst2).unwrap();
        let back = g.download(&dst2).unwrap();
        assert!(
            back[..n]
                .iter()
                .zip(&src_h)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "dtod n={n}"
        );
        assert!(
            back[n..].iter().all(|v| v.to_bits() == 0x7fc0_dead),
            "dtod wrote past n={n}"
        );

        let mut w = g.alloc_zeros::<f32>(n).unwrap();
        g.write(&mut w, 1.25).unwrap();
        assert!(
            g.download(&w).unwrap().iter().all(|&v| v == 1.25),
            "write n={n}"
        );

        let mut a = g.alloc_zeros::<f32>(n).unwrap();
        g.triad(&mut a, &src, &c, 0.4).unwrap();
        let want = triad_reference(&src_h, &c_h, 0.4);
        let got = g.download(&a).unwrap();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "triad n={n}"
        );
    }
}

#[test]
fn quantize_q8_1_is_bit_exact() {
    let Some(g) = gpu() else { return };
    for (i, cols) in [32usize, 96, 4096, 14336].into_iter().enumerate() {
        let mut x = normal_f32(10 + i as u64, cols, 3.0);
        x[..32].iter_mut().for_each(|v| *v = 0.0); // an all-zero block: d = 0, q = 0
        let xd = g.upload(&x).unwrap();
        let mut xq = g.alloc_zeros::<u8>(cols / 32 * Q8_1_BLOCK_BYTES).unwrap();
        g.quantize_q8_1(&xd, cols, &mut xq).unwrap();
        let got = g.download(&xq).unwrap();
        let want = quantize(DType::Q8_1, &x).unwrap();
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(
            first_diff,
            None,
            "cols {cols}: first differing byte (block {:?})",
            first_diff.map(|p| p / 36)
        );
    }
}

fn check_gemv(g: &Gpu, dtype: DType, rows: usize, cols: usize, seed: u64) {
    let w_h = quantize(dtype, &normal_f32(seed, rows * cols, 0.05)).unwrap();
    let x_h = normal_f32(seed + 1, cols, 1.0);
    let w = g.upload(&w_h).unwrap();
    let x = g.upload(&x_h).unwrap();
    // y is longer than rows, pre-filled with a guard value, to catch writes past the last row.
    let mut y = g.upload(&vec![-7.5f32; rows + 5]).unwrap();
    g.gemv(dtype, rows, cols, &w, &x, &mut y).unwrap();
    let got = g.download(&y).unwrap();
    assert!(
        got[rows..].iter().all(|&v| v == -7.5),
        "{dtype} {rows}x{cols}: wrote past y[rows]"
    );
    let worst = assert_rows(
        &format!("{dtype} {rows}x{cols}"),
        &got[..rows],
        &expected_rows(dtype, rows, cols, &w_h, &x_h),
    );
    println!("{dtype} {rows}x{cols}: ok, worst error {worst:.3} of the bound");
}

#[test]
fn gemv_odd_shapes_match_reference() {
    let Some(g) = gpu() else { return };
    for dtype in GEMV_DTYPES {
        let bs = dtype.block_size() as usize;
        let cols_list: Vec<usize> = if bs == 1 {
            vec![1, 7, 8, 36, 200, 4096]
        } else {
            vec![bs, 3 * bs, 4096]
        };
        for &cols in &cols_list {
            for rows in [1usize, 7, 33, 1000] {
                check_gemv(&g, dtype, rows, cols, (rows * 31 + cols) as u64);
            }
        }
    }
}

#[test]
fn gemv_model_shapes_match_reference() {
    let Some(g) = gpu() else { return };
    for dtype in GEMV_DTYPES {
        for (rows, cols) in [(4096, 4096), (14336, 4096), (4096, 14336)] {
            check_gemv(&g, dtype, rows, cols, 7);
        }
    }
}

#[test]
fn cublas_peer_matches_reference() {
    let Some(g) = gpu() else { return };
    for dtype in [DType::F16, DType::BF16] {
        for (rows, cols) in [(7, 36), (4096, 4096)] {
            let w_h = quantize(dtype, &normal_f32(3, rows * cols, 0.05)).unwrap();
            let x32 = normal_f32(4, cols, 1.0);
            let x_h = quantize(dtype, &x32).unwrap();
            let x_ref = dequantize(dtype, &x_h).unwrap();
            let w_deq = dequantize(dtype, &w_h).unwrap();
            let (w, x) = (g.upload(&w_h).unwrap(), g.upload(&x_h).unwrap());
            let mut y = g.alloc_zeros::<f32>(rows).unwrap();
            match g.cublas_gemv(dtype, rows, cols, &w, &x, &mut y) {
                Err(CudaError::Cublas { reason, .. }) if reason.contains("not found") => {
                    println!("skipped cuBLAS: {reason}");
                    return;
                }
                other => other.unwrap(),
            }
            let got = g.download(&y).unwrap();
            for r in 0..rows {
                let row = &w_deq[r * cols..(r + 1) * cols];
                let want: f64 = row
                    .iter()
                    .zip(&x_ref)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                // cuBLAS's reduction order is unknown: allow 2^-12 of sum|w x|.
                let abs: f64 = row
                    .iter()
                    .zip(&x_ref)
                    .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                    .sum();
                let err = (f64::from(got[r]) - want).abs();
                assert!(
                    err <= abs / 4096.0 + 1e-30,
                    "{dtype} {rows}x{cols} row {r}: {} vs {want}",
                    got[r]
                );
            }
        }
    }
}

#[test]
fn timing_is_plausible() {
    let Some(g) = gpu() else { return };
    let n = 1 << 24; // 64 MiB per array
    let src = g.alloc_zeros::<f32>(n).unwrap();
    let mut dst = g.alloc_zeros::<f32>(n).unwrap();
    let t = g.time_iters(20, || g.copy(&src, &mut dst)).unwrap();
    let bytes = membound_cuda::bytes_moved(membound_cuda::StreamOp::Copy, 4 * n as u64) * 20;
    let gbs = bytes as f64 / t.as_secs_f64() / 1e9;
    println!("copy 64 MiB: {t:?} for 20 iterations, {gbs:.0} GB/s");
    assert!(
        t.as_nanos() > 0 && gbs > 10.0 && gbs < 20_000.0,
        "{gbs} GB/s"
    );
    // Graph capture of two-launch operations (Q8_1 quantize + GEMV) and of cuBLAS, with more
    // iterations than one graph holds.
    let (rows, cols) = (4096, 4096);
    let w = g
        .upload_as(DType::Q4_K, &normal_f32(5, rows * cols, 0.02))
        .unwrap();
    let x = g.upload(&normal_f32(6, cols, 1.0)).unwrap();
    let mut y = g.alloc_zeros::<f32>(rows).unwrap();
    let t = g
        .time_iters(1000, || g.gemv(DType::Q4_K, rows, cols, &w, &x, &mut y))
        .unwrap();
    println!("q4_k {rows}x{cols}: {:?} per call (graph-timed)", t / 1000);
    assert!(t.as_nanos() > 0);
    let wh = g
        .upload_as(DType::F16, &normal_f32(7, rows * cols, 0.02))
        .unwrap();
    let xh = g.upload_as(DType::F16, &normal_f32(8, cols, 1.0)).unwrap();
    let t = g
        .time_iters(300, || {
            g.cublas_gemv(DType::F16, rows, cols, &wh, &xh, &mut y)
        })
        .unwrap();
    println!(
        "cublas f16 {rows}x{cols}: {:?} per call (graph-timed)",
        t / 300
    );
    assert!(t.as_nanos() > 0);
}

#[test]
fn refusals_name_the_problem() {
    let Some(g) = gpu() else { return };
    let w = g.alloc_zeros::<u8>(10).unwrap();
    let x = g.alloc_zeros::<f32>(32).unwrap();
    let mut y = g.alloc_zeros::<f32>(1).unwrap();
    let e = g
        .gemv(DType::Q8_0, 1, 32, &w, &x, &mut y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("w holds 10"), "{e}");
    let e = g
        .gemv(DType::Q4_K, 1, 32, &w, &x, &mut y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple of the block size"), "{e}");
}

/// The MoE layer on the GPU against the CPU reference (routing from its own logits, output by
/// the f64 layer with Q8_1-rounded inputs), for every weight type, a shared expert with its
/// gate, gpt-oss's biases and clamped activation, and a batch of 3 over two input slots.
#[test]
fn moe_layer_matches_reference() {
    use membound_cpu::moe::{CpuMoe, MoeWeights, Routing, reference_forward};
    use membound_cuda::gemv::activation_dtype;
    use membound_cuda::moe::{GpuMoe, MoeBuf, f32s, u32s, weight_bufs};
    use membound_spec::model::RouterScoring;
    use membound_spec::moe::{Activation, MoeLayer, MoeTypes};
    let Some(g) = gpu() else { return };
    let mut cases: Vec<(MoeLayer, usize)> = GEMV_DTYPES
        .iter()
        .map(|&d| {
            let k = matches!(d, DType::Q4_K | DType::Q6_K);
            let (h, f) = if k { (512, 256) } else { (288, 96) };
            (MoeLayer::new(h, 8, 2, f, MoeTypes::all(d)), 1)
        })
        .collect();
    let mut shared = MoeLayer::new(512, 8, 2, 256, MoeTypes::all(DType::Q8_0));
    (shared.shared_ff, shared.shared_gate) = (128, true);
    cases.push((shared, 3));
    let oss = MoeLayer {
        router: RouterScoring::TopkSoftmax,
        norm_topk: false,
        router_bias: true,
        expert_bias: true,
        activation: Activation::SwigluOai,
        ..MoeLayer::new(288, 8, 2, 96, MoeTypes::all(DType::MXFP4))
    };
    cases.push((oss, 2));
    for (l, tokens) in cases {
        let w = MoeWeights::generate(&l, 3).unwrap();
        let bufs = weight_bufs(
            &w.router,
            &w.router_bias,
            w.stacks(),
            w.biases(),
            w.shared_stacks(),
        );
        let mut m = GpuMoe::new(&g, &l, &bufs, tokens, false).unwrap();
        let x0 = normal_f32(1, tokens * l.hidden, 1.0);
        let x1 = normal_f32(2, tokens * l.hidden, 1.0);
        m.set_inputs(&g, &[(&x0, &[]), (&x1, &[])]).unwrap();
        for (slot, xs) in [(0, &x0), (1, &x1)] {
            m.forward(&g, slot).unwrap();
            let logits = f32s(&m.read(&g, MoeBuf::Logits).unwrap());
            let got = Routing {
                ids: u32s(&m.read(&g, MoeBuf::Ids).unwrap()),
                weights: f32s(&m.read(&g, MoeBuf::Weights).unwrap()),
                shared: f32s(&m.read(&g, MoeBuf::SharedW).unwrap()),
            };
            let cpu = CpuMoe::new(l.clone(), w.clone()).unwrap();
            let want = cpu.route_batch(&logits, &[]);
            assert_eq!(got.ids, want.ids, "{:?}", l.types);
            let out = f32s(&m.read(&g, MoeBuf::Out).unwrap());
            let h = l.hidden;
            for t in 0..tokens {
                let r =
                    reference_forward(&l, &w, &xs[t * h..(t + 1) * h], &got, t, &activation_dtype)
                        .unwrap();
                let scale = r.iter().fold(0f32, |a, v| a.max(v.abs()));
                let err = out[t * h..(t + 1) * h]
                    .iter()
                    .zip(&r)
                    .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(
                    err <= 1e-2 * scale,
                    "{:?} slot {slot} token {t}: {err} of {scale}",
                    l.types
                );
            }
        }
    }
}

/// Decode attention on the GPU against the f64 reference for every layout and cache type, with
/// sinks and a window, at depths that end tiles and splits part-way.
#[test]
fn attention_matches_reference() {
    use membound_cpu::attention::{KvCacheBuf, reference_attend};
    use membound_cuda::attention::GpuAttn;
    use membound_spec::attention::AttnShape;
    use membound_spec::kv::KvLayout;
    let Some(g) = gpu() else { return };
    for dtype in [DType::F16, DType::BF16, DType::Q8_0] {
        let mut swa = AttnShape::new(KvLayout::Gqa, 64, 8, 64, 64, dtype);
        (swa.sinks, swa.window) = (true, Some(128));
        for (s, depth) in [
            (AttnShape::new(KvLayout::Gqa, 32, 4, 128, 128, dtype), 3001),
            (
                AttnShape::new(KvLayout::MlaLatent, 20, 1, 576, 512, dtype),
                5000,
            ),
            (
                AttnShape::new(KvLayout::MlaSplit, 16, 1, 576, 512, dtype),
                777,
            ),
            (
                AttnShape::new(KvLayout::ExpandedMha, 20, 20, 256, 256, dtype),
                1025,
            ),
            (swa, 4000),
        ] {
            let cache = KvCacheBuf::generate(&s, depth, 5).unwrap();
            let q = normal_f32(6, s.n_heads * s.d_k, 1.0);
            let sinks = normal_f32(7, s.n_heads, 1.0);
            let mut a = GpuAttn::new(
                &g,
                &s,
                depth,
                cache.k_bytes(),
                cache.v_bytes(),
                &q,
                &sinks,
                depth,
            )
            .unwrap();
            a.forward(&g).unwrap();
            let got = a.output(&g).unwrap();
            let want = reference_attend(&cache, &q, &sinks, depth).unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                err <= 1e-3 * scale,
                "{:?} {dtype} depth {depth}: {err} of {scale} ({} splits)",
                s.layout,
                a.plan().params.splits
            );
        }
    }
}
