//! dense: quantized GEMV at decode shapes (and GEMM at prefill batches) on every backend.
//!
//! Ids `dense/{case}/{backend}`:
//! - `{type}-{rows}x{cols}`: y = W·x, W stored in ggml's layout of `type` (f32, f16, bf16,
//!   q8_0, q4_k, q6_k, mxfp4), x and y f32; the activation is quantized as ggml does
//!   (Q8_0 / Q8_K on the CPU, Q8_1 on the GPU, as llama.cpp's mmvq).
//! - `candle-{type}-{rows}x{cols}` (CPU): candle-core's `QMatMul` on the same weight bytes, the
//!   peer in the same run. `cublas-{type}-{rows}x{cols}` (GPU): cuBLAS on f16/bf16.
//! - `gemm-{type}-{rows}x{cols}-b{batch}`: a prefill batch of activations.
//!
//! Shapes are the decode GEMVs of the models in `models/` (rows = outputs): 4096x4096
//! (Llama-3.1-8B attention), 14336x4096 and 4096x14336 (its FFN), 25600x5120 (Qwen3-32B FFN),
//! 28672x8192 (Llama-3.1-70B FFN). Each case rotates through enough distinct copies of W that
//! the working set is ≥ 4× the last-level cache. Bytes: `membound_spec::traffic::gemv_bytes`
//! (weights as stored, x read, y written). Every kernel's output is checked before timing.

use criterion::{Criterion, SamplingMode, Throughput};
use membound_bench::rotation::{Rotation, copies_for};
use membound_bench::verify::{check_close, check_close_scaled, require};
use membound_bench::{Backends, CpuBackend, GpuBackend, Scale, machine};
use membound_cpu::CpuGemv;
use membound_quant::data::normal_f32;
use membound_spec::DType;
use membound_spec::traffic::{gemm_bytes, gemv_bytes};

/// Rows quantized once and tiled to fill a large matrix (memory is distinct; values repeat).
const TILE_ROWS: usize = 256;

