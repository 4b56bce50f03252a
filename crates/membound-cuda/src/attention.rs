//! Decode attention on a GPU (`kernels/attention.cu`): the split kernel over the context
//! (flash-decoding) and the reduction, for caches of F16, BF16 or Q8_0 rows in any layout of
//! `membound_spec::attention`. [`attn_plan`] fixes the geometry (heads per block, tiles,
//! splits) for a shape and depth, so the GPU ([`GpuAttn`]) and the host build of the kernels
//! run the same launches.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use membound_spec::DType;
use membound_spec::attention::AttnShape;

use crate::error::{CudaError, Result};
use crate::gpu::{Gpu, Kernel};
use crate::params::AttnParams;

/// `AttnParams::flags`: V rows are the first `d_v` values of the K rows.
pub const ATTN_V_IN_K: u32 = 1;
/// `AttnParams::flags`: a sink logit per query head joins the denominator.
pub const ATTN_SINKS: u32 = 2;
/// `AttnParams::flags`: the reduction also writes the output as Q8_1 blocks (`d_v` a multiple
/// of 32), the next GEMV's input.
pub const ATTN_QUANT: u32 = 4;
/// Rows per tile at most (one per lane).
pub const ATTN_MAX_TILE: usize = 32;
/// Splits of the context at most (`ATTN_MAX_SPLITS`: the reduction's weights in shared memory).
pub const ATTN_MAX_SPLITS: usize = 1024;
/// Warps of a reduction block (`ATTN_REDUCE_WARPS`); a block merges 32 output values.
pub const ATTN_REDUCE_WARPS: u32 = 8;
/// Split-kernel warps per SM the default split count aims at ([`split_warps_per_sm`]), per
/// width class in [`AttnWidth::ALL`]'s order. Measured on an H200 at 32k (2026-11-28): 8 beat 16
/// for GQA (Llama-70B 141 against 154 µs, gpt-oss 87 against 96); 16 beat 8 for MLA latent
/// (DeepSeek-V2-Lite 113 against 192 µs; GLM-4.7-Flash even).
pub const DEFAULT_SPLIT_WARPS_PER_SM: [usize; 6] = [8, 8, 8, 8, 8, 16];

/// Cache element types of the split kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttnCache {
    /// IEEE half rows.
    F16,
    /// bfloat16 rows.
    Bf16,
    /// ggml Q8_0 rows (34-byte blocks of 32 values).
    Q8_0,
}

/// Classes of the split kernels: the longest K and V rows each takes (so how much of a row one
/// lane holds) and how many query heads a warp takes (`AttnWidth` in attention.cu, the same
/// numbers). A group smaller than a warp's heads leaves the rest idle, so the common widths
/// come with fewer heads per warp too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttnWidth {
    /// K and V rows up to 64 values, 8 heads per warp (gpt-oss).
    W64,
    /// Up to 128, 8 heads per warp (Qwen3, Llama-70B, gpt-oss-like groups of 8).
    W128,
    /// Up to 128, 4 heads per warp (Llama-3.1-8B, Mistral: groups of 4; Gemma-3 27B: 2).
    W128H4,
    /// Up to 256, 4 heads per warp (Qwen3-Next).
    W256,
    /// Up to 256, one head per warp (expanded MLA: one query head per cached head).
    W256H1,
    /// K up to 576 and V up to 512, 2 heads per warp (MLA latent and split).
    W576,
}

/// What a width class fixes in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WidthGeometry {
    /// K value pairs per lane (rows up to 64 × this).
    pub k_pairs: usize,
    /// V value pairs per lane.
    pub v_pairs: usize,
    /// Query heads one warp takes.
    pub heads_per_warp: usize,
    /// Warps per block at most.
    pub max_warps: usize,
    /// Bytes of one tile buffer (the kernel holds two).
    pub tile_bytes: usize,
}

