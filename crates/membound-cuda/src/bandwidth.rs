//! The bandwidth suite's operations on one GPU (`kernels/bandwidth.cu`): read, write, copy,
//! triad over f32 arrays, and the driver's device-to-device copy as the built-in peer, with one
//! byte convention ([`bytes_moved`]).

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use crate::error::{CudaError, Result};
use crate::gpu::{Gpu, Kernel};
use crate::params::StreamParams;

/// Threads per block of the streaming kernels (`STREAM_BLOCK` in bandwidth.cu).
pub const STREAM_BLOCK: u32 = 256;

/// A streaming operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamOp {
    /// Sum every word of one array (a reduction; one array read).
    Read,
    /// Fill one array with a value (one array written).
    Write,
    /// `dst = src` (one read, one write).
    Copy,
    /// `a = b + s*c` (two reads, one write).
    Triad,
    /// The driver's `cuMemcpyDtoD` (one read, one write), the peer of [`StreamOp::Copy`].
    DriverCopy,
}

impl StreamOp {
    /// Every operation.
    pub const ALL: [StreamOp; 5] = [
        StreamOp::Read,
        StreamOp::Write,
        StreamOp::Copy,
        StreamOp::Triad,
        StreamOp::DriverCopy,
    ];

    /// Lower-case name for benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            StreamOp::Read => "read",
            StreamOp::Write => "write",
            StreamOp::Copy => "copy",
            StreamOp::Triad => "triad",
            StreamOp::DriverCopy => "dtod",
        }
    }

    /// The operation by the byte convention of `membound_spec::traffic` (the driver's copy
    /// moves what the copy kernel moves).
    pub fn traffic(self) -> membound_spec::traffic::StreamOp {
        use membound_spec::traffic::StreamOp as T;
        match self {
            StreamOp::Read => T::Read,
            StreamOp::Write => T::Write,
            StreamOp::Copy | StreamOp::DriverCopy => T::Copy,
            StreamOp::Triad => T::Triad,
        }
    }

    /// Arrays moved across the memory bus once per call (BabelStream's weights).
    pub fn arrays_moved(self) -> u64 {
        self.traffic().arrays()
    }
}

/// Bytes one call of `op` moves when each array is `array_bytes` long: read 1x, write 1x,
/// copy 2x, triad 3x (design.md "Byte accounting": everything that crosses the bus once; the
/// read kernel's per-block partials are a few KB and not counted).
pub fn bytes_moved(op: StreamOp, array_bytes: u64) -> u64 {
    op.arrays_moved() * array_bytes
}

/// Grid of a streaming kernel: enough blocks to fill the GPU once (SM count x resident blocks
/// per SM), fewer when the array has fewer 16-byte vectors than that many threads; at least 1.
pub fn stream_grid(sm_count: u32, blocks_per_sm: u32, n_f32: u64) -> u32 {
    let full = u64::from(sm_count.max(1)) * u64::from(blocks_per_sm.max(1));
    let needed = (n_f32 / 4).div_ceil(u64::from(STREAM_BLOCK)).max(1);
    full.min(needed).min(u64::from(i32::MAX as u32)) as u32
}

/// The CPU reference of [`Gpu::read`]'s checksum: the wrapping sum of every f32's bit pattern.
pub fn read_checksum(values: &[f32]) -> u64 {
    values
        .iter()
        .fold(0u64, |acc, v| acc.wrapping_add(u64::from(v.to_bits())))
}

/// The CPU reference of [`Gpu::triad`] (`fmaf(s, c, b)`, exactly as the kernel computes it).
pub fn triad_reference(b: &[f32], c: &[f32], s: f32) -> Vec<f32> {
    b.iter().zip(c).map(|(&b, &c)| s.mul_add(c, b)).collect()
}

fn check_len(op: &'static str, what: &str, len: usize, n: usize) -> Result<()> {
    if len < n {
        return Err(CudaError::invalid(
            op,
            format!("{what} holds {len} values, needs {n}"),
        ));
    }
    Ok(())
}

