//! GEMV `y = W·x` and GEMM `Y[b] = W·X[b]` over row-major ggml weights, rows split across a
//! rayon pool, activations quantized once per call the way ggml does ([`crate::act_dtype`]).

use membound_quant::ops;
use membound_spec::DType;
use rayon::ThreadPool;
use rayon::prelude::*;

use crate::dot::{DotKernel, act_dtype, check_len, row_bytes};
use crate::scratch::Reuse;
use crate::{CpuError, Isa};

/// A weight matrix ready for GEMV/GEMM: `rows × cols` values of `dtype`, row-major, each row a
/// run of ggml blocks (byte-identical to a GGUF tensor of shape `[cols, rows]`).
#[derive(Debug, Clone)]
pub struct CpuGemv {
    dtype: DType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    weights: Vec<u8>,
    /// The quantized activations of the last call, refilled by the next (the next token).
    scratch: Reuse<Vec<u8>>,
}

/// The activation rows `kernel` reads for the rows of `xs` (`cols` values each): `xs` itself
/// for float weights, else each row quantized into `buf` (with its blocks' f32 scales where the
/// kernel wants them). Returns the bytes and the stride of one row.
pub(crate) fn act_rows<'a>(
    kernel: &DotKernel,
    xs: &'a [f32],
    cols: usize,
    buf: &'a mut Vec<u8>,
) -> Result<(&'a [u8], usize), CpuError> {
    let act = kernel.act_dtype();
    if act == DType::F32 {
        // SAFETY: any f32 slice may be viewed as its bytes (u8 has alignment 1 and every bit
        // pattern is valid); the length is the slice's size in bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(xs.as_ptr().cast::<u8>(), size_of_val(xs)) };
        return Ok((bytes, 4 * cols));
    }
    buf.clear();
    for x in xs.chunks_exact(cols.max(1)) {
        let start = buf.len();
        ops::quantize_extend(act, x, buf)?;
        if kernel.act_scales() {
            DotKernel::extend_act(buf, start);
        }
    }
    let rows = xs.len() / cols.max(1);
    let stride = buf.len() / rows.max(1);
    Ok((&buf[..], stride))
}

/// Byte budget of one GEMM weight tile (rows kept hot while a batch tile streams past).
const ROW_TILE_BYTES: usize = 64 << 10;
/// Byte budget of one GEMM activation tile.
const BATCH_TILE_BYTES: usize = 256 << 10;

impl CpuGemv {
    /// Wraps stored weight bytes; checks the type is supported and the length is
    /// `rows × cols` values.
    pub fn new(dtype: DType, rows: usize, cols: usize, weights: Vec<u8>) -> Result<Self, CpuError> {
        act_dtype(dtype).ok_or(CpuError::Unsupported(dtype))?;
        let row_bytes = row_bytes(dtype, cols).ok_or(CpuError::NotBlockMultiple { dtype, cols })?;
        check_len("weight matrix", rows * row_bytes, weights.len())?;
        Ok(Self {
            dtype,
            rows,
            cols,
            row_bytes,
            weights,
            scratch: Reuse::default(),
        })
    }

    /// Quantizes (or converts) row-major `rows × cols` f32 weights to `dtype`.
    pub fn quantize(dtype: DType, rows: usize, cols: usize, w: &[f32]) -> Result<Self, CpuError> {
        act_dtype(dtype).ok_or(CpuError::Unsupported(dtype))?;
        row_bytes(dtype, cols).ok_or(CpuError::NotBlockMultiple { dtype, cols })?;
        check_len("f32 weight matrix", rows * cols, w.len())?;
        Self::new(dtype, rows, cols, ops::quantize(dtype, w)?)
    }

    /// The weight type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The stored weight bytes.
    pub fn weights(&self) -> &[u8] {
        &self.weights
    }

    /// Bytes of one stored row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// `y = W·x` on the [`Isa::detect`] path.
    pub fn run(&self, pool: &ThreadPool, x: &[f32], y: &mut [f32]) -> Result<(), CpuError> {
        self.run_with(pool, Isa::detect(), x, y)
    }

