//! Fixtures shared by the integration tests: metadata of every value type, a small synthetic
//! model of several storage types, and helpers that locate fields in a written file.
#![allow(dead_code)]

use half::{bf16, f16};
use membound_gguf::{GgufWriter, MetaArray, MetaValue};
use membound_quant::blocks::{BlockMxfp4, BlockQ4K, BlockQ6K, BlockQ8_0, as_bytes};
use membound_quant::data::{SplitMix64, normal_f32};
use membound_spec::DType;

/// Metadata holding every value type, empty and nested arrays included.
pub fn all_value_metadata() -> Vec<(String, MetaValue)> {
    let nested = MetaArray::from(vec![
        MetaArray::from(vec![1i32, 2]),
        MetaArray::from(vec![3i32]),
    ]);
    let deep = MetaArray::from(vec![MetaArray::from(vec![
        MetaArray::from(vec!["x", ""]),
        MetaArray::F64(vec![]),
    ])]);
    let values: Vec<(&str, MetaValue)> = vec![
        ("t.u8", MetaValue::U8(200)),
        ("t.i8", MetaValue::I8(-100)),
        ("t.u16", MetaValue::U16(60_000)),
        ("t.i16", MetaValue::I16(-30_000)),
        ("t.u32", MetaValue::U32(4_000_000_000)),
        ("t.i32", MetaValue::I32(-2_000_000_000)),
        ("t.f32", MetaValue::F32(-7.25)),
        ("t.bool_true", MetaValue::Bool(true)),
        ("t.bool_false", MetaValue::Bool(false)),
        ("t.string", MetaValue::from("héllo ✓ GGUF")),
        ("t.empty_string", MetaValue::from("")),
        ("t.u64", MetaValue::U64(u64::MAX)),
        ("t.i64", MetaValue::I64(i64::MIN)),
        ("t.f64", MetaValue::F64(-0.1)),
        ("a.u8", MetaValue::from(vec![0u8, 255])),
        ("a.i8", MetaValue::from(vec![-128i8, 127])),
        ("a.u16", MetaValue::from(vec![1u16, 65_535])),
        ("a.i16", MetaValue::from(vec![-1i16, 2])),
        ("a.u32", MetaValue::from(vec![7u32; 5])),
        ("a.i32", MetaValue::from(vec![-3i32, 0, 3])),
        ("a.f32", MetaValue::from(vec![0.5f32, f32::INFINITY, -0.0])),
        ("a.bool", MetaValue::from(vec![true, false, true])),
        ("a.string", MetaValue::from(vec!["a", "", "ünïcode"])),
        ("a.u64", MetaValue::from(vec![u64::MAX, 0])),
        ("a.i64", MetaValue::from(vec![i64::MIN, i64::MAX])),
        ("a.f64", MetaValue::from(vec![1e300f64, -1e-300])),
        ("a.empty_u32", MetaValue::from(Vec::<u32>::new())),
        ("a.nested_i32", MetaValue::Array(nested)),
        ("a.deep", MetaValue::Array(deep)),
    ];
    values
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// A file holding only [`all_value_metadata`].
pub fn all_values_bytes() -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in all_value_metadata() {
        w.add_meta(&k, v).unwrap();
    }
    w.to_bytes().unwrap()
}

/// A tensor of the synthetic model: name, dims (ggml order), type, bytes.
pub struct Fixture {
    pub name: &'static str,
    pub dims: Vec<u64>,
    pub dtype: DType,
    pub data: Vec<u8>,
}

fn f16_bits(rng: &mut SplitMix64) -> u16 {
    f16::from_f32(0.01 + rng.next_f32() * 0.1).to_bits()
}

fn arr<const N: usize>(rng: &mut SplitMix64) -> [u8; N] {
    std::array::from_fn(|_| rng.next_u64() as u8)
}

