//! Hostile input: thousands of deterministic mutations (byte flips, extreme integers,
//! truncations, splices, insertions, deletions) of valid files. The reader must return `Ok` or
//! `Err` without panicking, must never make an allocation larger than a small multiple of the
//! file's size (a counting global allocator watches), and whatever it accepts must be internally
//! consistent and survive a rewrite through the writer.
//!
//! This binary holds one test so that the allocator sees only the reader's allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use membound_gguf::{GgufFile, GgufWriter};
use membound_quant::data::SplitMix64;

/// Records the largest single allocation.
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// The most the reader may allocate at once for a file of `len` bytes.
fn allocation_cap(len: usize) -> usize {
    8 * len + 4096
}

#[derive(Default)]
struct Tally {
    ok: usize,
    err: usize,
}

/// Parses `bytes`, checks the allocation cap, and checks whatever is accepted.
fn check(bytes: &[u8], tally: &mut Tally, what: &dyn Fn() -> String) {
    LARGEST.store(0, Ordering::Relaxed);
    let result = GgufFile::from_bytes(bytes);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= allocation_cap(bytes.len()),
        "{}: allocation of {largest} bytes for a {}-byte file",
        what(),
        bytes.len()
    );
    let file = match result {
        Ok(file) => file,
        Err(e) => {
            assert!(
                e.offset.is_some_and(|o| o <= bytes.len() as u64),
                "{}: {e}",
                what()
            );
            tally.err += 1;
            return;
        }
    };
    tally.ok += 1;
    // Accepted: every tensor inside the file, aligned, disjoint, of its type's size.
    let mut ranges = Vec::new();
    for (info, data) in file.tensors_with_data() {
        assert_eq!(info.offset % file.alignment(), 0);
        assert_eq!(
            Some(data.len() as u64),
            info.dtype.bytes_for(info.n_elements())
        );
        let start = file.data_offset() + info.offset;
        assert!(start + info.n_bytes <= bytes.len() as u64);
        if info.n_bytes > 0 {
            ranges.push((start, start + info.n_bytes));
        }
    }
    ranges.sort();
    assert!(
        ranges.windows(2).all(|w| w[0].1 <= w[1].0),
        "{}: overlapping tensors accepted",
        what()
    );
    // And it survives a rewrite: the same metadata (NaN-tolerant: compared by Debug form) and
    // tensors, and rewriting the rewritten file gives the same bytes (floats kept bit-exact).
    let rewritten = rewrite(&file);
    let again = GgufFile::from_bytes(&rewritten).unwrap();
    assert_eq!(
        format!("{:?}", again.metadata()),
        format!("{:?}", file.metadata()),
        "{}",
        what()
    );
    let data = |f: &GgufFile| {
        f.tensors_with_data()
            .map(|(i, d)| (i.clone(), d.to_vec()))
            .collect::<Vec<_>>()
    };
    let strip = |v: Vec<(membound_gguf::TensorInfo, Vec<u8>)>| {
        v.into_iter()
            .map(|(i, d)| (i.name, i.dims, i.dtype, i.n_bytes, d))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(data(&again)), strip(data(&file)), "{}", what());
    assert_eq!(rewrite(&again), rewritten, "{}", what());
}

/// Everything `file` holds, written again.
fn rewrite(file: &GgufFile) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add_meta(k, v.clone()).unwrap();
    }
    for (info, data) in file.tensors_with_data() {
        w.add_tensor(&info.name, &info.dims, info.dtype, data)
            .unwrap();
    }
    w.to_bytes().unwrap()
}

const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    3,
    4,
    8,
    13,
    24,
    31,
    32,
    39,
    0x7f,
    0xff,
    1 << 31,
    1 << 63,
    u64::MAX,
];

