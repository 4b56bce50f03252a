//! The element-wise decode kernels (`kernels/decode.cu`) executed on the CPU against
//! membound-decode's CPU steps (`membound_decode::ops`) and the CPU cache's append
//! (`KvCacheBuf::write_token`): RMSNorm over rows (odd widths, more values than threads), RoPE
//! in both pair styles on strided heads (values past `dims` untouched), residual add, SiLU and
//! GELU and sigmoid gates, the cache append in every type (bytes equal the CPU's: Q8_0 blocks
//! bit-exact), argmax with ties, NaN and a tail, and Gated DeltaNet's convolution and delta rule
//! (with the gated norm) against `membound_decode::delta::delta_step`, token after token.

use membound_cpu::attention::KvCacheBuf;
use membound_cuda::decode::{self, Act, DecLaunch};
use membound_cuda_host::{Arg, HostBuffer, available, launch};
use membound_decode::delta::{DeltaParams, DeltaShape, DeltaState, delta_step};
use membound_decode::ops;
use membound_quant::data::normal_f32;
use membound_quant::ops::quantize;
use membound_spec::DType;
use membound_spec::attention::AttnShape;
use membound_spec::kv::KvLayout;

fn skip() -> bool {
    if let Err(e) = available() {
        eprintln!("skipped: {e}");
        return true;
    }
    false
}

