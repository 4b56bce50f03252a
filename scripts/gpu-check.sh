#!/usr/bin/env bash
# gpu-check.sh: one lent-GPU session's checks from a .gpu/ bundle (../shared/tools/gpu-bundle.sh),
# run from the repo root on the GPU machine; everything lands in $OUT (or ./gpu-out):
#   provenance.txt   date, nvidia-smi (before and after), driver, toolkit, NVTX libraries
#   gpu-tests.log    every CUDA test (crates/membound-cuda/tests/gpu.rs) against the CPU reference,
#                    and the whole decode step on the GPU against the CPU step
#                    (crates/membound-decode/tests/device.rs)
#   bench-SUITE.log  each suite of $SUITES (default: bandwidth dense moe attention decode) on the
#                    GPU backends, each within SUITE_S seconds (criterion.tgz beside them); decode
#                    only the cases of DECODE_FILTER (a few models that fit one GPU whole, one
#                    forced sample beside its whole model, Qwen3-Coder-Next's Gated DeltaNet, the
#                    split and 4-layer CPU offload of Llama-3.1-8B and of GLM-4.7-Flash Q8_0,
#                    which `membound claims` judges the seed's split and offload claims by)
#   bench-{dense,attention,decode}-ab.log  the large GEMVs again with MEMBOUND_TILE_PIPE=0
#                    (single-buffered tiles), attention's F16 cases at 32k with
#                    MEMBOUND_ATTN_MMA=1 (the tensor-core kernels where a shape takes them), and
#                    the two decode goal cases at depth 0 with MEMBOUND_FUSE=0 (one launch per
#                    operation, no stacked projections; bench-decode-ab.log) and MEMBOUND_PDL=1
#                    (programmatic dependent launch; bench-decode-ab2.log): the A/Bs of the
#                    defaults (NO_PIPE_AB=1 skips them; AB_ENV_<suite> takes ';'-separated runs)
#   memcheck.log     compute-sanitizer memcheck over the kernel tests
#   ncu.txt          one Nsight Compute profile of a GEMV (scripts/profile.sh), per-kernel summary
# SUITE_FILTER_<suite> (e.g. SUITE_FILTER_moe='gpt-oss-120b') narrows a suite to the cases that
# regex selects (Criterion's filter), AB_FILTER_<suite> the A/B's cases and AB_ENV_<suite> its
# setting; TEST_FILTER the GPU tests run; NCU_BENCH, NCU_FILTER,
# NCU_KERNELS, NCU_LAUNCHES what Nsight Compute profiles (default: a Q4_K GEMV); SKIP="tests memcheck ncu" leaves those steps out, so a
# budget of device time can be spent over several calls.
# Each step has its own time limit (TEST_S, SUITE_S per suite, MEMCHECK_S, NCU_S seconds) so the
# whole stays inside one device call (10 minutes); a step that fails or times out is logged and
# the next one runs. SUITES="moe attention" runs only those.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
.gpu/run list > /dev/null || exit 2
gpu_tests=$(ls "$root"/.gpu/bin/gpu-* | head -n 1)
smi() {
  nvidia-smi --query-gpu=name,driver_version,pci.bus_id,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.draw,power.limit,temperature.gpu,memory.total --format=csv
}
{
  echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  smi
  nvcc --version 2>/dev/null | tail -n 2
  ls /usr/local/cuda/lib64 2>/dev/null | grep -E 'nvrtc\.so|cublas\.so|nvtx|nvToolsExt' | sort -u
  for l in /usr/local/cuda/lib64/libnvtx3interop.so /usr/local/cuda/lib64/libnvToolsExt.so; do
    [ -e "$l" ] && echo "$l exports: $(nm -D "$l" 2>/dev/null | grep -c ' T nvtx') nvtx functions, $(nm -D "$l" 2>/dev/null | grep -E ' T nvtxRange(PushA|Pop)$' | awk '{print $3}' | tr '\n' ' ')"
  done
} > "$out/provenance.txt" 2>&1

skip() { [[ " ${SKIP:-} " == *" $1 "* ]]; }

if ! skip tests; then
echo "== gpu tests"
(cd crates/membound-cuda && timeout "${TEST_S:-150}" "$gpu_tests" --nocapture --test-threads=1 ${TEST_FILTER:-}) > "$out/gpu-tests.log" 2>&1
echo "gpu tests rc=$?"; grep -E '^test |test result|panicked' "$out/gpu-tests.log"
device_tests=$(ls "$root"/.gpu/bin/device-* 2>/dev/null | head -n 1)
if [ -n "$device_tests" ]; then
  (cd crates/membound-decode && timeout "${TEST_S:-150}" "$device_tests" --nocapture --test-threads=1 gpu_) >> "$out/gpu-tests.log" 2>&1
  echo "decode gpu test rc=$?"; grep -E 'gpu_decode|gpu_placements|test result|panicked|skipped' "$out/gpu-tests.log" | tail -n 6
  # The same with programmatic dependent launch (MEMBOUND_PDL=1): the kernels' waits hold.
  echo "== decode gpu test, MEMBOUND_PDL=1" >> "$out/gpu-tests.log"
  (cd crates/membound-decode && MEMBOUND_PDL=1 timeout "${TEST_S:-150}" "$device_tests" --nocapture --test-threads=1 gpu_decode) >> "$out/gpu-tests.log" 2>&1
  echo "decode gpu test (PDL) rc=$?"; grep -E 'gpu_decode|test result|panicked' "$out/gpu-tests.log" | tail -n 2
fi
fi

