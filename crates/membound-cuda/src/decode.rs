//! Launches of the element-wise decode kernels (`kernels/decode.cu`): RMSNorm, RoPE, residual
//! add, the gated activation, the KV-cache append and argmax — the steps between a decode
//! step's matrix products. Each builder checks its shape and returns the kernel, its geometry
//! and its parameters, so a GPU and the host execution (membound-cuda-host) launch the same.

use cudarc::driver::LaunchConfig;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::moe::MoeLayer;

use crate::attention::attn_plan;
use crate::error::{CudaError, Result};
use crate::gemv::{
    Q8_1_BLOCK_BYTES, activation_dtype, gemv_config, gemv_params, gemv_warps, kernel_for,
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
    if dims == 0 || !dims.is_multiple_of(2) || dims > head {
        return Err(bad(format!("RoPE over {dims} of {head} values per head")));
    }
    Ok(DecLaunch {
        kernel: Kernel::DecRope,
        config: grid(heads as u64 * (dims / 2) as u64),
        params: DecodeParams {
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

/// `g = act(g) · u` over `n` values, SiLU or GELU (`g`, `u`).
pub fn glu(n: usize, gelu: bool) -> Result<DecLaunch> {
    Ok(DecLaunch {
        kernel: Kernel::DecGlu,
        config: grid(n as u64),
        params: DecodeParams {
            n: u32_of(n, "values")?,
            flags: if gelu { DEC_GELU } else { 0 },
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

/// One GQA layer of a step.
#[derive(Clone, Debug)]
pub struct LayerDesc {
    /// The attention (cache type, heads, window, sinks).
    pub attn: AttnShape,
    /// Q, K, V and output projections.
    pub q: Mat,
    /// See [`LayerDesc::q`].
    pub k: Mat,
    /// See [`LayerDesc::q`].
    pub v: Mat,
    /// See [`LayerDesc::q`].
    pub o: Mat,
    /// Which of Q, K, V, O carry a bias.
    pub bias: [bool; 4],
    /// Per-head RMSNorm on Q and K.
    pub qk_norm: bool,
    /// The FFN.
    pub ffn: FfnDesc,
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
    /// RoPE base.
    pub theta: f32,
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
        use StepArg::{In, Out};
        let p = gemv_params(m.dtype, m.rows, m.cols)?;
        let k = kernel_for(m.dtype)?;
        let cfg = gemv_config(p.rows, gemv_warps());
        if activation_dtype(m.dtype) == DType::F32 {
            self.push(k, cfg, vec![In(w), In(x), Out(y), StepArg::Gemv(p)]);
            return Ok(());
        }
        if self.xq_holds != Some((x, m.cols)) {
            let q = QuantizeParams {
                n_blocks: (m.cols / 32) as u64,
            };
            self.push(
                Kernel::QuantizeQ8_1,
                quantize_config(q.n_blocks),
                vec![In(x), Out(Buf::Xq), StepArg::Quantize(q)],
            );
            self.xq_holds = Some((x, m.cols));
        }
        self.push(k, cfg, vec![In(w), In(Buf::Xq), Out(y), StepArg::Gemv(p)]);
        Ok(())
    }
}

/// The launches of one step at position `pos` (the caches hold positions `< pos`; the step
/// writes `pos` and attends to `pos + 1` tokens): the token's embedding is in [`Buf::Embd`] on
/// entry (it stays, so the same step can be replayed); the logits end in [`Buf::Logits`] and
/// their argmax in [`Buf::Token`]. A stage without the embedding starts from [`Buf::X`] as the
/// host wrote it (the host writes it again before a replay); one without the output ends there.
pub fn step_launches(d: &StepDesc, pos: usize) -> Result<Vec<StepLaunch>> {
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
    for (i, l) in d.layers.iter().enumerate() {
        let i = i as u32;
        let w = |t: Wt| Buf::W(i, t);
        let s = &l.attn;
        b.dec(
            rmsnorm(1, h, d.eps)?,
            vec![In(Buf::X), In(w(Wt::AttnNorm)), Out(Buf::H)],
        );
        for (m, wt, out, bias, bt) in [
            (&l.q, Wt::Q, Buf::Q, l.bias[0], Wt::BQ),
            (&l.k, Wt::K, Buf::K, l.bias[1], Wt::BK),
            (&l.v, Wt::V, Buf::V, l.bias[2], Wt::BV),
        ] {
            b.gemv(m, w(wt), Buf::H, out)?;
            if bias {
                b.dec(add(m.rows)?, vec![Out(out), In(w(bt))]);
            }
        }
        let (q, k) = if l.qk_norm {
            b.dec(
                rmsnorm(s.n_heads, s.d_k, d.eps)?,
                vec![In(Buf::Q), In(w(Wt::QNorm)), Out(Buf::Qn)],
            );
            b.dec(
                rmsnorm(s.kv_heads, s.d_k, d.eps)?,
                vec![In(Buf::K), In(w(Wt::KNorm)), Out(Buf::Kn)],
            );
            (Buf::Qn, Buf::Kn)
        } else {
            (Buf::Q, Buf::K)
        };
        b.dec(
            rope(s.n_heads, s.d_k, s.d_k, pos, d.theta, d.neox)?,
            vec![Out(q)],
        );
        b.dec(
            rope(s.kv_heads, s.d_k, s.d_k, pos, d.theta, d.neox)?,
            vec![Out(k)],
        );
        b.dec(
            kv_write(s.kv_heads, s.d_k, s.d_k, d.tokens, pos, s.dtype)?,
            vec![In(k), Out(Buf::KCache(i))],
        );
        b.dec(
            kv_write(s.kv_heads, s.d_v, s.d_v, d.tokens, pos, s.dtype)?,
            vec![In(Buf::V), Out(Buf::VCache(i))],
        );
        let plan = attn_plan(s, d.tokens, pos + 1, d.sm_count, None)?;
        let p = StepArg::Attn(plan.params);
        b.push(
            plan.kernel,
            plan.split,
            vec![
                In(q),
                In(Buf::KCache(i)),
                In(Buf::VCache(i)),
                Out(Buf::PartMl),
                Out(Buf::PartAcc),
                p,
            ],
        );
        let sinks = if s.sinks { w(Wt::Sinks) } else { Buf::Dummy };
        b.push(
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
        b.gemv(&l.o, w(Wt::O), Buf::Att, Buf::Y)?;
        if l.bias[3] {
            b.dec(add(h)?, vec![Out(Buf::Y), In(w(Wt::BO))]);
        }
        b.dec(add(h)?, vec![Out(Buf::X), In(Buf::Y)]);
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
                b.dec(glu(gate.rows, *gelu)?, vec![Out(Buf::G), In(Buf::U)]);
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
        b.dec(add(h)?, vec![Out(Buf::X), In(Buf::Y)]);
    }
    let Some(output) = &d.output else {
        return Ok(b.v);
    };
    b.dec(
        rmsnorm(1, h, d.eps)?,
        vec![In(Buf::X), In(Buf::OutNorm), Out(Buf::H)],
    );
    b.gemv(output, Buf::Output, Buf::H, Buf::Logits)?;
    b.dec(argmax(output.rows)?, vec![In(Buf::Logits), Out(Buf::Token)]);
    Ok(b.v)
}

/// Bytes of scratch buffer `b` (0 for weights, which come with their data).
pub fn scratch_bytes(d: &StepDesc, b: Buf) -> Result<usize> {
    let f = |n: usize| n * 4;
    let max = |g: &dyn Fn(&LayerDesc) -> usize| d.layers.iter().map(g).max().unwrap_or(0);
    Ok(match b {
        Buf::Embd | Buf::X | Buf::H => f(d.hidden),
        Buf::Q | Buf::Qn => f(max(&|l| l.q.rows)),
        Buf::K | Buf::Kn => f(max(&|l| l.k.rows)),
        Buf::V => f(max(&|l| l.v.rows)),
        Buf::Att => f(max(&|l| l.attn.n_heads * l.attn.d_v)),
        Buf::Y => f(d.hidden.max(max(&|l| l.o.rows))),
        Buf::G | Buf::U => f(max(&|l| match &l.ffn {
            FfnDesc::Dense { gate, .. } => gate.rows,
            FfnDesc::Moe(_) => 0,
        })),
        Buf::Xq => {
            let cols = d
                .layers
                .iter()
                .flat_map(|l| {
                    let mut c = vec![l.q.cols, l.o.cols];
                    if let FfnDesc::Dense { down, .. } = &l.ffn {
                        c.push(down.cols);
                    }
                    c
                })
                .chain(d.output.map(|o| o.cols))
                .chain([d.hidden])
                .max()
                .unwrap_or(0);
            cols / 32 * Q8_1_BLOCK_BYTES
        }
        Buf::PartMl | Buf::PartAcc => {
            let mut most = 0;
            for l in &d.layers {
                let plan = attn_plan(&l.attn, d.tokens, d.tokens, d.sm_count, None)?;
                let (ml, acc) = plan.partial_len();
                most = most.max(f(if b == Buf::PartMl { ml } else { acc }));
            }
            most
        }
        Buf::Logits => f(d.output.map_or(0, |o| o.rows)),
        Buf::Token => 4,
        Buf::Dummy => 16,
        Buf::KCache(i) | Buf::VCache(i) => {
            let s = &d.layers[i as usize].attn;
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
