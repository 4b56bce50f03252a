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
/// Query heads (warps) per block at most (`ATTN_MAX_HG`).
pub const ATTN_MAX_HG: usize = 8;
/// Largest K row (`ATTN_MAX_DK`) and V row (`ATTN_MAX_DV`), in values.
pub const ATTN_MAX_DK: usize = 576;
/// See [`ATTN_MAX_DK`].
pub const ATTN_MAX_DV: usize = 512;
/// Shared memory of one tile of K and V rows (`ATTN_TILE_BYTES`); the kernels hold two, the
/// next tile in flight while this one is scored (`TILE_PIPE`).
pub const ATTN_TILE_BYTES: usize = 18 * 1024;
/// Rows per tile at most (one per lane).
pub const ATTN_MAX_TILE: usize = 32;

/// The split kernel for a cache type.
pub fn attn_kernel(dtype: DType) -> Result<Kernel> {
    Ok(match dtype {
        DType::F16 => Kernel::AttnF16,
        DType::BF16 => Kernel::AttnBf16,
        DType::Q8_0 => Kernel::AttnQ8_0,
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

/// The plan for `shape` over a cache of `tokens` rows per head at `depth`: query heads split
/// into balanced groups of at most [`ATTN_MAX_HG`], tiles as large as the shared memory takes
/// (at most 32 rows), and `splits` (or enough splits that the blocks cover `sm_count` SMs
/// twice, each split at least one tile).
pub fn attn_plan(
    shape: &AttnShape,
    tokens: usize,
    depth: usize,
    sm_count: u32,
    splits: Option<u32>,
) -> Result<AttnPlan> {
    let s = shape;
    s.validate().map_err(bad)?;
    let kernel = attn_kernel(s.dtype)?;
    if s.d_k > ATTN_MAX_DK
        || s.d_v > ATTN_MAX_DV
        || !s.d_k.is_multiple_of(32)
        || !s.d_v.is_multiple_of(32)
    {
        return Err(bad(format!(
            "rows of {} (K) and {} (V) values (the kernels take multiples of 32 up to {ATTN_MAX_DK} and {ATTN_MAX_DV})",
            s.d_k, s.d_v
        )));
    }
    if depth == 0 || depth > tokens || u32::try_from(tokens).is_err() {
        return Err(bad(format!("depth {depth} in a cache of {tokens} tokens")));
    }
    let (kb, vb) = s.row_bytes();
    let tile = (ATTN_TILE_BYTES / (kb.next_multiple_of(16) + vb)).min(ATTN_MAX_TILE);
    if tile == 0 {
        return Err(bad(format!("rows of {kb} + {vb} bytes exceed a tile")));
    }
    let group = s.group();
    let head_groups = group.div_ceil(ATTN_MAX_HG);
    let per_block = group.div_ceil(head_groups);
    let attended = s.attended(depth);
    let blocks = s.kv_heads * head_groups;
    let max_splits = attended.div_ceil(tile);
    let splits = splits
        .map(|n| n as usize)
        .unwrap_or_else(|| (2 * sm_count as usize).div_ceil(blocks))
        .clamp(1, max_splits);
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
        heads_per_block: per_block as u32,
        head_groups: head_groups as u32,
        tokens: tokens as u32,
        first: (depth - attended) as u32,
        end: depth as u32,
        chunk: chunk as u32,
        splits: splits as u32,
        tile: tile as u32,
        flags,
        scale: s.scale,
        _pad: 0,
        k_row_bytes: kb as u64,
        v_row_bytes: vb as u64,
    };
    Ok(AttnPlan {
        params,
        kernel,
        split: LaunchConfig {
            grid_dim: (blocks as u32, splits as u32, 1),
            block_dim: (per_block as u32 * 32, 1, 1),
            shared_mem_bytes: 0,
        },
        reduce: LaunchConfig {
            grid_dim: (s.n_heads as u32, 1, 1),
            block_dim: (128, 1, 1),
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
            .arg(&p);
        // SAFETY: mb_attn_reduce(const float*, const float*, const float* sinks, float* out,
        // AttnParams); sizes as above, sinks n_heads values when the flag is set.
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
        // MLA latent F16 at 32k on 132 SMs: 20 heads in 3 blocks of 7 warps, 1152-byte rows
        // in tiles of 16 (18 KiB; two buffers), 88 splits asked (264 blocks), chunks rounded up
        // to whole tiles: 86 of 384 tokens.
        let p = attn_plan(
            &glm(KvLayout::MlaLatent, DType::F16),
            32768,
            32768,
            132,
            None,
        )
        .unwrap();
        assert_eq!((p.params.heads_per_block, p.params.head_groups), (7, 3));
        assert_eq!(p.params.tile, 16);
        assert_eq!(p.split.grid_dim, (3, 86, 1));
        assert_eq!(p.params.chunk, 384);
        assert!(p.params.chunk as usize * p.params.splits as usize >= 32768);
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
        assert!(attn_plan(&glm(KvLayout::MlaLatent, DType::F16), 8, 9, 1, None).is_err());
    }
}
