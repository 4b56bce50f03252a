// gemv.cu: y = W.x for one activation vector (decode, batch 1).
//   W: rows x cols, row-major, each row cols/block_size ggml blocks (row_bytes long);
//   x: cols f32; y: rows f32.
//
// Quantized weights (Q8_0, Q4_K, Q6_K, MXFP4) follow llama.cpp's mmvq arithmetic: x is first
// quantized to Q8_1 blocks of 32 (mb_quantize_q8_1, like quantize_row_q8_1_cuda), then each lane
// computes the integer dot products of one "chunk" of a row at a time with __dp4a, scaling by the
// block scales in f32:
//   Q8_0   chunk = 1 block   (32 values, 34-byte blocks)
//   Q4_K   chunk = 64 values (one 32-byte run of qs = two sub-blocks)
//   Q6_K   chunk = 64 values (32 bytes of ql, 32 of qh)
//   MXFP4  chunk = 1 block   (32 values, 17-byte blocks; E2M1 decoded via prmt)
// Coalescing: blocks of 17-210 bytes cannot be read per lane without scattering a warp's loads
// over many sectors, so a row is read in tiles of TILE_BLOCKS blocks that the warp first copies
// to shared memory as consecutive 16-byte words (lane l takes words l, l+32, ...; four loads in
// flight per lane), and the block's 4 warps copy the matching Q8_1 blocks of x once for all 4
// rows. The chunk dot products then read shared memory only. Rows whose bytes are not 16-byte
// aligned fall back to 4-, 2- or 1-byte words (still consecutive across lanes).
// Pipelining (TILE_PIPE=1, the default): the tiles are half as long and double-buffered, each
// tile's copies issued with cp.async (no registers: the whole tile in flight per lane) before
// the previous tile's dot products, so loads stay in flight while the warp computes. TILE_PIPE=0
// (MEMBOUND_TILE_PIPE=0) copies each full tile through registers, four 16-byte loads in flight
// per lane, then computes: on an H200 that loop was latency-bound (under one eligible warp per
// scheduler, 39-69 % of the read bandwidth at the issue's shapes); the pipelined loop is built
// to fix it and has not yet been timed on a GPU.
//
// GEMV_ACCUMULATE (the decode step's output projections): y[row] += W[row].x, the residual add
// fused into the product (y is the residual stream).
//
// Grouped GEMV (MLA's per-head W_UK and W_UV): rows form groups of group_rows (a multiple of
// GEMV_WARPS, so a block's rows share one input) and group g's rows take input g, the g-th run
// of cols values of x (of cols/32 Q8_1 blocks once quantized); group_rows = rows otherwise.
//
// Launch geometry (host: membound_cuda::gemv::gemv_config): GEMV_WARPS warps (default 4, 128
// threads) per block, one row per warp, grid = ceil(rows / GEMV_WARPS) blocks. Warps past the
// last row still take part in the block's barriers and x copies. Lane l of a row's warp takes the tile's chunks l,
// l+32, ... and the warp reduces with shuffles. Static shared memory: 4 weight tiles + one x tile
// (up to 28 KB at 4 warps, 46 KB at 8, see the static_asserts). On an H200, 4 rows per block beat
// 8 (Q8_0 28672x8192: 69 % vs 63 % of the paired read; MEMBOUND_GEMV_WARPS=8 selects 8).
//
// Float weights (F16, BF16) are read directly: lane l reads 16-byte words (8 weights) l, l+32, ...
// of the row (consecutive across the warp) and the matching 8 x values as two float4 from the
// block's shared x tile; f32 accumulation. When cols is not a multiple of 8 (16-byte alignment of
// rows cannot be assumed) the row is walked one value per lane per step instead.
//
// Q8_1 quantization geometry: one warp per Q8_1 block, QUANT_WARPS = 8 warps per block,
// grid = ceil(n_blocks / 8).

#include "common.cuh"
#include "params.cuh"
#include "quant_blocks.cuh"
#include "gemv_tile.cuh"

// Rows (warps) per block; the host passes -DGEMV_WARPS=N (membound_cuda::gemv::gemv_warps).
#ifndef GEMV_WARPS
#define GEMV_WARPS 4
#endif
// Blocks per SM the register allocation must allow (32 warps per SM / warps per block): at most
// 64 registers per thread, so residency is limited by shared memory rather than registers.
#define GEMV_MIN_BLOCKS (32 / GEMV_WARPS)
#define QUANT_WARPS 8

// ---------------------------------------------------------------------------------------------
// x -> Q8_1, bit-exact with ggml's CPU quantize_row_q8_1_ref: d = amax/127, q = round(x/d)
// computed as x * (1/d), s = d * sum(q) (all in f32, halves rounded to nearest even).
extern "C" __global__ void __launch_bounds__(QUANT_WARPS * MB_WARP_SIZE)
mb_quantize_q8_1(const float* __restrict__ x, block_q8_1* __restrict__ xq, QuantizeParams p) {
    mb_grid_begin();
    const u64 b = (u64)blockIdx.x * QUANT_WARPS + threadIdx.x / MB_WARP_SIZE;
    if (b >= p.n_blocks) return;  // warp-uniform
    const int lane = threadIdx.x % MB_WARP_SIZE;
    mb_q8_1_store_warp(xq + b, mb_ld(x + b * QK32 + lane), lane);
}

