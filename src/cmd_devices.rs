//! `membound devices`: the backends this machine has, with the facts `machine.json` records.

use anyhow::Result;
use membound_cuda::{Probe, probe};
use membound_spec::hardware::host_cpu;
use serde_json::json;

use crate::units::{gib, human, table};

/// Runs `membound devices`.
pub fn run(json_out: bool) -> Result<()> {
    let host = host_cpu();
    let cuda = probe();
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"cpu": host, "simd": membound_cpu::simd_level(), "cuda": cuda})
            )?
        );
        return Ok(());
    }
    let mut rows = vec![vec![
        "cpu".to_string(),
        host.name.clone(),
        format!("{} threads, {}", host.units, membound_cpu::simd_level()),
        gib(host.memory_bytes),
        human(host.llc_bytes),
        "-".into(),
    ]];
    for d in cuda.devices() {
        rows.push(vec![
            format!("gpu{}", d.ordinal),
            d.name.clone(),
            format!("{}, {} SMs", d.arch(), d.sm_count),
            gib(d.memory_bytes),
            human(d.l2_bytes),
            format!(
                "{:.0} GB/s ({}-bit)",
                d.peak_bandwidth_bytes_per_s() / 1e9,
                d.bus_width_bits
            ),
        ]);
    }
    outln!(
        "{}",
        table(
            &[
                "backend",
                "name",
                "compute",
                "memory",
                "LLC",
                "peak bandwidth (from clocks)"
            ],
            &rows
        )
    );
    if let Probe::Unavailable { reason } = &cuda {
        outln!("\nno GPU backend: {reason}");
    }
    Ok(())
}
