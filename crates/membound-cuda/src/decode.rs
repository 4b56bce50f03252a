//! Launches of the element-wise decode kernels (`kernels/decode.cu`): RMSNorm, RoPE, residual
//! add, the gated activation, the KV-cache append, argmax and Gated DeltaNet's convolution and
//! delta rule — the steps between a decode step's matrix products. Each builder checks its shape and returns the kernel, its geometry
//! and its parameters, so a GPU and the host execution (membound-cuda-host) launch the same.

use cudarc::driver::LaunchConfig;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::model::DeltaShape;
use membound_spec::moe::MoeLayer;

use crate::attention::{attn_max_partials, attn_plan};
use crate::error::{CudaError, Result};
use crate::gemv::{
    Q8_1_BLOCK_BYTES, activation_dtype, gemv_config, gemv_params_grouped, gemv_warps, kernel_for,
    quantize_config,
};
use crate::gpu::Kernel;
use crate::moe::{MoeArg, MoeBuf, buffer_bytes, moe_launches, shared_plan};
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

/// `g = act(g) · u` over `n` values (`g`, `u`).
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
    /// The dense FFN's gate and up.
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
}

/// Appends launches, quantizing a GEMV's input once for consecutive GEMVs that read it.
struct Builder {
    v: Vec<StepLaunch>,
    xq_holds: Option<(Buf, usize)>,
}

impl Builder {
    fn push(&mut self, kernel: Kernel, config: LaunchConfig, args: Vec<StepArg>) {
        if let Some((held, _)) = self.xq_holds
            && args
                .iter()
                .any(|a| matches!(a, StepArg::Out(b) if *b == held))
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
        self.gemv_grouped(m, 1, w, x, y)
    }

    /// `y = W·x` with the rows of `m` in `groups` groups, group `g` taking the `g`-th run of
    /// `m.cols` values of `x` (one input for `groups = 1`).
    fn gemv_grouped(&mut self, m: &Mat, groups: usize, w: Buf, x: Buf, y: Buf) -> Result<()> {
        use StepArg::{In, Out};
        let warps = gemv_warps();
        let p = gemv_params_grouped(m.dtype, m.rows, m.cols, groups, warps)?;
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

    /// `X += Y`, or `X += rms_norm(Y) · post` with a post-norm (through [`Buf::H`], free
    /// after a sub-layer).
    fn residual(&mut self, d: &StepDesc, post: Option<Buf>) -> Result<()> {
        use StepArg::{In, Out};
        let y = match post {
            Some(w) => {
                self.dec(
                    rmsnorm(1, d.hidden, d.eps)?,
                    vec![In(Buf::Y), In(w), Out(Buf::H)],
                );
                Buf::H
            }
            None => Buf::Y,
        };
        self.dec(add(d.hidden)?, vec![Out(Buf::X), In(y)]);
        Ok(())
    }

    /// Layer `i`'s attention of query `q` over its caches into [`Buf::Att`]: the split
    /// kernel and the reduction (with the layer's sinks).
    fn attention(&mut self, d: &StepDesc, i: u32, q: Buf, pos: usize) -> Result<()> {
        use StepArg::{In, Out};
        let s = d.layers[i as usize].attn(i)?;
        let plan = attn_plan(s, d.tokens, pos + 1, d.sm_count, None)?;
        let p = StepArg::Attn(plan.params);
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
        self.push(
            Kernel::AttnReduce,
            plan.reduce,
            vec![
                In(Buf::PartMl),
                In(Buf::PartAcc),
                In(sinks),
                Out(Buf::Att),
                p,
            ],
        );
        Ok(())
    }

    /// Layer `i`'s GQA attention of the normed hidden state in [`Buf::H`] into [`Buf::Y`]:
    /// Q, K, V (biases, QK-norm), RoPE, the cache append, attention, the output projection.
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
        } = &l.mixer
        else {
            return Err(bad(format!("layer {i} is not a GQA layer")));
        };
        for (m, wt, out, bias, bt) in [
            (q, Wt::Q, Buf::Q, bias[0], Wt::BQ),
            (k, Wt::K, Buf::K, bias[1], Wt::BK),
            (v, Wt::V, Buf::V, bias[2], Wt::BV),
        ] {
            self.gemv(m, w(wt), Buf::H, out)?;
            if bias {
                self.dec(add(m.rows)?, vec![Out(out), In(w(bt))]);
            }
        }
        // A gated projection holds each head's query, then its gate: both gathered.
        let q = if *gated {
            if s.d_k != s.d_v {
                return Err(bad(format!(
                    "layer {i}: a gated output needs heads of equal K and V sizes, not {} and {}",
                    s.d_k, s.d_v
                )));
            }
            let from = |offset| Rows {
                stride: 2 * s.d_k,
                offset,
            };
            let dense = Rows {
                stride: s.d_k,
                offset: 0,
            };
            self.dec(
                copy2d(s.n_heads, s.d_k, from(0), dense)?,
                vec![In(Buf::Q), Out(Buf::Query)],
            );
            self.dec(
                copy2d(s.n_heads, s.d_k, from(s.d_k), dense)?,
                vec![In(Buf::Q), Out(Buf::AttGate)],
            );
            Buf::Query
        } else {
            Buf::Q
        };
        let (q, k) = if *qk_norm {
            self.dec(
                rmsnorm(s.n_heads, s.d_k, d.eps)?,
                vec![In(q), In(w(Wt::QNorm)), Out(Buf::Qn)],
            );
            self.dec(
                rmsnorm(s.kv_heads, s.d_k, d.eps)?,
                vec![In(Buf::K), In(w(Wt::KNorm)), Out(Buf::Kn)],
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
        self.attention(d, i, q, pos)?;
        let att = if *gated {
            self.dec(
                glu(s.n_heads * s.d_v, Act::Sigmoid)?,
                vec![Out(Buf::AttGate), In(Buf::Att)],
            );
            Buf::AttGate
        } else {
            Buf::Att
        };
        self.gemv(o, w(Wt::O), att, Buf::Y)?;
        if bias[3] {
            self.dec(add(d.hidden)?, vec![Out(Buf::Y), In(w(Wt::BO))]);
        }
        Ok(())
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
                self.dec(
                    rmsnorm(1, q_a.rows, d.eps)?,
                    vec![In(Buf::MlaC), In(w(Wt::QANorm)), Out(Buf::MlaCn)],
                );
                self.gemv(&m.q, w(Wt::Q), Buf::MlaCn, Buf::Q)?;
            }
            None => self.gemv(&m.q, w(Wt::Q), Buf::H, Buf::Q)?,
        }
        // The cache row: the normed latent, then the rotated RoPE part.
        self.gemv(&m.kv_a, w(Wt::KvA), Buf::H, Buf::MlaKv)?;
        self.dec(
            rmsnorm(1, kvr, d.eps)?,
            vec![In(Buf::MlaKv), In(w(Wt::KvNorm)), Out(Buf::MlaRow)],
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
        self.gemv_grouped(&m.k_b, nh, w(Wt::KB), Buf::QNope, Buf::QLat)?;
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
        self.attention(d, i, Buf::Query, pos)?;
        self.gemv_grouped(&m.v_b, nh, w(Wt::VB), Buf::Att, Buf::Heads)?;
        self.gemv(&m.o, w(Wt::O), Buf::Heads, Buf::Y)
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
            vec![In(Buf::DeltaO), In(w(Wt::SsmNorm)), Out(Buf::DeltaNormed)],
        );
        self.dec(
            glu(v, Act::Silu)?,
            vec![Out(Buf::DeltaZ), In(Buf::DeltaNormed)],
        );
        self.gemv(&m.out, w(Wt::SsmOut), Buf::DeltaZ, Buf::Y)
    }
}