fn mutate(rng: &mut SplitMix64, base: &[u8], other: &[u8], header_len: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    let pick = |rng: &mut SplitMix64, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    // Three quarters of the edits land in the header, where the parsing happens.
    let pos = |rng: &mut SplitMix64, b: &[u8]| {
        let limit = if rng.next_u64().is_multiple_of(4) {
            b.len()
        } else {
            header_len.min(b.len())
        };
        (rng.next_u64() % limit.max(1) as u64) as usize
    };
    match pick(rng, 6) {
        0 => {
            for _ in 0..1 + pick(rng, 4) {
                let at = pos(rng, &b);
                b[at] ^= 1 + pick(rng, 255) as u8;
            }
        }
        1 => {
            let v = match pick(rng, 3) {
                0 => INTERESTING[pick(rng, INTERESTING.len())],
                1 => b.len() as u64 - pick(rng, 64) as u64,
                _ => rng.next_u64() >> pick(rng, 64),
            };
            let at = pos(rng, &b).min(b.len().saturating_sub(8));
            let width = if pick(rng, 2) == 0 { 4 } else { 8 };
            let end = (at + width).min(b.len());
            b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
        2 => b.truncate(pick(rng, b.len())),
        3 => {
            let (src, dst, n) = (pos(rng, &b), pos(rng, &b), 1 + pick(rng, 64));
            let chunk: Vec<u8> = b[src..(src + n).min(b.len())].to_vec();
            let end = (dst + chunk.len()).min(b.len());
            b[dst..end].copy_from_slice(&chunk[..end - dst]);
        }
        4 => {
            let at = pos(rng, &b);
            if pick(rng, 2) == 0 {
                let n = 1 + pick(rng, 16);
                b.splice(at..at, (0..n).map(|_| rng.next_u64() as u8));
            } else {
                let end = (at + 1 + pick(rng, 16)).min(b.len());
                b.drain(at..end);
            }
        }
        _ => {
            let cut = pick(rng, b.len());
            let from = pick(rng, other.len());
            b.truncate(cut);
            b.extend_from_slice(&other[from..]);
        }
    }
    b
}

#[test]
fn mutated_files_never_panic_nor_allocate_absurdly() {
    // The tracker sees allocations (so the cap below is a real check).
    LARGEST.store(0, Ordering::Relaxed);
    let probe: Vec<u8> = Vec::with_capacity(1 << 20);
    assert!(LARGEST.load(Ordering::Relaxed) >= probe.capacity());
    drop(probe);

    let model = model_bytes();
    let values = all_values_bytes();
    let header_len = |b: &[u8]| GgufFile::from_bytes(b).unwrap().data_offset() as usize;
    let bases = [
        (&model, &values, header_len(&model)),
        (&values, &model, header_len(&values)),
    ];
    let mut tally = Tally::default();

    // Exhaustive: every header byte set to a few values.
    for (base, _, hlen) in bases {
        for at in 0..hlen.min(base.len()) {
            for v in [0x00, 0xff, base[at] ^ 0x01, base[at] ^ 0x80] {
                let mut b = base.clone();
                b[at] = v;
                check(&b, &mut tally, &|| format!("byte {at} set to {v:#04x}"));
            }
        }
    }
    // Random mutations, each reproducible from its seed.
    for seed in 0..20_000u64 {
        let mut rng = SplitMix64::new(seed);
        let (base, other, hlen) = bases[(seed % 2) as usize];
        let b = mutate(&mut rng, base, other, hlen);
        check(&b, &mut tally, &|| format!("seed {seed}"));
    }
    // Headers that claim the most entries the file could hold: the allocation cap still holds.
    for (count_at, min_entry) in [(8usize, 24u64), (16, 13)] {
        let mut b = model.clone();
        let count = (b.len() as u64 - 24) / min_entry;
        b[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
        check(&b, &mut tally, &|| format!("maximal count at {count_at}"));
    }
    // Both outcomes occur: mutations of padding and data stay valid, most others do not.
    assert!(
        tally.ok > 100 && tally.err > 10_000,
        "ok {} err {}",
        tally.ok,
        tally.err
    );
}
