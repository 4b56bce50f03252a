//! A warm CPU decode step allocates nothing (issue 13: "on the CPU it runs on the rayon pool
//! with no allocation per token"). A counting global allocator, armed for one step after two
//! warm-up steps, sees every thread. The GEMV activations, the attention's partials and tiles,
//! the MoE routing and intermediates, the Gated DeltaNet's and the decoder's temporaries all
//! live in buffers their owners keep from token to token. Every kind of layer in models/ is
//! covered (GQA with and without QK norms, gates and sinks, sliding rings, MLA with and without
//! a query LoRA, dense and MoE FFNs with and without shared experts, Gated DeltaNet), the
//! float and block-quantized weight types, and F16 and Q8_0 caches.
//!
//! `MEMBOUND_ALLOC_TRACE=1` prints the backtrace of every allocation of an armed step (run with
//! `--nocapture`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use membound_decode::source::SyntheticSource;
use membound_decode::{CpuDecoder, StepOptions};
use membound_gguf::synthetic::tiny;
use membound_spec::registry::find;
use membound_spec::{DType, Recipe};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
static TRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    // The trace allocates: its own allocations are neither counted nor traced (this thread's
    // flag), so one line per allocation of the step.
    let _ = IN_TRACE.try_with(|t| {
        if t.replace(true) {
            return;
        }
        COUNT.fetch_add(1, Ordering::Relaxed);
        if TRACE.load(Ordering::Relaxed) {
            eprintln!("allocation: {}", std::backtrace::Backtrace::force_capture());
        }
        t.set(false);
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations during step `warm` after `warm` warm-up steps of `name` (tiny, 256 tokens of
/// vocabulary) in `recipe` over a `kv` cache.
fn allocations(name: &str, recipe: Recipe, kv: DType, warm: usize) -> usize {
    let m = tiny(&find(name).unwrap(), 256);
    let src = SyntheticSource::new(&m, recipe, 5);
    let mut opts = StepOptions::new(&m, 64);
    opts.kv_dtype = kv;
    let mut dec = CpuDecoder::new(&m, &src, &opts).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut token = 3;
    for pos in 0..warm {
        token = dec.step(&pool, token, pos).unwrap();
    }
    COUNT.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let r = dec.step(&pool, token, warm);
    ARMED.store(false, Ordering::SeqCst);
    r.unwrap();
    COUNT.load(Ordering::SeqCst)
}

#[test]
fn a_warm_step_allocates_nothing() {
    TRACE.store(
        std::env::var("MEMBOUND_ALLOC_TRACE").is_ok_and(|v| v == "1"),
        Ordering::Relaxed,
    );
    // One test: the allocator's counter is global, so the cases run one after another.
    let cases = [
        ("llama-3.1-8b", Recipe::Q4_K_M, DType::F16),
        ("llama-3.1-8b", Recipe::F16, DType::Q8_0),
        ("qwen3-32b", Recipe::Q8_0, DType::F16),
        ("qwen3-30b-a3b", Recipe::Q8_0, DType::Q8_0),
        ("glm-4.7-flash", Recipe::Q4_K_M, DType::F16),
        ("deepseek-v2-lite", Recipe::Q8_0, DType::F16),
        ("gpt-oss-20b", Recipe::MXFP4_MOE, DType::F16),
        ("gemma-3-27b", Recipe::Q6_K, DType::F16),
        ("qwen3-coder-next", Recipe::Q4_K_M, DType::F16),
    ];
    let mut allocating = Vec::new();
    for (name, recipe, kv) in cases {
        let n = allocations(name, recipe, kv, 2);
        if n > 0 {
            allocating.push(format!("{name} {recipe:?} ({kv} cache): {n} allocations"));
        }
    }
    assert!(
        allocating.is_empty(),
        "a warm step allocated (MEMBOUND_ALLOC_TRACE=1 with --nocapture shows where): {allocating:?}"
    );
}