impl AttnWidth {
    /// Every class, narrowest first.
    pub const ALL: [AttnWidth; 6] = [
        AttnWidth::W64,
        AttnWidth::W128,
        AttnWidth::W128H4,
        AttnWidth::W256,
        AttnWidth::W256H1,
        AttnWidth::W576,
    ];

    /// The kernel's numbers for this class.
    pub const fn geometry(self) -> WidthGeometry {
        let (k_pairs, v_pairs, heads_per_warp, max_warps, tile_kib) = match self {
            AttnWidth::W64 => (1, 1, 8, 1, 8),
            AttnWidth::W128 => (2, 2, 8, 1, 8),
            AttnWidth::W128H4 => (2, 2, 4, 2, 8),
            AttnWidth::W256 => (4, 4, 4, 2, 12),
            AttnWidth::W256H1 => (4, 4, 1, 8, 12),
            AttnWidth::W576 => (9, 8, 2, 8, 18),
        };
        WidthGeometry {
            k_pairs,
            v_pairs,
            heads_per_warp,
            max_warps,
            tile_bytes: tile_kib * 1024,
        }
    }

    /// The class for K rows of `d_k` and V rows of `d_v` values and `group` query heads per
    /// cached head: the narrowest rows that take them, then, of the classes with those rows,
    /// the fewest heads per warp that still take the group (or the most there are).
    pub fn for_shape(d_k: usize, d_v: usize, group: usize) -> Option<AttnWidth> {
        let rows = |w: &AttnWidth| {
            let g = w.geometry();
            (64 * g.k_pairs, 64 * g.v_pairs)
        };
        let fits = |w: &AttnWidth| {
            let (k, v) = rows(w);
            d_k <= k && d_v <= v
        };
        let first = AttnWidth::ALL.into_iter().find(fits)?;
        let same: Vec<AttnWidth> = AttnWidth::ALL
            .into_iter()
            .filter(|w| rows(w) == rows(&first))
            .collect();
        let most = same.iter().map(|w| w.geometry().heads_per_warp).max()?;
        let want = group.clamp(1, most);
        same.into_iter()
            .filter(|w| w.geometry().heads_per_warp >= want)
            .min_by_key(|w| w.geometry().heads_per_warp)
    }
}

/// The `extern "C"` name of the split kernel for a cache type and width class.
pub fn split_kernel_name(cache: AttnCache, width: AttnWidth) -> &'static str {
    const NAMES: [[&str; 6]; 3] = [
        [
            "mb_attn_f16_w64",
            "mb_attn_f16_w128",
            "mb_attn_f16_w128h4",
            "mb_attn_f16_w256",
            "mb_attn_f16_w256h1",
            "mb_attn_f16_w576",
        ],
        [
            "mb_attn_bf16_w64",
            "mb_attn_bf16_w128",
            "mb_attn_bf16_w128h4",
            "mb_attn_bf16_w256",
            "mb_attn_bf16_w256h1",
            "mb_attn_bf16_w576",
        ],
        [
            "mb_attn_q8_0_w64",
            "mb_attn_q8_0_w128",
            "mb_attn_q8_0_w128h4",
            "mb_attn_q8_0_w256",
            "mb_attn_q8_0_w256h1",
            "mb_attn_q8_0_w576",
        ],
    ];
    NAMES[cache as usize][width as usize]
}

/// Row lengths of the tensor-core split kernels (`mb_attn_mma_*_d<D>`): K and V rows of exactly
/// this many values, groups of up to 16 query heads, F16 or BF16 caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmaRows {
    /// 64 values (gpt-oss); 4 warps of 16 tokens per block.
    D64,
    /// 128 values (Llama, Qwen3, Mistral); 2 warps of 16 tokens per block.
    D128,
    /// MLA latent: K rows of 576 values whose first 512 are V; 4 warps share each 16-token
    /// tile (a quarter of the dimensions each), query heads in blocks of up to 16.
    Mla576,
}

impl MmaRows {
    /// Every row length.
    pub const ALL: [MmaRows; 3] = [MmaRows::D64, MmaRows::D128, MmaRows::Mla576];