// y[row] = acc, or y[row] += acc with GEMV_ACCUMULATE (the residual add fused into the product;
// one warp owns each row).
static __device__ __forceinline__ void mb_gemv_store(float* y, u32 row, float acc,
                                                     const GemvParams& p) {
    y[row] = (p.flags & GEMV_ACCUMULATE) ? mb_ld(y + row) + acc : acc;
}

// ---------------------------------------------------------------------------------------------
// One warp per row: row blockIdx.x * GEMV_WARPS + warp of W, y[row] = W[row] . x.
template <typename Q>
static __device__ __forceinline__ void mb_gemv_tiled(const u8* __restrict__ w,
                                                     const typename Q::X* __restrict__ x,
                                                     float* __restrict__ y, const GemvParams& p) {
    const u32 row = blockIdx.x * GEMV_WARPS + threadIdx.x / MB_WARP_SIZE;
    const bool active = row < p.rows;  // warp-uniform
    const u8* wr[1] = {w + (u64)(active ? row : 0) * p.row_bytes};
    // A grouped GEMV's block takes its rows' input (group_rows is a multiple of GEMV_WARPS).
    x += (u64)(blockIdx.x * GEMV_WARPS / p.group_rows) * (p.cols / Q::BLOCK_VALUES) * Q::X_PER_BLOCK;
    float acc[1];
    mb_rows_dot<Q, GEMV_WARPS, 1>(wr, active, x, p.cols, acc);
    if (active && threadIdx.x % MB_WARP_SIZE == 0) mb_gemv_store(y, row, acc[0], p);
}

// Kernels (the weight types' dot products are in gemv_tile.cuh).

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * MB_WARP_SIZE, GEMV_MIN_BLOCKS)
mb_gemv_q8_0(const u8* __restrict__ w, const block_q8_1* __restrict__ xq, float* __restrict__ y,
             GemvParams p) {
    mb_grid_begin();
    mb_gemv_tiled<DotQ8_0>(w, xq, y, p);
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * MB_WARP_SIZE, GEMV_MIN_BLOCKS)
mb_gemv_q4_k(const u8* __restrict__ w, const block_q8_1* __restrict__ xq, float* __restrict__ y,
             GemvParams p) {
    mb_grid_begin();
    mb_gemv_tiled<DotQ4_K>(w, xq, y, p);
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * MB_WARP_SIZE, GEMV_MIN_BLOCKS)
mb_gemv_q6_k(const u8* __restrict__ w, const block_q8_1* __restrict__ xq, float* __restrict__ y,
             GemvParams p) {
    mb_grid_begin();
    mb_gemv_tiled<DotQ6_K>(w, xq, y, p);
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * MB_WARP_SIZE, GEMV_MIN_BLOCKS)
mb_gemv_mxfp4(const u8* __restrict__ w, const block_q8_1* __restrict__ xq, float* __restrict__ y,
              GemvParams p) {
    mb_grid_begin();
    mb_gemv_tiled<DotMxfp4>(w, xq, y, p);
}

// ---------------------------------------------------------------------------------------------
// F16 / BF16 weights, f32 x.

// Rows whose length is not a multiple of 8 (16-byte alignment cannot be assumed): one value
// per lane per step, consecutive across the warp.
template <typename C>
static __device__ __forceinline__ void mb_gemv_half_scalar(const u8* __restrict__ w,
                                                           const float* __restrict__ x,
                                                           float* __restrict__ y,
                                                           const GemvParams& p) {
    const u32 row = blockIdx.x * GEMV_WARPS + threadIdx.x / MB_WARP_SIZE;
    if (row >= p.rows) return;  // warp-uniform; no barriers in this path
    const u32 lane = threadIdx.x % MB_WARP_SIZE;
    const u16* w16 = reinterpret_cast<const u16*>(w + (u64)row * p.row_bytes);
    x += (u64)(row / p.group_rows) * p.cols;
    float acc = 0.0f;
    for (u32 i = lane; i < p.cols; i += MB_WARP_SIZE) acc += C::cvt(mb_ld(w16 + i)) * mb_ld(x + i);
    acc = mb_warp_sum(acc);
    if (lane == 0) mb_gemv_store(y, row, acc, p);
}

template <typename C>
static __device__ __forceinline__ void mb_gemv_half(const u8* __restrict__ w,
                                                    const float* __restrict__ x,
                                                    float* __restrict__ y, const GemvParams& p) {
    if (p.cols % 8 == 0) {
        mb_gemv_tiled<DotHalf<C>>(w, x, y, p);  // grid-uniform branch
    } else {
        mb_gemv_half_scalar<C>(w, x, y, p);
    }
}


extern "C" __global__ void __launch_bounds__(GEMV_WARPS * MB_WARP_SIZE, GEMV_MIN_BLOCKS)
mb_gemv_f16(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,
            GemvParams p) {
    mb_grid_begin();
    mb_gemv_half<CvtF16>(w, x, y, p);
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * MB_WARP_SIZE, GEMV_MIN_BLOCKS)
mb_gemv_bf16(const u8* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,
             GemvParams p) {
    mb_grid_begin();
    mb_gemv_half<CvtBF16>(w, x, y, p);
}