/// The launches of one step at position `pos` (the caches hold positions `< pos`; the step
/// writes `pos` and attends to `pos + 1` tokens): the token's embedding is in [`Buf::Embd`] on
/// entry (it stays, so the same step can be replayed); the logits end in [`Buf::Logits`] and
/// their argmax in [`Buf::Token`]. A stage without the embedding starts from [`Buf::X`] as the
/// host wrote it (the host writes it again before a replay); one without the output ends there.
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
        b.dec(
            rmsnorm(1, h, d.eps)?,
            vec![In(Buf::X), In(w(Wt::AttnNorm)), Out(Buf::H)],
        );
        match &l.mixer {
            MixerDesc::Gqa { .. } => b.gqa(d, i, pos)?,
            MixerDesc::Mla(m) => b.mla(d, i, m, pos)?,
            MixerDesc::Delta(m) => b.delta(d, i, m, pos)?,
        }
        b.residual(d, l.post_norms.then_some(w(Wt::PostAttnNorm)))?;
        b.dec(
            rmsnorm(1, h, d.eps)?,
            vec![In(Buf::X), In(w(Wt::FfnNorm)), Out(Buf::H)],
        );
        match &l.ffn {
            FfnDesc::Dense {
                gate,
                up,
                down,
                gelu,
            } => {
                b.gemv(gate, w(Wt::Gate), Buf::H, Buf::G)?;
                b.gemv(up, w(Wt::Up), Buf::H, Buf::U)?;
                let act = if *gelu { Act::Gelu } else { Act::Silu };
                b.dec(glu(gate.rows, act)?, vec![Out(Buf::G), In(Buf::U)]);
                b.gemv(down, w(Wt::Down), Buf::G, Buf::Y)?;
            }
            FfnDesc::Moe(layer) => {
                let map = |mb: MoeBuf| match mb {
                    MoeBuf::X => Buf::H,
                    MoeBuf::Out => Buf::Y,
                    MoeBuf::Dummy => Buf::Dummy,
                    other => Buf::Moe(i, other),
                };
                for ml in moe_launches(layer, 1, false)? {
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
            }
        }
        b.residual(d, l.post_norms.then_some(w(Wt::PostFfnNorm)))?;
        layers.push(start..b.v.len());
    }
    if let Some(output) = &d.output {
        b.dec(
            rmsnorm(1, h, d.eps)?,
            vec![In(Buf::X), In(Buf::OutNorm), Out(Buf::H)],
        );
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
        Ok(GpuStep { bufs })
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
        for l in launches {
            let mut args = gpu.stream.launch_builder(gpu.function(l.kernel));
            for a in &l.args {
                match a {
                    StepArg::In(b) | StepArg::Out(b) => {
                        let buf = self.bufs.get(b).ok_or_else(|| {
                            bad(format!(
                                "{} needs {b:?}, which is not allocated",
                                l.kernel.name()
                            ))
                        })?;
                        args.arg(buf);
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
