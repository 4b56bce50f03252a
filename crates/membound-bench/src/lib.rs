//! membound-bench: the harness every membound bench shares.
//!
//! - [`Scale`]: `MEMBOUND_SCALE=quick|default|full` sizes sweeps and Criterion's sampling.
//! - [`Backends`]: the CPU (a rayon pool) and each CUDA device, discovered once; ids `cpu`,
//!   `gpu0`, `gpu1`… so benchmark ids `{suite}/{case}/{backend}` do not depend on the machine.
//! - [`rotation`]: how many distinct copies of a buffer make a working set ≥ 4× the last-level
//!   cache, so a small case streams from memory the way a decode step across layers does.
//! - [`verify`]: output checks every case passes before it is timed.
//! - [`machine`]: `machine.json` written beside Criterion's output.
//!
//! Byte counts come from `membound_spec::traffic` (one convention), reported as
//! `Throughput::BytesDecimal` so GB/s reads like a spec sheet.

pub mod backend;
pub mod machine;
pub mod rotation;
pub mod scale;
pub mod verify;

pub use backend::{Backends, CpuBackend, GpuBackend};
pub use scale::Scale;
