//! A backend that fails on purpose: its copy gives a wrong answer, its triad errors while being
//! timed and its write cannot allocate. The suite must report each failure once with its id and
//! reason, time every other case, and end with a non-zero exit code.

use std::cell::Cell;
use std::time::Duration;

use criterion::Criterion;
use membound_bench::harness::{Backend, Kind, wall_time};
use membound_bench::stream::StreamBackend;
use membound_bench::{Run, Scale, suites};
use membound_cuda::StreamOp;

struct Faulty {
    timed_triads: Cell<u64>,
}

impl Backend for Faulty {
    fn id(&self) -> &str {
        "faulty0"
    }
    fn llc_bytes(&self) -> u64 {
        1 << 20
    }
    fn memory_budget(&self) -> u64 {
        3 << 30
    }
    fn spec_gbs(&self) -> Option<f64> {
        Some(100.0)
    }
    fn time(
        &self,
        iters: u64,
        f: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Duration, String> {
        // Claims 10 µs a call whatever the host takes, so the figures are known.
        wall_time(iters, f).map(|_| Duration::from_micros(10 * iters))
    }
}

impl StreamBackend for Faulty {
    type Arrays = ();
    fn stream_ops(&self) -> Vec<StreamOp> {
        vec![
            StreamOp::Read,
            StreamOp::Write,
            StreamOp::Copy,
            StreamOp::Triad,
        ]
    }
    fn arrays(&self, op: StreamOp, _n: usize) -> Result<(), String> {
        if op == StreamOp::Write {
            return Err("out of memory (on purpose)".into());
        }
        Ok(())
    }
    fn run(&self, op: StreamOp, _a: &mut ()) -> Result<(), String> {
        if op == StreamOp::Triad {
            self.timed_triads.set(self.timed_triads.get() + 1);
            if self.timed_triads.get() > 1 {
                return Err("launch failed (on purpose)".into());
            }
        }
        Ok(())
    }
    fn check(&self, op: StreamOp, a: &mut ()) -> Result<(), String> {
        if op == StreamOp::Copy {
            return Err("copy gave a wrong result (on purpose)".into());
        }
        self.run(op, a)
    }
}

#[test]
fn failed_cases_are_reported_and_the_run_goes_on() {
    let dir = std::env::temp_dir().join(format!("membound-fail-soft-{}", std::process::id()));
    // SAFETY: set before any thread of this test binary reads the environment here.
    unsafe { std::env::set_var("CRITERION_HOME", &dir) };
    let c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(5))
        .measurement_time(Duration::from_millis(20))
        .without_plots();
    let mut run = Run::with_criterion("bandwidth", Scale::Quick, c);
    let b = Faulty {
        timed_triads: Cell::new(0),
    };
    suites::bandwidth(&mut run, &b, false);
    suites::pair_with_read(&mut run, 0, "faulty0");

    let failed: Vec<(&str, &str)> = run
        .failures
        .iter()
        .map(|f| (f.id.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed
            .iter()
            .any(|(id, r)| *id == "bandwidth/write/faulty0" && r.contains("out of memory"))
    );
    assert!(
        failed
            .iter()
            .any(|(id, r)| *id == "bandwidth/copy/faulty0" && r.contains("not timed"))
    );
    assert!(
        failed
            .iter()
            .any(|(id, r)| *id == "bandwidth/triad/faulty0" && r.contains("launch failed"))
    );
    // The triad that failed while timed left no Criterion output behind.
    assert!(!dir.join("bandwidth/triad_faulty0/new").exists());
    // Every other case ran: read and the three sweep points, paired with the read.
    let ran: Vec<&str> = run.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ran.len(), 4, "{ran:?}");
    assert!(run.results.iter().any(|r| r.kind == Kind::Read));
    let read = run.results.iter().find(|r| r.kind == Kind::Read).unwrap();
    assert!(read.mean_ns.is_some(), "{read:?}");
    assert!(
        run.results.iter().all(|r| r.paired_read_gbs.is_some()),
        "{:?}",
        run.results
    );
    let summary = run.summary(&|_| Some(100.0));
    assert!(
        summary.contains("FAILED") && summary.contains("% of the spec sheet"),
        "{summary}"
    );
    assert_eq!(run.finish(&|_| None, serde_json::json!({})), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
