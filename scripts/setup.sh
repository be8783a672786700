#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent; quiet when all is there).
set -euo pipefail
need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
if [ -f scripts/test-aarch64.sh ]; then
  command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
  command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ -f scripts/test-aarch64.sh ] && ! rustup target list --installed | grep -q aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
