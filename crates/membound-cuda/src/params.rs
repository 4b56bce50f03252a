//! Kernel parameter structs, passed by value as one kernel argument. Each mirrors a struct of
//! `kernels/params.cuh` field for field; both sides assert the same size.

use cudarc::driver::DeviceRepr;

/// Parameters of the streaming kernels (`kernels/bandwidth.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamParams {
    /// Elements (f32) of each array.
    pub n: u64,
    /// `write`: the value stored; `triad`: `s` in `a = b + s*c`.
    pub scalar: f32,
    /// Padding to 16 bytes (as in the `.cuh`).
    pub _pad: u32,
}

/// Parameters of the GEMV kernels (`kernels/gemv.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GemvParams {
    /// Rows of W (and values of y).
    pub rows: u32,
    /// Columns of W (and values of x).
    pub cols: u32,
    /// Bytes of one row of W in its ggml layout.
    pub row_bytes: u64,
    /// Rows per input: row `r` takes input `r / group_rows` of x, each `cols` values (a
    /// grouped GEMV); `rows` for one input.
    pub group_rows: u32,
    /// `GEMV_*` flag bits ([`crate::gemv::GEMV_ACCUMULATE`]).
    pub flags: u32,
}

/// Parameters of the activation quantization kernel (`mb_quantize_q8_1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuantizeParams {
    /// Q8_1 blocks (of 32 values) to produce.
    pub n_blocks: u64,
}

/// Parameters of the MoE kernels (`kernels/moe.cu`); `flags` are the `MOE_*` bits of
/// [`crate::moe`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MoeParams {
    /// Tokens of the batch.
    pub tokens: u32,
    /// Routed experts.
    pub n_experts: u32,
    /// Choices per token (1 in the shared expert's pass).
    pub top_k: u32,
    /// Hidden size.
    pub hidden: u32,
    /// Width of this pass's experts.
    pub ff: u32,
    /// Router rows (experts, +1 with a shared-expert gate).
    pub router_rows: u32,
    /// `MOE_SOFTMAX`, `MOE_SIGMOID` or `MOE_TOPK_SOFTMAX`.
    pub scoring: u32,
    /// `MOE_*` flag bits.
    pub flags: u32,
    /// Expert groups (1: none).
    pub n_group: u32,
    /// Groups kept.
    pub topk_group: u32,
    /// Factor on the routed weights.
    pub routed_scaling: f32,
    /// Padding (as in the `.cuh`).
    pub _pad: u32,
    /// Bytes of one gate/up row.
    pub gate_row_bytes: u64,
    /// Bytes of one down row.
    pub down_row_bytes: u64,
}

/// Parameters of the decode-attention kernels (`kernels/attention.cu`); `flags` are the
/// `ATTN_*` bits of [`crate::attention`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttnParams {
    /// Query heads.
    pub n_heads: u32,
    /// Cached heads.
    pub kv_heads: u32,
    /// Values of a K row.
    pub d_k: u32,
    /// Values of a V row.
    pub d_v: u32,
    /// Query heads per cached head.
    pub group: u32,
    /// Query heads (warps) per block.
    pub heads_per_block: u32,
    /// Blocks per cached head.
    pub head_groups: u32,
    /// Rows per head the caches hold.
    pub tokens: u32,
    /// First attended token.
    pub first: u32,
    /// One past the last attended token (the depth).
    pub end: u32,
    /// Tokens per split.
    pub chunk: u32,
    /// Splits of the context.
    pub splits: u32,
    /// Rows per shared-memory tile.
    pub tile: u32,
    /// `ATTN_*` flag bits.
    pub flags: u32,
    /// Softmax scale.
    pub scale: f32,
    /// Padding (as in the `.cuh`).
    pub _pad: u32,
    /// Bytes of a K row.
    pub k_row_bytes: u64,
    /// Bytes of a V row.
    pub v_row_bytes: u64,
}

/// Parameters of the element-wise decode kernels (`kernels/decode.cu`); each kernel reads the
/// fields it names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecodeParams {
    /// Values per row (rmsnorm, kv_write, copy2d), elements (add, glu, argmax); rope: the
    /// first rotated value of each head.
    pub n: u32,
    /// Rows (rmsnorm, copy2d), heads (rope, kv_write).
    pub rows: u32,
    /// Values from one head (row) to the next in the source (rope, kv_write, copy2d).
    pub head: u32,
    /// Rope: values rotated in each head; copy2d: values from one row to the next in the
    /// destination.
    pub dims: u32,
    /// Rope: the position; kv_write: the token written; copy2d: the first value read of each
    /// source row.
    pub pos: u32,
    /// kv_write: cache rows per head; copy2d: the first value written of each destination row.
    pub tokens: u32,
    /// `DEC_*` flag bits.
    pub flags: u32,
    /// kv_write: the `DEC_KV_*` element type.
    pub dtype: u32,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// RoPE base.
    pub theta: f32,
    /// qkv_heads: K and V heads.
    pub kv_heads: u32,
    /// qkv_heads: values per V head.
    pub d_v: u32,
    /// qkv_heads: values from one query head to the next in the Q buffer.
    pub q_stride: u32,
    /// qkv_heads: the first value of Q in its buffer.
    pub q_off: u32,
    /// qkv_heads: the first value of K in its buffer.
    pub k_off: u32,
    /// qkv_heads: the first value of V in its buffer.
    pub v_off: u32,
}