fn run(l: &DecLaunch, args: &mut [Arg<'_>]) {
    launch(l.kernel.name(), l.config, args).unwrap();
}

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what} [{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn rmsnorm_matches_the_cpu_over_rows() {
    if skip() {
        return;
    }
    for (rows, n) in [(1, 4096), (3, 129), (8, 64), (2, 7)] {
        let x = normal_f32(1, rows * n, 2.0);
        let w = normal_f32(2, n, 1.0);
        let (xb, wb) = (HostBuffer::from_slice(&x), HostBuffer::from_slice(&w));
        let mut out = HostBuffer::poisoned(rows * n * 4);
        // The norm into `out`, and into `outq` as Q8_1 when given.
        let norm = |out: &mut HostBuffer, outq: Option<&mut HostBuffer>| {
            let l = match outq {
                Some(_) => decode::rmsnorm_quantized(rows, n, 1e-6),
                None => decode::rmsnorm(rows, n, 1e-6),
            }
            .unwrap();
            let d = dummy();
            let q = match outq {
                Some(q) => Arg::Out(q),
                None => Arg::In(&d),
            };
            let mut args = [
                Arg::In(&xb),
                Arg::In(&wb),
                Arg::Out(out),
                q,
                Arg::value(&l.params),
            ];
            run(&l, &mut args);
        };
        norm(&mut out, None);
        let mut want = vec![0f32; rows * n];
        for (o, r) in want.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
            ops::rms_norm(r, &w, 1e-6, o);
        }
        let got = out.to_vec::<f32>();
        close(&got, &want, 1e-5, &format!("rmsnorm {rows}x{n}"));
        // Quantizing as it goes: the same values, and their Q8_1 blocks bit-exact.
        if n % 32 == 0 {
            let mut outq = HostBuffer::poisoned(rows * n / 32 * 36);
            norm(&mut out, Some(&mut outq));
            assert_eq!(out.to_vec::<f32>(), got, "rmsnorm {rows}x{n} quantizing");
            assert_eq!(outq.bytes(), quantize(DType::Q8_1, &got).unwrap());
        }
    }
    assert!(decode::rmsnorm_quantized(1, 48, 1e-6).is_err());
}

/// A 16-byte buffer for an argument the kernel does not read.
fn dummy() -> HostBuffer {
    HostBuffer::zeroed(16)
}

#[test]
fn rope_matches_the_cpu_in_both_styles() {
    if skip() {
        return;
    }
    // 5 heads of 96 values, the first 64 rotated (MLA's rope part sits at the end of a row
    // in the cache, but a query head's at its start after the copy): values past 64 untouched.
    let (heads, head, dims) = (5, 96, 64);
    for neox in [true, false] {
        for pos in [0, 1, 37, 4095, 262_143] {
            let x = normal_f32(3, heads * head, 1.0);
            let l = decode::rope(heads, head, dims, pos, 10_000.0, neox).unwrap();
            let mut xb = HostBuffer::from_slice(&x);
            run(&l, &mut [Arg::Out(&mut xb), Arg::value(&l.params)]);
            let mut want = x.clone();
            ops::rope(&mut want, head, dims, pos, 10_000.0, neox);
            close(
                &xb.to_vec::<f32>(),
                &want,
                1e-5,
                &format!("rope neox={neox} pos={pos}"),
            );
        }
    }
}

#[test]
fn rope_at_an_offset_rotates_only_the_values_it_names() {
    if skip() {
        return;
    }
    // MLA's query heads and cache row: 3 heads of 96 values, latent 64 then a RoPE part of 32.
    let (heads, head, offset, dims) = (3, 96, 64, 32);
    let x = normal_f32(6, heads * head, 1.0);
    let l = decode::rope_at(heads, head, offset, dims, 77, 10_000.0, true).unwrap();
    let mut xb = HostBuffer::from_slice(&x);
    run(&l, &mut [Arg::Out(&mut xb), Arg::value(&l.params)]);
    let mut want = x.clone();
    for h in want.chunks_exact_mut(head) {
        ops::rope(&mut h[offset..], dims, dims, 77, 10_000.0, true);
    }
    close(&xb.to_vec::<f32>(), &want, 1e-5, "rope at 64");
    assert!(decode::rope_at(heads, head, 80, dims, 0, 1e4, true).is_err());
}

#[test]
fn copy2d_moves_each_rows_run_between_strides() {
    if skip() {
        return;
    }
    // 4 rows: 24 values from value 8 of rows 40 apart, to value 5 of rows 30 apart; the rest of
    // the destination is left as it was.
    let (rows, n) = (4, 24);
    let src = normal_f32(7, rows * 40, 1.0);
    let dst0 = normal_f32(8, rows * 30, 1.0);
    let l = decode::copy2d(
        rows,
        n,
        decode::Rows {
            stride: 40,
            offset: 8,
        },
        decode::Rows {
            stride: 30,
            offset: 5,
        },
    )
    .unwrap();
    let sb = HostBuffer::from_slice(&src);
    let mut db = HostBuffer::from_slice(&dst0);
    run(
        &l,
        &mut [Arg::In(&sb), Arg::Out(&mut db), Arg::value(&l.params)],
    );
    let mut want = dst0.clone();
    for r in 0..rows {
        want[r * 30 + 5..r * 30 + 5 + n].copy_from_slice(&src[r * 40 + 8..r * 40 + 8 + n]);
    }
    assert_eq!(db.to_vec::<f32>(), want);
    let rows_of = |stride, offset| decode::Rows { stride, offset };
    assert!(decode::copy2d(rows, n, rows_of(40, 20), rows_of(30, 0)).is_err());
}

#[test]
fn add_and_gates_match_the_cpu() {
    if skip() {
        return;
    }
    let n = 1000;
    let (x, y) = (normal_f32(4, n, 3.0), normal_f32(5, n, 3.0));
    let l = decode::add(n).unwrap();
    let (mut xb, yb) = (HostBuffer::from_slice(&x), HostBuffer::from_slice(&y));
    run(
        &l,
        &mut [Arg::Out(&mut xb), Arg::In(&yb), Arg::value(&l.params)],
    );
    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
    assert_eq!(xb.to_vec::<f32>(), want);
    // The sigmoid gate as the CPU step applies Qwen3-Next's attention gate: u / (1 + e^-g).
    let sigmoid = |g: f32, u: f32| u / (1.0 + (-g).exp());
    for (act, cpu) in [
        (Act::Silu, ops::swiglu as fn(f32, f32) -> f32),
        (Act::Gelu, ops::geglu),
        (Act::Sigmoid, sigmoid),
    ] {
        let l = decode::glu(n, act).unwrap();
        let mut gb = HostBuffer::from_slice(&x);
        run(
            &l,
            &mut [
                Arg::Out(&mut gb),
                Arg::In(&yb),
                Arg::In(&dummy()),
                Arg::value(&l.params),
            ],
        );
        let want: Vec<f32> = x.iter().zip(&y).map(|(&g, &u)| cpu(g, u)).collect();
        let got = gb.to_vec::<f32>();
        close(&got, &want, 1e-5, &format!("glu {act:?}"));
        // Quantizing as it goes (n a multiple of 32): the same values, their Q8_1 bit-exact.
        let n32 = 992;
        let l = decode::glu_quantized(n32, act).unwrap();
        let mut gb = HostBuffer::from_slice(&x[..n32]);
        let mut gq = HostBuffer::poisoned(n32 / 32 * 36);
        run(
            &l,
            &mut [
                Arg::Out(&mut gb),
                Arg::In(&yb),
                Arg::Out(&mut gq),
                Arg::value(&l.params),
            ],
        );
        assert_eq!(gb.to_vec::<f32>(), got[..n32], "glu {act:?} quantizing");
        assert_eq!(gq.bytes(), quantize(DType::Q8_1, &got[..n32]).unwrap());
    }
    assert!(decode::glu_quantized(1000, Act::Silu).is_err());
}

#[test]
fn the_cache_append_writes_the_cpu_caches_bytes() {
    if skip() {
        return;
    }
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0] {
        // GQA (2 heads of 64, K and V) and the MLA latent row (1 head of 576).
        for shape in [
            AttnShape::new(KvLayout::Gqa, 4, 2, 64, 64, dtype),
            AttnShape::new(KvLayout::MlaLatent, 4, 1, 576, 512, dtype),
        ] {
            let tokens = 5;
            let mut cpu = KvCacheBuf::generate(&shape, tokens, 3).unwrap();
            let k = normal_f32(7, shape.kv_heads * shape.d_k, 4.0);
            let v = normal_f32(8, shape.kv_heads * shape.d_v, 4.0);
            let mut kb = HostBuffer::from_slice(cpu.k_bytes());
            let l =
                decode::kv_write(shape.kv_heads, shape.d_k, shape.d_k, tokens, 3, dtype).unwrap();
            let src = HostBuffer::from_slice(&k);
            run(
                &l,
                &mut [Arg::In(&src), Arg::Out(&mut kb), Arg::value(&l.params)],
            );
            cpu.write_token(3, &k, &v).unwrap();
            assert!(
                kb.bytes() == cpu.k_bytes(),
                "{dtype} {:?}: the kernel's cache bytes differ from the CPU's",
                shape.layout
            );
        }
    }
}

