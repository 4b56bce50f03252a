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
//! - [`decode_suite`]: whole per-token decode steps (`membound-decode`) against the roofline.
//! - [`machine`]: `machine.json` written beside Criterion's output.
//!
//! Byte counts come from `membound_spec::traffic` (one convention), reported as
//! `Throughput::BytesDecimal` so GB/s reads like a spec sheet.

pub mod attention;
pub mod attention_suite;
pub mod backend;
pub mod decode_suite;
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

/// The start of a bench's `main`: the scale, the backends (the process exits with 2 when none
/// is left, after the lines that say why), `machine.json` written for `suite`, and the run.
pub fn start(suite: &str) -> (Scale, Backends, Run) {
    let scale = Scale::from_env();
    let backends = Backends::discover();
    if backends.is_empty() {
        eprintln!("membound: no backend to run on (see MEMBOUND_BACKENDS and the lines above)");
        std::process::exit(2);
    }
    machine::write(&backends, scale, suite);
    (scale, backends, Run::new(suite, scale))
}

/// The models of `models/` (the process exits with 2 when they do not load).
pub fn models_or_exit() -> Vec<membound_spec::ModelSpec> {
    membound_spec::registry::embedded().unwrap_or_else(|e| {
        eprintln!("membound: the model specs do not load: {e}");
        std::process::exit(2);
    })
}

/// The end of a bench's `main`: `machine.json` again (clocks after the run), the summary and
/// the files of [`Run::finish`]; returns the exit code.
pub fn finish(run: Run, backends: &Backends, scale: Scale) -> i32 {
    machine::write(backends, scale, run.suite.as_str());
    run.finish(
        &|id| backends.spec_gbs(id),
        machine::describe(backends, scale),
    )
}