    /// `y = W·x` on `isa`: `x` holds `cols` values, `y` receives `rows`. Rows are split into
    /// contiguous runs across the pool; `x` is quantized once, into a buffer this matrix keeps
    /// (no allocation from the second call on).
    pub fn run_with(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        x: &[f32],
        y: &mut [f32],
    ) -> Result<(), CpuError> {
        check_len("GEMV input x", self.cols, x.len())?;
        self.run_grouped_with(pool, isa, 1, x, y)
    }

    /// Grouped GEMV on `isa`: the rows form `groups` equal groups and group `g`'s rows take
    /// input `g` — `xs` holds `groups × cols` values, `y` receives `rows` (a stack of per-head
    /// matrices, such as MLA's per-head `W_UK` and `W_UV`, in one pass over the pool).
    pub fn run_grouped_with(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        groups: usize,
        xs: &[f32],
        y: &mut [f32],
    ) -> Result<(), CpuError> {
        let kernel = DotKernel::new(self.dtype, isa)?;
        if groups == 0 || !self.rows.is_multiple_of(groups) {
            return Err(CpuError::Shape(format!(
                "{} rows do not form {groups} equal groups",
                self.rows
            )));
        }
        check_len("grouped GEMV inputs", groups * self.cols, xs.len())?;
        check_len("GEMV output y", self.rows, y.len())?;
        let mut buf = self.scratch.lock();
        let (acts, stride) = act_rows(&kernel, xs, self.cols, &mut buf)?;
        self.rows_with(pool, &kernel, acts, stride, y);
        Ok(())
    }

    /// `y[r] = W[r]·act(r / (rows / groups))`, where activation row g is
    /// `acts[g * stride..][..stride]`; rows split into contiguous runs.
    fn rows_with(
        &self,
        pool: &ThreadPool,
        kernel: &DotKernel,
        acts: &[u8],
        stride: usize,
        y: &mut [f32],
    ) {
        let per_task = self
            .rows
            .div_ceil(4 * pool.current_num_threads().max(1))
            .max(1);
        let groups = (acts.len() / stride.max(1)).max(1);
        let (rb, per_group) = (self.row_bytes, self.rows / groups);
        pool.install(|| {
            y.par_chunks_mut(per_task).enumerate().for_each(|(t, ys)| {
                // Runs of rows within one group, four rows per kernel call.
                let (first, end) = (t * per_task, t * per_task + ys.len());
                let mut r = first;
                while r < end {
                    let g = r / per_group;
                    let run_end = end.min((g + 1) * per_group);
                    kernel.dot_rows_unchecked(
                        &self.weights[r * rb..run_end * rb],
                        rb,
                        &acts[g * stride..(g + 1) * stride],
                        &mut ys[r - first..run_end - first],
                    );
                    r = run_end;
                }
            })
        });
    }

    /// GEMM for prefill on the [`Isa::detect`] path; see [`CpuGemv::run_batch_with`].
    pub fn run_batch(&self, pool: &ThreadPool, xs: &[f32], ys: &mut [f32]) -> Result<(), CpuError> {
        self.run_batch_with(pool, Isa::detect(), xs, ys)
    }

