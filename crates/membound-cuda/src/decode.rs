//! Launches of the element-wise decode kernels (`kernels/decode.cu`): RMSNorm, RoPE, residual
//! add, the gated activation, the KV-cache append, argmax and Gated DeltaNet's convolution and
//! delta rule — the steps between a decode step's matrix products. Each builder checks its shape and returns the kernel, its geometry
//! and its parameters, so a GPU and the host execution (membound-cuda-host) launch the same.

use cudarc::driver::LaunchConfig;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::model::DeltaShape;
use membound_spec::moe::MoeLayer;

use crate::attention::{ATTN_QUANT, attn_max_partials, attn_plan};
use crate::error::{CudaError, Result};
use crate::gemv::{
    GEMV_ACCUMULATE, Q8_1_BLOCK_BYTES, activation_dtype, gemv_config, gemv_params_grouped,
    gemv_warps, kernel_for, quantize_config,
};
use crate::gpu::Kernel;
use crate::moe::{MoeArg, MoeBuf, MoeFusion, buffer_bytes, moe_launches_fused, shared_plan};
use crate::params::{
    AttnParams, DecodeParams, GemvParams, MoeParams, QuantizeParams, StreamParams,
};

/// Threads per block of every decode kernel (`DEC_BLOCK`).
pub const DEC_BLOCK: u32 = 256;
/// `DecodeParams::flags`: NEOX rotation pairs.
pub const DEC_NEOX: u32 = 1;
/// `DecodeParams::flags`: GELU (tanh) instead of SiLU.
pub const DEC_GELU: u32 = 2;
/// `DecodeParams::flags`: sigmoid instead of SiLU.
pub const DEC_SIGMOID: u32 = 4;
/// `DecodeParams::flags`: RMSNorm and the gated activation also write their output as Q8_1
/// blocks, the next GEMV's input.
pub const DEC_QUANT: u32 = 8;
/// `DecodeParams::flags`: [`qkv_heads`] norms each query and K head.
pub const DEC_QK_NORM: u32 = 16;
/// `DecodeParams::flags`: [`qkv_heads`] adds the Q, K and V biases first.
pub const DEC_BIAS: u32 = 32;
/// `DecodeParams::flags`: [`glu`]'s `u` is the `n` values after `g` in the same buffer (a
/// stacked gate/up product).
pub const DEC_PAIRED: u32 = 64;
/// The largest head [`qkv_heads`] takes (`DEC_HEAD_MAX`).
pub const DEC_HEAD_MAX: usize = 256;

/// Whether decode steps fold small launches into their neighbours (`MEMBOUND_FUSE`, default
/// on; `0` keeps one launch per step of the computation, for an A/B of the launch overhead):
/// RMSNorm quantizes the next GEMV's input, the gated activation too, a GQA layer's bias adds,
/// QK-norms, RoPE and cache writes are one launch ([`qkv_heads`]), and the output projections
/// (and a MoE layer's combine) add into the residual stream themselves. (A MoE layer's router
/// routes in its last block and its gate/up quantizes the activations either way:
/// `membound_cuda::moe::moe_launches`.)
pub fn fusion_enabled() -> bool {
    std::env::var("MEMBOUND_FUSE").map_or(true, |v| v.trim() != "0")
}

/// Whether a step's launches on a GPU of compute capability 9.0 or later use programmatic
/// dependent launch (`MEMBOUND_PDL=1`; default off until a GPU has timed it): each kernel may be
/// launched while the one before it finishes, and waits in its first statement (`mb_grid_begin`
/// in common.cuh) until that kernel's writes are visible, so launch latency and block
/// scheduling overlap the previous kernel's tail instead of following it.
pub fn pdl_requested() -> bool {
    std::env::var("MEMBOUND_PDL").is_ok_and(|v| v.trim() == "1")
}
/// Value rows of a Gated DeltaNet state per block of the delta rule (`DELTA_ROWS`).
pub const DELTA_ROWS: u32 = 16;
/// Warps per block of the delta rule (`DELTA_WARPS`).
pub const DELTA_WARPS: u32 = 4;
/// The largest key head size the delta rule takes (`DELTA_MAX_DK`).
pub const DELTA_MAX_DK: usize = 256;

/// The activation of a gated product ([`glu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// SiLU (SwiGLU).
    Silu,
    /// GELU, tanh approximation (Gemma).
    Gelu,
    /// Sigmoid (Qwen3-Next's gated attention output).
    Sigmoid,
}

/// One launch: kernel, geometry, parameters.
#[derive(Clone, Copy, Debug)]
pub struct DecLaunch {
    /// The kernel.
    pub kernel: Kernel,
    /// Its geometry.
    pub config: LaunchConfig,
    /// Its parameters.
    pub params: DecodeParams,
}

fn bad(reason: String) -> CudaError {
    CudaError::invalid("decode", reason)
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| bad(format!("{what} {v} exceeds 2^32")))
}

fn grid(threads: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (threads.div_ceil(u64::from(DEC_BLOCK)).max(1) as u32, 1, 1),
        block_dim: (DEC_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// RMSNorm of `rows` rows of `n` values with one weight vector of `n` (`x`, `w`, `out`).
pub fn rmsnorm(rows: usize, n: usize, eps: f32) -> Result<DecLaunch> {
    if rows == 0 || n == 0 {
        return Err(bad(format!("RMSNorm of {rows} rows of {n} values")));
    }
    Ok(DecLaunch {
        kernel: Kernel::DecRmsNorm,
        config: LaunchConfig {
            grid_dim: (u32_of(rows, "rows")?, 1, 1),
            block_dim: (DEC_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        },
        params: DecodeParams {
            n: u32_of(n, "values")?,
            rows: rows as u32,
            eps,
            ..Default::default()
        },
    })
}

/// [`rmsnorm`] that also writes its output as Q8_1 blocks (`x`, `w`, `out`, `outq`); `n` a
/// multiple of 32.
pub fn rmsnorm_quantized(rows: usize, n: usize, eps: f32) -> Result<DecLaunch> {
    if !n.is_multiple_of(32) {
        return Err(bad(format!("Q8_1 blocks of rows of {n} values")));
    }
    let mut l = rmsnorm(rows, n, eps)?;
    l.params.flags = DEC_QUANT;
    Ok(l)
}

/// RoPE in place on `heads` heads `head` values apart: the first `dims` values of each, for
/// position `pos` (`x`).
pub fn rope(
    heads: usize,
    head: usize,
    dims: usize,
    pos: usize,
    theta: f32,
    neox: bool,
) -> Result<DecLaunch> {
    rope_at(heads, head, 0, dims, pos, theta, neox)
}

/// [`rope`] of the `dims` values from value `offset` of each head (MLA: the RoPE part after
/// the latent values).
pub fn rope_at(
    heads: usize,
    head: usize,
    offset: usize,
    dims: usize,
    pos: usize,
    theta: f32,
    neox: bool,
) -> Result<DecLaunch> {
    if dims == 0 || !dims.is_multiple_of(2) || offset + dims > head {
        return Err(bad(format!(
            "RoPE over {dims} values from value {offset} of {head} per head"
        )));
    }
    Ok(DecLaunch {
        kernel: Kernel::DecRope,
        config: grid(heads as u64 * (dims / 2) as u64),
        params: DecodeParams {
            n: u32_of(offset, "offset")?,
            rows: u32_of(heads, "heads")?,
            head: u32_of(head, "head stride")?,
            dims: dims as u32,
            pos: u32_of(pos, "position")?,
            flags: if neox { DEC_NEOX } else { 0 },
            theta,
            ..Default::default()
        },
    })
}

/// Where [`copy2d`] reads or writes: rows `stride` values apart, from value `offset` of each.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    /// Values from one row to the next.
    pub stride: usize,
    /// The first value of each row.
    pub offset: usize,
}

/// Copies `n` values of each of `rows` rows from `src` to `dst` (`src`, `dst`).
pub fn copy2d(rows: usize, n: usize, src: Rows, dst: Rows) -> Result<DecLaunch> {
    if n == 0 || src.offset + n > src.stride || dst.offset + n > dst.stride {
        return Err(bad(format!(
            "a copy of {n} values per row from {src:?} to {dst:?}"
        )));
    }
    Ok(DecLaunch {
        kernel: Kernel::DecCopy2d,
        config: grid(rows as u64 * n as u64),
        params: DecodeParams {
            n: u32_of(n, "values")?,
            rows: u32_of(rows, "rows")?,
            head: u32_of(src.stride, "source stride")?,
            dims: u32_of(dst.stride, "destination stride")?,
            pos: u32_of(src.offset, "source offset")?,
            tokens: u32_of(dst.offset, "destination offset")?,
            ..Default::default()
        },
    })
}

/// `x += y` over `n` values (`x`, `y`).
pub fn add(n: usize) -> Result<DecLaunch> {
    Ok(DecLaunch {
        kernel: Kernel::DecAdd,
        config: grid(n as u64),
        params: DecodeParams {
            n: u32_of(n, "values")?,
            ..Default::default()
        },
    })
}

/// [`glu`] that also writes `g` as Q8_1 blocks (`g`, `u`, `gq`); `n` a multiple of 32.
pub fn glu_quantized(n: usize, act: Act) -> Result<DecLaunch> {
    if !n.is_multiple_of(32) {
        return Err(bad(format!("Q8_1 blocks of {n} values")));
    }
    let mut l = glu(n, act)?;
    l.params.flags |= DEC_QUANT;
    Ok(l)
}

/// `g = act(g) · u` over `n` values (`g`, `u`, `gq` unused).
pub fn glu(n: usize, act: Act) -> Result<DecLaunch> {
    Ok(DecLaunch {
        kernel: Kernel::DecGlu,
        config: grid(n as u64),
        params: DecodeParams {
            n: u32_of(n, "values")?,
            flags: match act {
                Act::Silu => 0,
                Act::Gelu => DEC_GELU,
                Act::Sigmoid => DEC_SIGMOID,
            },
            ..Default::default()
        },
    })
}

/// Gated DeltaNet's causal convolution of `taps` taps over `channels` channels, then SiLU
/// (`in`, `w`, `hist`, `hist_out`, `x`; the histories hold `taps - 1` inputs of every channel).
pub fn delta_conv(channels: usize, taps: usize) -> Result<DecLaunch> {
    if channels == 0 || taps == 0 {
        return Err(bad(format!(
            "a convolution of {taps} taps over {channels} channels"
        )));
    }
    Ok(DecLaunch {
        kernel: Kernel::DecDeltaConv,
        config: grid(channels as u64),
        params: DecodeParams {
            n: u32_of(channels, "channels")?,
            dims: u32_of(taps, "taps")?,
            ..Default::default()
        },
    })
}

/// The gated delta rule of one token over `n_v` value heads of `d_v` rows of `d_k` state
/// values, key heads `n_k` (`x`, `ba`, `dt_bias`, `a`, `s_in`, `s_out`, `o`).
pub fn delta_rule(n_k: usize, n_v: usize, d_k: usize, d_v: usize, eps: f32) -> Result<DecLaunch> {
    if n_k == 0 || d_v == 0 || !n_v.is_multiple_of(n_k) || d_k == 0 || d_k > DELTA_MAX_DK {
        return Err(bad(format!(
            "a delta rule of {n_k} key heads of {d_k} and {n_v} value heads of {d_v} \
             (value heads a multiple of key heads, key heads of at most {DELTA_MAX_DK})"
        )));
    }
    Ok(DecLaunch {
        kernel: Kernel::DecDeltaRule,
        config: LaunchConfig {
            grid_dim: (
                u32_of(d_v.div_ceil(DELTA_ROWS as usize), "rows")?,
                u32_of(n_v, "value heads")?,
                1,
            ),
            block_dim: (DELTA_WARPS * 32, 1, 1),
            shared_mem_bytes: 0,
        },
        params: DecodeParams {
            n: d_k as u32,
            rows: n_v as u32,
            head: n_k as u32,
            dims: u32_of(d_v, "value head size")?,
            eps,
            ..Default::default()
        },
    })
}

/// The `DEC_KV_*` code of a cache type.
pub fn kv_code(dtype: DType) -> Result<u32> {
    Ok(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::Q8_0 => 3,
        other => {
            return Err(bad(format!(
                "a {other} KV cache (f32, f16, bf16, q8_0 are written)"
            )));
        }
    })
}

/// Writes token `pos` of a head-major cache of `heads × tokens` rows of `n` values of `dtype`
/// from `heads` source rows `head` values apart (`src`, `cache`); `n` a multiple of 32.
pub fn kv_write(
    heads: usize,
    n: usize,
    head: usize,
    tokens: usize,
    pos: usize,
    dtype: DType,
) -> Result<DecLaunch> {
    if n == 0 || !n.is_multiple_of(32) || pos >= tokens || head < n {
        return Err(bad(format!(
            "cache rows of {n} values (a multiple of 32, {head} apart in the source), token {pos} of {tokens}"
        )));
    }
    Ok(DecLaunch {
        kernel: Kernel::DecKvWrite,
        config: grid(heads as u64 * n as u64),
        params: DecodeParams {
            n: n as u32,
            rows: u32_of(heads, "heads")?,
            head: u32_of(head, "head stride")?,
            pos: pos as u32,
            tokens: u32_of(tokens, "tokens")?,
            dtype: kv_code(dtype)?,
            ..Default::default()
        },
    })
}

/// A GQA layer's heads for [`qkv_heads`]: where the projections left Q, K and V, and what
/// happens to them before the cache.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Query heads.
    pub n_heads: usize,
    /// K and V heads.
    pub kv_heads: usize,
    /// Values per query and K head.
    pub d_k: usize,
    /// Values per V head.
    pub d_v: usize,
    /// Values RoPE rotates, the first of each query and K head.
    pub rope_dims: usize,
    /// Values from one query head to the next in its buffer (`d_k`, or `2 d_k` where each
    /// head's output gate follows its query).
    pub q_stride: usize,
    /// The first value of Q, K and V in their buffers.
    pub offsets: [usize; 3],
    /// Per-head RMSNorm of Q and K.
    pub qk_norm: bool,
    /// Q, K and V biases (`d_k`, `d_k`, `d_v` values per head, heads packed).
    pub bias: bool,
}

