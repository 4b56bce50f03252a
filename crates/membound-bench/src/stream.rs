//! The bandwidth suite's operations on each backend ([`StreamBackend`]): arrays allocated per
//! operation (a read holds one array, a triad three), one checked call before timing, and the
//! inputs restored in place after the check (no second set of arrays).

use std::time::Duration;

use membound_cpu::Isa;
use membound_cpu::bandwidth as cpu_bw;
use membound_cuda::bandwidth::{read_checksum, triad_reference};
use membound_cuda::{CudaSlice, StreamOp};

use crate::harness::Backend;
use crate::{CpuBackend, GpuBackend};

/// Arrays an operation holds: read 1, write 1, copy 2, triad 3, the driver's copy 2.
pub fn arrays_held(op: StreamOp) -> u64 {
    match op {
        StreamOp::Read | StreamOp::Write => 1,
        StreamOp::Copy | StreamOp::DriverCopy => 2,
        StreamOp::Triad => 3,
    }
}

/// Values in {-1, 0, 1}: every partial sum stays small, so any summation order is exact and a
/// read's result can be checked exactly.
pub fn pattern(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 3) as f32 - 1.0).collect()
}

/// The streaming operations on one backend, over `n`-value f32 arrays: `a` holds
/// [`pattern`], `b` 2.0 and `c` 0.5; write stores 3.0 into `a`, copy `a` into `b`, triad
/// `a = b + 3·c` on the GPU and `b = a + 3·c` on the CPU (each checked against its own
/// reference).
pub trait StreamBackend: Backend {
    /// The arrays of one case.
    type Arrays;
    /// The operations this backend times (the GPU adds the driver's copy as the peer).
    fn stream_ops(&self) -> Vec<StreamOp>;
    /// Allocates the arrays `op` needs for `n` values.
    fn arrays(&self, op: StreamOp, n: usize) -> Result<Self::Arrays, String>;
    /// One call of `op` (timed).
    fn run(&self, op: StreamOp, arrays: &mut Self::Arrays) -> Result<(), String>;
    /// One call of `op` checked against the CPU reference, inputs restored afterwards.
    fn check(&self, op: StreamOp, arrays: &mut Self::Arrays) -> Result<(), String>;
}

/// The CPU's arrays.
pub struct CpuArrays {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

fn cpu_err(e: membound_cpu::CpuError) -> String {
    e.to_string()
}

impl Backend for CpuBackend {
    fn id(&self) -> &str {
        "cpu"
    }
    fn llc_bytes(&self) -> u64 {
        CpuBackend::llc_bytes(self)
    }
    fn memory_budget(&self) -> u64 {
        // Half of the host's memory: the suites must never push the machine into swap.
        if self.host.memory_bytes == 0 {
            8 << 30
        } else {
            self.host.memory_bytes / 2
        }
    }
    fn spec_gbs(&self) -> Option<f64> {
        None
    }
    fn time(
        &self,
        iters: u64,
        f: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Duration, String> {
        crate::harness::wall_time(iters, f)
    }
}

impl StreamBackend for CpuBackend {
    type Arrays = CpuArrays;

    fn stream_ops(&self) -> Vec<StreamOp> {
        vec![
            StreamOp::Read,
            StreamOp::Write,
            StreamOp::Copy,
            StreamOp::Triad,
        ]
    }

    fn arrays(&self, op: StreamOp, n: usize) -> Result<CpuArrays, String> {
        let held = arrays_held(op);
        Ok(CpuArrays {
            a: pattern(n),
            b: if held >= 2 { vec![2.0; n] } else { Vec::new() },
            c: if held >= 3 { vec![0.5; n] } else { Vec::new() },
        })
    }

    fn run(&self, op: StreamOp, x: &mut CpuArrays) -> Result<(), String> {
        let pool = &self.pool;
        match op {
            StreamOp::Read => cpu_bw::read(pool, Isa::detect(), &x.a)
                .map(|s| {
                    std::hint::black_box(s);
                })
                .map_err(cpu_err),
            StreamOp::Write => {
                cpu_bw::write(pool, &mut x.a, 3.0);
                Ok(())
            }
            StreamOp::Copy => cpu_bw::copy(pool, &x.a, &mut x.b).map_err(cpu_err),
            StreamOp::Triad => cpu_bw::triad(pool, &mut x.b, &x.a, &x.c, 3.0).map_err(cpu_err),
            StreamOp::DriverCopy => Err("the driver's copy is a GPU peer".into()),
        }
    }

