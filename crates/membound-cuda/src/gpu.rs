//! [`Gpu`]: one CUDA device with its context, stream, kernels (built by NVRTC once per process
//! and loaded once per device), buffers and CUDA-event timing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr,
    DriverError, LaunchArgs, LaunchConfig, ValidAsZeroBits, sys,
};
use cudarc::nvrtc::Ptx;

use crate::attention::{AttnCache, AttnWidth, MmaRows};
use crate::error::{CudaError, Result};
use crate::nvrtc::{self, Target};
use crate::probe::{self, DeviceInfo};

/// Every kernel entry point, with the file that defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Read,
    Write,
    Copy,
    Triad,
    QuantizeQ8_1,
    GemvF16,
    GemvBf16,
    GemvQ8_0,
    GemvQ4K,
    GemvQ6K,
    GemvMxfp4,
    MoeRouter,
    MoeCombine,
    MoeGateUpQ8_0,
    MoeGateUpQ4K,
    MoeGateUpQ6K,
    MoeGateUpMxfp4,
    MoeGateUpF16,
    MoeGateUpBf16,
    MoeDownQ8_0,
    MoeDownQ4K,
    MoeDownQ6K,
    MoeDownMxfp4,
    MoeDownF16,
    MoeDownBf16,
    /// Decode attention's split kernel for a cache type and row width (attention.cu).
    Attn(AttnCache, AttnWidth),
    /// Decode attention's tensor-core split kernel (attention.cu; F16/BF16 caches).
    AttnMma(AttnCache, MmaRows),
    AttnReduce,
    DecRmsNorm,
    DecRope,
    DecCopy2d,
    DecAdd,
    DecGlu,
    DecKvWrite,
    DecQkvHeads,
    DecArgmax,
    DecDeltaConv,
    DecDeltaRule,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 60] = [
        Kernel::Read,
        Kernel::Write,
        Kernel::Copy,
        Kernel::Triad,
        Kernel::QuantizeQ8_1,
        Kernel::GemvF16,
        Kernel::GemvBf16,
        Kernel::GemvQ8_0,
        Kernel::GemvQ4K,
        Kernel::GemvQ6K,
        Kernel::GemvMxfp4,
        Kernel::MoeRouter,
        Kernel::MoeCombine,
        Kernel::MoeGateUpQ8_0,
        Kernel::MoeGateUpQ4K,
        Kernel::MoeGateUpQ6K,
        Kernel::MoeGateUpMxfp4,
        Kernel::MoeGateUpF16,
        Kernel::MoeGateUpBf16,
        Kernel::MoeDownQ8_0,
        Kernel::MoeDownQ4K,
        Kernel::MoeDownQ6K,
        Kernel::MoeDownMxfp4,
        Kernel::MoeDownF16,
        Kernel::MoeDownBf16,
        Kernel::Attn(AttnCache::F16, AttnWidth::W64),
        Kernel::Attn(AttnCache::F16, AttnWidth::W128),
        Kernel::Attn(AttnCache::F16, AttnWidth::W128H4),
        Kernel::Attn(AttnCache::F16, AttnWidth::W256),
        Kernel::Attn(AttnCache::F16, AttnWidth::W256H1),
        Kernel::Attn(AttnCache::F16, AttnWidth::W576),
        Kernel::Attn(AttnCache::Bf16, AttnWidth::W64),
        Kernel::Attn(AttnCache::Bf16, AttnWidth::W128),
        Kernel::Attn(AttnCache::Bf16, AttnWidth::W128H4),
        Kernel::Attn(AttnCache::Bf16, AttnWidth::W256),
        Kernel::Attn(AttnCache::Bf16, AttnWidth::W256H1),
        Kernel::Attn(AttnCache::Bf16, AttnWidth::W576),
        Kernel::Attn(AttnCache::Q8_0, AttnWidth::W64),
        Kernel::Attn(AttnCache::Q8_0, AttnWidth::W128),
        Kernel::Attn(AttnCache::Q8_0, AttnWidth::W128H4),
        Kernel::Attn(AttnCache::Q8_0, AttnWidth::W256),
        Kernel::Attn(AttnCache::Q8_0, AttnWidth::W256H1),
        Kernel::Attn(AttnCache::Q8_0, AttnWidth::W576),
        Kernel::AttnMma(AttnCache::F16, MmaRows::D64),
        Kernel::AttnMma(AttnCache::F16, MmaRows::D128),
        Kernel::AttnMma(AttnCache::Bf16, MmaRows::D64),
        Kernel::AttnMma(AttnCache::Bf16, MmaRows::D128),
        Kernel::AttnMma(AttnCache::F16, MmaRows::Mla576),
        Kernel::AttnMma(AttnCache::Bf16, MmaRows::Mla576),
        Kernel::AttnReduce,
        Kernel::DecRmsNorm,
        Kernel::DecRope,
        Kernel::DecCopy2d,
        Kernel::DecAdd,
        Kernel::DecGlu,
        Kernel::DecKvWrite,
        Kernel::DecQkvHeads,
        Kernel::DecArgmax,
        Kernel::DecDeltaConv,
        Kernel::DecDeltaRule,
    ];

    /// The `extern "C"` name in the kernel file.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Read => "mb_read",
            Kernel::Write => "mb_write",
            Kernel::Copy => "mb_copy",
            Kernel::Triad => "mb_triad",
            Kernel::QuantizeQ8_1 => "mb_quantize_q8_1",
            Kernel::GemvF16 => "mb_gemv_f16",
            Kernel::GemvBf16 => "mb_gemv_bf16",
            Kernel::GemvQ8_0 => "mb_gemv_q8_0",
            Kernel::GemvQ4K => "mb_gemv_q4_k",
            Kernel::GemvQ6K => "mb_gemv_q6_k",
            Kernel::GemvMxfp4 => "mb_gemv_mxfp4",
            Kernel::MoeRouter => "mb_moe_router",
            Kernel::MoeCombine => "mb_moe_combine",
            Kernel::MoeGateUpQ8_0 => "mb_moe_gate_up_q8_0",
            Kernel::MoeGateUpQ4K => "mb_moe_gate_up_q4_k",
            Kernel::MoeGateUpQ6K => "mb_moe_gate_up_q6_k",
            Kernel::MoeGateUpMxfp4 => "mb_moe_gate_up_mxfp4",
            Kernel::MoeGateUpF16 => "mb_moe_gate_up_f16",
            Kernel::MoeGateUpBf16 => "mb_moe_gate_up_bf16",
            Kernel::MoeDownQ8_0 => "mb_moe_down_q8_0",
            Kernel::MoeDownQ4K => "mb_moe_down_q4_k",
            Kernel::MoeDownQ6K => "mb_moe_down_q6_k",
            Kernel::MoeDownMxfp4 => "mb_moe_down_mxfp4",
            Kernel::MoeDownF16 => "mb_moe_down_f16",
            Kernel::MoeDownBf16 => "mb_moe_down_bf16",
            Kernel::Attn(c, w) => crate::attention::split_kernel_name(c, w),
            Kernel::AttnMma(c, r) => crate::attention::mma_kernel_name(c, r),
            Kernel::AttnReduce => "mb_attn_reduce",
            Kernel::DecRmsNorm => "mb_dec_rmsnorm",
            Kernel::DecRope => "mb_dec_rope",
            Kernel::DecCopy2d => "mb_dec_copy2d",
            Kernel::DecAdd => "mb_dec_add",
            Kernel::DecGlu => "mb_dec_glu",
            Kernel::DecKvWrite => "mb_dec_kv_write",
            Kernel::DecQkvHeads => "mb_dec_qkv_heads",
            Kernel::DecArgmax => "mb_dec_argmax",
            Kernel::DecDeltaConv => "mb_dec_delta_conv",
            Kernel::DecDeltaRule => "mb_dec_delta_rule",
        }
    }

    /// The kernel file that defines it.
    pub fn file(self) -> &'static str {
        match self {
            Kernel::Read | Kernel::Write | Kernel::Copy | Kernel::Triad => "bandwidth.cu",
            k if k.name().starts_with("mb_moe_") => "moe.cu",
            k if k.name().starts_with("mb_attn_") => "attention.cu",
            k if k.name().starts_with("mb_dec_") => "decode.cu",
            _ => "gemv.cu",
        }
    }
}

