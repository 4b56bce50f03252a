//! Hostile specs and fit requests: every count is bounded, nothing wraps, and any input gives
//! either a clean error or finite, consistent numbers (weights ≥ bytes read per token, KV
//! monotone in context). The property test draws its inputs from a small seeded PRNG.

use std::time::Instant;

use membound_spec::bytes::weights;
use membound_spec::fit::{FitRequest, plan};
use membound_spec::hardware::{DeviceKind, table};
use membound_spec::kv::{KvLayout, kv_cache};
use membound_spec::model::MAX_CONTEXT;
use membound_spec::registry::{EMBEDDED, parse};
use membound_spec::tensors::TensorClass;
use membound_spec::{DType, ModelSpec, Recipe};

/// The embedded spec file `file` with `from` replaced by `to` (which must occur).
fn edited(file: &str, from: &str, to: &str) -> String {
    let (_, text) = EMBEDDED.iter().find(|(f, _)| *f == file).unwrap();
    assert!(text.contains(from), "{file} lacks `{from}`");
    text.replacen(from, to, 1)
}

/// Parses `text`, expecting an error that names `field`, within a second.
fn rejects(text: &str, field: &str) {
    let start = Instant::now();
    let e = parse("hostile.toml", text).expect_err(field).to_string();
    assert!(e.contains(field), "error does not name `{field}`: {e}");
    assert!(
        start.elapsed().as_secs_f64() < 1.0,
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn counts_and_dims_are_bounded() {
    let (llama, next) = ("llama-3.1-8b.toml", "qwen3-coder-next.toml");
    let pattern = format!("layer_pattern = \"{}F\"", "L".repeat(5000));
    let cases = [
        (llama, "n_layers = 32", "n_layers = 1000000", "n_layers"),
        (llama, "hidden = 4096", "hidden = 1099511627776", "hidden"),
        (llama, "head_dim = 128", "head_dim = 1073741824", "head_dim"),
        (
            llama,
            "max_context = 131072",
            "max_context = 9223372036854775807",
            "max_context",
        ),
        (
            next,
            "n_shared = 1 ",
            "n_shared = 9223372036854775807 ",
            "n_shared",
        ),
        (
            next,
            "n_experts = 512",
            "n_experts = 100000000",
            "n_experts",
        ),
        (next, "layer_pattern = \"LLLF\"", &pattern, "layer_pattern"),
        // Published figures: finite and positive.
        (
            next,
            "params_total = 79.67e9",
            "params_total = -30.5e9",
            "published.params_total",
        ),
        (
            next,
            "params_total = 79.67e9",
            "params_total = nan",
            "published.params_total",
        ),
    ];
    for (file, from, to, field) in cases {
        rejects(&edited(file, from, to), field);
    }
    // Each field within bounds, the whole beyond what fits in memory anywhere.
    let huge = edited(llama, "hidden = 4096", "hidden = 262144");
    let huge = huge.replacen("intermediate = 14336", "intermediate = 262144", 1);
    rejects(
        &huge.replacen("n_layers = 32", "n_layers = 1024", 1),
        "parameters",
    );
}

#[test]
fn published_rates_are_finite_and_positive() {
    let glm = "glm-4.7-flash.toml";
    let (_, text) = EMBEDDED.iter().find(|(f, _)| *f == glm).unwrap();
    let tps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .expect("glm has a published decode rate");
    let tps = tps.split_whitespace().next().unwrap();
    for bad in ["nan", "-5.0", "inf"] {
        rejects(
            &edited(glm, &format!("tps = {tps}"), &format!("tps = {bad}")),
            "published.decode.tps",
        );
    }
}

#[test]
fn kv_cache_refuses_contexts_it_cannot_count() {
    let m = parse(
        "llama.toml",
        EMBEDDED
            .iter()
            .find(|(f, _)| *f == "llama-3.1-8b.toml")
            .unwrap()
            .1,
    )
    .unwrap();
    for ctx in [0, MAX_CONTEXT + 1, u64::MAX] {
        let e = kv_cache(&m, KvLayout::Gqa, DType::F16, ctx).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }
    // An unvalidated spec whose cache does not fit in 64 bits: an error, not a wrapped size.
    let mut wide = m.clone();
    wide.attention.n_kv_heads = Some(1 << 40);
    wide.attention.head_dim = Some(1 << 20);
    assert!(kv_cache(&wide, KvLayout::Gqa, DType::F16, MAX_CONTEXT).is_err());
}

/// xorshift64*: a small seeded PRNG, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A value that probes edges: 0, 1, small, powers of two around the bounds, huge.
    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => self.below(3) as u64,
            1 => 1 + self.below(4096) as u64,
            2 => 1u64 << self.below(64),
            3 => (1u64 << self.below(63)) + 1,
            4 => u64::MAX - self.below(2) as u64,
            _ => self.next() >> self.below(64),
        }
    }
}

