// faults.cu: kernels that are wrong on purpose, built into the host execution only (never into
// kernels/), so tests can show the runtime catches what a GPU would get wrong silently or hang on.
#include "common.cuh"

// Lanes 0-15 return, lanes 16-31 shuffle with the full mask.
extern "C" __global__ void __launch_bounds__(32)
mb_fault_shuffle_after_return(const float* __restrict__ x, float* __restrict__ y) {
    if (threadIdx.x < 16) return;
    y[threadIdx.x] = mb_warp_sum(mb_ld(x + threadIdx.x));
}

// Lanes 0-15 wait at __syncthreads while lanes 16-31 wait in a full-mask shuffle for them.
extern "C" __global__ void __launch_bounds__(32)
mb_fault_deadlock(const float* __restrict__ x, float* __restrict__ y) {
    float v = mb_ld(x + threadIdx.x);
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        v = mb_warp_sum(v);
    }
    y[threadIdx.x] = v;
}

// Reads one element past the end of x.
extern "C" __global__ void __launch_bounds__(32)
mb_fault_overrun(const float* __restrict__ x, float* __restrict__ y, u32 n) {
    y[threadIdx.x] = mb_ld(x + n + threadIdx.x / 31);
}

// Reads shared memory that no thread wrote in this block.
extern "C" __global__ void __launch_bounds__(32)
mb_fault_unwritten_shared(float* __restrict__ y) {
    __shared__ float s[32];
    if (threadIdx.x == 0) s[0] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x];
}