/// Buffers the operations reuse from call to call (allocated on first use, grown when needed,
/// so a timed loop never allocates after its warm-up).
#[derive(Default)]
pub(crate) struct Scratch {
    /// Q8_1 blocks of the activation vector of a quantized GEMV.
    pub(crate) xq: Option<CudaSlice<u8>>,
    /// Per-block partial sums of the last `read`, and how many blocks it ran.
    pub(crate) partials: Option<CudaSlice<u64>>,
    pub(crate) partials_used: usize,
}

/// One CUDA device: a context, its default stream, the kernels compiled for it, and the
/// operations of the suites (bandwidth: [`Gpu::read`] … ; GEMV: [`Gpu::gemv`] …).
///
/// All work goes to one stream in order; results are read with [`Gpu::download`], which
/// synchronises.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) info: DeviceInfo,
    pub(crate) label: String,
    pub(crate) target: Target,
    pub(crate) headers: String,
    functions: HashMap<Kernel, CudaFunction>,
    /// Resident blocks per SM of the streaming kernels (occupancy API, at their block size).
    pub(crate) stream_blocks_per_sm: u32,
    pub(crate) scratch: Mutex<Scratch>,
    pub(crate) blas: Mutex<Option<cudarc::cublas::CudaBlas>>,
    nvtx: Option<crate::nvtx::Nvtx>,
    /// The NVTX library used for launch ranges, or why there is none.
    nvtx_status: String,
    /// GEMV launch shape and residency, for run metadata.
    gemv_status: String,
    kernel_names: HashMap<Kernel, std::ffi::CString>,
    elapsed_v2: bool,
}

