#!/usr/bin/env bash
# Profiles one bench executable so the profile holds steady repetitions of its kernels
# (Criterion's --profile-time runs each selected case for that long without analysis).
#
#   scripts/profile.sh nsys dense q4_k        # nsys profile --trace=cuda,nvtx → profile-dense.nsys-rep
#   scripts/profile.sh ncu bandwidth read/gpu0 # ncu, every kernel launch of the filter → profile-bandwidth.ncu-rep
#
# Besides the report files it writes what a reader needs as text:
#   nsys: profile-BENCH-kernels.txt (time per kernel: calls, total, mean, share) and
#         profile-BENCH-nvtx.txt (the NVTX ranges: each case and kernel launch by name);
#   ncu:  profile-BENCH-kernels.csv/.txt (per launch: kernel, duration, DRAM bytes read and
#         written, DRAM throughput as % of peak, achieved occupancy, registers).
# It stops with a one-line reason and exit 2 where the tool or an NVIDIA GPU is missing.
#
# On a machine with cargo it builds the bench first; in a .gpu/ bundle (no cargo; see
# ../shared/tools/gpu-bundle.sh) it uses the executable the bundle holds.
# Env: PROFILE_TIME (seconds, default 5), OUT_DIR (default: $OUT or .), NCU_ARGS, NSYS_ARGS;
# ncu: NCU_KERNELS (regex, default ^mb_), NCU_SKIP (launches skipped, default 20), NCU_LAUNCHES (5).
set -euo pipefail
tool=${1:?usage: scripts/profile.sh nsys|ncu BENCH [FILTER]}
bench=${2:?usage: scripts/profile.sh nsys|ncu BENCH [FILTER]}
filter=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT_DIR:-${OUT:-.}}
secs=${PROFILE_TIME:-5}

gpu_present() {
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>/dev/null | grep -q '^GPU '; else ls /dev/nvidia[0-9]* >/dev/null 2>&1; fi
}
# The tool and a GPU first: nothing is built where the profile could not be taken.
case "$tool" in
  nsys) command -v nsys >/dev/null || { echo "profile.sh: nsys is not installed here; try: scripts/profile.sh ncu ..." >&2; exit 2; } ;;
  ncu) command -v ncu >/dev/null || { echo "profile.sh: ncu (Nsight Compute) is not installed here" >&2; exit 2; } ;;
  *) echo "profile.sh: tool must be nsys or ncu" >&2; exit 2 ;;
esac
gpu_present || { echo "profile.sh: no NVIDIA GPU here (nvidia-smi lists none): $tool would record no kernels" >&2; exit 2; }

exe=""
if command -v cargo >/dev/null 2>&1; then
  exe=$(cargo bench --bench "$bench" --no-run --message-format=json 2>/dev/null \
        | jq -r 'select(.reason == "compiler-artifact" and .executable != null and (.target.kind | index("bench"))) | .executable' | tail -n 1)
elif [ -f .gpu/manifest ]; then
  [ -d .gpu/bin ] || xz -dc .gpu/bin.tar.xz | tar -xf - -C .gpu
  exe=$root/.gpu/bin/$(awk -F'\t' -v n="$bench" '$1 == "benches" && $4 == n { print $2 }' .gpu/manifest | head -n 1)
fi
[ -n "$exe" ] && [ -x "$exe" ] || { echo "profile.sh: no executable for bench '$bench'" >&2; exit 2; }

args=(--bench --profile-time "$secs")
[ -n "$filter" ] && args+=("$filter")
case "$tool" in
  nsys)
    # shellcheck disable=SC2086
    nsys profile --trace=cuda,nvtx --force-overwrite=true ${NSYS_ARGS:-} -o "$out/profile-$bench" "$exe" "${args[@]}"
    nsys stats --force-export=true --report cuda_gpu_kern_sum --format column "$out/profile-$bench.nsys-rep" \
      > "$out/profile-$bench-kernels.txt"
    nsys stats --force-export=true --report nvtx_sum --format column "$out/profile-$bench.nsys-rep" \
      > "$out/profile-$bench-nvtx.txt"
    echo "profile.sh: $out/profile-$bench.nsys-rep, -kernels.txt (time per kernel), -nvtx.txt (NVTX ranges)"
    head -n 25 "$out/profile-$bench-kernels.txt" ;;
  ncu)

    # shellcheck disable=SC2086
    # Only membound's kernels (-k), past the verification and warm-up launches (--launch-skip),
    # at the clocks Criterion sees (--clock-control none: ncu otherwise locks base clocks).
    ncu --set full -k "regex:${NCU_KERNELS:-^mb_}" --launch-skip "${NCU_SKIP:-20}" \
        --launch-count "${NCU_LAUNCHES:-5}" --clock-control none --force-overwrite ${NCU_ARGS:-} \
        -o "$out/profile-$bench" "$exe" "${args[@]}"
    metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread
    ncu --import "$out/profile-$bench.ncu-rep" --page raw --csv --metrics "$metrics" \
      > "$out/profile-$bench-kernels.csv"
    ncu --import "$out/profile-$bench.ncu-rep" --page raw --metrics "$metrics" \
      > "$out/profile-$bench-kernels.txt"
    echo "profile.sh: $out/profile-$bench.ncu-rep, -kernels.csv/.txt (duration, DRAM bytes and % of peak, occupancy per launch)"
    grep -E 'mb_|gpu__time_duration|dram__|sm__warps|registers' "$out/profile-$bench-kernels.txt" | head -n 40 ;;
  *) echo "profile.sh: tool must be nsys or ncu" >&2; exit 2 ;;
esac
