#!/usr/bin/env bash
# The whole test suite, as CI runs it: every x86 test natively (every supported ISA), then the
# aarch64 paths under qemu (when scripts/test-aarch64.sh exists), then the C example.
# Works on a fresh Debian machine as root: missing tools are installed by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== x86-64: cargo test --workspace"
cargo test --workspace --all-targets

echo "== aarch64 under qemu: kernel battery + ISA detection (3 CPU models)"
bash scripts/test-aarch64.sh
echo "== aarch64 under qemu: every golden op case on every ARM ISA (3 CPU models)"
QKERNELS_AARCH64_CLIPPY=0 bash scripts/test-aarch64.sh --test golden_api
echo "== aarch64 under qemu: the digits ResNet-18, 297 images, every ARM ISA (-cpu max)"
QKERNELS_AARCH64_CLIPPY=0 QKERNELS_AARCH64_CPUS=max bash scripts/test-aarch64.sh --test resnet18_golden -- digits
echo "== C example"
bash scripts/test-c-example.sh
echo "== fuzz targets, stable replay: seed corpus + fixed-seed inputs through every target body"
cargo test --manifest-path fuzz/Cargo.toml --no-default-features --target-dir target
echo "== all test stages passed"
