// runtime.h: the C interface of the host execution of kernels (mirrored in src/lib.rs).
#pragma once
#include <cstddef>
#include <cstdint>

// One buffer a launch may read (global loads outside every buffer fault).
struct mb_host_buffer {
    const void* ptr;
    size_t bytes;
};

// Global loads of one launch: a request is the k-th load of each lane of a warp together.
struct mb_host_stats {
    uint64_t requests;         // warp-wide load requests
    uint64_t sectors;          // distinct 32-byte sectors those requests touched
    uint64_t bytes_requested;  // bytes the lanes asked for
    uint64_t lane_loads;       // loads issued by single lanes
    uint64_t max_bytes_between_syncs;  // most bytes one thread loaded between two synchronisations
    uint64_t load_intervals;           // stretches between synchronisations that loaded anything
};

extern "C" {
void mb_host_register(const char* name, void (*call)(void**));
int mb_host_has_kernel(const char* name);
int mb_host_launch(const char* name, const unsigned grid[3], const unsigned block[3], void** params,
                   const mb_host_buffer* buffers, size_t n_buffers, mb_host_stats* stats, char* err,
                   size_t err_len);
}
