//! Times whole CPU decode steps outside Criterion, long enough to profile (`perf record -e
//! cpu-clock` on this process): `cargo run --release -p membound-decode --example step_time --
//! MODEL RECIPE [depth] [steps]` builds every layer of MODEL (a name of `models/`) with synthetic
//! weights stored as RECIPE (`Q4_K_M`, `Q8_0`, `MXFP4_MOE`, …), an F16 cache of `depth` tokens in
//! the native layout, then runs `steps` steps (default 50) at that depth and prints the
//! milliseconds per step (best, median), the share outside the layers (embedding, final norm,
//! lm_head) and the slowest layers. Not a benchmark: no paired read, no check of the logits
//! (the decode suite and membound-decode's tests do both).

use std::time::Instant;

use membound_decode::source::SyntheticSource;
use membound_decode::{CpuDecoder, StepOptions};
use membound_spec::recipe::Recipe;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: step_time MODEL RECIPE [depth] [steps]";
    let m = membound_spec::registry::find(args.first().ok_or(usage)?)?;
    let recipe: Recipe = args.get(1).ok_or(usage)?.parse()?;
    let depth: usize = args.get(2).map_or(Ok(0), |v| v.parse())?;
    let steps: usize = args.get(3).map_or(Ok(50), |v| v.parse())?;
    let opts = StepOptions::new(&m, depth + 1);
    let src = SyntheticSource::new(&m, recipe, 0x6465636f);
    let built = Instant::now();
    let mut dec = CpuDecoder::new(&m, &src, &opts)?;
    let pool = rayon::ThreadPoolBuilder::new().build()?;
    println!(
        "{} {recipe:?} d{depth}: built in {:.1} s, {} threads, {steps} steps",
        m.name,
        built.elapsed().as_secs_f64(),
        pool.current_num_threads()
    );
    let mut token = dec.step(&pool, 1, depth)?;
    let mut ms = Vec::with_capacity(steps);
    let mut layers = vec![0f64; dec.layer_ns().len()];
    let mut outside = 0f64;
    for _ in 0..steps {
        let t = Instant::now();
        token = dec.step(&pool, token, depth)?;
        let step = t.elapsed().as_secs_f64() * 1e3;
        ms.push(step);
        let in_layers: f64 = dec.layer_ns().iter().sum::<f64>() / 1e6;
        outside += step - in_layers;
        for (sum, ns) in layers.iter_mut().zip(dec.layer_ns()) {
            *sum += ns / 1e6;
        }
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len().max(1) as f64;
    println!(
        "ms per step: best {:.2}, median {:.2}; outside the layers {:.2} ms a step",
        ms.first().copied().unwrap_or(0.0),
        ms.get(ms.len() / 2).copied().unwrap_or(0.0),
        outside / n
    );
    let mut by_time: Vec<(usize, f64)> = layers.iter().map(|t| t / n).enumerate().collect();
    by_time.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = by_time
        .iter()
        .take(5)
        .map(|(i, t)| format!("{i}: {t:.2}"))
        .collect();
    println!("slowest layers (ms a step): {}", shown.join(", "));
    Ok(())
}
