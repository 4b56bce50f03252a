#!/usr/bin/env bash
# Builds and runs scripts/stream-ref.c (gcc -O3 -march=native -fopenmp), the C reference the
# CPU bandwidth suite is compared with. Usage: scripts/stream-ref.sh [MiB per array] [reps]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/membound-stream-ref
gcc -O3 -march=native -fopenmp -o "$out" "$here/stream-ref.c"
"$out" "${1:-1024}" "${2:-20}"
