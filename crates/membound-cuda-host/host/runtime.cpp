// runtime.cpp: launches kernels/*.cu kernels on the CPU (see cuda_host.h for the model).
// One launch at a time per process (a mutex; __shared__ storage is process-wide), blocks one
// after another, the threads of a block as fibers on the calling OS thread.
//
// Fibers: each thread's stack and first entry come from makecontext/swapcontext, every later
// switch (a barrier, a warp collective, a return) is _setjmp/_longjmp between the fiber and
// the scheduler. glibc's swapcontext saves and restores the signal mask with a system call on
// every switch, which was most of the time of the host-executed tests. The fortified longjmp
// refuses to jump to another stack, so fortification is off in this file.
#ifdef _FORTIFY_SOURCE
#undef _FORTIFY_SOURCE
#endif
#include "cuda_host.h"
#include "runtime.h"

#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

extern "C" char __start_mb_shared[];
extern "C" char __stop_mb_shared[];

namespace mbh {

dim3 block_idx, block_dim, grid_dim;

namespace {

constexpr size_t STACK_BYTES = 64 * 1024;
constexpr unsigned FULL = 0xffffffffu;

enum class State { Ready, WaitWarp, WaitBlock, Done };

struct Load {
    uintptr_t addr;
    unsigned size;
};

// An asynchronous copy (cp.async) not yet landed in shared memory: its source bytes, read at
// issue, and the commit group it belongs to.
struct PendingCopy {
    void* dst;
    unsigned size;
    uint64_t group;
    unsigned char bytes[16];
};

struct Thread {
    ucontext_t ctx;     // the first entry only
    jmp_buf resume;     // where the fiber continues once it has run
    bool started = false;
    dim3 tid;
    unsigned linear = 0;
    State state = State::Ready;
    uint64_t wait_gen = 0;
    std::vector<Load> loads;
    uint64_t since_sync = 0;  // bytes loaded since the last synchronisation
    std::vector<PendingCopy> copies;  // issued cp.async copies, oldest first
    uint64_t committed = 0;           // commit groups closed so far
};

struct Warp {
    unsigned lanes = 0;        // lanes that exist (a partial last warp has fewer)
    unsigned exited = 0;       // lanes that returned
    unsigned barrier_mask = 0; // mask of the collective in progress (0: none)
    unsigned arrived = 0;
    uint64_t gen = 0;
    alignas(16) unsigned char slots[32][16];
};

struct Launch {
    const mb_host_buffer* buffers = nullptr;
    size_t n_buffers = 0;
    std::vector<Thread> threads;
    std::vector<Warp> warps;
    std::vector<char*> stacks;
    unsigned n_threads = 0;
    unsigned block_arrived = 0, block_alive = 0;
    uint64_t block_gen = 0;
    Thread* cur = nullptr;
    ucontext_t sched;  // written by a fiber's first entry, never resumed
    jmp_buf sched_jb;  // where every fiber switch returns to the scheduler
    std::string error;
    mb_host_stats stats{};
};

std::mutex launch_mutex;
Launch* L = nullptr;
void (*entry_fn)(void**) = nullptr;
void** entry_args = nullptr;

void yield_to_scheduler() {
    if (_setjmp(L->cur->resume) == 0) _longjmp(L->sched_jb, 1);
}

// Closes the current thread's stretch of loads at a synchronisation (or its end): what it
// loaded since the last one is all it could have had in flight at once, an upper bound.
void close_interval(Thread* t) {
    if (t->since_sync == 0) return;
    L->stats.max_bytes_between_syncs = std::max(L->stats.max_bytes_between_syncs, t->since_sync);
    L->stats.load_intervals += 1;
    t->since_sync = 0;
}

void fiber_main() {
    entry_fn(entry_args);
    Thread* t = L->cur;
    close_interval(t);
    t->state = State::Done;
    Warp& w = L->warps[t->linear / 32];
    const unsigned bit = 1u << (t->linear % 32);
    w.exited |= bit;
    if (w.barrier_mask & bit & ~w.arrived) {
        fault("a lane returned while its warp waits for it in a shuffle or __syncwarp");
    }
    --L->block_alive;
    if (L->block_arrived > 0 && L->block_arrived == L->block_alive) {
        L->block_arrived = 0;
        ++L->block_gen;
    }
    _longjmp(L->sched_jb, 1);  // a finished fiber is never resumed
}

// Sectors of the warp's loads: the k-th load of every lane is one request.
void account_warp(unsigned first, unsigned count) {
    size_t most = 0;
    for (unsigned i = 0; i < count; ++i) most = std::max(most, L->threads[first + i].loads.size());
    std::vector<uintptr_t> sectors;
    for (size_t k = 0; k < most; ++k) {
        sectors.clear();
        uint64_t bytes = 0;
        for (unsigned i = 0; i < count; ++i) {
            const auto& loads = L->threads[first + i].loads;
            if (k >= loads.size()) continue;
            const Load& ld = loads[k];
            bytes += ld.size;
            for (uintptr_t s = ld.addr / 32; s <= (ld.addr + ld.size - 1) / 32; ++s) sectors.push_back(s);
        }
        std::sort(sectors.begin(), sectors.end());
        const size_t unique = std::unique(sectors.begin(), sectors.end()) - sectors.begin();
        L->stats.requests += 1;
        L->stats.sectors += unique;
        L->stats.bytes_requested += bytes;
    }
    for (unsigned i = 0; i < count; ++i) {
        L->stats.lane_loads += L->threads[first + i].loads.size();
        L->threads[first + i].loads.clear();
    }
}

bool runnable(const Thread& t) {
    switch (t.state) {
        case State::Ready: return true;
        case State::WaitWarp: return L->warps[t.linear / 32].gen != t.wait_gen;
        case State::WaitBlock: return L->block_gen != t.wait_gen;
        case State::Done: return false;
    }
    return false;
}

// Runs one block to completion; false (with L->error set) on a fault or deadlock.
bool run_block() {
    const unsigned n = L->n_threads;
    std::memset(__start_mb_shared, 0xA5, (size_t)(__stop_mb_shared - __start_mb_shared));
    L->block_arrived = 0;
    L->block_alive = n;
    for (unsigned w = 0; w < L->warps.size(); ++w) {
        Warp& wp = L->warps[w];
        wp = Warp{};
        const unsigned lanes = std::min(32u, n - 32 * w);
        wp.lanes = lanes == 32 ? FULL : ((1u << lanes) - 1);
    }
    for (unsigned i = 0; i < n; ++i) {
        Thread& t = L->threads[i];
        t.state = State::Ready;
        t.linear = i;
        t.tid.x = i % block_dim.x;
        t.tid.y = (i / block_dim.x) % block_dim.y;
        t.tid.z = i / (block_dim.x * block_dim.y);
        t.loads.clear();
        t.since_sync = 0;
        t.copies.clear();
        t.committed = 0;
        t.started = false;
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = L->stacks[i];
        t.ctx.uc_stack.ss_size = STACK_BYTES;
        t.ctx.uc_link = nullptr;
        makecontext(&t.ctx, fiber_main, 0);
    }
    unsigned done = 0;
    while (done < n) {
        Thread* next = nullptr;
        for (unsigned i = 0; i < n; ++i) {
            if (runnable(L->threads[i])) {
                next = &L->threads[i];
                break;
            }
        }
        if (!next) {
            char msg[256];
            unsigned waiting_block = 0, waiting_warp = 0;
            for (auto& t : L->threads)
                if (t.state == State::WaitBlock) ++waiting_block;
                else if (t.state == State::WaitWarp) ++waiting_warp;
            std::snprintf(msg, sizeof msg,
                          "deadlock in block (%u,%u,%u): %u threads wait at __syncthreads, %u in a "
                          "warp collective, %u returned",
                          block_idx.x, block_idx.y, block_idx.z, waiting_block, waiting_warp, done);
            L->error = msg;
            return false;
        }
        next->state = State::Ready;
        L->cur = next;
        if (_setjmp(L->sched_jb) == 0) {
            if (next->started) _longjmp(next->resume, 1);
            next->started = true;
            swapcontext(&L->sched, &next->ctx);  // returns through sched_jb, not here
            std::abort();
        }
        L->cur = nullptr;
        if (!L->error.empty()) return false;
        if (next->state == State::Done) {
            ++done;
            const unsigned w = next->linear / 32;
            const Warp& wp = L->warps[w];
            if (wp.exited == wp.lanes) account_warp(32 * w, (unsigned)__builtin_popcount(wp.lanes));
        }
    }
    return true;
}

}  // namespace

const dim3& thread_idx() { return L->cur->tid; }

int lane() { return (int)(L->cur->linear % 32); }

void fault(const char* what) {
    Thread* t = L->cur;
    char msg[512];
    std::snprintf(msg, sizeof msg, "%s (block (%u,%u,%u), thread (%u,%u,%u))", what, block_idx.x,
                  block_idx.y, block_idx.z, t->tid.x, t->tid.y, t->tid.z);
    L->error = msg;
    _longjmp(L->sched_jb, 1);  // a faulted fiber is never resumed
}

void sync_block() {
    Thread* t = L->cur;
    close_interval(t);
    if (++L->block_arrived == L->block_alive) {
        L->block_arrived = 0;
        ++L->block_gen;
        return;
    }
    t->state = State::WaitBlock;
    t->wait_gen = L->block_gen;
    yield_to_scheduler();
}

static void warp_barrier(unsigned mask) {
    Thread* t = L->cur;
    close_interval(t);
    Warp& w = L->warps[t->linear / 32];
    const unsigned bit = 1u << (t->linear % 32);
    if (!(mask & bit)) fault("a warp collective's mask leaves out the calling lane");
    if (mask & ~w.lanes) fault("a warp collective's mask names lanes the block does not have");
    if (mask & w.exited) fault("a warp collective's mask names a lane that has returned");
    if (w.barrier_mask == 0) {
        w.barrier_mask = mask;
    } else if (w.barrier_mask != mask) {
        fault("lanes of one warp are in collectives with different masks (divergent shuffle)");
    }
    w.arrived |= bit;
    if (w.arrived == mask) {
        w.arrived = 0;
        w.barrier_mask = 0;
        ++w.gen;
        return;
    }
    t->state = State::WaitWarp;
    t->wait_gen = w.gen;
    yield_to_scheduler();
}

void sync_warp(unsigned mask) { warp_barrier(mask); }

void warp_exchange(unsigned mask, const void* v, void* out, unsigned size, int src) {
    Thread* t = L->cur;
    Warp& w = L->warps[t->linear / 32];
    const int me = (int)(t->linear % 32);
    std::memcpy(w.slots[me], v, size);
    warp_barrier(mask);
    const bool valid = src >= 0 && src < 32 && (mask >> src) & 1u;
    std::memcpy(out, w.slots[valid ? src : me], size);
    warp_barrier(mask);
}

void warp_allgather(unsigned mask, const void* v, void* all, unsigned size) {
    if (size > 16) fault("a warp all-gather of more than 16 bytes per lane");
    Thread* t = L->cur;
    Warp& w = L->warps[t->linear / 32];
    const int me = (int)(t->linear % 32);
    std::memcpy(w.slots[me], v, size);
    warp_barrier(mask);
    for (int i = 0; i < 32; ++i) std::memcpy((unsigned char*)all + i * size, w.slots[i], size);
    warp_barrier(mask);
}

void record_load(const void* p, unsigned size) {
    const uintptr_t a = (uintptr_t)p;
    bool inside = false;
    for (size_t i = 0; i < L->n_buffers && !inside; ++i) {
        const uintptr_t b = (uintptr_t)L->buffers[i].ptr;
        inside = a >= b && a + size <= b + L->buffers[i].bytes;
    }
    if (!inside) fault("global load outside every buffer of the launch");
    if (a % size != 0 && (size == 2 || size == 4 || size == 8 || size == 16)) {
        fault("misaligned global load (the GPU faults on it)");
    }
    L->cur->loads.push_back({a, size});
    L->cur->since_sync += size;
}

void cp_async(void* dst, const void* src, unsigned size) {
    if (size != 4 && size != 8 && size != 16) fault("cp.async of a size other than 4, 8 or 16 bytes");
    if ((uintptr_t)dst % size != 0) fault("cp.async to a misaligned shared address");
    record_load(src, size);
    Thread* t = L->cur;
    PendingCopy c{dst, size, t->committed, {}};
    std::memcpy(c.bytes, src, size);
    t->copies.push_back(c);
    // From its issue the destination is being overwritten: poisoned until the copy lands, so a
    // read of the old contents after the issue (a missing barrier before it) shows up too.
    std::memset(dst, 0xA5, size);
}

void cp_async_commit() { ++L->cur->committed; }

void cp_async_wait(unsigned n) {
    Thread* t = L->cur;
    // Lands every copy of a committed group older than the n most recent; the rest stay
    // pending, so a read of shared memory before its wait sees the poisoned or older bytes.
    const uint64_t keep_from = t->committed > n ? t->committed - n : 0;
    size_t kept = 0;
    for (const PendingCopy& c : t->copies) {
        if (c.group < keep_from) {
            std::memcpy(c.dst, c.bytes, c.size);
        } else {
            t->copies[kept++] = c;
        }
    }
    t->copies.resize(kept);
}

}  // namespace mbh

