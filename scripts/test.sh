#!/usr/bin/env bash
# The whole test suite, as CI runs it: every x86 test natively (every supported ISA), then the
# aarch64 paths under qemu (when scripts/test-aarch64.sh exists), then the C example.
# Works on a fresh Debian machine as root: missing tools are installed by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== x86-64: cargo test --workspace"
cargo test --workspace --all-targets

for extra in scripts/test-aarch64.sh scripts/test-c-example.sh; do
  if [ -f "$extra" ]; then
    echo "== $extra"
    bash "$extra"
  fi
done
echo "== all test stages passed"