/// A GQA layer's heads after its projections in one launch, one warp per head: biases, per-head
/// QK-norm, RoPE of the query heads (into `q_out`, heads packed) and K heads, and token `pos`
/// of the K and V caches (`tokens` rows per head of `dtype`) — what [`add`], [`rmsnorm`],
/// [`rope`] and [`kv_write`] do in up to eight launches (`q`, `k`, `v`, `bq`, `bk`, `bv`,
/// `q_norm`, `k_norm`, `q_out`, `k_cache`, `v_cache`).
#[allow(clippy::too_many_arguments)]
pub fn qkv_heads(
    h: &Heads,
    tokens: usize,
    pos: usize,
    dtype: DType,
    theta: f32,
    neox: bool,
    eps: f32,
) -> Result<DecLaunch> {
    let ok = h.n_heads > 0
        && h.d_k > 0
        && h.d_k.is_multiple_of(32)
        && h.d_k <= DEC_HEAD_MAX
        && h.d_v > 0
        && h.d_v.is_multiple_of(32)
        && h.rope_dims.is_multiple_of(2)
        && h.rope_dims <= h.d_k
        && h.q_stride >= h.d_k
        && pos < tokens;
    if !ok {
        return Err(bad(format!(
            "{h:?} at token {pos} of {tokens} (heads of a multiple of 32 values, at most              {DEC_HEAD_MAX}; RoPE over an even number of them)"
        )));
    }
    let tasks = (h.n_heads + 2 * h.kv_heads) as u64 * 32;
    let flags = if neox { DEC_NEOX } else { 0 }
        | if h.qk_norm { DEC_QK_NORM } else { 0 }
        | if h.bias { DEC_BIAS } else { 0 };
    Ok(DecLaunch {
        kernel: Kernel::DecQkvHeads,
        config: grid(tasks),
        params: DecodeParams {
            n: h.d_k as u32,
            rows: u32_of(h.n_heads, "query heads")?,
            dims: h.rope_dims as u32,
            pos: pos as u32,
            tokens: u32_of(tokens, "tokens")?,
            flags,
            dtype: kv_code(dtype)?,
            eps,
            theta,
            kv_heads: u32_of(h.kv_heads, "K and V heads")?,
            d_v: h.d_v as u32,
            q_stride: u32_of(h.q_stride, "query stride")?,
            q_off: u32_of(h.offsets[0], "Q offset")?,
            k_off: u32_of(h.offsets[1], "K offset")?,
            v_off: u32_of(h.offsets[2], "V offset")?,
            ..Default::default()
        },
    })
}

