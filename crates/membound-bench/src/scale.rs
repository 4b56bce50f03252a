//! How big and how long: `MEMBOUND_SCALE=quick|default|full`.

use std::time::Duration;

use criterion::Criterion;

/// Sweep size and sampling effort of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Smoke runs and CI: few sizes, short sampling.
    Quick,
    /// The normal `cargo bench`: the main shapes, about five minutes per suite on 2 cores.
    Default,
    /// Every shape and size, longer sampling.
    Full,
}

impl Scale {
    /// Reads `MEMBOUND_SCALE` (default `default`); an unknown value is reported and ignored.
    pub fn from_env() -> Scale {
        match std::env::var("MEMBOUND_SCALE").as_deref() {
            Ok("quick") => Scale::Quick,
            Ok("full") => Scale::Full,
            Ok("default") | Err(_) => Scale::Default,
            Ok(other) => {
                eprintln!(
                    "membound: MEMBOUND_SCALE=`{other}` is not quick|default|full; using default"
                );
                Scale::Default
            }
        }
    }

    /// Name as `MEMBOUND_SCALE` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Quick => "quick",
            Scale::Default => "default",
            Scale::Full => "full",
        }
    }

    /// A Criterion configured for this scale (command-line flags still override it).
    pub fn criterion(self) -> Criterion {
        let (samples, warm, measure) = match self {
            Scale::Quick => (10, 0.2, 0.5),
            Scale::Default => (10, 0.3, 1.0),
            Scale::Full => (30, 1.0, 3.0),
        };
        Criterion::default()
            .sample_size(samples)
            .warm_up_time(Duration::from_secs_f64(warm))
            .measurement_time(Duration::from_secs_f64(measure))
            .configure_from_args()
    }
}
