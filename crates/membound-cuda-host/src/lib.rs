//! The CUDA kernels of `kernels/*.cu`, executed on the CPU.
//!
//! The same sources NVRTC builds for a GPU are compiled by the host C++ compiler against
//! `host/cuda_host.h`, a shim of the part of the CUDA execution model the kernels use (grid and
//! block indices; each thread a fiber; warps of 32 lanes meeting in lockstep for shuffles;
//! `__syncthreads` and `__shared__` per block, shared memory poisoned at each block start;
//! atomics; `__dp4a`; f16 conversions). Every global load goes through `mb_ld` (common.cuh),
//! which here is bounds-checked against the launch's buffers and counted in 32-byte sectors per
//! warp-wide request ([`LoadStats`]), the coalescing figures ncu reports. Output buffers carry
//! guard bytes that are checked after each launch.
//!
//! [`HostGpu`] offers the operations of `membound_cuda::Gpu` with the same parameter structs and
//! launch geometry (taken from `membound-cuda`), so a kernel and its host-side set-up are tested
//! together against the CPU reference in `cargo test`, on any machine with a C++ compiler.
//! Siblings: `membound-cuda` (the GPU backend), `membound-quant` and `membound-cpu` (references).

pub mod attention;
mod buffer;
pub mod decode;
mod exec;
pub mod moe;
pub mod ops;

use std::ffi::{CString, c_char, c_void};

pub use attention::HostAttn;
pub use buffer::HostBuffer;
pub use decode::HostStep;
pub use membound_cuda::LaunchConfig;
pub use moe::HostMoe;
pub use ops::HostGpu;

/// Global-load figures of one or more launches (see the crate docs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Warp-wide load requests: the k-th load of every lane of a warp together.
    pub requests: u64,
    /// Distinct 32-byte sectors those requests touched.
    pub sectors: u64,
    /// Bytes the lanes asked for.
    pub bytes_requested: u64,
    /// Loads issued by single lanes.
    pub lane_loads: u64,
    /// Most bytes one thread loaded between two synchronisations (`__syncthreads`, a warp
    /// collective, its end): an upper bound on the bytes it can have in flight at once (loads
    /// consumed before the next synchronisation hold fewer).
    pub max_bytes_between_syncs: u64,
    /// Stretches between synchronisations in which a thread loaded anything.
    pub load_intervals: u64,
}

impl LoadStats {
    /// Sectors an ideal access pattern needs: bytes requested / 32.
    pub fn ideal_sectors(&self) -> f64 {
        self.bytes_requested as f64 / 32.0
    }

    /// Sectors touched per ideal sector (1.0 = perfectly coalesced; ncu's "sectors/request"
    /// divided by the ideal for the request size).
    pub fn sector_ratio(&self) -> f64 {
        if self.bytes_requested == 0 {
            return 0.0;
        }
        self.sectors as f64 / self.ideal_sectors()
    }

    /// Sectors per warp-wide request (ncu: `l1tex__t_sectors_pipe_lsu_mem_global_op_ld /
    /// l1tex__t_requests_pipe_lsu_mem_global_op_ld`).
    pub fn sectors_per_request(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.sectors as f64 / self.requests as f64
    }

    /// Bytes per load of one lane (the load width the kernel uses on average).
    pub fn bytes_per_lane_load(&self) -> f64 {
        if self.lane_loads == 0 {
            return 0.0;
        }
        self.bytes_requested as f64 / self.lane_loads as f64
    }

    /// Mean bytes a thread loaded between two synchronisations.
    pub fn bytes_between_syncs(&self) -> f64 {
        if self.load_intervals == 0 {
            return 0.0;
        }
        self.bytes_requested as f64 / self.load_intervals as f64
    }

    /// Adds another launch's figures.
    pub fn add(&mut self, other: LoadStats) {
        self.requests += other.requests;
        self.sectors += other.sectors;
        self.bytes_requested += other.bytes_requested;
        self.lane_loads += other.lane_loads;
        self.max_bytes_between_syncs = self
            .max_bytes_between_syncs
            .max(other.max_bytes_between_syncs);
        self.load_intervals += other.load_intervals;
    }
}

/// A failed host launch: the kernel, and what went wrong (a fault inside the kernel, a
/// deadlock, an overrun of an output buffer, no C++ compiler at build time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostError {}