for suite in ${SUITES:-bandwidth dense moe attention decode}; do
  echo "== bench $suite"
  exe=$(awk -F'\t' -v s="$suite" '$1 == "benches" && $4 == s { print $2 }' .gpu/manifest | head -n 1)
  [ -n "$exe" ] || { echo "no $suite bench in the bundle"; continue; }
  log="$out/bench-$suite.log"
  filter=()
  custom="SUITE_FILTER_$suite"
  if [ -n "${!custom:-}" ]; then filter=("${!custom}")
  elif [ "$suite" = decode ]; then filter=("${DECODE_FILTER:-llama-3.1-8b-q4_k_m-d(0|4096)/|qwen3-coder-30b-a3b-q8_0-d(0|4096)/|gpt-oss-20b-mxfp4_moe-d(0|4096)/|glm-4.7-flash-q8_0-d(0|4096)/|llama-3.2-3b-q4_k_m-d4096(-sampled)?/|qwen3-coder-next-q4_k_m-d0/|(llama-3.1-8b-q4_k_m|glm-4.7-flash-q8_0)-d0-(split|cpu)}"); fi
  MEMBOUND_BACKENDS=${MEMBOUND_BACKENDS:-gpu0} timeout "${SUITE_S:-150}" .gpu/run exec "$exe" --bench --noplot "${filter[@]}" > "$log" 2>&1
  echo "$suite rc=$?"
  # The single-buffered tile loops beside the pipelined default (MEMBOUND_TILE_PIPE=0), same
  # process conditions: the large GEMVs, and attention at 32k.
  ab=""
  [ "$suite" = dense ] && ab='x4096/|x8192/'
  [ "$suite" = attention ] && ab='f16-d32k/'
  [ "$suite" = decode ] && ab='llama-3.1-8b-q4_k_m-d0/|qwen3-coder-30b-a3b-q8_0-d0/'
  abv="AB_FILTER_$suite"
  [ -n "${!abv:-}" ] && ab="${!abv}"
  abe="AB_ENV_$suite"
  ab_env=${!abe:-}
  if [ -z "$ab_env" ]; then
    case $suite in
      attention) ab_env=MEMBOUND_ATTN_MMA=1 ;;
      decode) ab_env='MEMBOUND_FUSE=0;MEMBOUND_PDL=1' ;;
      *) ab_env=MEMBOUND_TILE_PIPE=0 ;;
    esac
  fi
  if [ -n "$ab" ] && [ -z "${NO_PIPE_AB:-}" ]; then
    # One run per ';'-separated setting (each may set several variables, space-separated):
    # bench-SUITE-ab.log, then -ab2.log, ...
    n=0
    IFS=';' read -r -a settings <<< "$ab_env"
    for setting in "${settings[@]}"; do
      n=$((n + 1)); suffix=ab; [ $n -gt 1 ] && suffix=ab$n
      read -r -a vars <<< "$setting"
      env "${vars[@]}" MEMBOUND_BACKENDS=${MEMBOUND_BACKENDS:-gpu0} timeout "${SUITE_S:-150}" .gpu/run exec "$exe" --bench --noplot "$ab" > "$out/bench-$suite-$suffix.log" 2>&1
      echo "$suite ($setting) rc=$?"
      sed -n '/^### attention on/,/^attention: /p; /^decode: t\/s/,/^decode: /p; /^## membound/,/^Criterion output/p' "$out/bench-$suite-$suffix.log"
    done
  fi
  sed -n '/^moe verdict/,/^moe: /p; /^### attention on/,/^attention: /p; /^decode: t\/s/,/^decode: /p; /^## membound/,/^Criterion output/p' "$log"
  grep -E 'FAILED|skipped' "$log" | head -20
done

echo "== memcheck"
if ! skip memcheck && command -v compute-sanitizer > /dev/null; then
  (cd crates/membound-cuda && timeout "${MEMCHECK_S:-60}" compute-sanitizer --tool memcheck --error-exitcode 3 \
     "$gpu_tests" --test-threads=1 gemv_odd quantize bandwidth_ops) > "$out/memcheck.log" 2>&1
  echo "memcheck rc=$?"; grep -E 'ERROR SUMMARY|test result' "$out/memcheck.log"
fi

echo "== ncu"
if ! skip ncu && command -v ncu > /dev/null; then
  ncu_bench=${NCU_BENCH:-dense}
  OUT_DIR="$out" PROFILE_TIME=1 NCU_LAUNCHES=${NCU_LAUNCHES:-3} NCU_KERNELS=${NCU_KERNELS:-'^mb_gemv_q4_k'} timeout "${NCU_S:-60}" scripts/profile.sh ncu "$ncu_bench" "${NCU_FILTER:-q4_k-14336x4096/gpu0}" > "$out/ncu-run.log" 2>&1
  echo "ncu rc=$?"
  [ -f "$out/profile-$ncu_bench.ncu-rep" ] && ncu -i "$out/profile-$ncu_bench.ncu-rep" --page details \
    --section SpeedOfLight --section MemoryWorkloadAnalysis > "$out/ncu.txt" 2>&1 && grep -E 'mb_|Memory Throughput|DRAM Throughput|Duration|L1/TEX Hit|Mem Busy' "$out/ncu.txt" | head -30
  # profile.sh's own per-launch table (duration, DRAM bytes and % of peak, occupancy, registers).
  [ -f "$out/profile-$ncu_bench-kernels.csv" ] && head -n 12 "$out/profile-$ncu_bench-kernels.csv"
fi
smi >> "$out/provenance.txt" 2>&1
