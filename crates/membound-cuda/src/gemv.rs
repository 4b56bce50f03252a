//! Decode GEMV `y = W·x` on one GPU (`kernels/gemv.cu`) for F16, BF16, Q8_0, Q4_K, Q6_K and
//! MXFP4 weights in ggml's block layout, with f32 activations; quantized types go through
//! llama.cpp's mmvq scheme (x quantized to Q8_1 on the device, then `__dp4a` dot products).
//! cuBLAS (`cublasGemmEx`) is the F16/BF16 peer.

use std::ffi::c_void;

use cudarc::cublas::{CudaBlas, result as blas_result, sys as blas_sys};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use membound_spec::DType;

use crate::error::{CudaError, Result};
use crate::gpu::{Gpu, Kernel};
use crate::params::{GemvParams, QuantizeParams};

/// `GemvParams::flags`: `y[row] += W[row]·x` instead of `=` (a residual add fused into the
/// product; each row is written by one warp, so no two writers meet).
pub const GEMV_ACCUMULATE: u32 = 1;

/// Warps (rows) per block of the GEMV kernels when `MEMBOUND_GEMV_WARPS` is not set: the
/// `GEMV_WARPS` default of gemv.cu (and of the host build of the kernels).
pub const DEFAULT_GEMV_WARPS: u32 = 4;

/// Warps (rows) per block the GEMV kernels are built and launched with in this process:
/// `MEMBOUND_GEMV_WARPS` (1 to 8; a tuning knob passed to NVRTC as `-DGEMV_WARPS=N`), else
/// [`DEFAULT_GEMV_WARPS`]. An invalid value is reported once and ignored.
pub fn gemv_warps() -> u32 {
    static WARPS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *WARPS.get_or_init(|| {
        knob("MEMBOUND_GEMV_WARPS", DEFAULT_GEMV_WARPS, "1..8", |v| {
            v.parse::<u32>().ok().filter(|n| (1..=8).contains(n))
        })
    })
}

/// Whether tiles are double-buffered with cp.async when `MEMBOUND_TILE_PIPE` is not set: the
/// `TILE_PIPE` default of gemv_tile.cuh (and of the host build of the kernels).
pub const DEFAULT_TILE_PIPE: bool = true;

/// Whether the kernels of this process that stage tiles in shared memory (GEMV and MoE experts
/// over block-quantized rows, decode attention over the KV cache) double-buffer them with
/// cp.async (`-DTILE_PIPE=1`) or copy and compute in turn (`0`): `MEMBOUND_TILE_PIPE` (0 or 1, a
/// tuning knob for comparing the two on a GPU), else [`DEFAULT_TILE_PIPE`].
pub fn tiles_pipelined() -> bool {
    static PIPE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PIPE.get_or_init(|| {
        knob(
            "MEMBOUND_TILE_PIPE",
            DEFAULT_TILE_PIPE,
            "0 or 1",
            |v| match v {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            },
        )
    })
}

/// Environment variable `name` parsed by `parse` (trimmed), else `default`; a value `parse`
/// refuses is reported (naming `allowed`) and ignored.
fn knob<T: std::fmt::Display + Copy>(
    name: &str,
    default: T,
    allowed: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> T {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => parse(v.trim()).unwrap_or_else(|| {
            eprintln!("membound: {name}=`{v}` is not {allowed}; using {default}");
            default
        }),
    }
}

/// Warps (Q8_1 blocks) per block of the activation quantization (`QUANT_WARPS`).
pub const QUANT_WARPS: u32 = 8;
/// Bytes of one Q8_1 block (32 values).
pub const Q8_1_BLOCK_BYTES: usize = 36;
/// The weight types [`Gpu::gemv`] supports.
pub const GEMV_DTYPES: [DType; 6] = [
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_K,
    DType::Q6_K,
    DType::MXFP4,
];

