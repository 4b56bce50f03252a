//! The attention suite's operations on each backend ([`AttnBackend`]): one decode step of one
//! layer's attention over a KV cache at a depth, and the check every backend's output passes
//! before it is timed ([`check_attention`]).

use membound_cpu::attention::{KvCacheBuf, attend, reference_attend_heads};
use membound_cuda::attention::GpuAttn;
use membound_spec::DType;

use crate::stream::StreamBackend;
use crate::{CpuBackend, GpuBackend};

/// Decode attention on one backend. An "attention" is one copy of a layer's cache with a fixed
/// query, so timed calls only launch work.
pub trait AttnBackend: StreamBackend {
    /// One copy of a layer's cache and step.
    type Attn;

    /// The cache types this backend's kernels take.
    fn attn_dtypes(&self) -> Vec<DType>;
    /// A copy of `cache` with queries `q` (`n_heads × d_k`) and `sinks`, stepping at `depth`.
    fn attn(
        &self,
        cache: &KvCacheBuf,
        q: &[f32],
        sinks: &[f32],
        depth: usize,
    ) -> Result<Self::Attn, String>;
    /// Runs the step (timed).
    fn attn_forward(&self, a: &mut Self::Attn) -> Result<(), String>;
    /// The last outputs (`n_heads × d_v`).
    fn attn_output(&self, a: &Self::Attn) -> Result<Vec<f32>, String>;
    /// Splits of the context the step launches (1 on the CPU's chunked path is not a launch).
    fn attn_splits(&self, a: &Self::Attn) -> usize;
}

/// The CPU's copy: its cache, queries and outputs.
pub struct CpuAttn {
    cache: KvCacheBuf,
    q: Vec<f32>,
    sinks: Vec<f32>,
    depth: usize,
    out: Vec<f32>,
}

impl AttnBackend for CpuBackend {
    type Attn = CpuAttn;

    fn attn_dtypes(&self) -> Vec<DType> {
        vec![DType::F16, DType::BF16, DType::Q8_0]
    }

    fn attn(
        &self,
        cache: &KvCacheBuf,
        q: &[f32],
        sinks: &[f32],
        depth: usize,
    ) -> Result<CpuAttn, String> {
        let s = cache.shape();
        Ok(CpuAttn {
            cache: cache.clone(),
            q: q.to_vec(),
            sinks: sinks.to_vec(),
            depth,
            out: vec![0.0; s.n_heads * s.d_v],
        })
    }

    fn attn_forward(&self, a: &mut CpuAttn) -> Result<(), String> {
        attend(&self.pool, &a.cache, &a.q, &a.sinks, a.depth, &mut a.out).map_err(|e| e.to_string())
    }

    fn attn_output(&self, a: &CpuAttn) -> Result<Vec<f32>, String> {
        Ok(a.out.clone())
    }

    fn attn_splits(&self, a: &CpuAttn) -> usize {
        a.cache
            .shape()
            .attended(a.depth)
            .div_ceil(membound_cpu::attention::CHUNK_TOKENS)
    }
}

impl AttnBackend for GpuBackend {
    type Attn = GpuAttn;

    fn attn_dtypes(&self) -> Vec<DType> {
        vec![DType::F16, DType::BF16, DType::Q8_0]
    }

    fn attn(
        &self,
        cache: &KvCacheBuf,
        q: &[f32],
        sinks: &[f32],
        depth: usize,
    ) -> Result<GpuAttn, String> {
        GpuAttn::new(
            &self.gpu,
            cache.shape(),
            cache.tokens(),
            cache.k_bytes(),
            cache.v_bytes(),
            q,
            sinks,
            depth,
        )
        .map_err(|e| e.to_string())
    }

    fn attn_forward(&self, a: &mut GpuAttn) -> Result<(), String> {
        a.forward(&self.gpu).map_err(|e| e.to_string())
    }

    fn attn_output(&self, a: &GpuAttn) -> Result<Vec<f32>, String> {
        a.output(&self.gpu).map_err(|e| e.to_string())
    }

    fn attn_splits(&self, a: &GpuAttn) -> usize {
        a.plan().params.splits as usize
    }
}

/// Checks a step's outputs against the f64 reference on the first and last query heads
/// (within 1e-3 of the outputs' scale: f32 accumulation in another order).
pub fn check_attention(
    cache: &KvCacheBuf,
    q: &[f32],
    sinks: &[f32],
    depth: usize,
    out: &[f32],
) -> Result<(), String> {
    let s = cache.shape();
    if out.len() != s.n_heads * s.d_v {
        return Err(format!(
            "{} outputs for {} heads of {}",
            out.len(),
            s.n_heads,
            s.d_v
        ));
    }
    let heads = [0, s.n_heads - 1];
    let want = reference_attend_heads(cache, q, sinks, depth, &heads).map_err(|e| e.to_string())?;
    let got: Vec<f32> = heads
        .iter()
        .flat_map(|&h| out[h * s.d_v..(h + 1) * s.d_v].iter().copied())
        .collect();
    crate::verify::check_close_scaled("attention", &got, &want, 1e-3)
}
