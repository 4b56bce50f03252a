#!/usr/bin/env bash
# Builds membound-cpu for aarch64 and runs its tests under qemu-user, so the NEON (and
# NEON dot-product) kernels are checked on an x86-64 machine. Correctness only: never time
# anything under qemu.
#
# Needs rustup and (for the packages) apt-get with root. Any missing piece is reported and the
# script exits 0 without testing ("skipped"), so CI can run it everywhere.
#
#   scripts/cross-aarch64.sh [extra cargo test args...]
set -uo pipefail

TARGET=aarch64-unknown-linux-gnu
skip() {
    echo "cross-aarch64: SKIPPED: $*" >&2
    exit 0
}

command -v rustup >/dev/null 2>&1 || skip "rustup not found"
rustup target add "$TARGET" || skip "rustup target add $TARGET failed"

if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1 \
    || [ ! -d /usr/aarch64-linux-gnu/lib ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || skip "not root and no sudo to install the cross toolchain"
        SUDO="sudo"
    fi
    command -v apt-get >/dev/null 2>&1 || skip "apt-get not found"
    $SUDO apt-get update || skip "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user \
        || skip "apt-get install of gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user failed"
fi

cd "$(dirname "$0")/.." || exit 1
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
echo "cross-aarch64: cargo test --target $TARGET -p membound-cpu (under qemu)" >&2
exec cargo test --target "$TARGET" -p membound-cpu "$@"
