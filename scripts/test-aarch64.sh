#!/usr/bin/env bash
# Cross-tests qkernels on aarch64 under qemu-user, on an x86-64 (or any) Linux host.
#
#   scripts/test-aarch64.sh [cargo test args...]      (default: -p qkernels-kernels)
#   e.g. scripts/test-aarch64.sh --workspace
#
# The test binaries are built once (debug profile, target aarch64-unknown-linux-gnu) and then run
# under three qemu CPU models, so that runtime detection is exercised for real:
#
#   max          dotprod + i8mm   QKERNELS_EXPECT_ISAS=scalar,neon,neondot,neoni8mm
#   neoverse-n1  dotprod only     QKERNELS_EXPECT_ISAS=scalar,neon,neondot
#   cortex-a72   plain NEON       QKERNELS_EXPECT_ISAS=scalar,neon
#
# with QKERNELS_REQUIRE_ISA set to the same list (the battery fails instead of skipping). Then
# kernels/tests/isa_detection.rs runs once per (CPU model, forced ISA) with QKERNELS_ISA, checking
# that forcing picks a supported ISA and that an unsupported one falls back to the best.
#
# QKERNELS_AARCH64_CPUS=max (a space-separated subset of: max neoverse-n1 cortex-a72) restricts the
# CPU models, e.g. for the slow whole-network tests.
#
# Before that, clippy -D warnings runs on the aarch64 target (the x86 CI clippy never compiles the
# aarch64-only modules); QKERNELS_AARCH64_CLIPPY=0 skips it.
#
# Missing tools are installed when possible (rustup target; apt-get as root on Debian/Ubuntu);
# nothing is installed when they are already present. Exits non-zero on any failure.
set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ]; then
    set -- -p qkernels-kernels
fi

# --- toolchain -------------------------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "== rustup target add $TARGET"
    rustup target add "$TARGET"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || [ ! -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "== apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
    else
        echo "error: need aarch64-linux-gnu-gcc, libc6-dev-arm64-cross and qemu-aarch64" \
            "(run as root on Debian/Ubuntu to install them)" >&2
        exit 1
    fi
fi

# The linker comes from .cargo/config.toml; set it here too so the script works from anywhere.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# Start from a clean slate: e.g. .ci/run exports QKERNELS_REQUIRE_ISA=avx2,avx512vnni for x86.
unset QKERNELS_ISA QKERNELS_REQUIRE_ISA QKERNELS_EXPECT_ISAS QKERNELS_EXPECT_ACTIVE

start=$(date +%s)
# The x86 CI clippy never sees `#[cfg(target_arch = "aarch64")]` code: lint it here
# (QKERNELS_AARCH64_CLIPPY=0 skips this step).
if [ "${QKERNELS_AARCH64_CLIPPY:-1}" != 0 ]; then
    echo "== cargo clippy --target $TARGET --workspace --all-targets -- -D warnings"
    cargo clippy --target "$TARGET" --workspace --all-targets -- -D warnings
    echo "== clippy took $(( $(date +%s) - start ))s"
fi
echo "== build: cargo test --target $TARGET --no-run $*"
cargo test --target "$TARGET" --no-run "$@"
cargo test --target "$TARGET" --no-run -p qkernels-kernels --test isa_detection
echo "== build took $(( $(date +%s) - start ))s"

failures=()
run() { # run <cpu> <label> <env...> -- <cargo test args...>
    local cpu=$1 label=$2
    shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local t0
    t0=$(date +%s)
    echo "== [$cpu] $label: ${envs[*]} cargo test $*"
    if env "${envs[@]}" \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $cpu -L $SYSROOT" \
        cargo test --target "$TARGET" "$@"; then
        echo "== [$cpu] $label: ok ($(( $(date +%s) - t0 ))s)"
    else
        echo "== [$cpu] $label: FAILED" >&2
        failures+=("[$cpu] $label")
    fi
}

cpus=" ${QKERNELS_AARCH64_CPUS:-max neoverse-n1 cortex-a72} "
for model in "max:scalar,neon,neondot,neoni8mm" \
             "neoverse-n1:scalar,neon,neondot" \
             "cortex-a72:scalar,neon"; do
    cpu=${model%%:*}
    isas=${model#*:}
    [[ "$cpus" == *" $cpu "* ]] || continue
    best=${isas##*,}
    run "$cpu" "tests" QKERNELS_EXPECT_ISAS="$isas" QKERNELS_REQUIRE_ISA="$isas" \
        QKERNELS_EXPECT_ACTIVE="$best" -- --no-fail-fast "$@"
    # Forcing: every supported ISA is honoured; an unsupported one falls back to the best.
    for forced in scalar neon neondot neoni8mm; do
        if [[ ",$isas," == *",$forced,"* ]]; then want=$forced; else want=$best; fi
        run "$cpu" "QKERNELS_ISA=$forced" QKERNELS_ISA="$forced" QKERNELS_EXPECT_ISAS="$isas" \
            QKERNELS_EXPECT_ACTIVE="$want" -- -p qkernels-kernels --test isa_detection -q
    done
done

echo "== total $(( $(date +%s) - start ))s"
if [ "${#failures[@]}" -ne 0 ]; then
    printf 'FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "== aarch64 tests passed under qemu ($cpus)"