impl Gpu {
    /// Opens device `ordinal`: checks the driver, creates the context, builds the kernels for
    /// the device's own `sm_XY` (CUBIN; PTX for an older architecture when this NVRTC does not
    /// know the device) and loads them.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        let driver = probe::check_driver().map_err(CudaError::Unavailable)?;
        let count = CudaContext::device_count().map_err(|e| {
            CudaError::Unavailable(format!("cuInit / cuDeviceGetCount failed: {e:?}"))
        })?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::Unavailable(format!(
                "no CUDA device {ordinal} ({count} found)"
            )));
        }
        let nvrtc_version = nvrtc::nvrtc_version()?;
        let info = probe::device_info(ordinal, driver, Some(nvrtc_version))?;
        let label = info.label();
        let ctx = CudaContext::new(ordinal).map_err(driver_err(&label, "create context"))?;
        // One stream carries all work, so cudarc's cross-stream event tracking is not needed
        // (and its event records have no place in a captured graph). A created stream, not the
        // legacy NULL stream, because only such a stream can be captured into a CUDA graph.
        // SAFETY: no buffer of this context exists yet and every buffer is used on `stream`.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(driver_err(&label, "create stream"))?;
        let target = nvrtc::choose_target(info.sm, &nvrtc::supported_archs()?)?;
        let compiled = nvrtc::compile_cached(target)?;
        let mut modules: HashMap<&str, Arc<CudaModule>> = HashMap::new();
        for ck in compiled.iter() {
            let module = ctx
                .load_module(Ptx::from_binary(ck.image.clone()))
                .map_err(driver_err(
                    &label,
                    &format!("load module {} ({})", ck.file, target.arch()),
                ))?;
            modules.insert(ck.file, module);
        }
        let mut functions = HashMap::new();
        for k in Kernel::ALL {
            let module = modules.get(k.file()).ok_or_else(|| {
                CudaError::invalid(
                    "Gpu::new",
                    format!("kernel file {} was not compiled", k.file()),
                )
            })?;
            let f = module
                .load_function(k.name())
                .map_err(driver_err(&label, &format!("load function {}", k.name())))?;
            functions.insert(k, f);
        }
        // The GEMV, MoE and attention kernels stage tiles in shared memory: ask for the largest carveout (a
        // hint; the driver may ignore it) and record how many GEMV blocks fit on an SM.
        let warps = crate::gemv::gemv_warps();
        let mut gemv_residency = Vec::new();
        for k in Kernel::ALL.into_iter().filter(|k| {
            ["mb_gemv_", "mb_moe_", "mb_attn_"]
                .iter()
                .any(|p| k.name().starts_with(p))
        }) {
            let f = &functions[&k];
            let _ = f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                100,
            );
            if !k.name().starts_with("mb_gemv_") {
                continue;
            }
            let blocks = f
                .occupancy_max_active_blocks_per_multiprocessor(warps * 32, 0, None)
                .map_err(driver_err(&label, &format!("occupancy of {}", k.name())))?;
            gemv_residency.push(format!(
                "{} {blocks}",
                k.name().trim_start_matches("mb_gemv_")
            ));
        }
        let gemv_status = format!(
            "gemv: {warps} rows per block, {}, blocks per SM: {}",
            if crate::gemv::tiles_pipelined() {
                "tiles double-buffered (cp.async)"
            } else {
                "tiles single-buffered"
            },
            gemv_residency.join(", ")
        );
        let read = &functions[&Kernel::Read];
        let stream_blocks_per_sm = read
            .occupancy_max_active_blocks_per_multiprocessor(crate::bandwidth::STREAM_BLOCK, 0, None)
            .map_err(driver_err(&label, "occupancy of mb_read"))?
            .max(1);
        let (nvtx, nvtx_status) = match crate::nvtx::Nvtx::load() {
            Ok(n) => {
                let s = format!("NVTX ranges via {}", n.library);
                (Some(n), s)
            }
            Err(e) => (None, format!("no NVTX library ({e})")),
        };
        let kernel_names = Kernel::ALL
            .iter()
            .map(|k| (*k, std::ffi::CString::new(k.name()).unwrap_or_default()))
            .collect();
        Ok(Gpu {
            ctx,
            stream,
            info,
            label,
            target,
            headers: compiled
                .first()
                .map(|c| c.headers.clone())
                .unwrap_or_default(),
            functions,
            stream_blocks_per_sm,
            scratch: Mutex::new(Scratch::default()),
            blas: Mutex::new(None),
            nvtx,
            nvtx_status,
            gemv_status,
            kernel_names,
            elapsed_v2: probe::has_elapsed_v2(),
        })
    }

    /// The device's facts.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// What NVRTC built for this device (`sm_90` CUBIN or `compute_XY` PTX) and with which
    /// headers, for run metadata.
    pub fn build_description(&self) -> String {
        let kind = match self.target {
            Target::Cubin { .. } => "cubin",
            Target::Ptx { .. } => "ptx",
        };
        format!(
            "{} {kind}, headers: {}; {}; {}",
            self.target.arch(),
            self.headers,
            self.nvtx_status,
            self.gemv_status
        )
    }

    /// The context (for work this crate does not wrap, e.g. CUDA graphs).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every operation is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Allocates `len` zeroed elements.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(len)
            .map_err(self.err(&format!("alloc {len} x {}", std::any::type_name::<T>())))
    }

    /// Copies `data` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(data)
            .map_err(self.err(&format!("upload {} bytes", std::mem::size_of_val(data))))
    }

    /// Copies `data` into the start of an existing buffer (at least as long).
    pub fn upload_into<T: DeviceRepr>(&self, data: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        if dst.len() < data.len() {
            return Err(CudaError::invalid(
                "upload_into",
                format!("{} values into a buffer of {}", data.len(), dst.len()),
            ));
        }
        let mut view = dst.slice_mut(..data.len());
        self.stream
            .memcpy_htod(data, &mut view)
            .map_err(self.err(&format!("upload {} bytes", std::mem::size_of_val(data))))
    }

    /// Quantizes `values` on the host to `dtype` (F16, BF16, any ggml block type that
    /// `membound_quant::ops::quantize` supports) and uploads the bytes.
    pub fn upload_as(&self, dtype: membound_spec::DType, values: &[f32]) -> Result<CudaSlice<u8>> {
        let bytes = membound_quant::ops::quantize(dtype, values)?;
        self.upload(&bytes)
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download<T: DeviceRepr>(&self, buf: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(buf).map_err(self.err("download"))
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(self.err("synchronize"))
    }

    /// Device time of `iters` calls of `f`, for Criterion's `iter_custom`, as the kernels' time
    /// and not the CPU's launch rate: one warm-up call (allocations, handles), then
    /// [`graph_plan`]`(iters)` = (g, reps): the next g calls are captured into a CUDA graph,
    /// which is replayed reps times between two timing events (`CU_EVENT_DEFAULT`), and the
    /// elapsed time is scaled to `iters` calls. The graph repeats the buffers its g calls used,
    /// so a rotation over at most g copies keeps its whole working set.
    pub fn time_iters(&self, iters: u64, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
        f()?;
        self.synchronize()?;
        let (g, reps) = graph_plan(iters);
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(self.err("begin graph capture"))?;
        let captured = (0..g).try_for_each(|_| f());
        // Capture must end whatever happened inside it.
        let graph = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map_err(self.err("end graph capture / instantiate"));
        captured?;
        let graph =
            graph?.ok_or_else(|| CudaError::invalid("time_iters", "captured an empty graph"))?;
        graph.upload().map_err(self.err("upload graph"))?;
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .ctx
            .new_event(flags)
            .map_err(self.err("create timing event"))?;
        let end = self
            .ctx
            .new_event(flags)
            .map_err(self.err("create timing event"))?;
        start
            .record(&self.stream)
            .map_err(self.err("record start event"))?;
        for _ in 0..reps {
            graph.launch().map_err(self.err("launch graph"))?;
        }
        end.record(&self.stream)
            .map_err(self.err("record end event"))?;
        end.synchronize()
            .map_err(self.err("synchronize end event"))?;
        let ms = self.elapsed_ms(&start, &end)?;
        Ok(scale_to_iters(f64::from(ms.max(0.0)) / 1e3, iters, g, reps))
    }

    /// Milliseconds between two completed events: `cuEventElapsedTime_v2` where the driver has
    /// it (12.8+), else the v1 symbol (same signature and meaning).
    fn elapsed_ms(&self, start: &CudaEvent, end: &CudaEvent) -> Result<f32> {
        let mut ms = 0f32;
        // SAFETY: both events are live, were recorded on this device's stream, and `end` has
        // been synchronised; `ms` is a live local.
        // The v1 symbol (absent from the cuda-13000 bindings) has the same signature.
        type Elapsed = unsafe extern "C" fn(*mut f32, sys::CUevent, sys::CUevent) -> sys::CUresult;
        let rc = unsafe {
            if self.elapsed_v2 {
                sys::cuEventElapsedTime_v2(&mut ms, start.cu_event(), end.cu_event())
            } else {
                let f = sys::culib()
                    .get::<Elapsed>(b"cuEventElapsedTime\0")
                    .map_err(|e| CudaError::Unavailable(format!("cuEventElapsedTime: {e}")))?;
                f(&mut ms, start.cu_event(), end.cu_event())
            }
        };
        rc.result().map_err(self.err("cuEventElapsedTime"))?;
        Ok(ms)
    }

    /// Maps a driver error to one naming this device and `op`.
    pub(crate) fn err(&self, op: &str) -> impl FnOnce(DriverError) -> CudaError + use<> {
        driver_err(&self.label, op)
    }

    pub(crate) fn function(&self, k: Kernel) -> &CudaFunction {
        &self.functions[&k]
    }

    pub(crate) fn scratch(&self) -> MutexGuard<'_, Scratch> {
        self.scratch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Launches a kernel whose arguments `args` already holds, inside an NVTX range named
    /// after it (when libnvToolsExt is present).
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in number, order and type, and every
    /// buffer must be large enough for `cfg` and the parameters (each caller checks lengths).
    /// An NVTX range named after kernel `k` for as long as it lives (where NVTX loaded).
    pub(crate) fn nvtx_range(&self, k: Kernel) -> Option<crate::nvtx::Range<'_>> {
        self.nvtx.as_ref().map(|n| n.range(&self.kernel_names[&k]))
    }

    pub(crate) unsafe fn launch(
        &self,
        k: Kernel,
        mut args: LaunchArgs<'_>,
        cfg: LaunchConfig,
    ) -> Result<()> {
        let _range = self.nvtx_range(k);
        // SAFETY: guaranteed by this function's contract.
        unsafe { args.launch(cfg) }
            .map(|_| ())
            .map_err(self.err(&format!("launch {} {:?}", k.name(), cfg.grid_dim)))
    }
}