/// The GEMV kernel for weights of `dtype` (an error names the supported types).
pub fn kernel_for(dtype: DType) -> Result<Kernel> {
    Ok(match dtype {
        DType::F16 => Kernel::GemvF16,
        DType::BF16 => Kernel::GemvBf16,
        DType::Q8_0 => Kernel::GemvQ8_0,
        DType::Q4_K => Kernel::GemvQ4K,
        DType::Q6_K => Kernel::GemvQ6K,
        DType::MXFP4 => Kernel::GemvMxfp4,
        other => {
            return Err(CudaError::invalid(
                "gemv",
                format!(
                    "no CUDA GEMV kernel for {other} (supported: f16, bf16, q8_0, q4_k, q6_k, mxfp4)"
                ),
            ));
        }
    })
}

/// The type x is converted to before the dot products: Q8_1 for block-quantized weights,
/// F32 (used as is) for F16/BF16.
pub fn activation_dtype(dtype: DType) -> DType {
    if dtype.is_quantized() {
        DType::Q8_1
    } else {
        DType::F32
    }
}

/// Checks a GEMV shape and returns the kernel parameters: rows and cols non-zero and below
/// 2^32, cols a whole number of `dtype` blocks.
pub fn gemv_params(dtype: DType, rows: usize, cols: usize) -> Result<GemvParams> {
    kernel_for(dtype)?;
    let bad =
        |reason: String| CudaError::invalid("gemv", format!("{dtype} {rows}x{cols}: {reason}"));
    if rows == 0 || cols == 0 {
        return Err(bad("empty matrix".into()));
    }
    let (Ok(rows32), Ok(cols32)) = (u32::try_from(rows), u32::try_from(cols)) else {
        return Err(bad("rows and cols must be below 2^32".into()));
    };
    let row_bytes = dtype.bytes_for(cols as u64).ok_or_else(|| {
        bad(format!(
            "cols must be a multiple of the block size {}",
            dtype.block_size()
        ))
    })?;
    Ok(GemvParams {
        rows: rows32,
        cols: cols32,
        row_bytes,
        group_rows: rows32.max(1),
        flags: 0,
    })
}

/// Parameters of a grouped GEMV: the rows form `groups` equal groups and group `g` takes the
/// `g`-th run of `cols` values of x (MLA's per-head `W_UK` and `W_UV` in one launch). A group
/// must be a whole number of `warps`-row blocks.
pub fn gemv_params_grouped(
    dtype: DType,
    rows: usize,
    cols: usize,
    groups: usize,
    warps: u32,
) -> Result<GemvParams> {
    let mut p = gemv_params(dtype, rows, cols)?;
    let per = rows / groups.max(1);
    if groups == 0 || per * groups != rows || !per.is_multiple_of(warps.max(1) as usize) {
        return Err(CudaError::invalid(
            "gemv",
            format!(
                "{dtype} {rows}x{cols} in {groups} groups: each must be a multiple of {warps} rows"
            ),
        ));
    }
    p.group_rows = per as u32;
    Ok(p)
}

