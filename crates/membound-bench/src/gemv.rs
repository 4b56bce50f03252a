//! The dense suite's operations on each backend ([`GemvBackend`]): y = W·x with W in a ggml
//! block layout, the backend's own check (each against the arithmetic its kernels use), the
//! peers on the same bytes (candle-core's `QMatMul` on the CPU, cuBLAS for F16/BF16 on a GPU)
//! and prefill batches where the backend has a GEMM.

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use membound_cpu::CpuGemv;
use membound_cuda::CudaSlice;
use membound_spec::DType;

use crate::stream::StreamBackend;
use crate::verify::check_close;
use crate::{CpuBackend, GpuBackend};

/// GEMV on one backend. A "matrix" is one copy of W on the device; "vectors" hold x and y.
pub trait GemvBackend: StreamBackend {
    /// One copy of W.
    type Matrix;
    /// x and y (and whatever a peer needs of x).
    type Vectors;
    /// A peer's copy of W.
    type PeerMatrix;

    /// The weight types this backend's GEMV kernels support.
    fn gemv_dtypes(&self) -> Vec<DType>;
    /// Uploads one copy of W (`rows x cols` in `dtype`'s layout).
    fn matrix(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
    ) -> Result<Self::Matrix, String>;
    /// x on the device and room for `rows` outputs.
    fn vectors(&self, x: &[f32], rows: usize) -> Result<Self::Vectors, String>;
    /// y = W·x (timed).
    fn gemv(&self, m: &Self::Matrix, v: &mut Self::Vectors) -> Result<(), String>;
    /// y as computed last.
    fn output(&self, v: &Self::Vectors) -> Result<Vec<f32>, String>;
    /// Checks y against this backend's reference for these bytes.
    fn check_gemv(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
        x: &[f32],
        y: &[f32],
    ) -> Result<(), String>;

    /// The peers that take `dtype` (`candle`, `cublas`).
    fn peers(&self, dtype: DType) -> Vec<&'static str>;
    /// The peer's copy of W.
    fn peer_matrix(
        &self,
        peer: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
    ) -> Result<Self::PeerMatrix, String>;
    /// y = W·x by the peer (timed).
    fn peer_gemv(
        &self,
        peer: &str,
        m: &Self::PeerMatrix,
        v: &mut Self::Vectors,
    ) -> Result<(), String>;
    /// The peer's tolerance against our y, at the output's scale (its arithmetic differs).
    fn peer_tolerance(&self, peer: &str) -> f32;

    /// Runs a prefill batch `xs` (`batch` rows of `cols`) through `m`, or `None` where this
    /// backend has no GEMM; returns the last row's outputs.
    fn gemm(&self, m: &Self::Matrix, xs: &[f32], batch: usize) -> Option<Result<Vec<f32>, String>>;
}

/// The CPU's x and y (and x as a candle tensor for the peer).
pub struct CpuVectors {
    x: Vec<f32>,
    y: Vec<f32>,
    x_tensor: Option<candle_core::Tensor>,
}

fn candle_type(dtype: DType) -> Option<GgmlDType> {
    Some(match dtype {
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q4_K => GgmlDType::Q4K,
        DType::Q6_K => GgmlDType::Q6K,
        _ => return None,
    })
}

/// The CPU reference for a sample of rows: float weights in f64 against x itself; quantized
/// weights by ggml's scalar dot on the activation quantized as the CPU kernels quantize it.
fn cpu_reference_rows(
    dtype: DType,
    w: &[u8],
    cols: usize,
    x: &[f32],
    rows: &[usize],
) -> Result<Vec<f32>, String> {
    use membound_quant::ops;
    let e = |e: ops::QuantError| e.to_string();
    let row_bytes = dtype
        .bytes_for(cols as u64)
        .ok_or("cols not whole blocks")? as usize;
    let row = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
    if matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return rows
            .iter()
            .map(|&r| {
                let wr = ops::dequantize(dtype, row(r)).map_err(e)?;
                Ok(wr
                    .iter()
                    .zip(x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>() as f32)
            })
            .collect();
    }
    let act = ops::quantize(ops::vec_dot_type(dtype), x).map_err(e)?;
    rows.iter()
        .map(|&r| ops::vec_dot(dtype, row(r), &act).map_err(e))
        .collect()
}