/// Replaces the integer after the `n`-th `= ` that is followed by a digit with `v`.
fn mutate_number(text: &str, n: usize, v: &str) -> String {
    let spots: Vec<usize> = text
        .match_indices("= ")
        .map(|(i, _)| i + 2)
        .filter(|&i| text[i..].starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    let at = spots[n % spots.len()];
    let len = text[at..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'))
        .unwrap_or(text.len() - at);
    format!("{}{v}{}", &text[..at], &text[at + len..])
}

/// A tied model reads its embedding row and then the whole matrix as the output: it may read
/// one row more than it stores.
fn tied_row(m: &ModelSpec, recipe: Recipe) -> u64 {
    if m.tied_embeddings {
        weights(m, recipe).class(m, TensorClass::TokenEmbd).bytes / m.vocab
    } else {
        0
    }
}

/// A spec that validated must give finite, consistent numbers, and plans must not panic.
fn check_consistent(m: &ModelSpec, rng: &mut Rng) {
    for recipe in Recipe::all() {
        let w = weights(m, recipe);
        let t = w.totals(m);
        let sum: u128 = w.tensors.iter().map(|s| u128::from(s.bytes)).sum();
        assert_eq!(u128::from(t.bytes), sum, "{}: total bytes wrapped", m.name);
        let (row, row_params) = (tied_row(m, recipe), u64::from(m.tied_embeddings) * m.hidden);
        assert!(
            t.bytes + row >= t.active_bytes,
            "{} {recipe}: reads more than it stores",
            m.name
        );
        assert!(
            t.params + row_params >= t.params_active,
            "{} {recipe}",
            m.name
        );
    }
    let kv_types = [DType::F16, DType::Q8_0, DType::F32, DType::Q4_0];
    let dtype = kv_types[rng.below(kv_types.len())];
    let layout = KvLayout::native(m);
    let mut last = 0;
    for ctx in [1, 2, 4096, 1 << 20, MAX_CONTEXT] {
        match kv_cache(m, layout, dtype, ctx) {
            Ok(k) => {
                assert!(k.total >= last, "{}: KV shrinks at {ctx}", m.name);
                assert_eq!(
                    k.per_layer.iter().map(|b| u128::from(*b)).sum::<u128>(),
                    k.total.into()
                );
                last = k.total;
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    let gpus: Vec<_> = table()
        .into_iter()
        .filter(|d| d.kind != DeviceKind::Cpu)
        .collect();
    let host = table()
        .into_iter()
        .find(|d| d.kind == DeviceKind::Cpu)
        .unwrap();
    let recipes: Vec<Recipe> = Recipe::all().collect();
    let req = FitRequest {
        recipe: recipes[rng.below(recipes.len())],
        kv_dtype: dtype,
        kv_layout: None,
        ctx: [0, 1, 4096, MAX_CONTEXT, MAX_CONTEXT + 1, rng.value()][rng.below(6)],
        devices: (0..1 + rng.below(3))
            .map(|_| gpus[rng.below(gpus.len())].clone())
            .collect(),
        host,
        reserve_bytes: rng.value() >> rng.below(64),
    };
    if let Ok(p) = plan(m, &req) {
        assert!(p.weight_bytes + tied_row(m, req.recipe) >= p.weight_bytes_active);
        if let Some(tps) = p.roofline_tps {
            assert!(tps.is_finite() && tps > 0.0, "{}: roofline {tps}", m.name);
        }
        for s in p.devices.iter().chain([&p.host]) {
            assert!(
                s.seconds_per_token
                    .is_none_or(|t| t.is_finite() && t >= 0.0)
            );
        }
    }
}

#[test]
fn random_specs_and_fits_give_errors_or_consistent_numbers() {
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let start = Instant::now();
    let (mut ok, mut rejected) = (0, 0);
    for round in 0..600 {
        let (file, text) = EMBEDDED[rng.below(EMBEDDED.len())];
        let mut text = text.to_string();
        for _ in 0..1 + rng.below(3) {
            let v = match rng.below(8) {
                0 => ["-5", "nan", "inf", "1e6", "0.5", "-0"][rng.below(6)].to_string(),
                _ => rng.value().to_string(),
            };
            text = mutate_number(&text, rng.below(64), &v);
        }
        match parse(file, &text) {
            Ok(m) => {
                ok += 1;
                check_consistent(&m, &mut rng);
            }
            Err(e) => {
                rejected += 1;
                let e = e.to_string();
                assert!(e.contains(file), "round {round}: {e}");
            }
        }
    }
    assert!(ok > 50 && rejected > 50, "ok {ok}, rejected {rejected}");
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
}