/// Launch geometry of the GEMV kernels: one warp per row, `warps` rows per block (the value the
/// kernels were built with: [`gemv_warps`] on a GPU, [`DEFAULT_GEMV_WARPS`] on the host).
pub fn gemv_config(rows: u32, warps: u32) -> LaunchConfig {
    let warps = warps.max(1);
    LaunchConfig {
        grid_dim: (rows.div_ceil(warps), 1, 1),
        block_dim: (warps * 32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launch geometry of the Q8_1 quantization: one warp per block of 32 values.
pub fn quantize_config(n_blocks: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            n_blocks.div_ceil(u64::from(QUANT_WARPS)).max(1) as u32,
            1,
            1,
        ),
        block_dim: (QUANT_WARPS * 32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Bytes a GEMV moves across the bus once: the weights (scales included), x (f32) and y (f32).
/// The Q8_1 copy of x (36 bytes per 32 values) is written and read from L2 and not counted.
pub fn gemv_bytes(dtype: DType, rows: u64, cols: u64) -> u64 {
    membound_spec::traffic::gemv_bytes(dtype, rows, cols)
}

/// The host reference of [`Gpu::gemv`], in f64: `dequantize(W)` dotted with x as the kernel
/// sees it (x itself for F16/BF16; `dequantize(quantize(Q8_1, x))` for quantized weights).
pub fn gemv_reference(
    dtype: DType,
    rows: usize,
    cols: usize,
    w: &[u8],
    x: &[f32],
) -> Result<Vec<f64>> {
    let p = gemv_params(dtype, rows, cols)?;
    if w.len() as u64 != u64::from(p.rows) * p.row_bytes || x.len() != cols {
        return Err(CudaError::invalid(
            "gemv_reference",
            format!("{} weight bytes, {} x values", w.len(), x.len()),
        ));
    }
    use membound_quant::ops::{dequantize, quantize};
    let xs = match activation_dtype(dtype) {
        DType::Q8_1 => dequantize(DType::Q8_1, &quantize(DType::Q8_1, x)?)?,
        _ => x.to_vec(),
    };
    let wd = dequantize(dtype, w)?;
    Ok(wd
        .chunks_exact(cols)
        .map(|row| {
            row.iter()
                .zip(&xs)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        })
        .collect())
}

/// One row's expected GEMV value (f64) and the largest error the kernel may have.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expected {
    /// The value the kernel's arithmetic aims at.
    pub value: f64,
    /// The largest |y − value| allowed.
    pub tol: f64,
}

/// Expected rows of [`Gpu::gemv`]: the value the kernels compute and a bound on their rounding.
///
/// The value is [`gemv_reference`] (dequantized W against x as the kernel sees it), except that
/// for Q4_K the min term uses each Q8_1 block's stored `s = f16(d·Σq)` as mmvq does, where the
/// dequantized reference has `f16(d)·Σq`: the two differ by up to 2^-10 relative per block, and
/// because the scale and min terms of a Q4_K sub-block nearly cancel, that is up to 13 % of a
/// row's value at 4096 columns (the defect that stopped the dense bench on every GPU).
///
/// The bound: chunk products are exact integers (or exact conversions) scaled with at most 4
/// f32 roundings, then summed in f32 partials and a warp tree, so the dot-product bound
/// |err| ≤ k·u·Σ|terms| holds with u = 2^-24 and k ≤ chunks + 9 (chunks counted in full, which
/// also covers a sequential sum); we allow 2·(k + 16). For Q4_K, Σ|terms| also counts the scale
/// and min parts of each sub-block, which cancel.
pub fn gemv_expected(
    dtype: DType,
    rows: usize,
    cols: usize,
    w: &[u8],
    x: &[f32],
) -> Result<Vec<Expected>> {
    use membound_quant::blocks::{BlockQ4K, BlockQ8_1, from_bytes};
    use membound_quant::fp::f16_to_f32;
    use membound_quant::ops::{dequantize, quantize};
    let mut value = gemv_reference(dtype, rows, cols, w, x)?;
    let w_deq = dequantize(dtype, w)?;
    let xq = match activation_dtype(dtype) {
        DType::Q8_1 => Some(quantize(DType::Q8_1, x)?),
        _ => None,
    };
    let x_ref = match &xq {
        Some(b) => dequantize(DType::Q8_1, b)?,
        None => x.to_vec(),
    };
    let chunk = match dtype {
        DType::F16 | DType::BF16 => 8,
        DType::Q4_K | DType::Q6_K => 64,
        _ => 32,
    };
    let k = (cols.div_ceil(chunk) + 16) as f64;
    let u = f64::from(f32::EPSILON) / 2.0;
    let mut abs: Vec<f64> = w_deq
        .chunks_exact(cols)
        .map(|row| {
            row.iter()
                .zip(&x_ref)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum()
        })
        .collect();
    if dtype == DType::Q4_K {
        let bad = || CudaError::invalid("gemv_expected", "Q4_K or Q8_1 bytes not whole blocks");
        let blocks = from_bytes::<BlockQ4K>(w).ok_or_else(bad)?;
        let xb = from_bytes::<BlockQ8_1>(xq.as_deref().unwrap_or_default()).ok_or_else(bad)?;
        let per_row = cols / 256;
        for r in 0..rows {
            for (sb, b) in blocks[r * per_row..(r + 1) * per_row].iter().enumerate() {
                let dmin = f64::from(f16_to_f32(b.dmin));
                for j in 0..8 {
                    let m = f64::from(scale_min_k4(j, &b.scales).1);
                    let q8 = &xb[sb * 8 + j];
                    let sum_q: i32 = q8.qs.iter().map(|&q| i32::from(q)).sum();
                    let (d8, s8) = (f64::from(f16_to_f32(q8.d)), f64::from(f16_to_f32(q8.s)));
                    value[r] += dmin * m * (d8 * f64::from(sum_q) - s8);
                    let base = r * cols + (sb * 8 + j) * 32;
                    let scale_part: f64 = (0..32)
                        .map(|i| {
                            (f64::from(w_deq[base + i]) + dmin * m)
                                * f64::from(x_ref[(sb * 8 + j) * 32 + i])
                        })
                        .sum();
                    abs[r] += scale_part.abs() + (dmin * m * s8).abs();
                }
            }
        }
    }
    Ok(value
        .into_iter()
        .zip(abs)
        .map(|(value, abs)| Expected {
            value,
            tol: 2.0 * k * u * abs + 1e-30,
        })
        .collect())
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and min from Q4_K's 12 packed bytes.
fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Checks a kernel's rows `got` against `expected` (pairs by position); returns the worst error
/// as a fraction of its bound, or a message naming `what`, the first bad row and its error.
pub fn check_rows(
    what: &str,
    got: &[f32],
    expected: &[Expected],
) -> std::result::Result<f64, String> {
    if got.len() != expected.len() {
        return Err(format!(
            "{what}: {} rows, expected {}",
            got.len(),
            expected.len()
        ));
    }
    let mut worst = 0.0f64;
    for (r, (&y, e)) in got.iter().zip(expected).enumerate() {
        let y = f64::from(y);
        let err = (y - e.value).abs();
        if err.is_nan() || err > e.tol {
            return Err(format!(
                "{what}: y[{r}] = {y}, expected {}, error {err:e} > bound {:e}",
                e.value, e.tol
            ));
        }
        worst = worst.max(err / e.tol);
    }
    Ok(worst)
}

fn check_len(op: &'static str, what: &str, len: usize, need: u64) -> Result<()> {
    if (len as u64) < need {
        return Err(CudaError::invalid(
            op,
            format!("{what} holds {len} elements, needs {need}"),
        ));
    }
    Ok(())
}

impl Gpu {
    /// `y[..rows] = W·x`: W is `rows x cols` in `dtype`'s ggml layout (each row
    /// `cols / block_size` blocks), x has `cols` f32 values. Quantized types first quantize x to
    /// Q8_1 into a buffer the `Gpu` keeps (allocated on first use).
    pub fn gemv(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &CudaSlice<u8>,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let p = gemv_params(dtype, rows, cols)?;
        let k = kernel_for(dtype)?;
        check_len("gemv", "w", w.len(), u64::from(p.rows) * p.row_bytes)?;
        check_len("gemv", "x", x.len(), cols as u64)?;
        check_len("gemv", "y", y.len(), rows as u64)?;
        let cfg = gemv_config(p.rows, gemv_warps());
        if activation_dtype(dtype) == DType::F32 {
            let mut args = self.stream.launch_builder(self.function(k));
            args.arg(w).arg(x).arg(y).arg(&p);
            // SAFETY: mb_gemv_f16/bf16(const u8* w, const float* x, float* y, GemvParams);
            // lengths checked above against rows * row_bytes, cols and rows.
            return unsafe { self.launch(k, args, cfg) };
        }
        let mut scratch = self.scratch();
        let need = cols / 32 * Q8_1_BLOCK_BYTES;
        if scratch.xq.as_ref().is_none_or(|b| b.len() < need) {
            scratch.xq = Some(self.alloc_zeros::<u8>(need)?);
        }
        let xq = scratch
            .xq
            .as_mut()
            .ok_or_else(|| CudaError::invalid("gemv", "no Q8_1 buffer"))?;
        self.launch_quantize(x, cols, xq)?;
        let mut args = self.stream.launch_builder(self.function(k));
        args.arg(w).arg(&*xq).arg(y).arg(&p);
        // SAFETY: mb_gemv_<type>(const u8* w, const block_q8_1* xq, float* y, GemvParams);
        // w, y checked above; xq holds cols/32 Q8_1 blocks.
        unsafe { self.launch(k, args, cfg) }
    }

    /// Quantizes the first `cols` values of x (a multiple of 32) to Q8_1 blocks in `xq`
    /// (`cols / 32 * 36` bytes), bit-exact with `membound_quant::ops::quantize(DType::Q8_1, ..)`.
    pub fn quantize_q8_1(
        &self,
        x: &CudaSlice<f32>,
        cols: usize,
        xq: &mut CudaSlice<u8>,
    ) -> Result<()> {
        if cols == 0 || cols & 31 != 0 {
            return Err(CudaError::invalid(
                "quantize_q8_1",
                format!("{cols} values is not a whole number of 32-value blocks"),
            ));
        }
        check_len("quantize_q8_1", "x", x.len(), cols as u64)?;
        check_len(
            "quantize_q8_1",
            "xq",
            xq.len(),
            (cols / 32 * Q8_1_BLOCK_BYTES) as u64,
        )?;
        self.launch_quantize(x, cols, xq)
    }

    fn launch_quantize(
        &self,
        x: &CudaSlice<f32>,
        cols: usize,
        xq: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let p = QuantizeParams {
            n_blocks: (cols / 32) as u64,
        };
        let mut args = self
            .stream
            .launch_builder(self.function(Kernel::QuantizeQ8_1));
        args.arg(x).arg(xq).arg(&p);
        // SAFETY: mb_quantize_q8_1(const float*, block_q8_1*, QuantizeParams); x holds
        // 32 * n_blocks values and xq n_blocks blocks (checked by the callers).
        unsafe { self.launch(Kernel::QuantizeQ8_1, args, quantize_config(p.n_blocks)) }
    }

    /// The cuBLAS peer for F16/BF16: `y = W·x` by `cublasGemmEx` (W row-major `rows x cols` seen
    /// as a column-major `cols x rows` matrix, transposed; x in the same type as W, e.g. from
    /// [`Gpu::upload_as`]; f32 output and accumulation).
    pub fn cublas_gemv(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &CudaSlice<u8>,
        x: &CudaSlice<u8>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let data_type = match dtype {
            DType::F16 => blas_sys::cudaDataType_t::CUDA_R_16F,
            DType::BF16 => blas_sys::cudaDataType_t::CUDA_R_16BF,
            other => {
                return Err(CudaError::invalid(
                    "cublas_gemv",
                    format!("cuBLAS peer is for f16/bf16, not {other}"),
                ));
            }
        };
        let p = gemv_params(dtype, rows, cols)?;
        let (Ok(m), Ok(k)) = (i32::try_from(rows), i32::try_from(cols)) else {
            return Err(CudaError::invalid(
                "cublas_gemv",
                "rows and cols must be below 2^31",
            ));
        };
        check_len("cublas_gemv", "w", w.len(), u64::from(p.rows) * p.row_bytes)?;
        check_len("cublas_gemv", "x", x.len(), 2 * cols as u64)?;
        check_len("cublas_gemv", "y", y.len(), rows as u64)?;
        self.with_blas(|blas| {
            let (alpha, beta) = (1.0f32, 0.0f32);
            let (wp, _w) = w.device_ptr(&self.stream);
            let (xp, _x) = x.device_ptr(&self.stream);
            let (yp, _y) = y.device_ptr_mut(&self.stream);
            // SAFETY: A = W (cols x rows column-major, lda = cols, transposed), B = x (cols x 1),
            // C = y (rows x 1, f32); buffer lengths checked above; alpha/beta are host f32 as
            // CUBLAS_COMPUTE_32F requires; the handle is bound to this Gpu's stream.
            unsafe {
                blas_result::gemm_ex(
                    *blas.handle(),
                    blas_sys::cublasOperation_t::CUBLAS_OP_T,
                    blas_sys::cublasOperation_t::CUBLAS_OP_N,
                    m,
                    1,
                    k,
                    (&alpha as *const f32).cast::<c_void>(),
                    wp as *const c_void,
                    data_type,
                    k,
                    xp as *const c_void,
                    data_type,
                    k,
                    (&beta as *const f32).cast::<c_void>(),
                    yp as *mut c_void,
                    blas_sys::cudaDataType_t::CUDA_R_32F,
                    m,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| CudaError::cublas(&self.label, "gemm_ex (gemv)", e))
        })
    }

    /// Runs `f` with this device's cuBLAS handle, created on first use.
    fn with_blas<R>(&self, f: impl FnOnce(&CudaBlas) -> Result<R>) -> Result<R> {
        let mut guard = self.blas.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            // SAFETY: only tries to dlopen libcublas.
            if !unsafe { blas_sys::is_culib_present() } {
                return Err(CudaError::Cublas {
                    device: self.label.clone(),
                    op: "create handle".into(),
                    reason: "libcublas not found".into(),
                });
            }
            let blas = CudaBlas::new(self.stream.clone())
                .map_err(|e| CudaError::cublas(&self.label, "create handle", e))?;
            *guard = Some(blas);
        }
        match guard.as_ref() {
            Some(blas) => f(blas),
            None => Err(CudaError::invalid("cublas", "handle missing")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        let p = gemv_params(DType::Q4_K, 14336, 4096).unwrap();
        assert_eq!(
            p,
            GemvParams {
                rows: 14336,
                cols: 4096,
                row_bytes: 16 * 144,
                group_rows: 14336,
                flags: 0,
            }
        );
        assert_eq!(gemv_params(DType::F16, 7, 33).unwrap().row_bytes, 66);
        // Grouped: 16 heads of 512 rows; a group must be whole blocks of `warps` rows.
        let g = gemv_params_grouped(DType::Q8_0, 16 * 512, 128, 16, 4).unwrap();
        assert_eq!((g.rows, g.group_rows), (8192, 512));
        assert!(gemv_params_grouped(DType::Q8_0, 8192, 128, 3, 4).is_err());
        assert!(gemv_params_grouped(DType::Q8_0, 16 * 6, 128, 16, 4).is_err());
        assert!(gemv_params_grouped(DType::Q8_0, 8192, 128, 0, 4).is_err());
        assert_eq!(gemv_params(DType::MXFP4, 1, 32).unwrap().row_bytes, 17);
        assert_eq!(gemv_params(DType::Q6_K, 33, 512).unwrap().row_bytes, 420);
        assert_eq!(gemv_params(DType::Q8_0, 1000, 96).unwrap().row_bytes, 102);
        for (dtype, cols) in [
            (DType::Q4_K, 4000),
            (DType::Q6_K, 128),
            (DType::Q8_0, 33),
            (DType::MXFP4, 48),
        ] {
            let e = gemv_params(dtype, 4, cols).unwrap_err().to_string();
            assert!(e.contains("multiple of the block size"), "{e}");
        }
        assert!(
            gemv_params(DType::Q4_0, 4, 32)
                .unwrap_err()
                .to_string()
                .contains("no CUDA GEMV kernel")
        );
        assert!(gemv_params(DType::F16, 0, 32).is_err());
        assert!(gemv_params(DType::F16, 4, 0).is_err());
        assert!(gemv_params(DType::F16, 1 << 32, 8).is_err());
    }

    #[test]
    fn row_tiling_covers_every_row_once() {
        for per_block in [1u32, 4, 8] {
            for rows in [1u32, 3, 4, 5, 7, 33, 1000, 4096, 14336] {
                let cfg = gemv_config(rows, per_block);
                assert_eq!(cfg.block_dim, (per_block * 32, 1, 1));
                let warps = cfg.grid_dim.0 * per_block;
                assert!(
                    warps >= rows && warps - rows < per_block,
                    "rows {rows}: {warps} warps"
                );
            }
        }
        assert_eq!(gemv_config(14336, 4).grid_dim.0, 3584);
        assert_eq!(gemv_config(14336, 8).grid_dim.0, 1792);
        assert_eq!(quantize_config(128).grid_dim, (16, 1, 1));
        assert_eq!(quantize_config(129).grid_dim, (17, 1, 1));
        assert_eq!(quantize_config(1).block_dim, (256, 1, 1));
    }

    #[test]
    fn activation_types() {
        assert_eq!(activation_dtype(DType::F16), DType::F32);
        assert_eq!(activation_dtype(DType::BF16), DType::F32);
        for t in [DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::MXFP4] {
            assert_eq!(activation_dtype(t), DType::Q8_1);
        }
    }

    #[test]
    fn byte_accounting() {
        // 4096 x 4096 Q4_K: 4096 rows of 16 x 144 bytes, x and y in f32.
        assert_eq!(
            gemv_bytes(DType::Q4_K, 4096, 4096),
            4096 * 2304 + 4 * 4096 + 4 * 4096
        );
        assert_eq!(gemv_bytes(DType::BF16, 2, 8), 2 * 16 + 32 + 8);
    }

    #[test]
    fn reference_is_the_dequantized_dot() {
        use membound_quant::ops::quantize;
        let w = quantize(DType::F16, &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            gemv_reference(DType::F16, 2, 2, &w, &[1.0, 0.5]).unwrap(),
            vec![2.0, 5.0]
        );
        // Q8_0 weights of 0.5 against ones quantized to Q8_1: 32 * 0.5 * 1, up to the f16 scales.
        let w = quantize(DType::Q8_0, &[0.5; 64]).unwrap();
        let y = gemv_reference(DType::Q8_0, 2, 32, &w, &[1.0; 32]).unwrap();
        assert_eq!(y.len(), 2);
        assert!(y.iter().all(|v| (v - 16.0).abs() < 16.0 * 2e-3), "{y:?}");
        // x goes through Q8_1: a value below the block's resolution vanishes.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.4;
        let w = quantize(DType::Q8_0, &[1.0; 32]).unwrap();
        // 127 * f16(1/127) * 127 = 126.99; with the 0.4 kept it would be about 127.4.
        let y = gemv_reference(DType::Q8_0, 1, 32, &w, &x).unwrap()[0];
        assert!((y - 127.0).abs() < 0.02, "{y}");
    }

    #[test]
    fn reference_rejects_bad_lengths() {
        assert!(gemv_reference(DType::Q8_0, 2, 32, &[0u8; 67], &[0.0; 32]).is_err());
        assert!(gemv_reference(DType::Q8_0, 2, 32, &[0u8; 68], &[0.0; 31]).is_err());
    }
}
