//! Qwen3-Next's linear attention (Gated DeltaNet) for one decode token, as llama.cpp's
//! `qwen3next` runs it (`build_layer_attn_linear`, `build_delta_net_autoregressive`):
//!
//! 1. `qkv = attn_qkv · h` (q: `n_k × d_k`, k: `n_k × d_k`, v: `n_v × d_v`), `z = attn_gate · h`,
//!    `ba = ssm_ba · h`: per key head `n_v / n_k` betas then as many alphas.
//! 2. A causal depthwise convolution of `conv` taps over the qkv channels (the state holds the
//!    last `conv - 1` inputs), then SiLU.
//! 3. q and k L2-normalised per head (`x / max(‖x‖, eps)`), q scaled by `1/√d_k`; key head
//!    `j / (n_v / n_k)` serves value head `j`.
//! 4. `beta = sigmoid(b)`, decay `exp(softplus(a + dt_bias) · ssm_a)` (`ssm_a = -exp(A_log)`).
//! 5. Per value head, state `S` (`d_v` rows of `d_k`): `S *= decay`; `d = (v - S·k) · beta`;
//!    `S += d ⊗ k`; `o = S·q`.
//! 6. `o` RMS-normed per head (`ssm_norm`) times `silu(z)`; `out = ssm_out · o`.
//!
//! The state (`n_v · d_v · d_k` f32, read and written each token) and the convolution state are
//! what [`membound_spec::kv::linear_state_bytes`] counts.

use membound_cpu::{CpuGemv, Isa};
/// The shape of one Gated DeltaNet layer (membound-spec's, shared with the device step).
pub use membound_spec::model::DeltaShape;
use rayon::ThreadPool;
use rayon::prelude::*;

use crate::DecodeError;
use crate::ops::{rms_inv, zeroed};

/// A layer's small parameters (f32).
#[derive(Debug, Clone)]
pub struct DeltaParams {
    /// Convolution weights, `conv` taps per channel (oldest first).
    pub conv_w: Vec<f32>,
    /// `ssm_dt.bias`, per value head.
    pub dt_bias: Vec<f32>,
    /// `ssm_a` (`-exp(A_log)`), per value head.
    pub a: Vec<f32>,
    /// `ssm_norm`, per value of a head.
    pub norm: Vec<f32>,
    /// RMSNorm and L2-norm epsilon.
    pub eps: f32,
}

/// The states of a Gated DeltaNet layer: the last `conv - 1` inputs of the convolution
/// (oldest first, `channels` each) and the recurrent state (per value head `d_v` rows of `d_k`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaState {
    /// The convolution's past inputs.
    pub conv: Vec<f32>,
    /// The recurrent state.
    pub s: Vec<f32>,
}

