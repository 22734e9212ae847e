#!/usr/bin/env bash
# Proves the sandbox crate's Windows and macOS layers compile (and pass clippy).
# wasmtime compiles C helpers in its build script, so the cross check runs without the
# `wasm` feature; the OS layers themselves have no C build dependency.
set -euo pipefail
cd "$(dirname "$0")/../.."
for t in x86_64-pc-windows-msvc aarch64-apple-darwin; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
  cargo clippy -p askee-sandbox --no-default-features --target "$t" -- -D warnings
done
echo "cross check: 2 passed, 0 failed"