    /// Values of a K row and of a V row.
    pub const fn values(self) -> (usize, usize) {
        match self {
            MmaRows::D64 => (64, 64),
            MmaRows::D128 => (128, 128),
            MmaRows::Mla576 => (576, 512),
        }
    }

    /// Warps per block (`AttnMmaWidth<D>::W`, `ATTN_MLA_WARPS`).
    pub const fn warps(self) -> usize {
        match self {
            MmaRows::D64 | MmaRows::Mla576 => 4,
            MmaRows::D128 => 2,
        }
    }

    /// Tokens per tile: 16 per warp, or 16 shared by the MLA kernel's warps.
    pub const fn tile(self) -> usize {
        match self {
            MmaRows::Mla576 => 16,
            _ => 16 * self.warps(),
        }
    }

    /// The tensor-core kernel for `s`, where one takes it: an F16 or BF16 cache, either of
    /// separate K and V rows of 64 or 128 values with at most 16 query heads per cached head,
    /// or MLA latent rows (576 values, V their first 512; any group, in blocks of 16).
    pub fn for_shape(s: &AttnShape) -> Option<MmaRows> {
        if !matches!(s.dtype, DType::F16 | DType::BF16) {
            return None;
        }
        MmaRows::ALL.into_iter().find(|&r| {
            let mla = r == MmaRows::Mla576;
            (s.d_k, s.d_v) == r.values() && s.v_in_k == mla && (mla || s.group() <= 16)
        })
    }
}

/// The `extern "C"` name of a tensor-core split kernel (F16 or BF16 caches only; a Q8_0 cache
/// never plans one).
pub fn mma_kernel_name(cache: AttnCache, rows: MmaRows) -> &'static str {
    match (cache, rows) {
        (AttnCache::Bf16, MmaRows::D64) => "mb_attn_mma_bf16_d64",
        (AttnCache::Bf16, MmaRows::D128) => "mb_attn_mma_bf16_d128",
        (AttnCache::Bf16, MmaRows::Mla576) => "mb_attn_mma_mla_bf16",
        (_, MmaRows::D64) => "mb_attn_mma_f16_d64",
        (_, MmaRows::D128) => "mb_attn_mma_f16_d128",
        (_, MmaRows::Mla576) => "mb_attn_mma_mla_f16",
    }
}

/// Whether plans take the tensor-core split kernels where a shape allows
/// ([`MmaRows::for_shape`]): `MEMBOUND_ATTN_MMA=1`; off by default until a GPU has timed them
/// against the CUDA-core kernels.
pub fn tensor_cores() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| match std::env::var("MEMBOUND_ATTN_MMA").as_deref() {
        Err(_) | Ok("0") => false,
        Ok("1") => true,
        Ok(v) => {
            eprintln!("membound: MEMBOUND_ATTN_MMA=`{v}` is not 0 or 1; using 0");
            false
        }
    })
}

/// The split kernels' cache type for a cache dtype.
pub fn attn_cache(dtype: DType) -> Result<AttnCache> {
    Ok(match dtype {
        DType::F16 => AttnCache::F16,
        DType::BF16 => AttnCache::Bf16,
        DType::Q8_0 => AttnCache::Q8_0,
        other => {
            return Err(CudaError::invalid(
                "attention",
                format!(
                    "no CUDA attention kernel for a {other} cache (supported: f16, bf16, q8_0)"
                ),
            ));
        }
    })
}

/// Split-kernel warps per SM the default split count aims at for `width`: `MEMBOUND_ATTN_WARPS`
/// (1 to 64, a tuning knob for comparing on a GPU; every class), else
/// [`DEFAULT_SPLIT_WARPS_PER_SM`]. More warps hide more latency; more splits write more
/// partials for the reduction to read.
pub fn split_warps_per_sm(width: AttnWidth) -> usize {
    warps_knob().unwrap_or(DEFAULT_SPLIT_WARPS_PER_SM[width as usize])
}