/// The recurrent part of one token (steps 2-6 without the projections): from `qkv` (the
/// projection, before the convolution), `z` and `ba` and the states before the token
/// (`before`), writes the states after it (`after`) and the gated, normed output of every
/// value head to `out` (`n_v × d_v`). Each state value is read once and written once.
#[allow(clippy::too_many_arguments)]
pub fn delta_step(
    s: &DeltaShape,
    p: &DeltaParams,
    qkv: &[f32],
    z: &[f32],
    ba: &[f32],
    before: &DeltaState,
    after: &mut DeltaState,
    x: &mut Vec<f32>,
    out: &mut [f32],
) {
    let ch = s.channels();
    // Convolution over (conv - 1) past inputs and this one, then SiLU; the history shifts.
    let taps = s.conv;
    for (c, xc) in zeroed(x, ch).iter_mut().enumerate() {
        let w = &p.conv_w[c * taps..(c + 1) * taps];
        let mut acc = w[taps - 1] * qkv[c];
        for (t, wt) in w[..taps - 1].iter().enumerate() {
            acc += wt * before.conv[t * ch + c];
        }
        *xc = acc / (1.0 + (-acc).exp());
    }
    if taps > 1 {
        after.conv[..(taps - 2) * ch].copy_from_slice(&before.conv[ch..]);
        after.conv[(taps - 2) * ch..].copy_from_slice(qkv);
    }
    let (q, rest) = x.split_at_mut(s.n_k * s.d_k);
    let (k, v) = rest.split_at_mut(s.n_k * s.d_k);
    let scale = 1.0 / (s.d_k as f32).sqrt();
    for (qh, kh) in q.chunks_exact_mut(s.d_k).zip(k.chunks_exact_mut(s.d_k)) {
        l2_norm(qh, p.eps, scale);
        l2_norm(kh, p.eps, 1.0);
    }
    // Value head j: key head j / rf, beta and alpha at index j % rf of key head j / rf's group.
    let rf = s.n_v / s.n_k;
    after
        .s
        .par_chunks_mut(s.d_v * s.d_k)
        .zip(before.s.par_chunks(s.d_v * s.d_k))
        .zip(out.par_chunks_mut(s.d_v))
        .enumerate()
        .for_each(|(j, ((sj, sj_before), oj))| {
            let (g, r) = (j / rf, j % rf);
            let (qh, khv) = (
                &q[g * s.d_k..(g + 1) * s.d_k],
                &k[g * s.d_k..(g + 1) * s.d_k],
            );
            let vh = &v[j * s.d_v..(j + 1) * s.d_v];
            let b = ba[g * 2 * rf + r];
            let a = ba[g * 2 * rf + rf + r];
            let beta = 1.0 / (1.0 + (-b).exp());
            let decay = (softplus(a + p.dt_bias[j]) * p.a[j]).exp();
            for (i, (row, row_before)) in sj
                .chunks_exact_mut(s.d_k)
                .zip(sj_before.chunks_exact(s.d_k))
                .enumerate()
            {
                let mut sk = 0f32;
                for ((sv, sb), kv) in row.iter_mut().zip(row_before).zip(khv) {
                    *sv = sb * decay;
                    sk += *sv * kv;
                }
                let d = (vh[i] - sk) * beta;
                let mut o = 0f32;
                for ((sv, kv), qv) in row.iter_mut().zip(khv).zip(qh) {
                    *sv += d * kv;
                    o += *sv * qv;
                }
                oj[i] = o;
            }
        });
    for (oh, zh) in out.chunks_exact_mut(s.d_v).zip(z.chunks_exact(s.d_v)) {
        // RMSNorm (rms_norm's arithmetic, in place), then the SiLU gate.
        let inv = rms_inv(oh, p.eps);
        for ((o, w), g) in oh.iter_mut().zip(&p.norm).zip(zh) {
            let n = *o * inv * w;
            *o = n * g / (1.0 + (-g).exp());
        }
    }
}

/// `x ← x · scale / max(‖x‖, eps)` (ggml's `l2_norm`).
fn l2_norm(x: &mut [f32], eps: f32, scale: f32) {
    let norm = x
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt() as f32;
    let f = scale / norm.max(eps);
    x.iter_mut().for_each(|v| *v *= f);
}

/// `ln(1 + e^x)`, exact for large `x`.
fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// One Gated DeltaNet layer's weights and states. The states are kept twice: those before
/// the position last stepped and those after it, so that stepping the same position again
/// (a benchmark's replay, as a KV cache rewrites its row) starts from the same states, and the
/// next position starts from the states the last one left.
pub(crate) struct DeltaNet {
    pub(crate) shape: DeltaShape,
    pub(crate) qkv: CpuGemv,
    pub(crate) gate: CpuGemv,
    pub(crate) ba: CpuGemv,
    pub(crate) out: CpuGemv,
    pub(crate) params: DeltaParams,
    /// States before and after position `at`.
    pub(crate) states: [DeltaState; 2],
    /// The position last stepped.
    pub(crate) at: Option<usize>,
    /// The step's projections and activations, kept from token to token.
    pub(crate) bufs: DeltaBufs,
}

/// A Gated DeltaNet layer's temporaries of one step (no allocation once warm).
#[derive(Debug, Default)]
pub(crate) struct DeltaBufs {
    qkv: Vec<f32>,
    z: Vec<f32>,
    ba: Vec<f32>,
    x: Vec<f32>,
    o: Vec<f32>,
}