#[test]
fn argmax_takes_the_first_of_equals_and_skips_nan() {
    if skip() {
        return;
    }
    let mut x = normal_f32(9, 1001, 1.0);
    x[700] = 50.0;
    x[999] = 50.0;
    x[3] = f32::NAN;
    for (vals, want) in [
        (x.clone(), 700u32),
        (vec![f32::NAN, 2.0, 1.0], 1),
        (vec![f32::NEG_INFINITY; 5], 0),
    ] {
        assert_eq!(ops::argmax(&vals) as u32, want);
        let l = decode::argmax(vals.len()).unwrap();
        let xb = HostBuffer::from_slice(&vals);
        let mut out = HostBuffer::poisoned(4);
        run(
            &l,
            &mut [Arg::In(&xb), Arg::Out(&mut out), Arg::value(&l.params)],
        );
        assert_eq!(out.to_vec::<u32>(), vec![want]);
    }
}

/// Gated DeltaNet's kernels, as the step runs them (convolution, delta rule, RMSNorm per value
/// head, SiLU gate), against the CPU's [`delta_step`] for three tokens in a row: outputs and
/// both states. Shapes with tails: key heads of 40 and 256 (not a multiple of 32; the largest
/// taken), value heads of 20 rows (a partial block of `DELTA_ROWS`), 1 to 4 taps.
#[test]
fn delta_kernels_match_the_cpu_token_after_token() {
    if skip() {
        return;
    }
    for (n_k, n_v, d_k, d_v, conv) in [(2, 4, 40, 20, 4), (1, 2, 256, 16, 3), (2, 2, 32, 33, 1)] {
        let s = DeltaShape {
            n_k,
            n_v,
            d_k,
            d_v,
            conv,
        };
        let ch = s.channels();
        let p = DeltaParams {
            conv_w: normal_f32(1, ch * conv, 0.5),
            dt_bias: normal_f32(2, n_v, 0.5),
            a: normal_f32(3, n_v, 1.0).iter().map(|v| -v.abs()).collect(),
            norm: normal_f32(4, d_v, 0.2).iter().map(|v| 1.0 + v).collect(),
            eps: 1e-6,
        };
        let what = format!("{s:?}");
        // Non-zero states before the first token, so the decay and the history show.
        let mut cpu = DeltaState {
            conv: normal_f32(5, (conv - 1) * ch, 1.0),
            s: normal_f32(6, s.state_len(), 0.1),
        };
        let mut cpu_next = cpu.clone();
        let hist_len = ((conv - 1) * ch).max(4);
        let mut hist = [
            HostBuffer::from_slice(&cpu.conv),
            HostBuffer::poisoned(hist_len * 4),
        ];
        if conv == 1 {
            hist[0] = HostBuffer::zeroed(16);
        }
        let mut state = [
            HostBuffer::from_slice(&cpu.s),
            HostBuffer::poisoned(s.state_len() * 4),
        ];
        let wb = HostBuffer::from_slice(&p.conv_w);
        let (dtb, ab, nb) = (
            HostBuffer::from_slice(&p.dt_bias),
            HostBuffer::from_slice(&p.a),
            HostBuffer::from_slice(&p.norm),
        );
        for step in 0..3u64 {
            let qkv = normal_f32(10 + step, ch, 1.0);
            let z = normal_f32(20 + step, n_v * d_v, 1.0);
            let ba = normal_f32(30 + step, 2 * n_v, 1.0);
            let mut want = vec![0f32; n_v * d_v];
            delta_step(
                &s,
                &p,
                &qkv,
                &z,
                &ba,
                &cpu,
                &mut cpu_next,
                &mut Vec::new(),
                &mut want,
            );
            std::mem::swap(&mut cpu, &mut cpu_next);

            let (qb, zb0, bab) = (
                HostBuffer::from_slice(&qkv),
                HostBuffer::from_slice(&z),
                HostBuffer::from_slice(&ba),
            );
            let mut x = HostBuffer::poisoned(ch * 4);
            let [h_in, h_out] = &mut hist;
            let l = decode::delta_conv(ch, conv).unwrap();
            run(
                &l,
                &mut [
                    Arg::In(&qb),
                    Arg::In(&wb),
                    Arg::In(h_in),
                    Arg::Out(h_out),
                    Arg::Out(&mut x),
                    Arg::value(&l.params),
                ],
            );
            let mut o = HostBuffer::poisoned(n_v * d_v * 4);
            let [s_in, s_out] = &mut state;
            let l = decode::delta_rule(n_k, n_v, d_k, d_v, p.eps).unwrap();
            run(
                &l,
                &mut [
                    Arg::In(&x),
                    Arg::In(&bab),
                    Arg::In(&dtb),
                    Arg::In(&ab),
                    Arg::In(s_in),
                    Arg::Out(s_out),
                    Arg::Out(&mut o),
                    Arg::value(&l.params),
                ],
            );
            let mut normed = HostBuffer::poisoned(n_v * d_v * 4);
            let l = decode::rmsnorm(n_v, d_v, p.eps).unwrap();
            run(
                &l,
                &mut [
                    Arg::In(&o),
                    Arg::In(&nb),
                    Arg::Out(&mut normed),
                    Arg::In(&dummy()),
                    Arg::value(&l.params),
                ],
            );
            let mut zb = zb0;
            let l = decode::glu(n_v * d_v, Act::Silu).unwrap();
            run(
                &l,
                &mut [
                    Arg::Out(&mut zb),
                    Arg::In(&normed),
                    Arg::In(&dummy()),
                    Arg::value(&l.params),
                ],
            );
            close(
                &zb.to_vec::<f32>(),
                &want,
                1e-4,
                &format!("{what} step {step} output"),
            );
            close(
                &s_out.to_vec::<f32>(),
                &cpu.s,
                1e-5,
                &format!("{what} step {step} state"),
            );
            if conv > 1 {
                assert_eq!(
                    h_out.to_vec::<f32>(),
                    cpu.conv,
                    "{what} step {step} history"
                );
                hist.swap(0, 1);
            }
            state.swap(0, 1);
        }
    }
}

