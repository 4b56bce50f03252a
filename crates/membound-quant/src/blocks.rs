//! ggml's quant blocks as `#[repr(C)]` structs, byte-for-byte the layouts of
//! `ggml/src/ggml-common.h` (and mirrored once for the GPU in `kernels/quant_blocks.cuh`).
//! Half-precision scales are stored as raw `u16` bits ([`half::f16::from_bits`]).

use membound_spec::DType;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;
/// Values per Q8_0 / Q4_0 / MXFP4 block.
pub const QK32: usize = 32;

/// Q8_0: `d * q`, 32 signed bytes and one f16 scale (34 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK32],
}

/// Q8_1: Q8_0 plus `s = d * sum(qs)` (both f16), the activation type of llama.cpp's CUDA mmvq
/// and of ggml's Q4_1/Q5_1 dot products (36 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// `d * sum(qs)`, f16 bits.
    pub s: u16,
    /// Quants.
    pub qs: [i8; QK32],
}

/// Q4_0: `d * (q - 8)`, 32 nibbles (low nibbles hold values 0..16, high nibbles 16..32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; QK32 / 2],
}

/// Q5_0: `d * (q - 16)`, 5-bit values: low nibbles in `qs` (values 0..16 low, 16..32 high
/// nibbles), the fifth bits in `qh` (bit j for value j).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK32 / 2],
}

/// Q4_K: 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes, `d`/`dmin` super-scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

/// Q5_K: Q4_K plus one high bit per value in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ5K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// Q6_K: 16 sub-blocks of 16, 4 low bits in `ql`, 2 high bits in `qh`, 8-bit scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: u16,
}

/// Q8_K: the activation type of K-quant dot products (f32 scale, sums of 16-value groups).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

/// MXFP4: an E8M0 exponent byte and 32 E2M1 nibbles (low nibbles values 0..16, high 16..32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMxfp4 {
    pub e: u8,
    pub qs: [u8; QK32 / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);
const _: () = assert!(std::mem::size_of::<BlockMxfp4>() == 17);

/// A ggml block type: its [`DType`] and values per block. Implemented only for `#[repr(C)]`
/// structs without padding, so a slice of blocks may be viewed as bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain no padding and accept every bit pattern.
pub unsafe trait Block: Copy + 'static {
    /// The storage type this block encodes.
    const DTYPE: DType;
    /// Values per block.
    const VALUES: usize;
}

// SAFETY: all are repr(C) structs of integer arrays with sizes asserted above (no padding),
// except BlockQ8K whose f32 + i8[256] + i16[16] = 292 bytes, also asserted.
unsafe impl Block for BlockQ8_0 {
    const DTYPE: DType = DType::Q8_0;
    const VALUES: usize = QK32;
}
unsafe impl Block for BlockQ8_1 {
    const DTYPE: DType = DType::Q8_1;
    const VALUES: usize = QK32;
}
unsafe impl Block for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;
    const VALUES: usize = QK32;
}
unsafe impl Block for BlockQ5_0 {
    const DTYPE: DType = DType::Q5_0;
    const VALUES: usize = QK32;
}
unsafe impl Block for BlockQ4K {
    const DTYPE: DType = DType::Q4_K;
    const VALUES: usize = QK_K;
}
unsafe impl Block for BlockQ5K {
    const DTYPE: DType = DType::Q5_K;
    const VALUES: usize = QK_K;
}
unsafe impl Block for BlockQ6K {
    const DTYPE: DType = DType::Q6_K;
    const VALUES: usize = QK_K;
}
unsafe impl Block for BlockQ8K {
    const DTYPE: DType = DType::Q8_K;
    const VALUES: usize = QK_K;
}
unsafe impl Block for BlockMxfp4 {
    const DTYPE: DType = DType::MXFP4;
    const VALUES: usize = QK32;
}

/// Views a slice of blocks as the bytes a GGUF file or a GPU buffer holds.
pub fn as_bytes<B: Block>(blocks: &[B]) -> &[u8] {
    // SAFETY: B is repr(C) without padding (Block's contract); u8 has alignment 1.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}

/// Copies bytes (e.g. a GGUF tensor view, which may be unaligned) into blocks.
/// Returns `None` when the length is not a whole number of blocks.
pub fn from_bytes<B: Block>(bytes: &[u8]) -> Option<Vec<B>> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let n = bytes.len() / size;
    let mut out = Vec::<B>::with_capacity(n);
    // SAFETY: B accepts every bit pattern (Block's contract); the copy fills exactly n blocks.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), bytes.len());
        out.set_len(n);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_dtype_table() {
        fn check<B: Block>() {
            assert_eq!(std::mem::size_of::<B>() as u64, B::DTYPE.block_bytes());
            assert_eq!(B::VALUES as u64, B::DTYPE.block_size());
        }
        check::<BlockQ8_0>();
        check::<BlockQ8_1>();
        check::<BlockQ4_0>();
        check::<BlockQ5_0>();
        check::<BlockQ4K>();
        check::<BlockQ5K>();
        check::<BlockQ6K>();
        check::<BlockQ8K>();
        check::<BlockMxfp4>();
    }

    #[test]
    fn bytes_round_trip() {
        let blocks = vec![
            BlockQ8_0 {
                d: 0x3c00,
                qs: [3; 32]
            };
            3
        ];
        let bytes = as_bytes(&blocks);
        assert_eq!(bytes.len(), 3 * 34);
        assert_eq!(from_bytes::<BlockQ8_0>(bytes).unwrap(), blocks);
        assert!(from_bytes::<BlockQ8_0>(&bytes[1..]).is_none());
    }
}