    fn check(&self, op: StreamOp, x: &mut CpuArrays) -> Result<(), String> {
        let n = x.a.len();
        let ok = match op {
            StreamOp::Read => {
                let sum = cpu_bw::read(&self.pool, Isa::detect(), &x.a).map_err(cpu_err)?;
                let want: f32 = (0..n % 3).map(|i| i as f32 - 1.0).sum();
                sum == want
            }
            _ => {
                self.run(op, x)?;
                let ok = match op {
                    StreamOp::Write => x.a.iter().all(|v| *v == 3.0),
                    StreamOp::Copy => x.b == x.a,
                    _ => {
                        x.b.iter()
                            .zip(&x.a)
                            .zip(&x.c)
                            .all(|((b, a), c)| *b == a + 3.0 * c)
                    }
                };
                *x = self.arrays(op, n)?;
                ok
            }
        };
        ok.then_some(())
            .ok_or_else(|| format!("{} over {n} floats gave a wrong result", op.name()))
    }
}

/// A GPU's arrays, with the host copy of `a` the checks compare against.
pub struct GpuArrays {
    a: CudaSlice<f32>,
    b: Option<CudaSlice<f32>>,
    c: Option<CudaSlice<f32>>,
    host_a: Vec<f32>,
}

fn cuda_err(e: membound_cuda::CudaError) -> String {
    e.to_string()
}

impl Backend for GpuBackend {
    fn id(&self) -> &str {
        &self.id
    }
    fn llc_bytes(&self) -> u64 {
        GpuBackend::llc_bytes(self)
    }
    fn memory_budget(&self) -> u64 {
        // Leave room for the context, cuBLAS's workspace and the driver: 90 % of the card.
        self.info().memory_bytes / 10 * 9
    }
    fn spec_gbs(&self) -> Option<f64> {
        membound_spec::hardware::device_for_name(&self.info().name).and_then(|d| d.bandwidth_gbs)
    }
    fn time(
        &self,
        iters: u64,
        f: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Duration, String> {
        let mut inner: Option<String> = None;
        let r = self.gpu.time_iters(iters, || {
            f().map_err(|e| {
                inner = Some(e.clone());
                membound_cuda::CudaError::Unavailable(e)
            })
        });
        match (r, inner) {
            (Ok(d), _) => Ok(d),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.to_string()),
        }
    }
}

fn need<'a>(
    x: &'a mut Option<CudaSlice<f32>>,
    what: &str,
) -> Result<&'a mut CudaSlice<f32>, String> {
    x.as_mut()
        .ok_or_else(|| format!("array {what} was not allocated"))
}

impl StreamBackend for GpuBackend {
    type Arrays = GpuArrays;

    fn stream_ops(&self) -> Vec<StreamOp> {
        StreamOp::ALL.to_vec()
    }

    fn arrays(&self, op: StreamOp, n: usize) -> Result<GpuArrays, String> {
        let g = &self.gpu;
        let held = arrays_held(op);
        let host_a = pattern(n);
        Ok(GpuArrays {
            a: g.upload(&host_a).map_err(cuda_err)?,
            b: (held >= 2)
                .then(|| g.upload(&vec![2.0f32; n]))
                .transpose()
                .map_err(cuda_err)?,
            c: (held >= 3)
                .then(|| g.upload(&vec![0.5f32; n]))
                .transpose()
                .map_err(cuda_err)?,
            host_a,
        })
    }

    fn run(&self, op: StreamOp, x: &mut GpuArrays) -> Result<(), String> {
        let g = &self.gpu;
        match op {
            StreamOp::Read => g.read(&x.a),
            StreamOp::Write => g.write(&mut x.a, 3.0),
            StreamOp::Copy => {
                let b = need(&mut x.b, "b")?;
                g.copy(&x.a, b)
            }
            StreamOp::DriverCopy => {
                let b = need(&mut x.b, "b")?;
                g.dtod_copy(&x.a, b)
            }
            StreamOp::Triad => {
                let (Some(b), Some(c)) = (&x.b, &x.c) else {
                    return Err("triad needs arrays b and c".into());
                };
                g.triad(&mut x.a, b, c, 3.0)
            }
        }
        .map_err(cuda_err)
    }

    fn check(&self, op: StreamOp, x: &mut GpuArrays) -> Result<(), String> {
        let g = &self.gpu;
        self.run(op, x)?;
        let n = x.host_a.len();
        let ok = match op {
            StreamOp::Read => g.read_result().map_err(cuda_err)? == read_checksum(&x.host_a),
            StreamOp::Write => g
                .download(&x.a)
                .map_err(cuda_err)?
                .iter()
                .all(|v| *v == 3.0),
            StreamOp::Copy | StreamOp::DriverCopy => {
                g.download(need(&mut x.b, "b")?).map_err(cuda_err)? == x.host_a
            }
            StreamOp::Triad => {
                g.download(&x.a).map_err(cuda_err)?
                    == triad_reference(&vec![2.0; n], &vec![0.5; n], 3.0)
            }
        };
        // Restore what the timed calls expect, in place.
        g.upload_into(&x.host_a, &mut x.a).map_err(cuda_err)?;
        if let Some(b) = x.b.as_mut() {
            g.upload_into(&vec![2.0f32; n], b).map_err(cuda_err)?;
        }
        ok.then_some(()).ok_or_else(|| {
            format!(
                "{} {} over {n} floats gave a wrong result",
                self.id,
                op.name()
            )
        })
    }
}
