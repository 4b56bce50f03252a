// Host driver of tests/host_emulation.rs: y[r] = sum over chunks c of Dot<T>::dot(row r, xq, c),
// the loop each warp of gemv.cu runs, done sequentially.
//   harness TYPE ROWS COLS W.bin XQ.bin Y.bin     (TYPE: q8_0 q4_k q6_k mxfp4)
#include "gemv.cu"

#include <cstdio>
#include <cstring>
#include <vector>

static std::vector<u8> slurp(const char* path) {
    std::vector<u8> v;
    FILE* f = std::fopen(path, "rb");
    if (!f) std::exit(2);
    u8 buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    std::fclose(f);
    return v;
}

template <typename Q>
static void run(const std::vector<u8>& w, const block_q8_1* xq, u32 rows, u32 cols, u64 row_bytes, float* y) {
    for (u32 r = 0; r < rows; ++r) {
        float acc = 0.0f;
        for (u32 c = 0; c < cols / Q::CHUNK_VALUES; ++c) acc += Q::dot(w.data() + (u64)r * row_bytes, xq, c);
        y[r] = acc;
    }
}

int main(int argc, char** argv) {
    if (argc != 7) return 2;
    const char* t = argv[1];
    const u32 rows = (u32)std::strtoul(argv[2], nullptr, 10), cols = (u32)std::strtoul(argv[3], nullptr, 10);
    const std::vector<u8> w = slurp(argv[4]);
    const std::vector<u8> xq_bytes = slurp(argv[5]);
    std::vector<block_q8_1> xq(xq_bytes.size() / sizeof(block_q8_1));
    std::memcpy(xq.data(), xq_bytes.data(), xq.size() * sizeof(block_q8_1));
    const u64 row_bytes = w.size() / rows;
    std::vector<float> y(rows);
    if (!std::strcmp(t, "q8_0")) run<DotQ8_0>(w, xq.data(), rows, cols, row_bytes, y.data());
    else if (!std::strcmp(t, "q4_k")) run<DotQ4_K>(w, xq.data(), rows, cols, row_bytes, y.data());
    else if (!std::strcmp(t, "q6_k")) run<DotQ6_K>(w, xq.data(), rows, cols, row_bytes, y.data());
    else if (!std::strcmp(t, "mxfp4")) run<DotMxfp4>(w, xq.data(), rows, cols, row_bytes, y.data());
    else return 3;
    FILE* f = std::fopen(argv[6], "wb");
    if (!f || std::fwrite(y.data(), sizeof(float), rows, f) != rows) return 4;
    std::fclose(f);
    return 0;
}