impl DeltaNet {
    /// The layer's output at position `pos` for the normed hidden state `h` into `y`.
    pub(crate) fn forward(
        &mut self,
        pool: &ThreadPool,
        isa: Isa,
        h: &[f32],
        pos: usize,
        y: &mut [f32],
    ) -> Result<(), DecodeError> {
        if self.at.is_some_and(|at| at != pos) {
            self.states.swap(0, 1);
        }
        self.at = Some(pos);
        let run = |w: &CpuGemv, o: &mut Vec<f32>| -> Result<(), DecodeError> {
            w.run_with(pool, isa, h, zeroed(o, w.rows()))?;
            Ok(())
        };
        let b = &mut self.bufs;
        run(&self.qkv, &mut b.qkv)?;
        run(&self.gate, &mut b.z)?;
        run(&self.ba, &mut b.ba)?;
        let s = self.shape;
        zeroed(&mut b.o, s.n_v * s.d_v);
        let [before, after] = &mut self.states;
        delta_step(
            &s,
            &self.params,
            &b.qkv,
            &b.z,
            &b.ba,
            before,
            after,
            &mut b.x,
            &mut b.o,
        );
        self.out.run_with(pool, isa, &b.o, y)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membound_quant::data::normal_f32;

    /// The same token in f64, written as transformers' `torch_recurrent_gated_delta_rule`
    /// states it (state `S[k][v]`, key heads repeated per value head, the convolution over an
    /// explicit history), to check [`delta_step`]'s layout and indexing.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        s: &DeltaShape,
        p: &DeltaParams,
        history: &[Vec<f32>],
        z: &[f32],
        ba: &[f32],
        state_kv: &mut [Vec<Vec<f64>>],
    ) -> Vec<f64> {
        let ch = s.channels();
        let taps = s.conv;
        let x: Vec<f64> = (0..ch)
            .map(|c| {
                let acc: f64 = (0..taps)
                    .map(|t| {
                        let input = &history[history.len() - taps + t];
                        f64::from(p.conv_w[c * taps + t]) * f64::from(input[c])
                    })
                    .sum();
                acc / (1.0 + (-acc).exp())
            })
            .collect();
        let l2 = |v: &[f64]| {
            let n = v
                .iter()
                .map(|a| a * a)
                .sum::<f64>()
                .sqrt()
                .max(f64::from(p.eps));
            v.iter().map(|a| a / n).collect::<Vec<f64>>()
        };
        let qk = s.n_k * s.d_k;
        let rf = s.n_v / s.n_k;
        let mut out = Vec::new();
        for (j, sj) in state_kv.iter_mut().enumerate() {
            let g = j / rf;
            let q: Vec<f64> = l2(&x[g * s.d_k..(g + 1) * s.d_k])
                .iter()
                .map(|a| a / (s.d_k as f64).sqrt())
                .collect();
            let k = l2(&x[qk + g * s.d_k..qk + (g + 1) * s.d_k]);
            let v = &x[2 * qk + j * s.d_v..2 * qk + (j + 1) * s.d_v];
            let (b, a) = (
                f64::from(ba[g * 2 * rf + j % rf]),
                f64::from(ba[g * 2 * rf + rf + j % rf]),
            );
            let beta = 1.0 / (1.0 + (-b).exp());
            let decay = ((a + f64::from(p.dt_bias[j])).exp().ln_1p() * f64::from(p.a[j])).exp();
            for row in sj.iter_mut() {
                row.iter_mut().for_each(|e| *e *= decay);
            }
            let mem: Vec<f64> = (0..s.d_v)
                .map(|b| (0..s.d_k).map(|a| sj[a][b] * k[a]).sum())
                .collect();
            for a in 0..s.d_k {
                for b in 0..s.d_v {
                    sj[a][b] += k[a] * (v[b] - mem[b]) * beta;
                }
            }
            let o: Vec<f64> = (0..s.d_v)
                .map(|b| (0..s.d_k).map(|a| sj[a][b] * q[a]).sum())
                .collect();
            let ms = o.iter().map(|e| e * e).sum::<f64>() / s.d_v as f64;
            let inv = 1.0 / (ms + f64::from(p.eps)).sqrt();
            for (b, ob) in o.iter().enumerate() {
                let zg = f64::from(z[j * s.d_v + b]);
                out.push(ob * inv * f64::from(p.norm[b]) * zg / (1.0 + (-zg).exp()));
            }
        }
        out
    }