/// One kernel argument, in the kernel's parameter order.
pub enum Arg<'a> {
    /// A buffer the kernel only reads (passed as its address).
    In(&'a HostBuffer),
    /// A buffer the kernel writes (passed as its address; guards checked after the launch).
    Out(&'a mut HostBuffer),
    /// A value passed by value: a `#[repr(C)]` parameter struct of `membound_cuda::params`
    /// or a scalar, exactly as the kernel declares it.
    Value(*const c_void, std::marker::PhantomData<&'a ()>),
}

impl<'a> Arg<'a> {
    /// A by-value argument.
    pub fn value<T: Copy>(v: &'a T) -> Arg<'a> {
        Arg::Value((v as *const T).cast(), std::marker::PhantomData)
    }
}

#[repr(C)]
struct RawBuffer {
    ptr: *const c_void,
    bytes: usize,
}

#[cfg(not(mb_host_missing))]
unsafe extern "C" {
    fn mb_host_has_kernel(name: *const c_char) -> i32;
    fn mb_host_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        params: *mut *mut c_void,
        buffers: *const RawBuffer,
        n_buffers: usize,
        stats: *mut LoadStats,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// Whether the host build has a kernel of this name (false without a C++ compiler).
pub fn has_kernel(name: &str) -> bool {
    #[cfg(mb_host_missing)]
    {
        let _ = name;
        false
    }
    #[cfg(not(mb_host_missing))]
    {
        let Ok(c) = CString::new(name) else {
            return false;
        };
        // SAFETY: a NUL-terminated name; the function only looks it up.
        unsafe { mb_host_has_kernel(c.as_ptr()) != 0 }
    }
}

/// Whether kernels can run on this machine's CPU (a C++ compiler was found at build time);
/// `Err` says why not.
pub fn available() -> Result<(), HostError> {
    if cfg!(mb_host_missing) {
        Err(HostError(
            "no host C++ compiler when membound-cuda-host was built: kernels cannot run on the CPU"
                .into(),
        ))
    } else {
        Ok(())
    }
}

/// Launches kernel `name` with `cfg` (dynamic shared memory is not supported) and `args`, as
/// `cuLaunchKernel` would, and returns its global-load figures.
pub fn launch(name: &str, cfg: LaunchConfig, args: &mut [Arg<'_>]) -> Result<LoadStats, HostError> {
    available()?;
    if cfg.shared_mem_bytes != 0 {
        return Err(HostError(format!(
            "{name}: dynamic shared memory is not supported on the host"
        )));
    }
    let name_c = CString::new(name).map_err(|_| HostError(format!("bad kernel name {name:?}")))?;
    // The address of each buffer, kept where params can point at it.
    let mut addrs: Vec<*const c_void> = Vec::with_capacity(args.len());
    let mut buffers = Vec::new();
    for a in args.iter_mut() {
        match a {
            Arg::In(b) => {
                addrs.push(b.as_ptr().cast());
                buffers.push(RawBuffer {
                    ptr: b.as_ptr().cast(),
                    bytes: b.len_bytes(),
                });
            }
            Arg::Out(b) => {
                addrs.push(b.as_mut_ptr().cast());
                buffers.push(RawBuffer {
                    ptr: b.as_ptr().cast(),
                    bytes: b.len_bytes(),
                });
            }
            Arg::Value(..) => addrs.push(std::ptr::null()),
        }
    }
    let mut params: Vec<*mut c_void> = args
        .iter()
        .zip(addrs.iter_mut())
        .map(|(a, addr)| match a {
            Arg::Value(p, _) => p.cast_mut(),
            _ => (addr as *mut *const c_void).cast(),
        })
        .collect();
    let grid = [cfg.grid_dim.0, cfg.grid_dim.1, cfg.grid_dim.2];
    let block = [cfg.block_dim.0, cfg.block_dim.1, cfg.block_dim.2];
    let mut stats = LoadStats::default();
    let mut err = vec![0 as c_char; 1024];
    #[cfg(mb_host_missing)]
    let rc = {
        let _ = (
            &name_c,
            &mut params,
            &grid,
            &block,
            &buffers,
            &mut stats,
            &mut err,
        );
        1
    };
    #[cfg(not(mb_host_missing))]
    // SAFETY: params[i] points at the i-th argument's value (a buffer address held in `addrs`,
    // or the caller's value), which outlive the call; the kernel's parameter list is the
    // caller's contract, as with cuLaunchKernel; buffers lists every buffer passed.
    let rc = unsafe {
        mb_host_launch(
            name_c.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            params.as_mut_ptr(),
            buffers.as_ptr(),
            buffers.len(),
            &mut stats,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        // SAFETY: the runtime wrote a NUL-terminated message into err (zero-filled otherwise).
        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        return Err(HostError(msg.to_string_lossy().into_owned()));
    }
    for a in args.iter() {
        if let Arg::Out(b) = a
            && let Err(e) = b.check_guards()
        {
            return Err(HostError(format!("{name}: {e}")));
        }
    }
    Ok(stats)
}
