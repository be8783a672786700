#!/usr/bin/env bash
# Unsafe-code hygiene checks (issue #8), both on nightly:
#
#  * Miri — the scalar reference, the scalar microkernels with their packers, the GEMM driver
#    (blocking, rayon split, epilogue), im2col / grouped / depthwise / 1×1 conv and the ops on
#    Isa::Scalar (tests/miri_scalar.rs), plus the ref and kernels unit tests. SIMD code is not
#    run under Miri: it sits behind runtime feature detection, which Miri answers from the
#    compile-time target features (baseline x86-64: no AVX2), so only Isa::Scalar is
#    "supported" there — and the AVX-512 intrinsics are not all implemented by Miri anyway.
#  * AddressSanitizer — every kernels-crate test (the GEMM battery over every kernel of every
#    supported ISA, deep-K, detection) and the root crate's GEMM / conv / ops / golden /
#    determinism / C-ABI tests, natively, on every ISA this CPU has (AVX2, AVX-512 VNNI here).
#    `--target <host>` keeps build scripts and proc macros uninstrumented; a separate target
#    dir keeps the instrumented build apart from the normal one.
#
#   scripts/sanitizers.sh [miri|asan|asan-kernels|all]      (default all)
#
# `asan-kernels` instruments only the kernels crate (every SIMD microkernel, packer, requant,
# depthwise and element-wise kernel, through the battery and the crate's tests): a small
# instrumented build, which is what CI runs; `asan` adds the root crate's tests, whose cold
# instrumented build of every dependency takes ~15 minutes on 2 cores.
#
# Installs the nightly `miri` and `rust-src` components only if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
host=$(rustc +nightly -vV | sed -n 's/^host: //p')

step() {
  echo "== $*"
  local t0=$SECONDS
  "$@"
  echo "   ($((SECONDS - t0)) s)"
}

if [ "$what" = miri ] || [ "$what" = all ]; then
  if ! cargo +nightly miri --version >/dev/null 2>&1 ||
    ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    rustup +nightly component add miri rust-src
  fi
  # Miri's own environment: no host variables leak in (QKERNELS_ISA etc. are unset there).
  step cargo +nightly miri test -p qkernels-ref
  step cargo +nightly miri test -p qkernels-kernels --lib
  # Raw-pointer microkernels, packers and ops: default (Stacked Borrows) aliasing model.
  step cargo +nightly miri test -p qkernels --test miri_scalar -- \
    scalar_microkernels_through_their_packers scalar_ops
  # The driver and conv run on rayon, whose crossbeam-epoch violates Stacked Borrows inside
  # crossbeam itself (known upstream; not our code), so these run under Tree Borrows; rayon's
  # global pool threads outlive main, hence -Zmiri-ignore-leaks.
  MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-tree-borrows -Zmiri-ignore-leaks" \
    step cargo +nightly miri test -p qkernels --test miri_scalar -- scalar_gemm_driver scalar_conv_paths
fi

if [ "$what" = asan ] || [ "$what" = asan-kernels ] || [ "$what" = all ]; then
  export RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
  asan=(cargo +nightly test --target "$host" --target-dir target/asan)
  step "${asan[@]}" -p qkernels-kernels --tests
  [ "$what" = asan-kernels ] || step "${asan[@]}" -p qkernels --test gemm_engine --test conv_props --test ops_props \
    --test golden_api --test determinism --test bad_input --test c_api
fi
echo "== sanitizers passed ($what)"