/// About 60 rows spread over the matrix, the last included.
pub fn sample_rows(rows: usize) -> Vec<usize> {
    let mut s: Vec<usize> = (0..rows).step_by((rows / 61).max(1)).collect();
    if s.last() != Some(&(rows - 1)) {
        s.push(rows - 1);
    }
    s
}

impl GemvBackend for CpuBackend {
    type Matrix = CpuGemv;
    type Vectors = CpuVectors;
    type PeerMatrix = QMatMul;

    fn gemv_dtypes(&self) -> Vec<DType> {
        membound_cpu::SUPPORTED_DTYPES.to_vec()
    }

    fn matrix(&self, dtype: DType, rows: usize, cols: usize, w: &[u8]) -> Result<CpuGemv, String> {
        CpuGemv::new(dtype, rows, cols, w.to_vec()).map_err(|e| e.to_string())
    }

    fn vectors(&self, x: &[f32], rows: usize) -> Result<CpuVectors, String> {
        Ok(CpuVectors {
            x: x.to_vec(),
            y: vec![0.0; rows],
            x_tensor: None,
        })
    }

    fn gemv(&self, m: &CpuGemv, v: &mut CpuVectors) -> Result<(), String> {
        m.run(&self.pool, &v.x, &mut v.y).map_err(|e| e.to_string())
    }

    fn output(&self, v: &CpuVectors) -> Result<Vec<f32>, String> {
        Ok(v.y.clone())
    }

    fn check_gemv(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
        x: &[f32],
        y: &[f32],
    ) -> Result<(), String> {
        let sample = sample_rows(rows);
        let want = cpu_reference_rows(dtype, w, cols, x, &sample)?;
        let got: Vec<f32> = sample.iter().map(|&r| y[r]).collect();
        check_close(&format!("{dtype} {rows}x{cols}"), &got, &want, 2e-3)
    }

    fn peers(&self, dtype: DType) -> Vec<&'static str> {
        if candle_type(dtype).is_some() {
            vec!["candle"]
        } else {
            Vec::new()
        }
    }

    fn peer_matrix(
        &self,
        _peer: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
    ) -> Result<QMatMul, String> {
        let gd = candle_type(dtype).ok_or_else(|| format!("candle has no {dtype}"))?;
        let e = |e: candle_core::Error| e.to_string();
        let storage =
            QStorage::from_data(std::borrow::Cow::Borrowed(w), &candle_core::Device::Cpu, gd)
                .map_err(e)?;
        let qt = QTensor::new(storage, (rows, cols)).map_err(e)?;
        QMatMul::from_qtensor(qt).map_err(e)
    }

    fn peer_gemv(&self, _peer: &str, m: &QMatMul, v: &mut CpuVectors) -> Result<(), String> {
        use candle_core::Module;
        let e = |e: candle_core::Error| e.to_string();
        if v.x_tensor.is_none() {
            v.x_tensor = Some(
                candle_core::Tensor::from_slice(&v.x, (1, v.x.len()), &candle_core::Device::Cpu)
                    .map_err(e)?,
            );
        }
        let x = v.x_tensor.as_ref().ok_or("no x tensor")?;
        let y = m
            .forward(x)
            .and_then(|y| y.flatten_all())
            .and_then(|y| y.to_vec1::<f32>())
            .map_err(e)?;
        v.y = y;
        Ok(())
    }

    fn peer_tolerance(&self, _peer: &str) -> f32 {
        // candle quantizes the activation its own way.
        2e-2
    }

    fn gemm(&self, m: &CpuGemv, xs: &[f32], batch: usize) -> Option<Result<Vec<f32>, String>> {
        let rows = m.rows();
        let mut ys = vec![0f32; batch * rows];
        Some(
            m.run_batch(&self.pool, xs, &mut ys)
                .map(|_| ys[(batch - 1) * rows..].to_vec())
                .map_err(|e| e.to_string()),
        )
    }
}

/// A GPU matrix: the weights, their type and shape.
pub struct GpuMatrix {
    dtype: DType,
    rows: usize,
    cols: usize,
    w: CudaSlice<u8>,
}

/// A GPU's x and y, and x in a half type for the cuBLAS peer (made on first use).
pub struct GpuVectors {
    x_host: Vec<f32>,
    x: CudaSlice<f32>,
    y: CudaSlice<f32>,
    x_half: Option<(DType, CudaSlice<u8>)>,
}