fn shapes(scale: Scale) -> Vec<(usize, usize)> {
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

/// Weight bytes of a `rows x cols` matrix of `dtype`: `TILE_ROWS` rows of weight-like values
/// quantized once, repeated.
fn weight_bytes(dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let tile_rows = rows.min(TILE_ROWS);
    let values = normal_f32(0x5eed ^ (rows * 31 + cols) as u64, tile_rows * cols, 0.02);
    let tile = membound_quant::ops::quantize(dtype, &values)
        .unwrap_or_else(|e| panic!("quantize {dtype}: {e}"));
    let mut out = Vec::with_capacity(tile.len() * rows.div_ceil(tile_rows));
    while out.len() < tile.len() / tile_rows * rows {
        out.extend_from_slice(&tile);
    }
    out.truncate(tile.len() / tile_rows * rows);
    out
}

/// Reference y for a sample of rows: float weights in f64 against x itself; quantized weights by
/// ggml's scalar dot on the activation quantized as the kernel quantizes it.
fn reference_rows(dtype: DType, w: &[u8], cols: usize, x: &[f32], rows: &[usize]) -> Vec<f32> {
    let row_bytes = dtype.bytes_for(cols as u64).expect("whole blocks") as usize;
    let row = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
    if matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return rows
            .iter()
            .map(|&r| {
                let wr = membound_quant::ops::dequantize(dtype, row(r)).expect("dequantize");
                wr.iter()
                    .zip(x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>() as f32
            })
            .collect();
    }
    let act_type = membound_quant::ops::vec_dot_type(dtype);
    let act = membound_quant::ops::quantize(act_type, x).expect("activation quantizes");
    rows.iter()
        .map(|&r| membound_quant::ops::vec_dot(dtype, row(r), &act).expect("reference dot"))
        .collect()
}

fn sample_rows(rows: usize) -> Vec<usize> {
    let mut s: Vec<usize> = (0..rows).step_by((rows / 61).max(1)).collect();
    s.push(rows - 1);
    s
}

fn shape_name(rows: usize, cols: usize) -> String {
    format!("{rows}x{cols}")
}

fn cpu_suite(c: &mut Criterion, cpu: &CpuBackend, scale: Scale) {
    let x_cols = |cols| normal_f32(7, cols, 1.0);
    for (rows, cols) in shapes(scale) {
        let x = x_cols(cols);
        let sample = sample_rows(rows);
        for &dtype in membound_cpu::SUPPORTED_DTYPES {
            let w = weight_bytes(dtype, rows, cols);
            let case = format!("{}-{}", dtype.name(), shape_name(rows, cols));
            let n = copies_for(w.len() as u64, cpu.llc_bytes());
            let gemvs: Vec<CpuGemv> = (0..n)
                .map(|_| CpuGemv::new(dtype, rows, cols, w.clone()).expect("valid GEMV"))
                .collect();
            let mut y = vec![0f32; rows];
            gemvs[0].run(&cpu.pool, &x, &mut y).expect("cpu gemv runs");
            let want = reference_rows(dtype, &w, cols, &x, &sample);
            let got: Vec<f32> = sample.iter().map(|&r| y[r]).collect();
            require(check_close(&format!("dense/{case}/cpu"), &got, &want, 2e-3));
            let mut g = c.benchmark_group("dense");
            g.throughput(Throughput::BytesDecimal(gemv_bytes(
                dtype,
                rows as u64,
                cols as u64,
            )));
            g.sampling_mode(SamplingMode::Flat);
            let mut rot = Rotation::new(n);
            g.bench_function(format!("{case}/cpu"), |b| {
                b.iter(|| {
                    gemvs[rot.next()]
                        .run(&cpu.pool, &x, &mut y)
                        .expect("cpu gemv runs")
                })
            });
            if let Some(peer) = candle_peer(dtype, rows, cols, &w, n) {
                let xt = candle_core::Tensor::from_slice(&x, (1, cols), &candle_core::Device::Cpu)
                    .expect("tensor");
                let yc = candle_forward(&peer[0], &xt);
                // candle quantizes the activation its own way: judged at the output's scale.
                require(check_close_scaled(
                    &format!("dense/candle-{case}/cpu"),
                    &yc,
                    &y,
                    2e-2,
                ));
                let mut rot = Rotation::new(n);
                g.bench_function(format!("candle-{case}/cpu"), |b| {
                    b.iter(|| candle_forward(&peer[rot.next()], &xt))
                });
            }
            g.finish();
        }
        let batches: &[usize] = match scale {
            Scale::Quick => &[],
            Scale::Default => &[64],
            Scale::Full => &[16, 64, 512],
        };
        if (rows, cols) != (4096, 4096) {
            continue;
        }
        for &batch in batches {
            for dtype in [DType::Q8_0, DType::Q4_K] {
                let w = weight_bytes(dtype, rows, cols);
                let gemm = CpuGemv::new(dtype, rows, cols, w.clone()).expect("valid GEMM");
                let xs = normal_f32(11, batch * cols, 1.0);
                let mut ys = vec![0f32; batch * rows];
                gemm.run_batch(&cpu.pool, &xs, &mut ys)
                    .expect("cpu gemm runs");
                let last = &xs[(batch - 1) * cols..];
                let want = reference_rows(dtype, &w, cols, last, &sample);
                let got: Vec<f32> = sample.iter().map(|&r| ys[(batch - 1) * rows + r]).collect();
                let case = format!("gemm-{}-{}-b{batch}", dtype.name(), shape_name(rows, cols));
                require(check_close(&format!("dense/{case}/cpu"), &got, &want, 2e-3));
                let mut g = c.benchmark_group("dense");
                g.throughput(Throughput::BytesDecimal(gemm_bytes(
                    dtype,
                    rows as u64,
                    cols as u64,
                    batch as u64,
                )));
                g.sampling_mode(SamplingMode::Flat);
                g.bench_function(format!("{case}/cpu"), |b| {
                    b.iter(|| {
                        gemm.run_batch(&cpu.pool, &xs, &mut ys)
                            .expect("cpu gemm runs")
                    })
                });
                g.finish();
            }
        }
    }
}

/// candle-core's quantized matmul over the same bytes, for the types candle has.
fn candle_peer(
    dtype: DType,
    rows: usize,
    cols: usize,
    w: &[u8],
    copies: usize,
) -> Option<Vec<candle_core::quantized::QMatMul>> {
    use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
    let gd = match dtype {
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q4_K => GgmlDType::Q4K,
        DType::Q6_K => GgmlDType::Q6K,
        _ => return None,
    };
    let make = || {
        let storage =
            QStorage::from_data(std::borrow::Cow::Borrowed(w), &candle_core::Device::Cpu, gd)
                .expect("candle reads ggml bytes");
        let qt = QTensor::new(storage, (rows, cols)).expect("candle QTensor");
        QMatMul::from_qtensor(qt).expect("candle QMatMul")
    };
    Some((0..copies).map(|_| make()).collect())
}

fn candle_forward(m: &candle_core::quantized::QMatMul, x: &candle_core::Tensor) -> Vec<f32> {
    use candle_core::Module;
    m.forward(x)
        .and_then(|y| y.flatten_all())
        .and_then(|y| y.to_vec1::<f32>())
        .expect("candle forward")
}

fn gpu_suite(c: &mut Criterion, gpu: &GpuBackend, scale: Scale) {
    let g = &gpu.gpu;
    let fail = |what: &str, e: membound_cuda::CudaError| -> ! { panic!("{}: {what}: {e}", gpu.id) };
    for (rows, cols) in shapes(scale) {
        let x = normal_f32(7, cols, 1.0);
        let xd = g.upload(&x).unwrap_or_else(|e| fail("upload x", e));
        let sample = sample_rows(rows);
        for dtype in membound_cuda::gemv::GEMV_DTYPES {
            let w = weight_bytes(dtype, rows, cols);
            let n = copies_for(w.len() as u64, gpu.llc_bytes());
            if (n * w.len()) as u64 * 2 > gpu.info().memory_bytes {
                eprintln!(
                    "membound: {}: dense {dtype} {rows}x{cols} skipped: {n} copies do not fit",
                    gpu.id
                );
                continue;
            }
            let ws: Vec<_> = (0..n)
                .map(|_| g.upload(&w).unwrap_or_else(|e| fail("upload W", e)))
                .collect();
            let mut yd = g
                .alloc_zeros::<f32>(rows)
                .unwrap_or_else(|e| fail("alloc y", e));
            g.gemv(dtype, rows, cols, &ws[0], &xd, &mut yd)
                .unwrap_or_else(|e| fail("gemv", e));
            let y = g.download(&yd).unwrap_or_else(|e| fail("download y", e));
            let want = membound_cuda::gemv::gemv_expected(dtype, rows, cols, &w, &x)
                .unwrap_or_else(|e| fail("reference", e));
            let case = format!("{}-{}", dtype.name(), shape_name(rows, cols));
            if let Err(e) =
                membound_cuda::gemv::check_rows(&format!("dense/{case}/{}", gpu.id), &y, &want)
            {
                eprintln!("membound: verification failed, not timing: {e}");
                continue;
            }
            let mut grp = c.benchmark_group("dense");
            grp.throughput(Throughput::BytesDecimal(gemv_bytes(
                dtype,
                rows as u64,
                cols as u64,
            )));
            let mut rot = Rotation::new(n);
            grp.bench_function(format!("{case}/{}", gpu.id), |b| {
                b.iter_custom(|iters| {
                    gpu.time(&format!("dense/{case}"), iters, || {
                        g.gemv(dtype, rows, cols, &ws[rot.next()], &xd, &mut yd)
                    })
                })
            });
            if matches!(dtype, DType::F16 | DType::BF16) {
                let xh = g
                    .upload_as(dtype, &x)
                    .unwrap_or_else(|e| fail("upload x half", e));
                g.cublas_gemv(dtype, rows, cols, &ws[0], &xh, &mut yd)
                    .unwrap_or_else(|e| fail("cublas", e));
                let yb = g.download(&yd).unwrap_or_else(|e| fail("download y", e));
                require(check_close_scaled(
                    &format!("dense/cublas-{case}/{}", gpu.id),
                    &yb,
                    &y,
                    1e-2,
                ));
                let mut rot = Rotation::new(n);
                grp.bench_function(format!("cublas-{case}/{}", gpu.id), |b| {
                    b.iter_custom(|iters| {
                        gpu.time(&format!("dense/cublas-{case}"), iters, || {
                            g.cublas_gemv(dtype, rows, cols, &ws[rot.next()], &xh, &mut yd)
                        })
                    })
                });
            }
            grp.finish();
        }
    }
}

fn main() {
    let scale = Scale::from_env();
    let backends = Backends::discover();
    machine::write(&backends, scale, "dense");
    let mut c = scale.criterion();
    for gpu in &backends.gpus {
        gpu_suite(&mut c, gpu, scale);
    }
    if let Some(cpu) = &backends.cpu {
        cpu_suite(&mut c, cpu, scale);
    }
    machine::write(&backends, scale, "dense");
    c.final_summary();
}
