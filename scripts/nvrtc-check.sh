#!/usr/bin/env bash
# Compile every kernel in kernels/*.cu with NVRTC for sm_80, sm_86, sm_89, sm_90, sm_120 and
# sm_121, without a GPU or a CUDA toolkit, through the same Rust code path the benches use
# (membound_cuda::compile_all). Fails on any compile error and prints the NVRTC log.
#
# NVRTC comes from the `nvidia-cuda-nvrtc` PyPI wheel, installed once per version into a cache
# folder (default: .cache/nvrtc-<version> in the repository root, git-ignored; NVRTC_CACHE
# overrides it when one version is checked). Two versions by default (NVRTC_VERSIONS):
#   13.0.88  the oldest CUDA 13 front end, what the lent H100s run; it lacks builtins that newer
#            ones accept (__builtin_offsetof broke every kernel build on a real H100 once);
#            checked for sm_90 only (those GPUs' arch; NVRTC_ALL_ARCHS=1 takes all six);
#   13.5.37  the newest, which bundles the CUDA headers (NVRTC 13.3+) so <cuda/std/cstdint>
#            resolves without a toolkit.
# The test also compiles with membound-cuda's built-in header stand-in, the fallback of NVRTCs
# without headers.
#
# Usage: scripts/nvrtc-check.sh [extra cargo test args]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSIONS="${NVRTC_VERSIONS:-${NVRTC_VERSION:-13.0.88 13.5.37}}"
BASE_PATH="${LD_LIBRARY_PATH:-}"

for VERSION in $VERSIONS; do
    CACHE="${NVRTC_CACHE:-$ROOT/.cache/nvrtc-$VERSION}"
    STAMP="$CACHE/.installed-$VERSION"
    if [[ ! -f "$STAMP" ]]; then
        echo "nvrtc-check: installing nvidia-cuda-nvrtc==$VERSION into $CACHE" >&2
        rm -rf "$CACHE"
        mkdir -p "$CACHE"
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
            --target "$CACHE" "nvidia-cuda-nvrtc==$VERSION"
        touch "$STAMP"
    else
        echo "nvrtc-check: using cached NVRTC $VERSION in $CACHE" >&2
    fi

    SO="$(find "$CACHE" -name 'libnvrtc.so*' -not -name '*builtins*' -not -name '*.alt.*' -print -quit)"
    if [[ -z "$SO" ]]; then
        echo "nvrtc-check: no libnvrtc.so* under $CACHE" >&2
        exit 1
    fi
    LIB="$(dirname "$SO")"
    echo "nvrtc-check: NVRTC $VERSION, LD_LIBRARY_PATH += $LIB" >&2
    export LD_LIBRARY_PATH="$LIB${BASE_PATH:+:$BASE_PATH}"
    # Every arch with the newest NVRTC; an older one (13.0: the lent GPUs' toolkit, whose ptxas
    # once spilled where 13.5's did not) only for their sm_90, unless NVRTC_ALL_ARCHS=1.
    ARCHS_ENV=()
    if [[ "$VERSION" != "${VERSIONS##* }" && "${NVRTC_ALL_ARCHS:-0}" != 1 ]]; then
        ARCHS_ENV=(MEMBOUND_NVRTC_ARCHS=sm_90)
    fi
    # --workspace, not -p membound-cuda: the workspace's feature set, so the crates `cargo test`
    # built are reused instead of rebuilt (90 s on CI's two cores).
    (cd "$ROOT" && env "${ARCHS_ENV[@]}" MEMBOUND_NVRTC_CHECK=1 \
        cargo test --workspace --test nvrtc "$@" -- --nocapture)
done
