#!/usr/bin/env bash
# Profiles one bench executable so the profile holds steady repetitions of its kernels
# (Criterion's --profile-time runs each selected case for that long without analysis).
#
#   scripts/profile.sh nsys dense q4_k        # nsys profile --trace=cuda,nvtx → profile-dense.nsys-rep
#   scripts/profile.sh ncu bandwidth read/gpu0 # ncu, every kernel launch of the filter → profile-bandwidth.ncu-rep
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
    command -v nsys >/dev/null || { echo "profile.sh: nsys is not installed here; try: scripts/profile.sh ncu ..." >&2; exit 2; }
    # shellcheck disable=SC2086
    nsys profile --trace=cuda,nvtx --force-overwrite=true ${NSYS_ARGS:-} -o "$out/profile-$bench" "$exe" "${args[@]}" ;;
  ncu)
    command -v ncu >/dev/null || { echo "profile.sh: ncu (Nsight Compute) is not installed here" >&2; exit 2; }
    # shellcheck disable=SC2086
    # Only membound's kernels (-k), past the verification and warm-up launches (--launch-skip),
    # at the clocks Criterion sees (--clock-control none: ncu otherwise locks base clocks).
    ncu --set full -k "regex:${NCU_KERNELS:-^mb_}" --launch-skip "${NCU_SKIP:-20}" \
        --launch-count "${NCU_LAUNCHES:-5}" --clock-control none --force-overwrite ${NCU_ARGS:-} \
        -o "$out/profile-$bench" "$exe" "${args[@]}" ;;
  *) echo "profile.sh: tool must be nsys or ncu" >&2; exit 2 ;;
esac