    #[test]
    fn a_token_matches_the_recurrence_as_transformers_writes_it() {
        // 2 key heads serving 4 value heads, unequal key and value sizes, 3 taps.
        let s = DeltaShape {
            n_k: 2,
            n_v: 4,
            d_k: 8,
            d_v: 6,
            conv: 3,
        };
        let ch = s.channels();
        let p = DeltaParams {
            conv_w: normal_f32(1, ch * s.conv, 0.5),
            dt_bias: normal_f32(2, s.n_v, 0.5),
            a: normal_f32(3, s.n_v, 1.0).iter().map(|v| -v.abs()).collect(),
            norm: normal_f32(4, s.d_v, 0.2).iter().map(|v| 1.0 + v).collect(),
            eps: 1e-6,
        };
        let mut st = DeltaState {
            conv: normal_f32(5, (s.conv - 1) * ch, 1.0),
            s: normal_f32(6, s.state_len(), 0.1),
        };
        let mut next = st.clone();
        let mut history: Vec<Vec<f32>> = st.conv.chunks(ch).map(<[f32]>::to_vec).collect();
        // Ours is S[v][k] per head; the reference's S[k][v].
        let mut state_kv: Vec<Vec<Vec<f64>>> =
            st.s.chunks_exact(s.d_v * s.d_k)
                .map(|h| {
                    (0..s.d_k)
                        .map(|a| (0..s.d_v).map(|b| f64::from(h[b * s.d_k + a])).collect())
                        .collect()
                })
                .collect();
        for step in 0..3u64 {
            let qkv = normal_f32(10 + step, ch, 1.0);
            let z = normal_f32(20 + step, s.n_v * s.d_v, 1.0);
            let ba = normal_f32(30 + step, 2 * s.n_v, 1.0);
            history.push(qkv.clone());
            let want = reference(&s, &p, &history, &z, &ba, &mut state_kv);
            let mut got = vec![0f32; s.n_v * s.d_v];
            delta_step(
                &s,
                &p,
                &qkv,
                &z,
                &ba,
                &st,
                &mut next,
                &mut Vec::new(),
                &mut got,
            );
            std::mem::swap(&mut st, &mut next);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(*g) - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "step {step} value {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn an_empty_state_gives_beta_times_v_times_k_dot_q() {
        // One head, no decay, state and convolution history zero, the current tap 1: the state
        // becomes beta·v⊗k, so o = beta·(k·q)·v before the gated norm.
        let s = DeltaShape {
            n_k: 1,
            n_v: 1,
            d_k: 4,
            d_v: 4,
            conv: 2,
        };
        let ch = s.channels();
        let mut conv_w = vec![0f32; ch * 2];
        conv_w.chunks_exact_mut(2).for_each(|w| w[1] = 1.0);
        let p = DeltaParams {
            conv_w,
            dt_bias: vec![0.0],
            a: vec![0.0],
            norm: vec![1.0; 4],
            eps: 1e-6,
        };
        let qkv = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0];
        let z = [30.0f32; 4];
        let ba = [0.0f32, 0.0];
        let before = DeltaState {
            conv: vec![0f32; ch],
            s: vec![0f32; 16],
        };
        let mut after = before.clone();
        let mut out = vec![0f32; 4];
        delta_step(
            &s,
            &p,
            &qkv,
            &z,
            &ba,
            &before,
            &mut after,
            &mut Vec::new(),
            &mut out,
        );
        assert_eq!(after.conv, qkv, "the history holds this token");
        let st = after.s;
        // The norm of o = c·silu(v) removes c: out ≈ silu(v) / rms(silu(v)) · silu(30).
        let sv: Vec<f32> = qkv[8..].iter().map(|v| v / (1.0 + (-v).exp())).collect();
        let rms = (sv.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        for (o, v) in out.iter().zip(&sv) {
            assert!((o - v / rms * 30.0).abs() < 1e-3, "{out:?}");
        }
        // The state: beta (1/2) · silu(v) ⊗ l2(silu(k)), k's two equal values.
        let kn = 1.0 / 2f32.sqrt();
        for (b, v) in sv.iter().enumerate() {
            let row = &st[b * 4..b * 4 + 4];
            assert!(
                (row[0] - 0.5 * v * kn).abs() < 1e-5 && row[2] == 0.0,
                "{st:?}"
            );
        }
    }
}