fn cuda_err(e: membound_cuda::CudaError) -> String {
    e.to_string()
}

impl GemvBackend for GpuBackend {
    type Matrix = GpuMatrix;
    type Vectors = GpuVectors;
    type PeerMatrix = GpuMatrix;

    fn gemv_dtypes(&self) -> Vec<DType> {
        membound_cuda::gemv::GEMV_DTYPES.to_vec()
    }

    fn matrix(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
    ) -> Result<GpuMatrix, String> {
        Ok(GpuMatrix {
            dtype,
            rows,
            cols,
            w: self.gpu.upload(w).map_err(cuda_err)?,
        })
    }

    fn vectors(&self, x: &[f32], rows: usize) -> Result<GpuVectors, String> {
        Ok(GpuVectors {
            x_host: x.to_vec(),
            x: self.gpu.upload(x).map_err(cuda_err)?,
            y: self.gpu.alloc_zeros::<f32>(rows).map_err(cuda_err)?,
            x_half: None,
        })
    }

    fn gemv(&self, m: &GpuMatrix, v: &mut GpuVectors) -> Result<(), String> {
        self.gpu
            .gemv(m.dtype, m.rows, m.cols, &m.w, &v.x, &mut v.y)
            .map_err(cuda_err)
    }

    fn output(&self, v: &GpuVectors) -> Result<Vec<f32>, String> {
        self.gpu.download(&v.y).map_err(cuda_err)
    }

    fn check_gemv(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
        x: &[f32],
        y: &[f32],
    ) -> Result<(), String> {
        check_cuda_gemv(dtype, rows, cols, w, x, y)
    }

    fn peers(&self, dtype: DType) -> Vec<&'static str> {
        if matches!(dtype, DType::F16 | DType::BF16) {
            vec!["cublas"]
        } else {
            Vec::new()
        }
    }

    fn peer_matrix(
        &self,
        _peer: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &[u8],
    ) -> Result<GpuMatrix, String> {
        self.matrix(dtype, rows, cols, w)
    }

    fn peer_gemv(&self, _peer: &str, m: &GpuMatrix, v: &mut GpuVectors) -> Result<(), String> {
        if v.x_half.as_ref().is_none_or(|(t, _)| *t != m.dtype) {
            let xh = self.gpu.upload_as(m.dtype, &v.x_host).map_err(cuda_err)?;
            v.x_half = Some((m.dtype, xh));
        }
        let (_, xh) = v.x_half.as_ref().ok_or("no half x")?;
        self.gpu
            .cublas_gemv(m.dtype, m.rows, m.cols, &m.w, xh, &mut v.y)
            .map_err(cuda_err)
    }

    fn peer_tolerance(&self, _peer: &str) -> f32 {
        // cuBLAS reads x rounded to the weights' half type.
        1e-2
    }

    fn gemm(&self, _m: &GpuMatrix, _xs: &[f32], _batch: usize) -> Option<Result<Vec<f32>, String>> {
        None
    }
}

/// Checks y of the CUDA GEMV kernels (on a GPU or executed on the host) against their own
/// arithmetic and rounding bound (`membound_cuda::gemv::gemv_expected`), on a sample of rows:
/// the whole reference of a 28672x8192 matrix costs seconds of host time per type.
pub fn check_cuda_gemv(
    dtype: DType,
    rows: usize,
    cols: usize,
    w: &[u8],
    x: &[f32],
    y: &[f32],
) -> Result<(), String> {
    let sample = sample_rows(rows);
    let row_bytes = dtype
        .bytes_for(cols as u64)
        .ok_or("cols not whole blocks")? as usize;
    let w_sample: Vec<u8> = sample
        .iter()
        .flat_map(|&r| &w[r * row_bytes..(r + 1) * row_bytes])
        .copied()
        .collect();
    let want = membound_cuda::gemv::gemv_expected(dtype, sample.len(), cols, &w_sample, x)
        .map_err(cuda_err)?;
    let got: Vec<f32> = sample.iter().map(|&r| y[r]).collect();
    membound_cuda::gemv::check_rows(&format!("{dtype} {rows}x{cols}"), &got, &want).map(|_| ())
}