const _: () = assert!(std::mem::size_of::<DecodeParams>() == 64);
const _: () = assert!(std::mem::size_of::<StreamParams>() == 16);
const _: () = assert!(std::mem::size_of::<AttnParams>() == 80);
const _: () = assert!(std::mem::size_of::<MoeParams>() == 64);
const _: () = assert!(std::mem::size_of::<GemvParams>() == 24);
const _: () = assert!(std::mem::size_of::<QuantizeParams>() == 8);

// SAFETY: plain #[repr(C)] structs of integers and floats, laid out as the CUDA structs of
// params.cuh (same field order, types and asserted sizes), so the kernel reads them verbatim.
unsafe impl DeviceRepr for StreamParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for GemvParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for QuantizeParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for MoeParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for AttnParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for DecodeParams {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The `.cuh` asserts these sizes too; the test also pins each field's offset and checks
    /// that the header declares the same sizes, so a one-sided edit fails here.
    #[test]
    fn layouts_match_params_cuh() {
        assert_eq!(
            (
                offset_of!(StreamParams, n),
                offset_of!(StreamParams, scalar)
            ),
            (0, 8)
        );
        assert_eq!(offset_of!(StreamParams, _pad), 12);
        assert_eq!(
            (offset_of!(GemvParams, rows), offset_of!(GemvParams, cols)),
            (0, 4)
        );
        assert_eq!(offset_of!(GemvParams, row_bytes), 8);
        assert_eq!(offset_of!(QuantizeParams, n_blocks), 0);
        assert_eq!(
            (
                offset_of!(MoeParams, flags),
                offset_of!(MoeParams, routed_scaling),
                offset_of!(MoeParams, gate_row_bytes),
                offset_of!(MoeParams, down_row_bytes)
            ),
            (28, 40, 48, 56)
        );
        assert_eq!(
            (
                offset_of!(AttnParams, tile),
                offset_of!(AttnParams, scale),
                offset_of!(AttnParams, k_row_bytes),
                offset_of!(AttnParams, v_row_bytes)
            ),
            (48, 56, 64, 72)
        );
        assert_eq!(
            (
                offset_of!(DecodeParams, pos),
                offset_of!(DecodeParams, dtype),
                offset_of!(DecodeParams, eps),
                offset_of!(DecodeParams, theta)
            ),
            (16, 28, 32, 36)
        );
        assert_eq!(
            (
                offset_of!(DecodeParams, kv_heads),
                offset_of!(DecodeParams, q_off),
                offset_of!(DecodeParams, v_off)
            ),
            (40, 52, 60)
        );
        assert_eq!(offset_of!(GemvParams, flags), 20);
        let cuh = crate::nvrtc::header_source("params.cuh").expect("params.cuh is embedded");
        for (name, size) in [
            ("StreamParams", std::mem::size_of::<StreamParams>()),
            ("GemvParams", std::mem::size_of::<GemvParams>()),
            ("QuantizeParams", std::mem::size_of::<QuantizeParams>()),
            ("MoeParams", std::mem::size_of::<MoeParams>()),
            ("AttnParams", std::mem::size_of::<AttnParams>()),
            ("DecodeParams", std::mem::size_of::<DecodeParams>()),
        ] {
            let assert = format!("static_assert(sizeof({name}) == {size},");
            assert!(cuh.contains(&assert), "params.cuh lacks `{assert}`");
        }
    }

    #[test]
    fn params_pack_as_bytes_in_field_order() {
        let p = GemvParams {
            rows: 7,
            cols: 4096,
            row_bytes: 2304,
            group_rows: 7,
            flags: 0,
        };
        // SAFETY: GemvParams is repr(C) plain data of 24 bytes without implicit padding.
        let bytes: [u8; 24] = unsafe { std::mem::transmute(p) };
        assert_eq!(&bytes[0..4], &7u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &4096u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &2304u64.to_le_bytes());
        assert_eq!(&bytes[16..20], &7u32.to_le_bytes());
    }
}
