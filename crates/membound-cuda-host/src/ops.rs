//! [`HostGpu`]: the operations of `membound_cuda::Gpu` on the host, with the parameter structs
//! and launch geometry of `membound-cuda`, so what a GPU would run is what the tests run.

use membound_cuda::Kernel;
use membound_cuda::bandwidth::stream_config;
use membound_cuda::gemv::{
    DEFAULT_GEMV_WARPS, Q8_1_BLOCK_BYTES, activation_dtype, gemv_config, gemv_params,
    quantize_config,
};
use membound_cuda::params::{QuantizeParams, StreamParams};
use membound_spec::DType;

use crate::{Arg, HostBuffer, HostError, LoadStats, launch};

/// A pretend GPU for host launches: its SM count and resident blocks per SM size the grids of
/// the streaming kernels (small, so grid-stride loops wrap several times on small arrays).
#[derive(Clone, Copy, Debug)]
pub struct HostGpu {
    /// SMs the grid is sized for.
    pub sm_count: u32,
    /// Resident blocks per SM the grid is sized for.
    pub blocks_per_sm: u32,
}

impl Default for HostGpu {
    fn default() -> Self {
        HostGpu {
            sm_count: 2,
            blocks_per_sm: 2,
        }
    }
}

/// Load figures of a GEMV: the activation quantization (none for F16/BF16) and the GEMV.
#[derive(Clone, Copy, Debug, Default)]
pub struct GemvLoads {
    /// `mb_quantize_q8_1`.
    pub quantize: LoadStats,
    /// The GEMV kernel.
    pub gemv: LoadStats,
}

fn f32_len(b: &HostBuffer) -> usize {
    b.len_bytes() / 4
}

fn too_short(op: &str, what: &str, have: usize, need: usize) -> Result<(), HostError> {
    if have < need {
        return Err(HostError(format!(
            "{op}: {what} holds {have} bytes, needs {need}"
        )));
    }
    Ok(())
}

impl HostGpu {
    fn stream(
        &self,
        k: Kernel,
        n: usize,
        scalar: f32,
        args: Vec<Arg<'_>>,
    ) -> Result<LoadStats, HostError> {
        let cfg = stream_config(self.sm_count, self.blocks_per_sm, n);
        let p = StreamParams {
            n: n as u64,
            scalar,
            _pad: 0,
        };
        let mut args = args;
        args.push(Arg::value(&p));
        launch(k.name(), cfg, &mut args)
    }

    /// `mb_read` over `src` (f32 values); returns the checksum (the wrapping sum of the
    /// per-block partials, as `Gpu::read_result`) and the load figures.
    pub fn read(&self, src: &HostBuffer) -> Result<(u64, LoadStats), HostError> {
        let n = f32_len(src);
        let blocks = stream_config(self.sm_count, self.blocks_per_sm, n)
            .grid_dim
            .0 as usize;
        let mut partials = HostBuffer::poisoned(blocks * 8);
        let stats = self.stream(
            Kernel::Read,
            n,
            0.0,
            vec![Arg::In(src), Arg::Out(&mut partials)],
        )?;
        let sum = partials
            .to_vec::<u64>()
            .iter()
            .fold(0u64, |a, &v| a.wrapping_add(v));
        Ok((sum, stats))
    }

    /// `mb_write`: fills `dst` with `value`.
    pub fn write(&self, dst: &mut HostBuffer, value: f32) -> Result<LoadStats, HostError> {
        let n = f32_len(dst);
        self.stream(Kernel::Write, n, value, vec![Arg::Out(dst)])
    }

    /// `mb_copy`: `dst = src`.
    pub fn copy(&self, src: &HostBuffer, dst: &mut HostBuffer) -> Result<LoadStats, HostError> {
        too_short("copy", "dst", dst.len_bytes(), src.len_bytes())?;
        let n = f32_len(src);
        self.stream(Kernel::Copy, n, 0.0, vec![Arg::In(src), Arg::Out(dst)])
    }

    /// `mb_triad`: `a = fmaf(s, c, b)`.
    pub fn triad(
        &self,
        a: &mut HostBuffer,
        b: &HostBuffer,
        c: &HostBuffer,
        s: f32,
    ) -> Result<LoadStats, HostError> {
        too_short("triad", "b", b.len_bytes(), a.len_bytes())?;
        too_short("triad", "c", c.len_bytes(), a.len_bytes())?;
        let n = f32_len(a);
        self.stream(
            Kernel::Triad,
            n,
            s,
            vec![Arg::Out(a), Arg::In(b), Arg::In(c)],
        )
    }

    /// `mb_quantize_q8_1`: the first `cols` values of `x` (a multiple of 32) into Q8_1 blocks.
    pub fn quantize_q8_1(
        &self,
        x: &HostBuffer,
        cols: usize,
        xq: &mut HostBuffer,
    ) -> Result<LoadStats, HostError> {
        if cols == 0 || !cols.is_multiple_of(32) {
            return Err(HostError(format!(
                "quantize_q8_1: {cols} is not a multiple of 32"
            )));
        }
        too_short("quantize_q8_1", "x", x.len_bytes(), 4 * cols)?;
        too_short(
            "quantize_q8_1",
            "xq",
            xq.len_bytes(),
            cols / 32 * Q8_1_BLOCK_BYTES,
        )?;
        let p = QuantizeParams {
            n_blocks: (cols / 32) as u64,
        };
        let k = Kernel::QuantizeQ8_1;
        launch(
            k.name(),
            quantize_config(p.n_blocks),
            &mut [Arg::In(x), Arg::Out(xq), Arg::value(&p)],
        )
    }

    /// `y = W·x` as `Gpu::gemv` runs it: quantized types quantize x to Q8_1 first.
    pub fn gemv(
        &self,
        dtype: DType,
        rows: usize,
        cols: usize,
        w: &HostBuffer,
        x: &HostBuffer,
        y: &mut HostBuffer,
    ) -> Result<GemvLoads, HostError> {
        let err = |e: membound_cuda::CudaError| HostError(e.to_string());
        let p = gemv_params(dtype, rows, cols).map_err(err)?;
        let k = membound_cuda::gemv::kernel_for(dtype).map_err(err)?;
        too_short(
            "gemv",
            "w",
            w.len_bytes(),
            (u64::from(p.rows) * p.row_bytes) as usize,
        )?;
        too_short("gemv", "x", x.len_bytes(), 4 * cols)?;
        too_short("gemv", "y", y.len_bytes(), 4 * rows)?;
        // The host build uses gemv.cu's default GEMV_WARPS.
        let cfg = gemv_config(p.rows, DEFAULT_GEMV_WARPS);
        let mut loads = GemvLoads::default();
        if activation_dtype(dtype) == DType::F32 {
            loads.gemv = launch(
                k.name(),
                cfg,
                &mut [Arg::In(w), Arg::In(x), Arg::Out(y), Arg::value(&p)],
            )?;
            return Ok(loads);
        }
        let mut xq = HostBuffer::poisoned(cols / 32 * Q8_1_BLOCK_BYTES);
        loads.quantize = self.quantize_q8_1(x, cols, &mut xq)?;
        loads.gemv = launch(
            k.name(),
            cfg,
            &mut [Arg::In(w), Arg::In(&xq), Arg::Out(y), Arg::value(&p)],
        )?;
        Ok(loads)
    }
}
