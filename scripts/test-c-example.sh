#!/usr/bin/env bash
# Builds the static library, compiles examples/c/main.c with the system C compiler against
# include/qkernels.h + libqkernels.a, runs it on the digits model and checks every output line
# against the values computed independently by examples/c/expected.rs (qkernels-ref for the
# ops, PyTorch's stored logits for the model). Lines starting with '#' are not compared.
# Also compiles and runs the complete example of docs/c-api.md (its first ```c block; it
# exits non-zero if a call misbehaves).
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
echo "-- expected output (examples/c/expected.rs)"
cargo run --quiet --profile "$profile" --example c_example_expected -- "$work"

echo "-- $cc: examples/c/main.c + include/qkernels.h + $lib"
"$cc" -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude examples/c/main.c "$lib" \
  -lpthread -ldl -lm -o "$work/c-example"
# The header is also valid C99 and C++.
"$cc" -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c include/qkernels.h
if command -v c++ >/dev/null 2>&1; then
  c++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only -x c++ include/qkernels.h
fi

echo "-- docs/c-api.md: the complete example"
awk '/^```c$/ {n++; if (n == 1) {on = 1; next}} /^```$/ {on = 0} on' docs/c-api.md > "$work/doc_example.c"
"$cc" -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude "$work/doc_example.c" "$lib" \
  -lpthread -ldl -lm -o "$work/doc-example"
"$work/doc-example"

echo "-- examples/c/main.c: run"
"$work/c-example" models/digits_resnet18.safetensors "$work/input.f32" | tee "$work/out.txt"
grep -v '^#' "$work/out.txt" > "$work/checked.txt"
if ! diff -u "$work/expected.txt" "$work/checked.txt"; then
  echo "C example output differs from the expected values (diff above)" >&2
  exit 1
fi
echo "C example: output matches the Rust reference and PyTorch ($(wc -l < "$work/checked.txt") lines)"