fn warps_knob() -> Option<usize> {
    static WARPS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *WARPS.get_or_init(|| {
        let v = std::env::var("MEMBOUND_ATTN_WARPS").ok()?;
        let n = v.trim().parse().ok().filter(|n| (1..=64).contains(n));
        if n.is_none() {
            eprintln!("membound: MEMBOUND_ATTN_WARPS=`{v}` is not 1 to 64; using the defaults");
        }
        n
    })
}

/// The launches of one decode step: parameters, the split kernel's and the reduction's
/// geometry.
#[derive(Clone, Debug)]
pub struct AttnPlan {
    /// Kernel parameters.
    pub params: AttnParams,
    /// The split kernel.
    pub kernel: Kernel,
    /// Its geometry.
    pub split: LaunchConfig,
    /// The reduction's geometry.
    pub reduce: LaunchConfig,
}

impl AttnPlan {
    /// f32 values of the partial (max, sum) pairs and of the partial accumulators.
    pub fn partial_len(&self) -> (usize, usize) {
        let p = &self.params;
        let n = (p.n_heads * p.splits) as usize;
        (2 * n, n * p.d_v as usize)
    }
}

fn bad(reason: String) -> CudaError {
    CudaError::invalid("attention", reason)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// What a plan takes from the shape and the device, whatever the depth.
struct Layout {
    kernel: Kernel,
    tile: usize,
    head_groups: usize,
    per_block: usize,
    warps: usize,
    blocks: usize,
    /// Splits of the grid asked for (before the depth caps them).
    target: usize,
    /// Partial results each split of the grid writes per head (the tensor-core kernels: one
    /// per warp).
    per_split: usize,
}

fn layout(
    s: &AttnShape,
    tokens: usize,
    sm_count: u32,
    splits: Option<u32>,
    mma: bool,
) -> Result<Layout> {
    s.validate().map_err(bad)?;
    let cache = attn_cache(s.dtype)?;
    if tokens == 0 || u32::try_from(tokens).is_err() {
        return Err(bad(format!("a cache of {tokens} tokens")));
    }
    if let Some(rows) = MmaRows::for_shape(s).filter(|_| mma) {
        let warps = rows.warps();
        let mla = rows == MmaRows::Mla576;
        // MLA: query heads in blocks of up to 16 (an MMA's rows), one partial per block; the
        // others: the whole group in one block, a partial per warp.
        let head_groups = if mla { s.group().div_ceil(16) } else { 1 };
        let blocks = s.kv_heads * head_groups;
        let target = splits.map(|n| n as usize).unwrap_or_else(|| {
            (warps_knob().unwrap_or(8) * sm_count as usize).div_ceil(blocks * warps)
        });
        return Ok(Layout {
            kernel: Kernel::AttnMma(cache, rows),
            tile: rows.tile(),
            head_groups,
            per_block: s.group().div_ceil(head_groups),
            warps,
            blocks,
            target,
            per_split: if mla { 1 } else { warps },
        });
    }
    let width = AttnWidth::for_shape(s.d_k, s.d_v, s.group())
        .filter(|_| s.d_k.is_multiple_of(32) && s.d_v.is_multiple_of(32))
        .ok_or_else(|| {
            bad(format!(
                "rows of {} (K) and {} (V) values (the kernels take multiples of 32 up to 576 and 512)",
                s.d_k, s.d_v
            ))
        })?;
    let g = width.geometry();
    let (kb, vb) = s.row_bytes();
    let tile = (g.tile_bytes / (kb.next_multiple_of(16) + vb)).min(ATTN_MAX_TILE);
    // Whole 16-byte words where the rows allow: every tile then starts 16-byte aligned (Q8_0
    // rows of 136 bytes: tiles of an even number of rows), so the copies stay 16-byte wide.
    let unit = [kb, vb]
        .iter()
        .map(|&b| 16 / gcd(b, 16))
        .fold(1, |a, u| a.max(u));
    let tile = if tile >= unit {
        tile / unit * unit
    } else {
        tile
    };
    if tile == 0 {
        return Err(bad(format!("rows of {kb} + {vb} bytes exceed a tile")));
    }
    let group = s.group();
    let head_groups = group.div_ceil(g.heads_per_warp * g.max_warps);
    let per_block = group.div_ceil(head_groups);
    let warps = per_block.div_ceil(g.heads_per_warp);
    let blocks = s.kv_heads * head_groups;
    let target = splits.map(|n| n as usize).unwrap_or_else(|| {
        (split_warps_per_sm(width) * sm_count as usize).div_ceil(blocks * warps)
    });
    Ok(Layout {
        kernel: Kernel::Attn(cache, width),
        tile,
        head_groups,
        per_block,
        warps,
        blocks,
        target,
        per_split: 1,
    })
}

impl Layout {
    /// Grid splits at most for `attended` tokens: one tile each, and no more partials per head
    /// than the reduction takes.
    fn max_splits(&self, attended: usize) -> usize {
        attended
            .div_ceil(self.tile)
            .min(ATTN_MAX_SPLITS / self.per_split)
            .max(1)
    }
}

/// The partial buffers' lengths (f32 values of the (max, sum) pairs and of the accumulators)
/// that hold the plan of `shape` at every depth up to `tokens` (the plans' split counts are not
/// monotonic in the depth: chunks are rounded up to whole tiles).
pub fn attn_max_partials(
    shape: &AttnShape,
    tokens: usize,
    sm_count: u32,
) -> Result<(usize, usize)> {
    attn_max_partials_with(shape, tokens, sm_count, tensor_cores())
}

/// [`attn_max_partials`] for plans with the tensor-core kernels (`mma`) or without.
pub fn attn_max_partials_with(
    shape: &AttnShape,
    tokens: usize,
    sm_count: u32,
    mma: bool,
) -> Result<(usize, usize)> {
    let lay = layout(shape, tokens, sm_count, None, mma)?;
    let most = lay.target.clamp(1, lay.max_splits(shape.attended(tokens)));
    let n = shape.n_heads * most * lay.per_split;
    Ok((2 * n, n * shape.d_v))
}

/// The plan for `shape` over a cache of `tokens` rows per head at `depth`: the narrowest width
/// class that takes the rows, query heads split into balanced groups of at most heads per warp
/// × warps per block of that class, tiles as large as its tile buffer takes (at most 32 rows),
/// and `splits` (or enough splits that the split kernel's warps reach [`split_warps_per_sm`]
/// per SM over `sm_count` SMs, each split at least one tile, at most [`ATTN_MAX_SPLITS`]).
pub fn attn_plan(
    shape: &AttnShape,
    tokens: usize,
    depth: usize,
    sm_count: u32,
    splits: Option<u32>,
) -> Result<AttnPlan> {
    attn_plan_with(shape, tokens, depth, sm_count, splits, tensor_cores())
}

/// [`attn_plan`] with the tensor-core kernels taken where the shape allows (`mma`) or never.
pub fn attn_plan_with(
    shape: &AttnShape,
    tokens: usize,
    depth: usize,
    sm_count: u32,
    splits: Option<u32>,
    mma: bool,
) -> Result<AttnPlan> {
    let s = shape;
    let lay = layout(s, tokens, sm_count, splits, mma)?;
    if depth == 0 || depth > tokens {
        return Err(bad(format!("depth {depth} in a cache of {tokens} tokens")));
    }
    let (tile, warps) = (lay.tile, lay.warps);
    let group = s.group();
    let (kb, vb) = s.row_bytes();
    let attended = s.attended(depth);
    let splits = lay.target.clamp(1, lay.max_splits(attended));
    let chunk = attended.div_ceil(splits).next_multiple_of(tile);
    let splits = attended.div_ceil(chunk);
    let mut flags = 0;
    if s.v_in_k {
        flags |= ATTN_V_IN_K;
    }
    if s.sinks {
        flags |= ATTN_SINKS;
    }
    let params = AttnParams {
        n_heads: s.n_heads as u32,
        kv_heads: s.kv_heads as u32,
        d_k: s.d_k as u32,
        d_v: s.d_v as u32,
        group: group as u32,
        heads_per_block: lay.per_block as u32,
        head_groups: lay.head_groups as u32,
        tokens: tokens as u32,
        first: (depth - attended) as u32,
        end: depth as u32,
        chunk: chunk as u32,
        splits: (splits * lay.per_split) as u32,
        tile: tile as u32,
        flags,
        scale: s.scale,
        _pad: 0,
        k_row_bytes: kb as u64,
        v_row_bytes: vb as u64,
    };
    Ok(AttnPlan {
        params,
        kernel: lay.kernel,
        split: LaunchConfig {
            grid_dim: (lay.blocks as u32, splits as u32, 1),
            block_dim: (warps as u32 * 32, 1, 1),
            shared_mem_bytes: 0,
        },
        reduce: LaunchConfig {
            grid_dim: (s.n_heads as u32, s.d_v.div_ceil(32) as u32, 1),
            block_dim: (ATTN_REDUCE_WARPS * 32, 1, 1),
            shared_mem_bytes: 0,
        },
    })
}

/// One layer's cache and a decode step's buffers on a GPU.
pub struct GpuAttn {
    plan: AttnPlan,
    q: CudaSlice<f32>,
    k: CudaSlice<u8>,
    v: CudaSlice<u8>,
    sinks: CudaSlice<f32>,
    part_ml: CudaSlice<f32>,
    part_acc: CudaSlice<f32>,
    out: CudaSlice<f32>,
}

impl GpuAttn {
    /// Uploads a cache (`k`, and `v` unless V is in K; `tokens` rows per head), the queries and
    /// the sinks, and plans the step at `depth`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        shape: &AttnShape,
        tokens: usize,
        k: &[u8],
        v: &[u8],
        q: &[f32],
        sinks: &[f32],
        depth: usize,
    ) -> Result<GpuAttn> {
        let plan = attn_plan(shape, tokens, depth, gpu.info().sm_count, None)?;
        let (kb, vb) = shape.row_bytes();
        let rows = shape.kv_heads * tokens;
        if k.len() != rows * kb || v.len() != rows * vb || q.len() != shape.n_heads * shape.d_k {
            return Err(bad(format!(
                "cache of {} + {} bytes and {} query values for {tokens} tokens",
                k.len(),
                v.len(),
                q.len()
            )));
        }
        let (ml, acc) = plan.partial_len();
        let one = [0u8; 16];
        Ok(GpuAttn {
            q: gpu.upload(q)?,
            k: gpu.upload(k)?,
            v: gpu.upload(if v.is_empty() { &one } else { v })?,
            sinks: gpu.upload(if shape.sinks { sinks } else { &[0.0] })?,
            part_ml: gpu.alloc_zeros(ml)?,
            part_acc: gpu.alloc_zeros(acc)?,
            out: gpu.alloc_zeros(shape.n_heads * shape.d_v)?,
            plan,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &AttnPlan {
        &self.plan
    }

    /// Queues the step (timed): the split kernel and the reduction.
    pub fn forward(&mut self, gpu: &Gpu) -> Result<()> {
        let p = self.plan.params;
        let mut a = gpu.stream.launch_builder(gpu.function(self.plan.kernel));
        a.arg(&self.q)
            .arg(&self.k)
            .arg(&self.v)
            .arg(&mut self.part_ml)
            .arg(&mut self.part_acc)
            .arg(&p);
        // SAFETY: mb_attn_<type>(const float* q, const u8* k, const u8* v, float* part_ml,
        // float* part_acc, AttnParams); the buffers were sized in `new` for this plan.
        unsafe { gpu.launch(self.plan.kernel, a, self.plan.split) }?;
        let mut a = gpu.stream.launch_builder(gpu.function(Kernel::AttnReduce));
        a.arg(&self.part_ml)
            .arg(&self.part_acc)
            .arg(&self.sinks)
            .arg(&mut self.out)
            .arg(&self.sinks)
            .arg(&p);
        // SAFETY: mb_attn_reduce(const float*, const float*, const float* sinks, float* out,
        // block_q8_1* outq, AttnParams); sizes as above, sinks n_heads values when the flag is
        // set; outq is not written without ATTN_QUANT (never set here).
        unsafe { gpu.launch(Kernel::AttnReduce, a, self.plan.reduce) }
    }

    /// The outputs (`n_heads × d_v`).
    pub fn output(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        gpu.download(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membound_spec::kv::KvLayout;
    use membound_spec::model::LayerKind;

    fn glm(layout: KvLayout, dtype: DType) -> AttnShape {
        let m = membound_spec::registry::find("glm-4.7-flash").unwrap();
        AttnShape::from_spec(&m, layout, dtype, LayerKind::Full).unwrap()
    }

    #[test]
    fn plans_fill_the_device_and_fit_the_tile() {
        // MLA latent F16 at 32k on 132 SMs: the 576-wide class, two heads per warp and at most
        // 8 warps, so 20 heads in 2 blocks of 5 warps; 1152-byte rows in tiles of 16 (18 KiB,
        // two buffers); 16 warps per SM asked: ceil(2112 / 10) = 212 splits, chunks rounded up
        // to whole tiles: 205 of 160 tokens.
        let p = attn_plan(
            &glm(KvLayout::MlaLatent, DType::F16),
            32768,
            32768,
            132,
            None,
        )
        .unwrap();
        assert_eq!(p.kernel, Kernel::Attn(AttnCache::F16, AttnWidth::W576));
        assert_eq!((p.params.heads_per_block, p.params.head_groups), (10, 2));
        assert_eq!(p.split.block_dim, (5 * 32, 1, 1));
        assert_eq!(p.params.tile, 16);
        assert_eq!(p.split.grid_dim, (2, 205, 1));
        assert_eq!(p.params.chunk, 160);
        assert!(p.params.chunk as usize * p.params.splits as usize >= 32768);
        // The reduction: one block per head and 32 output values.
        assert_eq!(p.reduce.grid_dim, (20, 16, 1));
        // GQA of 128-value heads, 8 per cached head: one warp takes the group; Q8_0 rows of
        // 136 bytes in tiles of an even number of rows (16-byte aligned).
        let llama = membound_spec::registry::find("llama-3.1-70b").unwrap();
        let gqa =
            AttnShape::from_spec(&llama, KvLayout::Gqa, DType::Q8_0, LayerKind::Full).unwrap();
        let g = attn_plan(&gqa, 32768, 32768, 132, None).unwrap();
        assert_eq!(g.kernel, Kernel::Attn(AttnCache::Q8_0, AttnWidth::W128));
        assert_eq!((g.params.heads_per_block, g.split.block_dim.0), (8, 32));
        assert_eq!(g.params.tile, 28);
        assert_eq!(g.split.grid_dim.0, 8);
        // Width classes: the narrowest that takes the rows.
        // Classes: the narrowest rows, then the fewest heads per warp that take the group.
        assert_eq!(AttnWidth::for_shape(64, 64, 8), Some(AttnWidth::W64));
        assert_eq!(AttnWidth::for_shape(128, 128, 8), Some(AttnWidth::W128));
        assert_eq!(AttnWidth::for_shape(128, 128, 16), Some(AttnWidth::W128));
        assert_eq!(AttnWidth::for_shape(128, 128, 4), Some(AttnWidth::W128H4));
        assert_eq!(AttnWidth::for_shape(128, 128, 2), Some(AttnWidth::W128H4));
        assert_eq!(AttnWidth::for_shape(192, 128, 1), Some(AttnWidth::W256H1));
        assert_eq!(AttnWidth::for_shape(256, 256, 8), Some(AttnWidth::W256));
        assert_eq!(AttnWidth::for_shape(256, 256, 3), Some(AttnWidth::W256));
        assert_eq!(AttnWidth::for_shape(576, 512, 20), Some(AttnWidth::W576));
        assert_eq!(AttnWidth::for_shape(640, 512, 1), None);
        // Split: K and V rows share the tile.
        let s = attn_plan(&glm(KvLayout::MlaSplit, DType::F16), 4096, 4096, 132, None).unwrap();
        assert_eq!(s.params.tile, (18 * 1024 / (1152 + 1024)) as u32);
        // At depth 1k the splits stop at one tile each.
        let short = attn_plan(
            &glm(KvLayout::MlaLatent, DType::Q8_0),
            1024,
            1024,
            132,
            None,
        )
        .unwrap();
        assert!(short.params.splits as usize <= 1024usize.div_ceil(short.params.tile as usize));
        // A forced split count, and the partial buffers it needs.
        let one = attn_plan(
            &glm(KvLayout::ExpandedMha, DType::F16),
            100,
            100,
            132,
            Some(1),
        )
        .unwrap();
        assert_eq!((one.params.splits, one.params.heads_per_block), (1, 1));
        assert_eq!(one.partial_len(), (2 * 20, 20 * 256));
        assert!(attn_plan(&glm(KvLayout::MlaLatent, DType::F32), 8, 8, 1, None).is_err());
        assert!(attn_max_partials(&glm(KvLayout::MlaLatent, DType::F16), 0, 132).is_err());
        assert!(attn_plan(&glm(KvLayout::MlaLatent, DType::F16), 8, 9, 1, None).is_err());
    }

    #[test]
    fn the_largest_partials_hold_every_depths_plan() {
        // Split counts are not monotonic in the depth (GLM latent F16 on 132 SMs: 205 splits
        // at 32k, 212 at 3392): the decode step's buffers are sized by attn_max_partials.
        let llama = membound_spec::registry::find("llama-3.1-70b").unwrap();
        let oss = membound_spec::registry::find("gpt-oss-120b").unwrap();
        let shapes = [
            glm(KvLayout::MlaLatent, DType::F16),
            glm(KvLayout::ExpandedMha, DType::Q8_0),
            AttnShape::from_spec(&llama, KvLayout::Gqa, DType::Q8_0, LayerKind::Full).unwrap(),
            AttnShape::from_spec(&oss, KvLayout::Gqa, DType::F16, LayerKind::Sliding).unwrap(),
        ];
        let tokens = 32768;
        let f16 = AttnShape::from_spec(&llama, KvLayout::Gqa, DType::F16, LayerKind::Full).unwrap();
        // Every shape with the CUDA-core kernels; the F16 GQA ones (a partial per warp) and MLA
        // latent (blocks of up to 16 heads) with the tensor-core kernels too.
        let cases = shapes.iter().map(|s| (s, false)).chain([
            (&f16, true),
            (&shapes[3], true),
            (&shapes[0], true),
        ]);
        for (s, mma) in cases {
            let (ml, acc) = attn_max_partials_with(s, tokens, 132, mma).unwrap();
            let mut reached = false;
            for depth in 1..=tokens {
                let plan = attn_plan_with(s, tokens, depth, 132, None, mma).unwrap();
                assert_eq!(mma, matches!(plan.kernel, Kernel::AttnMma(..)));
                let (pm, pa) = plan.partial_len();
                assert!(
                    pm <= ml && pa <= acc,
                    "{:?} at {depth}: {pm} > {ml}",
                    s.layout
                );
                reached |= pm == ml;
            }
            assert!(reached, "{:?}: the bound is never used", s.layout);
        }
        let full = attn_plan(&shapes[0], tokens, tokens, 132, None).unwrap();
        assert!(full.partial_len().0 < attn_max_partials(&shapes[0], tokens, 132).unwrap().0);
    }
}
