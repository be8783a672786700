#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target for N seconds each (default 30), single process,
# under AddressSanitizer (cargo-fuzz's default), starting from the committed seed corpus.
#
#   scripts/fuzz.sh [seconds-per-target] [target ...]
#
# New corpus entries go to $QKERNELS_FUZZ_WORK/<target> (default target/fuzz-work/), never into
# the committed fuzz/corpus/. A crash leaves its input in fuzz/artifacts/<target>/ and fails
# the script. Installs cargo-fuzz (from crates.io, ~3 min on 2 busy cores) only if missing.
#
# CI without the fuzz toolchain can run the same target bodies on stable instead, as a
# fixed-seed corpus replay (no libFuzzer):
#   cargo test --manifest-path fuzz/Cargo.toml --no-default-features --target-dir target
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
shift || true

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

work=${QKERNELS_FUZZ_WORK:-target/fuzz-work}
echo "== building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build

for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "fuzz/corpus/$t"
  echo "== fuzz $t for ${secs}s"
  log="$work/$t.log"
  maxlen=4096
  [ "$t" = model_loader ] && maxlen=32768  # the seed is a 13 KB safetensors header
  if ! cargo +nightly fuzz run "$t" "$work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -max_len="$maxlen" -rss_limit_mb=2048 -timeout=20 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "!! fuzz target $t failed (input in fuzz/artifacts/$t/, log $log)" >&2
    exit 1
  fi
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)' "$log" || true
done
echo "== fuzzing passed: ${targets[*]} (${secs}s each)"