/// The index of the largest of `n` values (`x`, one u32 `out`).
pub fn argmax(n: usize) -> Result<DecLaunch> {
    if n == 0 {
        return Err(bad("argmax of no values".into()));
    }
    Ok(DecLaunch {
        kernel: Kernel::DecArgmax,
        config: LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (DEC_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        },
        params: DecodeParams {
            n: u32_of(n, "values")?,
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_and_refusals() {
        let r = rope(8, 128, 64, 5, 1e4, true).unwrap();
        assert_eq!(r.config.grid_dim.0, 1); // 8 heads x 32 pairs = 256 threads
        assert_eq!(r.params.flags, DEC_NEOX);
        assert!(rope(8, 64, 65, 0, 1e4, true).is_err());
        assert!(rope(8, 64, 128, 0, 1e4, true).is_err());
        let k = kv_write(2, 576, 576, 10, 9, DType::Q8_0).unwrap();
        assert_eq!((k.config.grid_dim.0, k.params.dtype), (5, 3)); // 1152 threads
        assert!(kv_write(2, 576, 576, 10, 10, DType::F16).is_err());
        assert!(kv_write(2, 40, 40, 10, 0, DType::F16).is_err());
        assert!(kv_write(1, 64, 64, 4, 0, DType::Q4_K).is_err());
        assert_eq!(add(257).unwrap().config.grid_dim.0, 2);
        assert!(argmax(0).is_err() && rmsnorm(0, 4, 1e-6).is_err());
        assert_eq!(glu(4, Act::Sigmoid).unwrap().params.flags, DEC_SIGMOID);
        // Qwen3-Next: 16 key heads, 32 value heads of 128 x 128: 8 x 32 blocks.
        let r = delta_rule(16, 32, 128, 128, 1e-6).unwrap();
        assert_eq!((r.config.grid_dim.0, r.config.grid_dim.1), (8, 32));
        assert_eq!(
            (r.params.n, r.params.rows, r.params.head, r.params.dims),
            (128, 32, 16, 128)
        );
        assert!(delta_rule(3, 32, 128, 128, 1e-6).is_err());
        assert!(delta_rule(16, 32, 512, 128, 1e-6).is_err());
        assert_eq!(delta_conv(8192, 4).unwrap().config.grid_dim.0, 32);
        assert!(delta_conv(8192, 0).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The whole step as data.

/// A named buffer of one decode step: scratch shared by the layers, each layer's weights and
/// caches, a MoE layer's own buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buf {
    /// The embedded token (`hidden` f32), written before the launches.
    Embd,
    /// The residual stream (`hidden` f32), a copy of [`Buf::Embd`] at the start.
    X,
    /// The normed hidden state.
    H,
    /// A stacked projection's output: Q, K (and V) one after the other.
    Qkv,
    /// The Q, K and V projections.
    Q,
    /// See [`Buf::Q`].
    K,
    /// See [`Buf::Q`].
    V,
    /// Q and K after their per-head RMSNorm (QK-norm models).
    Qn,
    /// See [`Buf::Qn`].
    Kn,
    /// The attention output (`n_heads × d_v`).
    Att,
    /// A sub-layer's output, added to [`Buf::X`].
    Y,
    /// The dense FFN's gate and up (stacked: gate, then up, in [`Buf::G`]).
    G,
    /// See [`Buf::G`].
    U,
    /// Q8_1 blocks of a GEMV's input.
    Xq,
    /// Attention partials (max, sum) and accumulators.
    PartMl,
    /// See [`Buf::PartMl`].
    PartAcc,
    /// The logits.
    Logits,
    /// The argmax (one u32).
    Token,
    /// A 16-byte stand-in for an argument a kernel does not read.
    Dummy,
    /// Weight `Wt` of layer `l`.
    W(u32, Wt),
    /// Layer `l`'s K cache (head-major, `tokens` rows per head).
    KCache(u32),
    /// Layer `l`'s V cache.
    VCache(u32),
    /// A buffer of MoE layer `l`.
    Moe(u32, MoeBuf),
    /// The final norm.
    OutNorm,
    /// The output projection.
    Output,
    /// MLA: the low-rank query (`q_a`'s output) and its normed copy.
    MlaC,
    /// See [`Buf::MlaC`].
    MlaCn,
    /// MLA: `kv_a`'s output (latent, then the RoPE part).
    MlaKv,
    /// MLA: the cache row of this token (normed latent, rotated RoPE part).
    MlaRow,
    /// MLA: each head's non-RoPE query part, heads packed.
    QNope,
    /// MLA: each head's query in latent space (`W_UK` of [`Buf::QNope`]).
    QLat,
    /// MLA: each head's whole query (latent, then rotated RoPE part), as the cache rows.
    Query,
    /// MLA: each head's attention output after `W_UV`.
    Heads,
    /// Gated attention: each head's output gate (the second half of its Q projection).
    AttGate,
    /// Gated DeltaNet: the `attn_qkv` projection (the convolution's input).
    DeltaQkv,
    /// Gated DeltaNet: the convolution's output (q, k, v).
    DeltaX,
    /// Gated DeltaNet: the output gate `z` (`attn_gate`), then the gated, normed output.
    DeltaZ,
    /// Gated DeltaNet: betas and alphas (`ssm_ba`).
    DeltaBa,
    /// Gated DeltaNet: the delta rule's output.
    DeltaO,
    /// Gated DeltaNet: its RMS-normed copy.
    DeltaNormed,
    /// Gated DeltaNet layer `l`'s convolution history, kept twice: a step at position `p` reads
    /// copy `p % 2` and writes the other, so a replayed position starts from the same state and
    /// the next position from the one it left.
    DeltaHist(u32, u8),
    /// Layer `l`'s recurrent state, kept twice like [`Buf::DeltaHist`].
    DeltaState(u32, u8),
}

/// The weights of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wt {
    /// `attn_norm` (f32).
    AttnNorm,
    /// `ffn_norm` (f32).
    FfnNorm,
    /// Q and K (and V) stacked: their rows one after the other ([`stack_weights`]).
    Qkv,
    /// `ffn_gate` and `ffn_up` stacked.
    GateUp,
    /// `attn_q`, `attn_k`, `attn_v`, `attn_output`.
    Q,
    /// See [`Wt::Q`].
    K,
    /// See [`Wt::Q`].
    V,
    /// See [`Wt::Q`].
    O,
    /// Their biases (f32).
    BQ,
    /// See [`Wt::BQ`].
    BK,
    /// See [`Wt::BQ`].
    BV,
    /// See [`Wt::BQ`].
    BO,
    /// Per-head RMSNorm weights of Q and K (f32).
    QNorm,
    /// See [`Wt::QNorm`].
    KNorm,
    /// Attention sinks (f32, one per query head).
    Sinks,
    /// The dense FFN's `ffn_gate`, `ffn_up`, `ffn_down`.
    Gate,
    /// See [`Wt::Gate`].
    Up,
    /// See [`Wt::Gate`].
    Down,
    /// Gemma 3: `post_attention_norm` and `post_ffw_norm` (f32).
    PostAttnNorm,
    /// See [`Wt::PostAttnNorm`].
    PostFfnNorm,
    /// MLA: `attn_q_a` and `attn_q_a_norm` (f32).
    QA,
    /// See [`Wt::QA`].
    QANorm,
    /// MLA: `attn_kv_a_mqa` and `attn_kv_a_norm` (f32).
    KvA,
    /// See [`Wt::KvA`].
    KvNorm,
    /// MLA: `attn_k_b` (`W_UK`) and `attn_v_b` (`W_UV`).
    KB,
    /// See [`Wt::KB`].
    VB,
    /// Gated DeltaNet: `attn_qkv`, `attn_gate`, `ssm_ba`, `ssm_out`.
    SsmQkv,
    /// See [`Wt::SsmQkv`].
    SsmGate,
    /// See [`Wt::SsmQkv`].
    SsmBa,
    /// See [`Wt::SsmQkv`].
    SsmOut,
    /// Gated DeltaNet (f32): `ssm_conv1d` (taps per channel), `ssm_dt.bias`, `ssm_a`,
    /// `ssm_norm`.
    SsmConv,
    /// See [`Wt::SsmConv`].
    SsmDtBias,
    /// See [`Wt::SsmConv`].
    SsmA,
    /// See [`Wt::SsmConv`].
    SsmNorm,
}

/// One argument of a [`StepLaunch`].
#[derive(Clone, Copy, Debug)]
pub enum StepArg {
    /// A buffer the kernel reads.
    In(Buf),
    /// A buffer the kernel writes.
    Out(Buf),
    /// GEMV parameters.
    Gemv(GemvParams),
    /// Q8_1 quantization parameters.
    Quantize(QuantizeParams),
    /// MoE parameters.
    Moe(MoeParams),
    /// Attention parameters.
    Attn(AttnParams),
    /// Element-wise decode parameters.
    Dec(DecodeParams),
    /// Streaming-kernel parameters (the copy of the embedding).
    Stream(StreamParams),
}

/// One launch of a step.
#[derive(Clone, Debug)]
pub struct StepLaunch {
    /// The kernel.
    pub kernel: Kernel,
    /// Its geometry.
    pub config: LaunchConfig,
    /// Its arguments in order.
    pub args: Vec<StepArg>,
}

/// A weight matrix: storage type, output rows, input columns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mat {
    /// Storage type.
    pub dtype: DType,
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
}

/// A layer's FFN.
#[derive(Clone, Debug)]
pub enum FfnDesc {
    /// Gate, up and down with SiLU (or GELU) gating.
    Dense {
        /// `ffn_gate`.
        gate: Mat,
        /// `ffn_up`.
        up: Mat,
        /// `ffn_down`.
        down: Mat,
        /// GELU instead of SiLU.
        gelu: bool,
        /// Gate and up are stacked in [`Wt::GateUp`] ([`stack_weights`]): one GEMV writes
        /// both into [`Buf::G`].
        stacked: bool,
    },
    /// A MoE layer (`moe_launches`).
    Moe(MoeLayer),
}

/// A layer's attention projections.
#[derive(Clone, Debug)]
pub enum MixerDesc {
    /// GQA: Q, K, V and output projections, their biases, QK-norm.
    Gqa {
        /// `attn_q`.
        q: Mat,
        /// `attn_k`.
        k: Mat,
        /// `attn_v`.
        v: Mat,
        /// `attn_output`.
        o: Mat,
        /// Which of Q, K, V, O carry a bias.
        bias: [bool; 4],
        /// Per-head RMSNorm on Q and K.
        qk_norm: bool,
        /// The Q projection holds each head's query, then its output gate (Qwen3-Next): the
        /// attention output is multiplied by the gate's sigmoid.
        gated: bool,
        /// Values of each head RoPE rotates (the first ones; Qwen3-Next: a quarter).
        rope_dims: usize,
        /// How many of Q, K, V (in that order) are stacked in [`Wt::Qkv`], one GEMV writing
        /// them into [`Buf::Qkv`]: 3, 2 (V apart) or 1 (none; [`stack_weights`] sets it).
        stacked: usize,
    },
    /// MLA over a latent (or split) cache with the query absorbed into latent space.
    Mla(MlaDesc),
    /// Qwen3-Next's linear attention (no cache: a recurrent state).
    Delta(DeltaDesc),
}

/// A Gated DeltaNet layer (llama.cpp's `qwen3next` tensors; `membound_decode::delta` is the
/// CPU step): the projections and the heads.
#[derive(Clone, Debug)]
pub struct DeltaDesc {
    /// `attn_qkv`: q and k of every key head, v of every value head.
    pub qkv: Mat,
    /// `attn_gate`: the output gate `z`.
    pub gate: Mat,
    /// `ssm_ba`: per key head, its value heads' betas then alphas.
    pub ba: Mat,
    /// `ssm_out`.
    pub out: Mat,
    /// The heads and the convolution's taps.
    pub shape: DeltaShape,
}

/// An MLA layer's projections (llama.cpp's tensors): the query (through its low-rank `q_a`
/// where the model has one), the latent + RoPE projection `kv_a`, the per-head `W_UK`
/// (`k_b`: `n_heads` groups of `kv_lora` rows over `qk_nope` columns) and `W_UV` (`v_b`:
/// `n_heads` groups of `v_head` rows over `kv_lora` columns), the output.
#[derive(Clone, Debug)]
pub struct MlaDesc {
    /// `attn_q_a` (with `attn_q_a_norm`), or none.
    pub q_a: Option<Mat>,
    /// `attn_q_b` (or `attn_q`): `n_heads × (qk_nope + qk_rope)` rows.
    pub q: Mat,
    /// `attn_kv_a_mqa`: `kv_lora + qk_rope` rows.
    pub kv_a: Mat,
    /// `attn_k_b`.
    pub k_b: Mat,
    /// `attn_v_b`.
    pub v_b: Mat,
    /// `attn_output`.
    pub o: Mat,
}

impl MlaDesc {
    /// The latent width (`kv_lora`), the RoPE part and the non-RoPE query part per head.
    fn dims(&self, n_heads: usize) -> (usize, usize, usize) {
        let kvr = self.k_b.rows / n_heads.max(1);
        let rope = self.kv_a.rows - kvr;
        (kvr, rope, self.k_b.cols)
    }
}

/// One layer of a step.
#[derive(Clone, Debug)]
pub struct LayerDesc {
    /// The attention (cache type, heads, window, sinks); none for a Gated DeltaNet layer.
    pub attn: Option<AttnShape>,
    /// The attention projections.
    pub mixer: MixerDesc,
    /// The FFN.
    pub ffn: FfnDesc,
    /// The layer's RoPE base.
    pub theta: f32,
    /// Gemma 3's norms of the attention's and the FFN's outputs ([`Wt::PostAttnNorm`],
    /// [`Wt::PostFfnNorm`]).
    pub post_norms: bool,
}

impl LayerDesc {
    /// The output projection.
    fn o(&self) -> &Mat {
        match &self.mixer {
            MixerDesc::Gqa { o, .. } => o,
            MixerDesc::Mla(m) => &m.o,
            MixerDesc::Delta(m) => &m.out,
        }
    }

    /// The attention shape of an attention layer.
    fn attn(&self, i: u32) -> Result<&AttnShape> {
        self.attn
            .as_ref()
            .ok_or_else(|| bad(format!("layer {i} has no attention shape")))
    }

    /// Whether a GEMV reading the attention norm's output reads Q8_1.
    fn mixer_reads_q8_1(&self) -> bool {
        match &self.mixer {
            MixerDesc::Gqa { q, k, v, .. } => [q, k, v].into_iter().any(reads_q8_1),
            MixerDesc::Mla(m) => [m.q_a.as_ref().unwrap_or(&m.q), &m.kv_a]
                .into_iter()
                .any(reads_q8_1),
            MixerDesc::Delta(m) => [&m.qkv, &m.gate, &m.ba].into_iter().any(reads_q8_1),
        }
    }

    /// Whether a GEMV reading the FFN norm's output reads Q8_1.
    fn ffn_reads_q8_1(&self) -> bool {
        match &self.ffn {
            FfnDesc::Dense { gate, up, .. } => reads_q8_1(gate) || reads_q8_1(up),
            FfnDesc::Moe(l) => {
                l.types.gate_up.is_quantized()
                    || (l.shared_ff > 0 && l.types.shared_gate_up.is_quantized())
            }
        }
    }

    /// Values of each GEMV input the step quantizes (a grouped GEMV's inputs together).
    fn quantized_inputs(&self) -> Vec<usize> {
        let mut v = match &self.mixer {
            MixerDesc::Gqa { q, o, .. } => vec![q.cols, o.cols],
            MixerDesc::Delta(m) => vec![m.qkv.cols, m.out.cols],
            MixerDesc::Mla(m) => {
                let nh = self.attn.as_ref().map_or(0, |a| a.n_heads);
                let mut v = vec![
                    m.q.cols,
                    m.kv_a.cols,
                    nh * m.k_b.cols,
                    nh * m.v_b.cols,
                    m.o.cols,
                ];
                v.extend(m.q_a.map(|q| q.cols));
                v
            }
        };
        if let FfnDesc::Dense { down, .. } = &self.ffn {
            v.push(down.cols);
        }
        v
    }
}

/// A decode step, or one stage of a step split across devices: its layers, the output
/// projection, the numerics, the caches' rows.
#[derive(Clone, Debug)]
pub struct StepDesc {
    /// Hidden size.
    pub hidden: usize,
    /// The layers, in order (their buffers are numbered from 0 within the step).
    pub layers: Vec<LayerDesc>,
    /// The step starts from the embedded token in [`Buf::Embd`] (`false`: from the residual
    /// stream an earlier stage left, written into [`Buf::X`] before the launches).
    pub embed: bool,
    /// The output projection (`None`: the stage ends with the residual stream in [`Buf::X`],
    /// for the next stage).
    pub output: Option<Mat>,
    /// Cache rows per head (the deepest position is `tokens - 1`).
    pub tokens: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// NEOX rotation.
    pub neox: bool,
    /// SMs the attention split covers.
    pub sm_count: u32,
    /// Fold small launches into their neighbours ([`fusion_enabled`]).
    pub fuse: bool,
}

/// Whether a GEMV of `m` reads its input as Q8_1 blocks.
fn reads_q8_1(m: &Mat) -> bool {
    activation_dtype(m.dtype) != DType::F32
}

/// Whether a GQA layer's heads fit one [`qkv_heads`] launch.
fn heads_fit(s: &AttnShape) -> bool {
    s.d_k.is_multiple_of(32) && s.d_k <= DEC_HEAD_MAX && s.d_v.is_multiple_of(32)
}

/// Whether [`qkv_heads`] adds a layer's Q, K and V biases: all three or none (a gated Q's bias
/// covers its gates too, so those stay separate adds).
fn folds_bias(bias: &[bool; 4], gated: bool) -> bool {
    !gated && bias[0] == bias[1] && bias[1] == bias[2]
}

/// Stacks the projections of each layer of `d` that read the same input with the same type and
/// width, so one GEMV does the work of two or three (fewer launches, and the small K and V
/// products no longer run as grids of their own): Q, K and V where [`qkv_heads`] takes the
/// heads (Q and K alone where V has another type, as Q4_K_M's `attn_v` on some layers), and
/// gate and up. The weights' bytes move into [`Wt::Qkv`] and [`Wt::GateUp`] (rows one after
/// the other), and the layers record it ([`MixerDesc::Gqa`]'s `stacked`, [`FfnDesc::Dense`]'s).
pub fn stack_weights(d: &mut StepDesc, weights: &mut Vec<(Buf, Vec<u8>)>) {
    let same = |a: &Mat, b: &Mat| a.dtype == b.dtype && a.cols == b.cols;
    // Moves the parts' bytes into one weight (all present, or nothing moves).
    let mut stack = |parts: &[Buf], into: Buf| -> bool {
        if !parts.iter().all(|p| weights.iter().any(|(b, _)| b == p)) {
            return false;
        }
        let mut bytes = Vec::new();
        for p in parts {
            let at = weights
                .iter()
                .position(|(b, _)| b == p)
                .expect("checked above");
            bytes.extend_from_slice(&weights.swap_remove(at).1);
        }
        weights.push((into, bytes));
        true
    };
    for (i, l) in d.layers.iter_mut().enumerate() {
        let w = |t: Wt| Buf::W(i as u32, t);
        if let (
            MixerDesc::Gqa {
                q,
                k,
                v,
                bias,
                gated,
                stacked,
                ..
            },
            Some(s),
        ) = (&mut l.mixer, &l.attn)
        {
            let biased = bias[..3].iter().any(|&b| b);
            let n = if !heads_fit(s) || (biased && !folds_bias(bias, *gated)) || !same(q, k) {
                1
            } else if same(q, v) {
                3
            } else {
                2
            };
            if n > 1 && stack(&[w(Wt::Q), w(Wt::K), w(Wt::V)][..n], w(Wt::Qkv)) {
                *stacked = n;
            }
        }
        if let FfnDesc::Dense {
            gate, up, stacked, ..
        } = &mut l.ffn
            && same(gate, up)
            && stack(&[w(Wt::Gate), w(Wt::Up)], w(Wt::GateUp))
        {
            *stacked = true;
        }
    }
}

/// Appends launches, quantizing a GEMV's input once for consecutive GEMVs that read it.
struct Builder {
    v: Vec<StepLaunch>,
    /// The buffer (and values) [`Buf::Xq`] holds as Q8_1.
    xq_holds: Option<(Buf, usize)>,
    /// [`StepDesc::fuse`].
    fuse: bool,
    /// The sub-layer's output already went into the residual stream (no [`Builder::residual`]).
    added: bool,
}

impl Builder {
    fn push(&mut self, kernel: Kernel, config: LaunchConfig, args: Vec<StepArg>) {
        if let Some((held, _)) = self.xq_holds
            && args
                .iter()
                .any(|a| matches!(a, StepArg::Out(b) if *b == held || *b == Buf::Xq))
        {
            self.xq_holds = None;
        }
        self.v.push(StepLaunch {
            kernel,
            config,
            args,
        });
    }

    fn dec(&mut self, l: DecLaunch, args: Vec<StepArg>) {
        let mut args = args;
        args.push(StepArg::Dec(l.params));
        self.push(l.kernel, l.config, args);
    }

    /// `y = W·x` for matrix `m` stored in `w`.
    fn gemv(&mut self, m: &Mat, w: Buf, x: Buf, y: Buf) -> Result<()> {
        self.gemv_grouped(m, 1, w, x, y, 0)
    }

    /// `y = W·x` (`y += W·x` with [`GEMV_ACCUMULATE`] in `flags`) with the rows of `m` in
    /// `groups` groups, group `g` taking the `g`-th run of `m.cols` values of `x` (one input
    /// for `groups = 1`).
    fn gemv_grouped(
        &mut self,
        m: &Mat,
        groups: usize,
        w: Buf,
        x: Buf,
        y: Buf,
        flags: u32,
    ) -> Result<()> {
        use StepArg::{In, Out};
        let warps = gemv_warps();
        let mut p = gemv_params_grouped(m.dtype, m.rows, m.cols, groups, warps)?;
        p.flags = flags;
        let k = kernel_for(m.dtype)?;
        let cfg = gemv_config(p.rows, warps);
        if activation_dtype(m.dtype) == DType::F32 {
            self.push(k, cfg, vec![In(w), In(x), Out(y), StepArg::Gemv(p)]);
            return Ok(());
        }
        let values = groups * m.cols;
        if self.xq_holds != Some((x, values)) {
            let q = QuantizeParams {
                n_blocks: (values / 32) as u64,
            };
            self.push(
                Kernel::QuantizeQ8_1,
                quantize_config(q.n_blocks),
                vec![In(x), Out(Buf::Xq), StepArg::Quantize(q)],
            );
            self.xq_holds = Some((x, values));
        }
        self.push(k, cfg, vec![In(w), In(Buf::Xq), Out(y), StepArg::Gemv(p)]);
        Ok(())
    }

    /// RMSNorm of `n` values of `x` with weight `w` into `out`; where the step fuses and
    /// `quantize` says a GEMV reads `out` as Q8_1 next, the norm writes [`Buf::Xq`] too.
    fn norm(
        &mut self,
        d: &StepDesc,
        n: usize,
        [x, w, out]: [Buf; 3],
        quantize: bool,
    ) -> Result<()> {
        use StepArg::{In, Out};
        if self.fuse && quantize && n.is_multiple_of(32) {
            self.dec(
                rmsnorm_quantized(1, n, d.eps)?,
                vec![In(x), In(w), Out(out), Out(Buf::Xq)],
            );
            self.xq_holds = Some((out, n));
        } else {
            self.dec(
                rmsnorm(1, n, d.eps)?,
                vec![In(x), In(w), Out(out), In(Buf::Dummy)],
            );
        }
        Ok(())
    }

    /// `g = act(g) · u` over `n` values (`u == g`: the `n` values after `g`'s in the same
    /// buffer, a stacked gate/up product); quantized for the next GEMV as [`Builder::norm`].
    fn glu(&mut self, n: usize, act: Act, [g, u]: [Buf; 2], quantize: bool) -> Result<()> {
        use StepArg::{In, Out};
        let (mut l, q) = if self.fuse && quantize && n.is_multiple_of(32) {
            (glu_quantized(n, act)?, Out(Buf::Xq))
        } else {
            (glu(n, act)?, In(Buf::Dummy))
        };
        let u = if u == g {
            l.params.flags |= DEC_PAIRED;
            Buf::Dummy
        } else {
            u
        };
        self.dec(l, vec![Out(g), In(u), q]);
        if matches!(q, Out(_)) {
            self.xq_holds = Some((g, n));
        }
        Ok(())
    }

    /// A sub-layer's output projection `m` (weights `w`) of `x`: added into the residual
    /// stream by the GEMV itself where the step fuses and nothing comes between (no bias, no
    /// post-norm), else into [`Buf::Y`] (plus the bias) for [`Builder::residual`].
    fn project(
        &mut self,
        d: &StepDesc,
        l: &LayerDesc,
        m: &Mat,
        [w, x]: [Buf; 2],
        bias: Option<Buf>,
    ) -> Result<()> {
        use StepArg::{In, Out};
        if self.fuse && bias.is_none() && !l.post_norms {
            self.gemv_grouped(m, 1, w, x, Buf::X, GEMV_ACCUMULATE)?;
            self.added = true;
            return Ok(());
        }
        self.gemv(m, w, x, Buf::Y)?;
        if let Some(b) = bias {
            self.dec(add(d.hidden)?, vec![Out(Buf::Y), In(b)]);
        }
        Ok(())
    }

    /// `X += Y`, or `X += rms_norm(Y) · post` with a post-norm (through [`Buf::H`], free
    /// after a sub-layer); nothing where the output projection already added.
    fn residual(&mut self, d: &StepDesc, post: Option<Buf>) -> Result<()> {
        use StepArg::{In, Out};
        if std::mem::take(&mut self.added) {
            return Ok(());
        }
        let y = match post {
            Some(w) => {
                self.dec(
                    rmsnorm(1, d.hidden, d.eps)?,
                    vec![In(Buf::Y), In(w), Out(Buf::H), In(Buf::Dummy)],
                );
                Buf::H
            }
            None => Buf::Y,
        };
        self.dec(add(d.hidden)?, vec![Out(Buf::X), In(y)]);
        Ok(())
    }

    /// Layer `i`'s attention of query `q` over its caches into [`Buf::Att`]: the split
    /// kernel and the reduction (with the layer's sinks), which quantizes the output for the
    /// next GEMV where the step fuses and `quantize` says it reads Q8_1.
    fn attention(
        &mut self,
        d: &StepDesc,
        i: u32,
        q: Buf,
        pos: usize,
        quantize: bool,
    ) -> Result<()> {
        use StepArg::{In, Out};
        let s = d.layers[i as usize].attn(i)?;
        let plan = attn_plan(s, d.tokens, pos + 1, d.sm_count, None)?;
        let mut p = StepArg::Attn(plan.params);
        let v = if s.v_in_k { Buf::Dummy } else { Buf::VCache(i) };
        self.push(
            plan.kernel,
            plan.split,
            vec![
                In(q),
                In(Buf::KCache(i)),
                In(v),
                Out(Buf::PartMl),
                Out(Buf::PartAcc),
                p,
            ],
        );
        let sinks = if s.sinks {
            Buf::W(i, Wt::Sinks)
        } else {
            Buf::Dummy
        };
        let outq = if self.fuse && quantize && s.d_v.is_multiple_of(32) {
            let mut params = plan.params;
            params.flags |= ATTN_QUANT;
            p = StepArg::Attn(params);
            Out(Buf::Xq)
        } else {
            In(Buf::Dummy)
        };
        self.push(
            Kernel::AttnReduce,
            plan.reduce,
            vec![
                In(Buf::PartMl),
                In(Buf::PartAcc),
                In(sinks),
                Out(Buf::Att),
                outq,
                p,
            ],
        );
        if matches!(outq, Out(_)) {
            self.xq_holds = Some((Buf::Att, s.n_heads * s.d_v));
        }
        Ok(())
    }

    /// Layer `i`'s GQA attention of the normed hidden state in [`Buf::H`] into the residual
    /// stream: Q, K, V (biases, QK-norm), RoPE, the cache append, attention, the output
    /// projection. Fused, the steps between the projections and attention are one launch
    /// ([`qkv_heads`]).
    fn gqa(&mut self, d: &StepDesc, i: u32, pos: usize) -> Result<()> {
        use StepArg::{In, Out};
        let w = |t: Wt| Buf::W(i, t);
        let l = &d.layers[i as usize];
        let s = l.attn(i)?;
        let MixerDesc::Gqa {
            q,
            k,
            v,
            o,
            bias,
            qk_norm,
            gated,
            rope_dims,
            stacked,
        } = &l.mixer
        else {
            return Err(bad(format!("layer {i} is not a GQA layer")));
        };
        if *gated && s.d_k != s.d_v {
            return Err(bad(format!(
                "layer {i}: a gated output needs heads of equal K and V sizes, not {} and {}",
                s.d_k, s.d_v
            )));
        }
        // Stacked projections take the one-launch heads ([`stack_weights`] checks they fit).
        let st = (*stacked).clamp(1, 3);
        let heads = st > 1 || (self.fuse && heads_fit(s));
        let fold_bias = heads && folds_bias(bias, *gated);
        if st > 1 {
            let rows = [q, k, v][..st].iter().map(|m| m.rows).sum();
            self.gemv(&Mat { rows, ..*q }, w(Wt::Qkv), Buf::H, Buf::Qkv)?;
        }
        let parts = [
            (q, Wt::Q, Buf::Q, bias[0], Wt::BQ),
            (k, Wt::K, Buf::K, bias[1], Wt::BK),
            (v, Wt::V, Buf::V, bias[2], Wt::BV),
        ];
        for (m, wt, out, bias, bt) in parts.into_iter().skip(if st > 1 { st } else { 0 }) {
            self.gemv(m, w(wt), Buf::H, out)?;
            if bias && !fold_bias {
                self.dec(add(m.rows)?, vec![Out(out), In(w(bt))]);
            }
        }
        // Where each projection landed: the stacked buffer at its rows' offset, or its own.
        let at = |j: usize| -> (Buf, usize) {
            if j < st && st > 1 {
                (Buf::Qkv, [0, q.rows, q.rows + k.rows][j])
            } else {
                ([Buf::Q, Buf::K, Buf::V][j], 0)
            }
        };
        // A gated projection holds each head's query, then its gate: the gates are gathered
        // (and the queries too, unless qkv_heads reads them in place).
        let from = |offset| Rows {
            stride: 2 * s.d_k,
            offset,
        };
        let dense = Rows {
            stride: s.d_k,
            offset: 0,
        };
        if *gated {
            self.dec(
                copy2d(s.n_heads, s.d_k, from(s.d_k), dense)?,
                vec![In(at(0).0), Out(Buf::AttGate)],
            );
        }
        let q = if heads {
            let h = Heads {
                n_heads: s.n_heads,
                kv_heads: s.kv_heads,
                d_k: s.d_k,
                d_v: s.d_v,
                rope_dims: *rope_dims,
                q_stride: if *gated { 2 * s.d_k } else { s.d_k },
                offsets: [at(0).1, at(1).1, at(2).1],
                qk_norm: *qk_norm,
                bias: fold_bias && bias[0],
            };
            let opt = |on: bool, b: Wt| In(if on { w(b) } else { Buf::Dummy });
            self.dec(
                qkv_heads(&h, d.tokens, pos, s.dtype, l.theta, d.neox, d.eps)?,
                vec![
                    In(at(0).0),
                    In(at(1).0),
                    In(at(2).0),
                    opt(h.bias, Wt::BQ),
                    opt(h.bias, Wt::BK),
                    opt(h.bias, Wt::BV),
                    opt(*qk_norm, Wt::QNorm),
                    opt(*qk_norm, Wt::KNorm),
                    Out(Buf::Qn),
                    Out(Buf::KCache(i)),
                    Out(Buf::VCache(i)),
                ],
            );
            Buf::Qn
        } else {
            let q = if *gated {
                self.dec(
                    copy2d(s.n_heads, s.d_k, from(0), dense)?,
                    vec![In(Buf::Q), Out(Buf::Query)],
                );
                Buf::Query
            } else {
                Buf::Q
            };
            let (q, k) = if *qk_norm {
                self.dec(
                    rmsnorm(s.n_heads, s.d_k, d.eps)?,
                    vec![In(q), In(w(Wt::QNorm)), Out(Buf::Qn), In(Buf::Dummy)],
                );
                self.dec(
                    rmsnorm(s.kv_heads, s.d_k, d.eps)?,
                    vec![In(Buf::K), In(w(Wt::KNorm)), Out(Buf::Kn), In(Buf::Dummy)],
                );
                (Buf::Qn, Buf::Kn)
            } else {
                (q, Buf::K)
            };
            self.dec(
                rope(s.n_heads, s.d_k, *rope_dims, pos, l.theta, d.neox)?,
                vec![Out(q)],
            );
            self.dec(
                rope(s.kv_heads, s.d_k, *rope_dims, pos, l.theta, d.neox)?,
                vec![Out(k)],
            );
            self.dec(
                kv_write(s.kv_heads, s.d_k, s.d_k, d.tokens, pos, s.dtype)?,
                vec![In(k), Out(Buf::KCache(i))],
            );
            self.dec(
                kv_write(s.kv_heads, s.d_v, s.d_v, d.tokens, pos, s.dtype)?,
                vec![In(Buf::V), Out(Buf::VCache(i))],
            );
            q
        };
        self.attention(d, i, q, pos, !*gated && reads_q8_1(o))?;
        let att = if *gated {
            self.glu(
                s.n_heads * s.d_v,
                Act::Sigmoid,
                [Buf::AttGate, Buf::Att],
                reads_q8_1(o),
            )?;
            Buf::AttGate
        } else {
            Buf::Att
        };
        self.project(d, l, o, [w(Wt::O), att], bias[3].then_some(w(Wt::BO)))
    }

    /// Layer `i`'s MLA attention of the normed hidden state in [`Buf::H`] into [`Buf::Y`], as
    /// the CPU step does it: the query (through `q_a` and its norm), the cache row (latent
    /// normed, RoPE part rotated) appended, each head's non-RoPE query taken into latent space
    /// by `W_UK` and its RoPE part rotated, attention over the latent rows, `W_UV` per head, the
    /// output projection.
    fn mla(&mut self, d: &StepDesc, i: u32, m: &MlaDesc, pos: usize) -> Result<()> {
        use StepArg::{In, Out};
        let w = |t: Wt| Buf::W(i, t);
        let l = &d.layers[i as usize];
        let s = l.attn(i)?;
        let nh = s.n_heads;
        let (kvr, rope_d, nope) = m.dims(nh);
        let qk = m.q.rows / nh;
        if s.d_k != kvr + rope_d || nope + rope_d != qk {
            return Err(bad(format!(
                "MLA shapes: cache rows of {} for a latent of {kvr} + {rope_d}, query heads of {qk} for {nope} + {rope_d}",
                s.d_k
            )));
        }
        match &m.q_a {
            Some(q_a) => {
                self.gemv(q_a, w(Wt::QA), Buf::H, Buf::MlaC)?;
                self.norm(
                    d,
                    q_a.rows,
                    [Buf::MlaC, w(Wt::QANorm), Buf::MlaCn],
                    reads_q8_1(&m.q),
                )?;
                self.gemv(&m.q, w(Wt::Q), Buf::MlaCn, Buf::Q)?;
            }
            None => self.gemv(&m.q, w(Wt::Q), Buf::H, Buf::Q)?,
        }
        // The cache row: the normed latent, then the rotated RoPE part.
        self.gemv(&m.kv_a, w(Wt::KvA), Buf::H, Buf::MlaKv)?;
        self.dec(
            rmsnorm(1, kvr, d.eps)?,
            vec![
                In(Buf::MlaKv),
                In(w(Wt::KvNorm)),
                Out(Buf::MlaRow),
                In(Buf::Dummy),
            ],
        );
        let row = |offset| Rows {
            stride: s.d_k,
            offset,
        };
        let kv = Rows {
            stride: m.kv_a.rows,
            offset: kvr,
        };
        self.dec(
            copy2d(1, rope_d, kv, row(kvr))?,
            vec![In(Buf::MlaKv), Out(Buf::MlaRow)],
        );
        self.dec(
            rope_at(1, s.d_k, kvr, rope_d, pos, l.theta, d.neox)?,
            vec![Out(Buf::MlaRow)],
        );
        self.dec(
            kv_write(1, s.d_k, s.d_k, d.tokens, pos, s.dtype)?,
            vec![In(Buf::MlaRow), Out(Buf::KCache(i))],
        );
        if !s.v_in_k {
            self.dec(
                kv_write(1, kvr, s.d_k, d.tokens, pos, s.dtype)?,
                vec![In(Buf::MlaRow), Out(Buf::VCache(i))],
            );
        }
        // The query: W_UK of each head's non-RoPE part, then its rotated RoPE part.
        let q_at = |offset| Rows { stride: qk, offset };
        let dense = |n| Rows {
            stride: n,
            offset: 0,
        };
        self.dec(
            copy2d(nh, nope, q_at(0), dense(nope))?,
            vec![In(Buf::Q), Out(Buf::QNope)],
        );
        self.gemv_grouped(&m.k_b, nh, w(Wt::KB), Buf::QNope, Buf::QLat, 0)?;
        self.dec(
            copy2d(nh, kvr, dense(kvr), row(0))?,
            vec![In(Buf::QLat), Out(Buf::Query)],
        );
        self.dec(
            copy2d(nh, rope_d, q_at(nope), row(kvr))?,
            vec![In(Buf::Q), Out(Buf::Query)],
        );
        self.dec(
            rope_at(nh, s.d_k, kvr, rope_d, pos, l.theta, d.neox)?,
            vec![Out(Buf::Query)],
        );
        self.attention(d, i, Buf::Query, pos, reads_q8_1(&m.v_b))?;
        self.gemv_grouped(&m.v_b, nh, w(Wt::VB), Buf::Att, Buf::Heads, 0)?;
        self.project(d, l, &m.o, [w(Wt::O), Buf::Heads], None)
    }

    /// Layer `i`'s Gated DeltaNet of the normed hidden state in [`Buf::H`] into [`Buf::Y`], as
    /// the CPU step does it: the projections, the convolution, the delta rule over the state
    /// copy of this position's parity into the other, the gated RMSNorm, `ssm_out`.
    fn delta(&mut self, d: &StepDesc, i: u32, m: &DeltaDesc, pos: usize) -> Result<()> {
        use StepArg::{In, Out};
        let w = |t: Wt| Buf::W(i, t);
        let s = &m.shape;
        let (ch, v) = (s.channels(), s.n_v * s.d_v);
        if m.qkv.rows != ch || m.gate.rows != v || m.ba.rows != 2 * s.n_v || m.out.cols != v {
            return Err(bad(format!(
                "layer {i}: Gated DeltaNet projections of {} / {} / {} rows and {} columns for \
                 {} key heads of {} and {} value heads of {}",
                m.qkv.rows, m.gate.rows, m.ba.rows, m.out.cols, s.n_k, s.d_k, s.n_v, s.d_v
            )));
        }
        self.gemv(&m.qkv, w(Wt::SsmQkv), Buf::H, Buf::DeltaQkv)?;
        self.gemv(&m.gate, w(Wt::SsmGate), Buf::H, Buf::DeltaZ)?;
        self.gemv(&m.ba, w(Wt::SsmBa), Buf::H, Buf::DeltaBa)?;
        let (from, to) = ((pos % 2) as u8, ((pos + 1) % 2) as u8);
        let (hist_in, hist_out) = if s.conv > 1 {
            (Buf::DeltaHist(i, from), Buf::DeltaHist(i, to))
        } else {
            (Buf::Dummy, Buf::Dummy)
        };
        self.dec(
            delta_conv(ch, s.conv)?,
            vec![
                In(Buf::DeltaQkv),
                In(w(Wt::SsmConv)),
                In(hist_in),
                Out(hist_out),
                Out(Buf::DeltaX),
            ],
        );
        self.dec(
            delta_rule(s.n_k, s.n_v, s.d_k, s.d_v, d.eps)?,
            vec![
                In(Buf::DeltaX),
                In(Buf::DeltaBa),
                In(w(Wt::SsmDtBias)),
                In(w(Wt::SsmA)),
                In(Buf::DeltaState(i, from)),
                Out(Buf::DeltaState(i, to)),
                Out(Buf::DeltaO),
            ],
        );
        self.dec(
            rmsnorm(s.n_v, s.d_v, d.eps)?,
            vec![
                In(Buf::DeltaO),
                In(w(Wt::SsmNorm)),
                Out(Buf::DeltaNormed),
                In(Buf::Dummy),
            ],
        );
        self.glu(
            v,
            Act::Silu,
            [Buf::DeltaZ, Buf::DeltaNormed],
            reads_q8_1(&m.out),
        )?;
        let l = &d.layers[i as usize];
        self.project(d, l, &m.out, [w(Wt::SsmOut), Buf::DeltaZ], None)
    }
}

/// The launches of one step at position `pos` (the caches hold positions `< pos`; the step
/// writes `pos` and attends to `pos + 1` tokens): the token's embedding is in [`Buf::Embd`] on
/// entry (it stays, so the same step can be replayed); the logits end in [`Buf::Logits`] and
/// their argmax in [`Buf::Token`]. A stage without the embedding starts from [`Buf::X`] as the
/// host wrote it (the host writes it again before a replay); one without the output ends there.
///
/// A dense GQA layer is 22 launches one per operation ([`StepDesc::fuse`] off): norm, Q8_1,
/// Q, K, V, two RoPEs, two cache writes, attention's split and reduction, Q8_1, O, residual add,
/// norm, Q8_1, gate, up, gated activation, Q8_1, down, residual add. Fused (the default) it is
/// 10: norm (writing the Q8_1 input too), the stacked Q/K/V product, [`qkv_heads`], the split,
/// the reduction (writing the Q8_1 input of O), O adding into the residual stream, norm, the
/// stacked gate/up product, the gated activation (writing the Q8_1 input of down), down adding
/// into the stream. A Qwen3-30B-A3B layer (GQA with QK-norm, a MoE FFN) is 21 and 10: its FFN
/// is the norm, the router (routing in its last block), gate/up (quantizing the activations in
/// its last blocks) and down (combining the choices into the stream in its last blocks).
pub fn step_launches(d: &StepDesc, pos: usize) -> Result<Vec<StepLaunch>> {
    Ok(step_plan(d, pos)?.launches)
}

/// A step's launches ([`step_launches`]) and which of them are each layer's.
#[derive(Clone, Debug)]
pub struct StepPlan {
    /// Every launch, in order.
    pub launches: Vec<StepLaunch>,
    /// The launches of each layer of the step, in order: each range starts with the layer's
    /// first norm and ends with its FFN's residual add, and runs by itself (it reads the
    /// residual stream and quantizes its own GEMV inputs).
    pub layers: Vec<std::ops::Range<usize>>,
}

impl StepPlan {
    /// Layer `k`'s launches.
    pub fn layer(&self, k: usize) -> &[StepLaunch] {
        &self.launches[self.layers[k].clone()]
    }

    /// The launches outside the layers: the embedding's copy and the head.
    pub fn fixed(&self) -> Vec<StepLaunch> {
        let first = self.layers.first().map_or(self.launches.len(), |r| r.start);
        let last = self.layers.last().map_or(first, |r| r.end);
        let mut v = self.launches[..first].to_vec();
        v.extend_from_slice(&self.launches[last..]);
        v
    }
}

/// Weight or cache bytes launch `l` must read from memory (a GEMV's matrix, attention's K and
/// V rows over its span, the f32 router, a MoE pass's rows of its `top_k` experts at one token:
/// the distinct experts a batch of one touches); `None` for the small steps between them,
/// whose bytes are activations.
pub fn launch_read_bytes(l: &StepLaunch) -> Option<u64> {
    use crate::attention::ATTN_V_IN_K;
    let name = l.kernel.name();
    l.args.iter().find_map(|a| match a {
        StepArg::Gemv(p) => Some(u64::from(p.rows) * p.row_bytes),
        StepArg::Attn(p) if l.kernel != Kernel::AttnReduce => {
            let v = if p.flags & ATTN_V_IN_K != 0 {
                0
            } else {
                p.v_row_bytes
            };
            Some(u64::from(p.kv_heads) * u64::from(p.end - p.first) * (p.k_row_bytes + v))
        }
        StepArg::Moe(p) if l.kernel == Kernel::MoeRouter => {
            Some(u64::from(p.router_rows) * u64::from(p.hidden) * 4)
        }
        StepArg::Moe(p) if name.starts_with("mb_moe_gate_up") => {
            Some(u64::from(p.top_k) * 2 * u64::from(p.ff) * p.gate_row_bytes)
        }
        StepArg::Moe(p) if name.starts_with("mb_moe_down") => {
            Some(u64::from(p.top_k) * u64::from(p.hidden) * p.down_row_bytes)
        }
        _ => None,
    })
}

/// [`step_launches`] with each layer's range.
pub fn step_plan(d: &StepDesc, pos: usize) -> Result<StepPlan> {
    use StepArg::{In, Out};
    if pos >= d.tokens {
        return Err(bad(format!(
            "position {pos} past the caches' {} tokens",
            d.tokens
        )));
    }
    let mut b = Builder {
        v: Vec::new(),
        xq_holds: None,
        fuse: d.fuse,
        added: false,
    };
    let h = d.hidden;
    if d.embed {
        let copy = StreamParams {
            n: h as u64,
            scalar: 0.0,
            _pad: 0,
        };
        b.push(
            Kernel::Copy,
            LaunchConfig {
                grid_dim: ((h as u32).div_ceil(4 * DEC_BLOCK).max(1), 1, 1),
                block_dim: (DEC_BLOCK, 1, 1),
                shared_mem_bytes: 0,
            },
            vec![In(Buf::Embd), Out(Buf::X), StepArg::Stream(copy)],
        );
    }
    let mut layers = Vec::with_capacity(d.layers.len());
    for (i, l) in d.layers.iter().enumerate() {
        let i = i as u32;
        let w = |t: Wt| Buf::W(i, t);
        let start = b.v.len();
        b.norm(
            d,
            h,
            [Buf::X, w(Wt::AttnNorm), Buf::H],
            l.mixer_reads_q8_1(),
        )?;
        match &l.mixer {
            MixerDesc::Gqa { .. } => b.gqa(d, i, pos)?,
            MixerDesc::Mla(m) => b.mla(d, i, m, pos)?,
            MixerDesc::Delta(m) => b.delta(d, i, m, pos)?,
        }
        b.residual(d, l.post_norms.then_some(w(Wt::PostAttnNorm)))?;
        b.norm(d, h, [Buf::X, w(Wt::FfnNorm), Buf::H], l.ffn_reads_q8_1())?;
        match &l.ffn {
            FfnDesc::Dense {
                gate,
                up,
                down,
                gelu,
                stacked,
            } => {
                let u = if *stacked {
                    let both = Mat {
                        rows: gate.rows + up.rows,
                        ..*gate
                    };
                    b.gemv(&both, w(Wt::GateUp), Buf::H, Buf::G)?;
                    Buf::G
                } else {
                    b.gemv(gate, w(Wt::Gate), Buf::H, Buf::G)?;
                    b.gemv(up, w(Wt::Up), Buf::H, Buf::U)?;
                    Buf::U
                };
                let act = if *gelu { Act::Gelu } else { Act::Silu };
                b.glu(gate.rows, act, [Buf::G, u], reads_q8_1(down))?;
                b.project(d, l, down, [w(Wt::Down), Buf::G], None)?;
            }
            FfnDesc::Moe(layer) => {
                let fuse = MoeFusion {
                    x_quantized: b.xq_holds == Some((Buf::H, h)),
                    accumulate: b.fuse && !l.post_norms,
                };
                let map = |mb: MoeBuf| match mb {
                    MoeBuf::X => Buf::H,
                    MoeBuf::Xq if fuse.x_quantized => Buf::Xq,
                    MoeBuf::Out if fuse.accumulate => Buf::X,
                    MoeBuf::Out => Buf::Y,
                    MoeBuf::Dummy => Buf::Dummy,
                    other => Buf::Moe(i, other),
                };
                for ml in moe_launches_fused(layer, 1, false, fuse)? {
                    let args = ml
                        .args
                        .iter()
                        .map(|a| match *a {
                            MoeArg::In(mb) => In(map(mb)),
                            MoeArg::Out(mb) => Out(map(mb)),
                            MoeArg::Moe(p) => StepArg::Moe(p),
                            MoeArg::Quantize(p) => StepArg::Quantize(p),
                        })
                        .collect();
                    b.push(ml.kernel, ml.config, args);
                }
                b.added = fuse.accumulate;
            }
        }
        b.residual(d, l.post_norms.then_some(w(Wt::PostFfnNorm)))?;
        layers.push(start..b.v.len());
    }
    if let Some(output) = &d.output {
        b.norm(d, h, [Buf::X, Buf::OutNorm, Buf::H], reads_q8_1(output))?;
        b.gemv(output, Buf::Output, Buf::H, Buf::Logits)?;
        b.dec(argmax(output.rows)?, vec![In(Buf::Logits), Out(Buf::Token)]);
    }
    Ok(StepPlan {
        launches: b.v,
        layers,
    })
}

/// Bytes of scratch buffer `b` (0 for weights, which come with their data).
pub fn scratch_bytes(d: &StepDesc, b: Buf) -> Result<usize> {
    let f = |n: usize| n * 4;
    let max = |g: &dyn Fn(&LayerDesc) -> usize| d.layers.iter().map(g).max().unwrap_or(0);
    let attn = |g: &dyn Fn(&AttnShape) -> usize| max(&|l| l.attn.as_ref().map_or(0, g));
    let mla = |g: &dyn Fn(&MlaDesc, &AttnShape) -> usize| {
        max(&|l| match (&l.mixer, &l.attn) {
            (MixerDesc::Mla(m), Some(a)) => g(m, a),
            _ => 0,
        })
    };
    let delta = |g: &dyn Fn(&DeltaDesc) -> usize| {
        max(&|l| match &l.mixer {
            MixerDesc::Delta(m) => g(m),
            _ => 0,
        })
    };
    let gqa = |pick: usize| {
        max(&|l| match &l.mixer {
            MixerDesc::Gqa { q, k, v, .. } => [q, k, v][pick].rows,
            _ => 0,
        })
    };
    Ok(match b {
        Buf::Embd | Buf::X | Buf::H => f(d.hidden),
        Buf::Qkv => f(gqa(0) + gqa(1) + gqa(2)),
        Buf::Q | Buf::Qn => f(gqa(0).max(mla(&|m, _| m.q.rows))),
        Buf::K | Buf::Kn => f(gqa(1)),
        Buf::V => f(gqa(2)),
        Buf::MlaC | Buf::MlaCn => f(mla(&|m, _| m.q_a.map_or(0, |q| q.rows))),
        Buf::MlaKv => f(mla(&|m, _| m.kv_a.rows)),
        Buf::MlaRow => f(attn(&|a| a.d_k)),
        Buf::QNope => f(mla(&|m, a| a.n_heads * m.k_b.cols)),
        Buf::QLat => f(mla(&|m, _| m.k_b.rows)),
        Buf::Query | Buf::AttGate => f(attn(&|a| a.n_heads * a.d_k.max(a.d_v))),
        Buf::Heads => f(mla(&|m, _| m.v_b.rows)),
        Buf::Att => f(attn(&|a| a.n_heads * a.d_v)),
        Buf::Y => f(d.hidden.max(max(&|l| l.o().rows))),
        Buf::G | Buf::U => f(max(&|l| match &l.ffn {
            FfnDesc::Dense { gate, up, .. } if b == Buf::G => gate.rows + up.rows,
            FfnDesc::Dense { gate, .. } => gate.rows,
            FfnDesc::Moe(_) => 0,
        })),
        Buf::DeltaQkv | Buf::DeltaX => f(delta(&|m| m.qkv.rows)),
        Buf::DeltaZ | Buf::DeltaO | Buf::DeltaNormed => f(delta(&|m| m.shape.n_v * m.shape.d_v)),
        Buf::DeltaBa => f(delta(&|m| m.ba.rows)),
        Buf::DeltaHist(i, _) | Buf::DeltaState(i, _) => match &d.layers[i as usize].mixer {
            MixerDesc::Delta(m) if matches!(b, Buf::DeltaState(..)) => f(m.shape.state_len()),
            MixerDesc::Delta(m) => f((m.shape.conv.max(1) - 1) * m.shape.channels()),
            _ => 0,
        },
        Buf::Xq => {
            let cols = d
                .layers
                .iter()
                .flat_map(LayerDesc::quantized_inputs)
                .chain(d.output.map(|o| o.cols))
                .chain([d.hidden])
                .max()
                .unwrap_or(0);
            cols / 32 * Q8_1_BLOCK_BYTES
        }
        Buf::PartMl | Buf::PartAcc => {
            let mut most = 0;
            for a in d.layers.iter().filter_map(|l| l.attn.as_ref()) {
                // Every position's plan, not the full cache's: split counts are not monotonic
                // in the depth.
                let (ml, acc) = attn_max_partials(a, d.tokens, d.sm_count)?;
                most = most.max(f(if b == Buf::PartMl { ml } else { acc }));
            }
            most
        }
        Buf::Logits => f(d.output.map_or(0, |o| o.rows)),
        Buf::Token => 4,
        Buf::Dummy => 16,
        Buf::KCache(i) | Buf::VCache(i) => {
            let s = d.layers[i as usize].attn(i)?;
            let (kb, vb) = s.row_bytes();
            s.kv_heads * d.tokens * if b == Buf::KCache(i) { kb } else { vb }
        }
        Buf::Moe(i, mb) => match &d.layers[i as usize].ffn {
            FfnDesc::Moe(_) if mb == MoeBuf::SharedPlan => shared_plan(1).len() * 4,
            FfnDesc::Moe(layer) => buffer_bytes(layer, 1, mb),
            FfnDesc::Dense { .. } => 0,
        },
        Buf::W(..) | Buf::OutNorm | Buf::Output => 0,
    })
}

/// Every scratch buffer a step of `d` uses (weights excluded), with its bytes.
pub fn scratch_buffers(d: &StepDesc, launches: &[StepLaunch]) -> Result<Vec<(Buf, usize)>> {
    let mut seen: Vec<Buf> = launches
        .iter()
        .flat_map(|l| l.args.iter())
        .filter_map(|a| match a {
            StepArg::In(b) | StepArg::Out(b) => Some(*b),
            _ => None,
        })
        .filter(|b| !matches!(b, Buf::W(..) | Buf::OutNorm | Buf::Output))
        .collect();
    seen.sort();
    seen.dedup();
    seen.into_iter()
        .map(|b| Ok((b, scratch_bytes(d, b)?)))
        .filter(|r| !matches!(r, Ok((_, 0))))
        .collect()
}

/// Buffers whose contents a step reads before any launch writes them, other than weights: the
/// shared expert's one-slot plan of each MoE layer with a shared expert.
pub fn initial_data(d: &StepDesc) -> Vec<(Buf, Vec<u8>)> {
    d.layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match &l.ffn {
            FfnDesc::Moe(layer) if layer.shared_ff > 0 => Some((
                Buf::Moe(i as u32, MoeBuf::SharedPlan),
                shared_plan(1)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

/// What runs a step's launches over its buffers: a device ([`OnGpu`]) or the host build of
/// the kernels (`membound_cuda_host::HostStep`), so code that composes steps (a model split
/// across devices) is written once for both.
pub trait StepExec {
    /// Overwrites buffer `b`.
    fn write(&mut self, b: Buf, bytes: &[u8]) -> Result<()>;
    /// Queues `launches` (from [`step_launches`] of this step's description).
    fn run(&mut self, launches: &[StepLaunch]) -> Result<()>;
    /// Buffer `b`'s bytes once the queued launches are done.
    fn read(&mut self, b: Buf) -> Result<Vec<u8>>;
}

/// A [`GpuStep`] with the device it lives on.
pub struct OnGpu<'g> {
    /// The device.
    pub gpu: &'g crate::gpu::Gpu,
    /// The step's buffers.
    pub step: GpuStep,
}

impl StepExec for OnGpu<'_> {
    fn write(&mut self, b: Buf, bytes: &[u8]) -> Result<()> {
        self.step.write(self.gpu, b, bytes)
    }

    fn run(&mut self, launches: &[StepLaunch]) -> Result<()> {
        self.step.run(self.gpu, launches)
    }

    fn read(&mut self, b: Buf) -> Result<Vec<u8>> {
        self.gpu.synchronize()?;
        self.step.read(self.gpu, b)
    }
}

/// A step's buffers on a device: weights uploaded once, scratch and caches allocated once, so
/// [`GpuStep::run`] only queues launches (a CUDA graph can capture it).
pub struct GpuStep {
    bufs: std::collections::HashMap<Buf, cudarc::driver::CudaSlice<u8>>,
    /// Launch with programmatic dependent launch ([`pdl_requested`] on sm_90 or later).
    pdl: bool,
}

impl GpuStep {
    /// Uploads `weights` and the step's initial data and allocates (zeroed) every other buffer
    /// `launches` name.
    pub fn new(
        gpu: &crate::gpu::Gpu,
        d: &StepDesc,
        weights: &[(Buf, Vec<u8>)],
        launches: &[StepLaunch],
    ) -> Result<GpuStep> {
        let mut bufs = std::collections::HashMap::new();
        for (b, bytes) in weights.iter().chain(&initial_data(d)) {
            bufs.insert(*b, gpu.upload(bytes)?);
        }
        for (b, n) in scratch_buffers(d, launches)? {
            if let std::collections::hash_map::Entry::Vacant(e) = bufs.entry(b) {
                e.insert(gpu.alloc_zeros::<u8>(n)?);
            }
        }
        // The kernels must have been built for sm_90 or later, or mb_grid_begin's wait is
        // compiled out (an older NVRTC falls back to older PTX) and a launch would not wait.
        let built = match gpu.target {
            crate::nvrtc::Target::Cubin { major, .. } | crate::nvrtc::Target::Ptx { major, .. } => {
                major
            }
        };
        let pdl = pdl_requested() && gpu.info().sm.0 >= 9 && built >= 9;
        Ok(GpuStep { bufs, pdl })
    }

    /// Whether the launches use programmatic dependent launch.
    pub fn pdl(&self) -> bool {
        self.pdl
    }

    /// Buffer `b` of launch `l`.
    fn buf(&self, l: &StepLaunch, b: &Buf) -> Result<&cudarc::driver::CudaSlice<u8>> {
        self.bufs.get(b).ok_or_else(|| {
            bad(format!(
                "{} needs {b:?}, which is not allocated",
                l.kernel.name()
            ))
        })
    }

    /// Launch `l` with programmatic dependent launch (`cuLaunchKernelEx` with
    /// `PROGRAMMATIC_STREAM_SERIALIZATION`): the arguments as raw bytes (device pointers, the
    /// parameter structs), which the driver copies at the launch.
    fn launch_pdl(&self, gpu: &crate::gpu::Gpu, l: &StepLaunch) -> Result<()> {
        use cudarc::driver::{DevicePtr, sys};
        fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
            // SAFETY: T is one of the #[repr(C)] plain parameter structs (no padding read as
            // anything but bytes the kernel ignores).
            unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
                .to_vec()
        }
        let mut vals: Vec<Vec<u8>> = Vec::with_capacity(l.args.len());
        for a in &l.args {
            vals.push(match a {
                StepArg::In(b) | StepArg::Out(b) => {
                    let (ptr, _sync) = self.buf(l, b)?.device_ptr(&gpu.stream);
                    ptr.to_le_bytes().to_vec()
                }
                StepArg::Gemv(p) => bytes_of(p),
                StepArg::Quantize(p) => bytes_of(p),
                StepArg::Moe(p) => bytes_of(p),
                StepArg::Attn(p) => bytes_of(p),
                StepArg::Dec(p) => bytes_of(p),
                StepArg::Stream(p) => bytes_of(p),
            });
        }
        let mut params: Vec<*mut std::ffi::c_void> =
            vals.iter_mut().map(|v| v.as_mut_ptr().cast()).collect();
        // SAFETY: an all-zero launch attribute is valid; the id and value are set below.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let c = l.config;
        let cfg = sys::CUlaunchConfig {
            gridDimX: c.grid_dim.0,
            gridDimY: c.grid_dim.1,
            gridDimZ: c.grid_dim.2,
            blockDimX: c.block_dim.0,
            blockDimY: c.block_dim.1,
            blockDimZ: c.block_dim.2,
            sharedMemBytes: c.shared_mem_bytes,
            hStream: gpu.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        let _range = gpu.nvtx_range(l.kernel);
        // SAFETY: step_launches builds each argument list in the kernel's parameter order, so
        // `params` holds one pointer per kernel parameter to bytes of its size; the buffers
        // live in `self` for as long as the step does.
        let r = unsafe {
            sys::cuLaunchKernelEx(
                &cfg,
                gpu.function(l.kernel).cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        r.result().map_err(crate::gpu::driver_err(
            &gpu.label,
            &format!(
                "launch {} {:?} (programmatic dependent launch)",
                l.kernel.name(),
                c.grid_dim
            ),
        ))
    }

    /// Overwrites buffer `b` (the embedded token into [`Buf::Embd`]).
    pub fn write(&mut self, gpu: &crate::gpu::Gpu, b: Buf, bytes: &[u8]) -> Result<()> {
        let dst = self
            .bufs
            .get_mut(&b)
            .ok_or_else(|| bad(format!("{b:?} is not allocated")))?;
        gpu.upload_into(bytes, dst)
    }

    /// Queues `launches` (from [`step_launches`] of the same description).
    pub fn run(&self, gpu: &crate::gpu::Gpu, launches: &[StepLaunch]) -> Result<()> {
        use cudarc::driver::PushKernelArg;
        if self.pdl {
            // cuLaunchKernelEx takes the thread's current context (cudarc's launches bind
            // theirs): after work on another device it would not be this one's.
            gpu.stream
                .context()
                .bind_to_thread()
                .map_err(crate::gpu::driver_err(&gpu.label, "bind the context"))?;
        }
        for l in launches {
            if self.pdl {
                self.launch_pdl(gpu, l)?;
                continue;
            }
            let mut args = gpu.stream.launch_builder(gpu.function(l.kernel));
            for a in &l.args {
                match a {
                    StepArg::In(b) | StepArg::Out(b) => {
                        args.arg(self.buf(l, b)?);
                    }
                    StepArg::Gemv(p) => {
                        args.arg(p);
                    }
                    StepArg::Quantize(p) => {
                        args.arg(p);
                    }
                    StepArg::Moe(p) => {
                        args.arg(p);
                    }
                    StepArg::Attn(p) => {
                        args.arg(p);
                    }
                    StepArg::Dec(p) => {
                        args.arg(p);
                    }
                    StepArg::Stream(p) => {
                        args.arg(p);
                    }
                }
            }
            // SAFETY: step_launches builds each argument list in the kernel's parameter order
            // (the GEMV, attention and MoE lists as their own modules build them); every buffer
            // was allocated by scratch_bytes for this description or holds its weight.
            unsafe { gpu.launch(l.kernel, args, l.config) }?;
        }
        Ok(())
    }

    /// Buffer `b`'s bytes.
    pub fn read(&self, gpu: &crate::gpu::Gpu, b: Buf) -> Result<Vec<u8>> {
        let buf = self
            .bufs
            .get(&b)
            .ok_or_else(|| bad(format!("{b:?} is not allocated")))?;
        gpu.download(buf)
    }
}
