#!/usr/bin/env bash
# The C API, end to end with the system C compiler:
# * builds libqkernels.a / libqkernels.so; checks that the header compiles as C99 and C++ and
#   that every function it declares is exported by the shared library;
# * compiles and runs the complete example of docs/c-api.md (its first ```c block; it exits
#   non-zero if a call misbehaves), linked statically and dynamically;
# * compiles examples/c/main.c against include/qkernels.h + libqkernels.a and runs it on the
#   digits model on every ISA this CPU supports, checking every output line against the values
#   computed independently by examples/c/expected.rs (qkernels-ref for the ops, PyTorch's
#   stored logits for the model). Lines starting with '#' are commentary, not compared;
# * runs tests/c_api.rs once per supported ISA (forced with QKERNELS_ISA).
#
# Uses the `test` profile (optimised, debug assertions on), whose dependencies `cargo test`
# has already built; QKERNELS_C_PROFILE=release switches to the release profile.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${QKERNELS_C_PROFILE:-test}"
case "$profile" in
  release) outdir=release ;;
  test) outdir=debug ;;
  *) echo "QKERNELS_C_PROFILE must be test or release" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-target}"
lib="$target_dir/$outdir/libqkernels.a"
cc="${CC:-cc}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "-- cargo build --profile $profile --lib"
cargo build --profile "$profile" --lib
so="$target_dir/$outdir/libqkernels.so"

echo "-- $cc: examples/c/main.c + include/qkernels.h + $lib"
"$cc" -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude examples/c/main.c "$lib" \
  -lpthread -ldl -lm -o "$work/c-example"
# The header is also valid C99 and C++.
"$cc" -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c include/qkernels.h
if command -v c++ >/dev/null 2>&1; then
  c++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only -x c++ include/qkernels.h
fi

echo "-- every function of the header is exported by $so"
grep -oE '\bqk_[a-z0-9_]+\(' include/qkernels.h | tr -d '(' | sort -u > "$work/declared.txt"
nm -D --defined-only "$so" | awk '$2 == "T" && $3 ~ /^qk_/ {print $3}' | sort -u > "$work/exported.txt"
if ! diff -u "$work/declared.txt" "$work/exported.txt"; then
  echo "header declarations and exported symbols differ (diff above)" >&2
  exit 1
fi
echo "$(wc -l < "$work/declared.txt") functions declared and exported"

echo "-- docs/c-api.md: the complete example, linked statically and dynamically"
awk '/^```c$/ {n++; if (n == 1) {on = 1; next}} /^```$/ {on = 0} on' docs/c-api.md > "$work/doc_example.c"
"$cc" -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude "$work/doc_example.c" "$lib" \
  -lpthread -ldl -lm -o "$work/doc-example"
"$work/doc-example"
"$cc" -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude "$work/doc_example.c" \
  -L"$target_dir/$outdir" -lqkernels -Wl,-rpath,"$(cd "$target_dir/$outdir" && pwd)" \
  -o "$work/doc-example-shared"
"$work/doc-example-shared" > /dev/null

# examples/c/main.c on every ISA this CPU supports (QKERNELS_ISA forces one; an unsupported
# token falls back to the best ISA, which the "isa" line of the output reveals: skipped).
checked=0
for isa in scalar avx2 avx512vnni neon neondot neoni8mm; do
  mkdir -p "$work/$isa"
  if ! QKERNELS_ISA="$isa" cargo run --quiet --profile "$profile" --example c_example_expected \
    -- "$work/$isa" 2>"$work/$isa/generator.err"; then
    cat "$work/$isa/generator.err" >&2
    exit 1
  fi
  if ! head -1 "$work/$isa/expected.txt" | grep -q "isa $isa\$"; then
    echo "-- $isa: not supported here, skipped"
    continue
  fi
  echo "-- examples/c/main.c with QKERNELS_ISA=$isa"
  QKERNELS_ISA="$isa" "$work/c-example" models/digits_resnet18.safetensors \
    "$work/$isa/input.f32" > "$work/$isa/out.txt"
  grep -v '^#' "$work/$isa/out.txt" > "$work/$isa/checked.txt"
  if ! diff -u "$work/$isa/expected.txt" "$work/$isa/checked.txt"; then
    echo "C example output on $isa differs from the expected values (diff above)" >&2
    exit 1
  fi
  # The Rust-side C ABI suite (golden cases, bad arguments, threads) on this ISA too: the plain
  # `cargo test` run covers only the best one.
  echo "-- tests/c_api.rs with QKERNELS_ISA=$isa"
  QKERNELS_ISA="$isa" cargo test --quiet --test c_api
  checked=$((checked + 1))
  last="$isa"
done
if [ "$checked" -eq 0 ]; then
  echo "C example: no ISA checked" >&2
  exit 1
fi
cat "$work/$last/out.txt"
echo "C example: output matches the Rust reference and PyTorch on $checked ISA(s)" \
  "($(wc -l < "$work/$last/checked.txt") lines each)"
