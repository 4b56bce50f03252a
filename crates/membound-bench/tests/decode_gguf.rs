//! The decode suite on a real GGUF file (`MEMBOUND_GGUF`): cases `gguf-{stem}-d{depth}` decode
//! the file's own tensors with the spec it implies, count the bytes its tensor types read, and
//! run candle-transformers on the same file as the depth-0 peer; a file that cannot be read is
//! one failed case with the reason, not an ended run.

use std::time::Duration;

use criterion::Criterion;
use membound_bench::decode_suite::{self, GGUF_ENV};
use membound_bench::harness::Kind;
use membound_bench::{Backends, Run, Scale};
use membound_gguf::GgufFile;
use membound_gguf::reads::token_reads;
use membound_gguf::spec::spec_from_gguf;
use membound_gguf::synthetic::{Fill, tiny, write_model_file};
use membound_spec::kv::kv_cache;
use membound_spec::registry::find;
use membound_spec::{DType, KvLayout, Recipe};

fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(10))
        .without_plots()
}

#[test]
fn a_gguf_file_is_decoded_counted_and_peered_with_candle() {
    let dir = std::env::temp_dir().join(format!("membound-decode-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("Tiny Llama.gguf");
    let mut m = tiny(&find("llama-3.1-8b").unwrap(), 256);
    m.attention.n_heads = 8;
    write_model_file(&m, Recipe::Q8_0, &path, Fill::Random { seed: 3 }).unwrap();
    // SAFETY: this binary's only test; set before anything reads the environment.
    unsafe {
        std::env::set_var("CRITERION_HOME", dir.join("criterion"));
        std::env::set_var(GGUF_ENV, &path);
    }
    let backends = Backends::discover();
    let cpu = backends.cpu.as_ref().expect("a CPU backend");
    let mut run = Run::with_criterion("decode", Scale::Quick, criterion());
    let rows = decode_suite::decode(&mut run, cpu, &[]);
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "decode/gguf-tiny-llama-d0/cpu",
            "decode/gguf-tiny-llama-d4096/cpu"
        ],
        "failures: {:?}",
        run.failures
    );
    // Bytes: the file's tensors as `membound inspect` counts them, plus the KV read.
    let f = GgufFile::open(&path).unwrap();
    let spec = spec_from_gguf(&f).unwrap();
    let weights: u64 = token_reads(&f, Some(&spec))
        .iter()
        .map(|r| r.active_bytes)
        .sum();
    let kv = kv_cache(&spec, KvLayout::Gqa, DType::F16, 4097)
        .unwrap()
        .traffic;
    assert_eq!(rows[1].weight_bytes, weights);
    assert_eq!(rows[1].kv_bytes, kv);
    assert!(rows.iter().all(|r| r.layers_built == 2));
    // candle's peer at depth 0.
    assert!(
        run.results
            .iter()
            .any(|r| r.id == "decode/candle-gguf-tiny-llama-d0/cpu"
                && matches!(&r.kind, Kind::Peer { peer, .. } if peer == "candle")),
        "{:?}",
        run.results.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
    assert!(run.failures.is_empty(), "{:?}", run.failures);

    // A corrupt file: one failure naming the variable and the file, and the run goes on.
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF but not really").unwrap();
    // SAFETY: as above.
    unsafe { std::env::set_var(GGUF_ENV, &bad) };
    let mut run = Run::with_criterion("decode", Scale::Quick, criterion());
    let rows = decode_suite::decode(&mut run, cpu, &[]);
    assert!(rows.is_empty());
    assert_eq!(run.failures.len(), 1);
    let reason = &run.failures[0].reason;
    assert!(
        reason.contains(GGUF_ENV) && reason.contains("bad.gguf"),
        "{reason}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