    /// `Y[b] = W·X[b]` for a batch: `xs` is `batch × cols` row-major, `ys` receives
    /// `batch × rows` row-major (`batch = xs.len() / cols`). Work is tiled into (row tile ×
    /// batch tile) blocks across the pool; within a block each weight row is read once and
    /// dotted with every activation of the tile while it is in cache.
    pub fn run_batch_with(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        xs: &[f32],
        ys: &mut [f32],
    ) -> Result<(), CpuError> {
        let kernel = DotKernel::new(self.dtype, isa)?;
        if xs.len().checked_rem(self.cols) != Some(0) {
            return Err(CpuError::Length {
                what: "GEMM input X (a multiple of cols)",
                expected: self.cols,
                got: xs.len(),
            });
        }
        let batch = xs.len() / self.cols;
        check_len("GEMM output Y", batch * self.rows, ys.len())?;
        if batch == 0 || self.rows == 0 {
            return Ok(());
        }
        let act_rb =
            row_bytes(kernel.act_dtype(), self.cols).ok_or(CpuError::NotBlockMultiple {
                dtype: kernel.act_dtype(),
                cols: self.cols,
            })?;
        let acts: Vec<Activations<'_>> = pool.install(|| {
            xs.par_chunks(self.cols)
                .map(|x| Activations::new(&kernel, x))
                .collect::<Result<_, _>>()
        })?;
        let row_tile = (ROW_TILE_BYTES / self.row_bytes.max(1)).clamp(1, 64);
        let batch_tile = (BATCH_TILE_BYTES / act_rb.max(1)).clamp(1, 64);
        let row_tiles = self.rows.div_ceil(row_tile);
        let batch_tiles = batch.div_ceil(batch_tile);
        let out = OutPtr(ys.as_mut_ptr());
        let rows = self.rows;
        let rb = self.row_bytes;
        pool.install(|| {
            (0..row_tiles * batch_tiles)
                .into_par_iter()
                .for_each(|task| {
                    let (rt, bt) = (task / batch_tiles, task % batch_tiles);
                    let r_range = rt * row_tile..((rt + 1) * row_tile).min(rows);
                    let b_range = bt * batch_tile..((bt + 1) * batch_tile).min(batch);
                    for r in r_range {
                        let w_row = &self.weights[r * rb..(r + 1) * rb];
                        for b in b_range.clone() {
                            let v = kernel.dot_unchecked(w_row, acts[b].bytes());
                            // SAFETY: b < batch and r < rows, so the index is inside `ys`
                            // (checked to hold batch × rows values above); tasks own disjoint
                            // (row, batch) tiles, so no two threads write one element, and `ys`
                            // stays mutably borrowed until `install` returns.
                            unsafe { out.write(b * rows + r, v) };
                        }
                    }
                })
        });
        Ok(())
    }

    /// Bytes a GEMV moves (the one convention): the stored weight bytes (scales included)
    /// read once, `x` read as `cols` f32, `y` written as `rows` f32. The quantized copy of `x`
    /// is cache-resident and not counted. Unsupported types or partial blocks round up.
    pub fn bytes_moved(dtype: DType, rows: usize, cols: usize) -> u64 {
        Self::gemm_bytes_moved(dtype, rows, cols, 1)
    }

    /// Bytes a GEMM over `batch` activations moves: weights once, `batch × cols` f32 read,
    /// `batch × rows` f32 written (the GEMV convention with the weights shared).
    pub fn gemm_bytes_moved(dtype: DType, rows: usize, cols: usize, batch: usize) -> u64 {
        membound_spec::traffic::gemm_bytes(dtype, rows as u64, cols as u64, batch as u64)
    }
}

/// The activation row a kernel reads: `x` itself for float weights, else its quantized copy.
pub(crate) enum Activations<'a> {
    F32(&'a [f32]),
    Quant(Vec<u8>),
}

impl<'a> Activations<'a> {
    /// `x` as `kernel` reads it: f32 as is, else quantized to its activation type (with the
    /// blocks' f32 scales appended where the kernel wants them).
    pub(crate) fn new(kernel: &DotKernel, x: &'a [f32]) -> Result<Self, CpuError> {
        let act = kernel.act_dtype();
        Ok(if act == DType::F32 {
            Activations::F32(x)
        } else {
            let mut q = ops::quantize(act, x)?;
            if kernel.act_scales() {
                DotKernel::extend_act(&mut q, 0);
            }
            Activations::Quant(q)
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: any f32 slice may be viewed as its bytes (u8 has alignment 1 and every
            // bit pattern is valid); the length is the slice's size in bytes.
            Activations::F32(x) => unsafe {
                std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), size_of_val(*x))
            },
            Activations::Quant(v) => v,
        }
    }
}

/// The output pointer of a GEMM (or a MoE pass), shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

// SAFETY: tasks write disjoint elements only (see `run_batch_with`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `i` must be in bounds of the borrowed output and written by no other thread.
    pub(crate) unsafe fn write(self, i: usize, v: f32) {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(i).write(v) }
    }
}