/// Launch geometry of a streaming kernel over `n` f32 values: [`stream_grid`] blocks of
/// [`STREAM_BLOCK`] threads.
pub fn stream_config(sm_count: u32, blocks_per_sm: u32, n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (stream_grid(sm_count, blocks_per_sm, n as u64), 1, 1),
        block_dim: (STREAM_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl Gpu {
    fn stream_config(&self, n: usize) -> LaunchConfig {
        stream_config(self.info.sm_count, self.stream_blocks_per_sm, n)
    }

    /// Reads all of `src` (a reduction to per-block partials; see [`Gpu::read_result`]).
    pub fn read(&self, src: &CudaSlice<f32>) -> Result<()> {
        let cfg = self.stream_config(src.len());
        let blocks = cfg.grid_dim.0 as usize;
        let mut scratch = self.scratch();
        if scratch.partials.as_ref().is_none_or(|p| p.len() < blocks) {
            scratch.partials = Some(self.alloc_zeros::<u64>(blocks)?);
        }
        scratch.partials_used = blocks;
        let partials = scratch
            .partials
            .as_mut()
            .ok_or_else(|| CudaError::invalid("read", "no partials buffer"))?;
        let p = StreamParams {
            n: src.len() as u64,
            scalar: 0.0,
            _pad: 0,
        };
        let mut args = self.stream.launch_builder(self.function(Kernel::Read));
        args.arg(src).arg(partials).arg(&p);
        // SAFETY: mb_read(const float*, u64*, StreamParams); src holds p.n values and partials
        // one entry per block of cfg.
        unsafe { self.launch(Kernel::Read, args, cfg) }
    }

    /// The checksum of the last [`Gpu::read`]: the wrapping sum of every 32-bit word read
    /// (compare with [`read_checksum`]). Synchronises.
    pub fn read_result(&self) -> Result<u64> {
        let scratch = self.scratch();
        let partials = scratch
            .partials
            .as_ref()
            .ok_or_else(|| CudaError::invalid("read_result", "no read has run"))?;
        let all = self.download(partials)?;
        Ok(all[..scratch.partials_used]
            .iter()
            .fold(0u64, |a, &v| a.wrapping_add(v)))
    }

    /// Fills `dst` with `value`.
    pub fn write(&self, dst: &mut CudaSlice<f32>, value: f32) -> Result<()> {
        let cfg = self.stream_config(dst.len());
        let p = StreamParams {
            n: dst.len() as u64,
            scalar: value,
            _pad: 0,
        };
        let mut args = self.stream.launch_builder(self.function(Kernel::Write));
        args.arg(dst).arg(&p);
        // SAFETY: mb_write(float*, StreamParams); dst holds p.n values.
        unsafe { self.launch(Kernel::Write, args, cfg) }
    }

    /// `dst = src` by the copy kernel (`dst` at least as long as `src`).
    pub fn copy(&self, src: &CudaSlice<f32>, dst: &mut CudaSlice<f32>) -> Result<()> {
        check_len("copy", "dst", dst.len(), src.len())?;
        let cfg = self.stream_config(src.len());
        let p = StreamParams {
            n: src.len() as u64,
            scalar: 0.0,
            _pad: 0,
        };
        let mut args = self.stream.launch_builder(self.function(Kernel::Copy));
        args.arg(src).arg(dst).arg(&p);
        // SAFETY: mb_copy(const float*, float*, StreamParams); both hold at least p.n values.
        unsafe { self.launch(Kernel::Copy, args, cfg) }
    }

    /// `a = b + s*c` (computed as `fmaf(s, c, b)`) over `a.len()` values.
    pub fn triad(
        &self,
        a: &mut CudaSlice<f32>,
        b: &CudaSlice<f32>,
        c: &CudaSlice<f32>,
        s: f32,
    ) -> Result<()> {
        check_len("triad", "b", b.len(), a.len())?;
        check_len("triad", "c", c.len(), a.len())?;
        let cfg = self.stream_config(a.len());
        let p = StreamParams {
            n: a.len() as u64,
            scalar: s,
            _pad: 0,
        };
        let mut args = self.stream.launch_builder(self.function(Kernel::Triad));
        args.arg(a).arg(b).arg(c).arg(&p);
        // SAFETY: mb_triad(float*, const float*, const float*, StreamParams); all three hold at
        // least p.n values.
        unsafe { self.launch(Kernel::Triad, args, cfg) }
    }

    /// `dst = src` by the driver (`cuMemcpyDtoDAsync`), the bandwidth peer of [`Gpu::copy`].
    pub fn dtod_copy<T>(&self, src: &CudaSlice<T>, dst: &mut CudaSlice<T>) -> Result<()> {
        check_len("dtod_copy", "dst", dst.len(), src.len())?;
        self.stream
            .memcpy_dtod(src, dst)
            .map_err(self.err("cuMemcpyDtoDAsync"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_follow_babelstream() {
        let n = 1u64 << 30;
        assert_eq!(bytes_moved(StreamOp::Read, n), n);
        assert_eq!(bytes_moved(StreamOp::Write, n), n);
        assert_eq!(bytes_moved(StreamOp::Copy, n), 2 * n);
        assert_eq!(bytes_moved(StreamOp::DriverCopy, n), 2 * n);
        assert_eq!(bytes_moved(StreamOp::Triad, n), 3 * n);
        let names: Vec<_> = StreamOp::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["read", "write", "copy", "triad", "dtod"]);
    }

    #[test]
    fn grid_fills_the_device_once_and_no_more() {
        // H100: 132 SMs, 8 resident 256-thread blocks each.
        assert_eq!(stream_grid(132, 8, 1 << 28), 1056);
        // Small arrays: one thread per 16-byte vector, rounded up to whole blocks.
        assert_eq!(stream_grid(132, 8, 4 * 256), 1);
        assert_eq!(stream_grid(132, 8, 4 * 257), 2);
        // The n % 4 tail is handled by the first threads: no extra block for it.
        assert_eq!(stream_grid(132, 8, 4 * 256 + 3), 1);
        assert_eq!(stream_grid(132, 8, 4 * 256 * 10), 10);
        // Empty or tail-only arrays still launch one block (it handles the n % 4 tail).
        assert_eq!(stream_grid(132, 8, 0), 1);
        assert_eq!(stream_grid(132, 8, 3), 1);
        // 64-bit sizes do not overflow.
        assert_eq!(stream_grid(170, 6, u64::MAX / 2), 1020);
    }

    #[test]
    fn cpu_references() {
        let v = [1.0f32, -2.0, 0.5];
        let want = 0x3f80_0000u64 + 0xc000_0000 + 0x3f00_0000;
        assert_eq!(read_checksum(&v), want);
        assert_eq!(
            read_checksum(&vec![f32::from_bits(u32::MAX); 1 << 10]),
            u64::from(u32::MAX) << 10
        );
        let a = triad_reference(&[1.0, 2.0], &[3.0, 4.0], 0.5);
        assert_eq!(a, vec![2.5, 4.0]);
    }
}
