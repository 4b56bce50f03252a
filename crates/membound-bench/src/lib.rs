//! membound-bench: the harness every membound bench shares.
//!
//! - [`Scale`]: `MEMBOUND_SCALE=quick|default|full` sizes sweeps and Criterion's sampling.
//! - [`Backends`]: the CPU (a rayon pool) and each CUDA device, discovered once; ids `cpu`,
//!   `gpu0`, `gpu1`… so benchmark ids `{suite}/{case}/{backend}` do not depend on the machine.
//! - [`rotation`]: how many distinct copies of a buffer make a working set ≥ 4× the last-level
//!   cache, so a small case streams from memory the way a decode step across layers does.
//! - [`verify`]: output checks every case passes before it is timed.
//! - [`harness`]: [`Backend`] (a device's facts and timing) and [`Run`] (fail-soft cases, the
//!   paired read reference, the summary); [`stream`], [`gemv`], [`moe`] and [`attention`] give
//!   each suite's operations per backend, and [`suites`], [`moe_suite`] and [`attention_suite`]
//!   the drivers written once over them.
//! - [`machine`]: `machine.json` written beside Criterion's output.
//!
//! Byte counts come from `membound_spec::traffic` (one convention), reported as
//! `Throughput::BytesDecimal` so GB/s reads like a spec sheet.

pub mod attention;
pub mod attention_suite;
pub mod backend;
pub mod gemv;
pub mod harness;
pub mod machine;
pub mod moe;
pub mod moe_suite;
pub mod rotation;
pub mod scale;
pub mod stream;
pub mod suites;
pub mod verify;

pub use backend::{Backends, CpuBackend, GpuBackend};
pub use harness::{Backend, Run};
pub use scale::Scale;