// ------------------------------------------------------------------------------------------
// The kernel table (filled by the generated registration units) and the C entry points.

namespace {
struct Entry {
    void (*call)(void**);
};
std::map<std::string, Entry>& table() {
    static std::map<std::string, Entry> t;
    return t;
}
}  // namespace

extern "C" void mb_host_register(const char* name, void (*call)(void**)) { table()[name] = {call}; }

extern "C" void mb_host_register_all();

static void ensure_registered() {
    static std::once_flag once;
    std::call_once(once, mb_host_register_all);
}

extern "C" int mb_host_has_kernel(const char* name) {
    ensure_registered();
    return table().count(name) ? 1 : 0;
}

extern "C" int mb_host_launch(const char* name, const unsigned grid[3], const unsigned block[3],
                              void** params, const mb_host_buffer* buffers, size_t n_buffers,
                              mb_host_stats* stats, char* err, size_t err_len) {
    using namespace mbh;
    ensure_registered();
    auto fail = [&](const std::string& m) {
        if (err_len) std::snprintf(err, err_len, "%s: %s", name, m.c_str());
        return 1;
    };
    auto it = table().find(name);
    if (it == table().end()) return fail("no such kernel in the host build");
    const uint64_t threads = (uint64_t)block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024) return fail("block of " + std::to_string(threads) + " threads (1..1024)");
    if ((uint64_t)grid[0] * grid[1] * grid[2] == 0) return fail("empty grid");
    std::lock_guard<std::mutex> guard(launch_mutex);
    Launch launch;
    launch.buffers = buffers;
    launch.n_buffers = n_buffers;
    launch.n_threads = (unsigned)threads;
    launch.threads.resize(threads);
    launch.warps.resize((threads + 31) / 32);
    for (uint64_t i = 0; i < threads; ++i) launch.stacks.push_back(static_cast<char*>(std::malloc(STACK_BYTES)));
    L = &launch;
    entry_fn = it->second.call;
    entry_args = params;
    grid_dim = {grid[0], grid[1], grid[2]};
    block_dim = {block[0], block[1], block[2]};
    bool ok = true;
    for (unsigned z = 0; ok && z < grid[2]; ++z)
        for (unsigned y = 0; ok && y < grid[1]; ++y)
            for (unsigned x = 0; ok && x < grid[0]; ++x) {
                block_idx = {x, y, z};
                ok = run_block();
            }
    for (char* s : launch.stacks) std::free(s);
    L = nullptr;
    if (!ok) return fail(launch.error);
    if (stats) *stats = launch.stats;
    return 0;
}