/// Tensors of F32, F16, BF16, Q8_0, Q4_K, Q6_K and MXFP4 with correct byte sizes and
/// deterministic data (valid block structs with random quants and small positive scales).
pub fn model_tensors(seed: u64) -> Vec<Fixture> {
    let mut rng = SplitMix64::new(seed);
    let norm = normal_f32(seed, 64, 1.0);
    let f32_bytes: Vec<u8> = norm.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16_bytes: Vec<u8> = normal_f32(seed + 1, 64 * 3, 0.1)
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16_bytes: Vec<u8> = normal_f32(seed + 2, 32 * 2, 0.1)
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect();
    let q8: Vec<BlockQ8_0> = (0..64 * 16 / 32)
        .map(|_| BlockQ8_0 {
            d: f16_bits(&mut rng),
            qs: arr::<32>(&mut rng).map(|b| b as i8),
        })
        .collect();
    let q4k: Vec<BlockQ4K> = (0..8)
        .map(|_| BlockQ4K {
            d: f16_bits(&mut rng),
            dmin: f16_bits(&mut rng),
            scales: arr(&mut rng),
            qs: arr(&mut rng),
        })
        .collect();
    let q6k: Vec<BlockQ6K> = (0..4)
        .map(|_| BlockQ6K {
            ql: arr(&mut rng),
            qh: arr(&mut rng),
            scales: arr::<16>(&mut rng).map(|b| b as i8),
            d: f16_bits(&mut rng),
        })
        .collect();
    let mx: Vec<BlockMxfp4> = (0..64 * 8 * 4 / 32)
        .map(|_| BlockMxfp4 {
            e: 120 + (rng.next_u64() % 10) as u8,
            qs: arr(&mut rng),
        })
        .collect();
    vec![
        Fixture {
            name: "token_embd.weight",
            dims: vec![256, 8],
            dtype: DType::Q4_K,
            data: as_bytes(&q4k).to_vec(),
        },
        Fixture {
            name: "blk.0.attn_norm.weight",
            dims: vec![64],
            dtype: DType::F32,
            data: f32_bytes,
        },
        Fixture {
            name: "blk.0.attn_q.weight",
            dims: vec![64, 16],
            dtype: DType::Q8_0,
            data: as_bytes(&q8).to_vec(),
        },
        Fixture {
            name: "blk.0.ffn_up.weight",
            dims: vec![64, 3],
            dtype: DType::F16,
            data: f16_bytes,
        },
        Fixture {
            name: "blk.0.ffn_down_exps.weight",
            dims: vec![64, 8, 4],
            dtype: DType::MXFP4,
            data: as_bytes(&mx).to_vec(),
        },
        Fixture {
            name: "blk.1.attn_k.weight",
            dims: vec![32, 2],
            dtype: DType::BF16,
            data: bf16_bytes,
        },
        Fixture {
            name: "output.weight",
            dims: vec![256, 4],
            dtype: DType::Q6_K,
            data: as_bytes(&q6k).to_vec(),
        },
    ]
}

/// The synthetic model's metadata.
pub fn model_metadata() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("general.architecture", MetaValue::from("llama")),
        ("general.name", MetaValue::from("membound synthetic")),
        ("llama.block_count", MetaValue::U32(2)),
        ("llama.embedding_length", MetaValue::U64(64)),
        ("llama.rope.freq_base", MetaValue::F32(500_000.0)),
        (
            "llama.attention.head_count_kv",
            MetaValue::from(vec![2u32, 4]),
        ),
    ]
}

/// A writer holding the synthetic model (metadata first, then tensors).
pub fn model_writer(tensors: &[Fixture]) -> GgufWriter<'_> {
    let mut w = GgufWriter::new();
    for (k, v) in model_metadata() {
        w.add_meta(k, v).unwrap();
    }
    for t in tensors {
        w.add_tensor(t.name, &t.dims, t.dtype, t.data.as_slice())
            .unwrap();
    }
    w
}

/// The synthetic model as bytes.
pub fn model_bytes() -> Vec<u8> {
    model_writer(&model_tensors(1)).to_bytes().unwrap()
}

/// Position of the first occurrence of `needle`.
pub fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in file", String::from_utf8_lossy(needle)))
}

/// Positions of the fields of one tensor info, found by its (unique) name.
#[derive(Debug, Clone, Copy)]
pub struct InfoFields {
    pub name_len: usize,
    pub n_dims: usize,
    pub dims: usize,
    pub ggml_type: usize,
    pub offset: usize,
}

pub fn locate_tensor(bytes: &[u8], name: &str) -> InfoFields {
    let name_at = find(bytes, name.as_bytes());
    let n_dims = name_at + name.len();
    let nd = u32::from_le_bytes(bytes[n_dims..n_dims + 4].try_into().unwrap()) as usize;
    let dims = n_dims + 4;
    let ggml_type = dims + 8 * nd;
    InfoFields {
        name_len: name_at - 8,
        n_dims,
        dims,
        ggml_type,
        offset: ggml_type + 4,
    }
}

pub fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}