/// Calls captured in one timing graph at most: enough that per-graph overhead vanishes, few
/// enough that capture and instantiation stay in milliseconds.
pub const GRAPH_CALLS: u64 = 256;

/// How [`Gpu::time_iters`] covers `iters` calls: a graph of g = min(iters, [`GRAPH_CALLS`])
/// calls (at least 1) replayed reps = ceil(iters / g) times.
pub fn graph_plan(iters: u64) -> (u64, u64) {
    let g = iters.clamp(1, GRAPH_CALLS);
    (g, iters.max(1).div_ceil(g))
}

/// `seconds` measured for reps replays of a g-call graph, scaled to `iters` calls.
pub fn scale_to_iters(seconds: f64, iters: u64, g: u64, reps: u64) -> Duration {
    let ran = (g * reps).max(1) as f64;
    Duration::from_secs_f64(seconds * iters as f64 / ran)
}

pub(crate) fn driver_err(label: &str, op: &str) -> impl FnOnce(DriverError) -> CudaError + use<> {
    let (device, op) = (label.to_owned(), op.to_owned());
    move |source| CudaError::Driver { device, op, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_defined_in_its_file() {
        for k in Kernel::ALL {
            let src = nvrtc::KERNEL_FILES
                .iter()
                .find(|(f, _)| *f == k.file())
                .map(|(_, s)| *s)
                .unwrap_or_else(|| panic!("{} is not embedded", k.file()));
            // Declared as `extern "C" __global__ void ...` with `name(` on the next line.
            let decl = format!("\n{}(", k.name());
            let at = src
                .find(&decl)
                .unwrap_or_else(|| panic!("{} does not define {}", k.file(), k.name()));
            let previous_line = src[..at].lines().last().unwrap_or("");
            assert!(
                previous_line.starts_with("extern \"C\" __global__ void"),
                "{}: {previous_line}",
                k.name()
            );
            // Its body starts by waiting for the kernel before it (programmatic dependent
            // launch, common.cuh): a kernel without it would read that kernel's outputs early.
            let body = &src[at..];
            let open = body.find('{').expect("a kernel body");
            assert!(
                body[open + 1..]
                    .trim_start()
                    .starts_with("mb_grid_begin();"),
                "{} does not start with mb_grid_begin()",
                k.name()
            );
        }
        let names: std::collections::HashSet<_> = Kernel::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Kernel::ALL.len());
    }

    #[test]
    fn timing_graphs_cover_every_iteration() {
        assert_eq!(graph_plan(0), (1, 1));
        assert_eq!(graph_plan(1), (1, 1));
        assert_eq!(graph_plan(255), (255, 1));
        assert_eq!(graph_plan(256), (256, 1));
        assert_eq!(graph_plan(257), (256, 2));
        assert_eq!(graph_plan(1_000_000), (256, 3907));
        for iters in [1u64, 7, 256, 300, 10_000, 123_457] {
            let (g, reps) = graph_plan(iters);
            assert!(g * reps >= iters && g * (reps - 1) < iters, "{iters}");
            // 1 ms per call measured over g * reps calls scales to iters ms.
            let t = scale_to_iters((g * reps) as f64 * 1e-3, iters, g, reps);
            assert!(
                (t.as_secs_f64() - iters as f64 * 1e-3).abs() < 1e-9,
                "{iters}: {t:?}"
            );
        }
    }

    #[test]
    fn gpu_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Gpu>();
    }
}