/// One launch for a GQA layer's heads (`qkv_heads`) against the launches it replaces, run on the
/// same inputs: bias adds, per-head RMSNorm, RoPE and the cache append. Q, K and V read from one
/// buffer at offsets (a stacked projection), queries `2 d_k` apart (gated) or packed, RoPE over
/// all or half of each head, both pair styles, every cache type. Without QK-norm the query and
/// the cache bytes are bit-exact; with it (the head's squares summed in another order) within
/// 1e-6 (F32 cache).
#[test]
fn one_launch_for_the_heads_equals_the_launches_it_replaces() {
    if skip() {
        return;
    }
    let (nq, nkv, dk, dv, tokens, pos) = (4, 2, 64, 32, 5, 3);
    let cases = [
        (DType::F32, false, false, 64, 64, true),
        (DType::F16, true, false, 64, 128, false),
        (DType::BF16, false, true, 32, 64, true),
        (DType::Q8_0, true, true, 64, 128, true),
        (DType::F32, true, true, 32, 128, false),
        (DType::F32, true, true, 64, 64, true),
    ];
    for (dtype, bias, qk_norm, rope_dims, q_stride, neox) in cases {
        let what = format!("{dtype} bias {bias} norm {qk_norm} rope {rope_dims} stride {q_stride}");
        let k_off = nq * q_stride;
        let v_off = k_off + nkv * dk;
        let qkv = normal_f32(11, v_off + nkv * dv, 2.0);
        let (bq, bk, bv) = (
            normal_f32(12, nq * dk, 1.0),
            normal_f32(13, nkv * dk, 1.0),
            normal_f32(14, nkv * dv, 1.0),
        );
        let (qw, kw) = (normal_f32(15, dk, 1.0), normal_f32(16, dk, 1.0));
        let shape = AttnShape::new(KvLayout::Gqa, nq, nkv, dk, dv, dtype);
        let cache = KvCacheBuf::generate(&shape, tokens, 3).unwrap();
        let theta = 10_000.0;

        // The launches it replaces, on separate buffers.
        let q: Vec<f32> = (0..nq)
            .flat_map(|h| qkv[h * q_stride..h * q_stride + dk].to_vec())
            .collect();
        let mut parts = [
            (HostBuffer::from_slice(&q), &bq, &qw, nq, dk),
            (
                HostBuffer::from_slice(&qkv[k_off..v_off]),
                &bk,
                &kw,
                nkv,
                dk,
            ),
            (HostBuffer::from_slice(&qkv[v_off..]), &bv, &kw, nkv, dv),
        ];
        for (i, (buf, b, w, heads, n)) in parts.iter_mut().enumerate() {
            if bias {
                let l = decode::add(*heads * *n).unwrap();
                let bb = HostBuffer::from_slice(b.as_slice());
                run(
                    &l,
                    &mut [Arg::Out(buf), Arg::In(&bb), Arg::value(&l.params)],
                );
            }
            if i == 2 {
                continue;
            }
            if qk_norm {
                let l = decode::rmsnorm(*heads, *n, 1e-6).unwrap();
                let src = HostBuffer::from_slice(buf.bytes());
                let wb = HostBuffer::from_slice(w.as_slice());
                run(
                    &l,
                    &mut [
                        Arg::In(&src),
                        Arg::In(&wb),
                        Arg::Out(buf),
                        Arg::In(&dummy()),
                        Arg::value(&l.params),
                    ],
                );
            }
            let l = decode::rope(*heads, *n, rope_dims, pos, theta, neox).unwrap();
            run(&l, &mut [Arg::Out(buf), Arg::value(&l.params)]);
        }
        let mut want_k = HostBuffer::from_slice(cache.k_bytes());
        let mut want_v = HostBuffer::from_slice(cache.v_bytes());
        for (src, cache, n) in [
            (&parts[1].0, &mut want_k, dk),
            (&parts[2].0, &mut want_v, dv),
        ] {
            let l = decode::kv_write(nkv, n, n, tokens, pos, dtype).unwrap();
            run(
                &l,
                &mut [Arg::In(src), Arg::Out(cache), Arg::value(&l.params)],
            );
        }

        // One launch.
        let h = decode::Heads {
            n_heads: nq,
            kv_heads: nkv,
            d_k: dk,
            d_v: dv,
            rope_dims,
            q_stride,
            offsets: [0, k_off, v_off],
            qk_norm,
            bias,
        };
        let l = decode::qkv_heads(&h, tokens, pos, dtype, theta, neox, 1e-6).unwrap();
        let qkvb = HostBuffer::from_slice(&qkv);
        let bufs = [&bq, &bk, &bv, &qw, &kw].map(|v| HostBuffer::from_slice(v.as_slice()));
        let mut q_out = HostBuffer::poisoned(nq * dk * 4);
        let mut kc = HostBuffer::from_slice(cache.k_bytes());
        let mut vc = HostBuffer::from_slice(cache.v_bytes());
        run(
            &l,
            &mut [
                Arg::In(&qkvb),
                Arg::In(&qkvb),
                Arg::In(&qkvb),
                Arg::In(&bufs[0]),
                Arg::In(&bufs[1]),
                Arg::In(&bufs[2]),
                Arg::In(&bufs[3]),
                Arg::In(&bufs[4]),
                Arg::Out(&mut q_out),
                Arg::Out(&mut kc),
                Arg::Out(&mut vc),
                Arg::value(&l.params),
            ],
        );
        assert!(vc.bytes() == want_v.bytes(), "{what}: V cache");
        if qk_norm {
            let tol = 1e-6;
            close(&q_out.to_vec(), &parts[0].0.to_vec(), tol, &what);
            if dtype == DType::F32 {
                close(&kc.to_vec(), &want_k.to_vec(), tol, &what);
            }
        } else {
            assert_eq!(
                q_out.to_vec::<f32>(),
                parts[0].0.to_vec::<f32>(),
                "{what}: Q"
            );
            assert!(kc.bytes() == want_k.bytes(), "{what}: K cache");
        }
    }
    let h = decode::Heads {
        n_heads: 4,
        kv_heads: 2,
        d_k: 320,
        d_v: 32,
        rope_dims: 64,
        q_stride: 320,
        offsets: [0; 3],
        qk_norm: false,
        bias: false,
    };
    assert!(decode::qkv_heads(&h, 5, 3, DType::F16, 1e4, true, 1e-6).is_err());
}
