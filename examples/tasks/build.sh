#!/usr/bin/env bash
# Builds the example tasks for wasm32-wasip1 (release, small) and copies them
# to examples/tasks/wasm/{pi,wordfreq,sgd}.wasm, the place `askee-server demo`
# looks by default. Needs the target: `rustup target add wasm32-wasip1`
# (tests/setup.d/examples.sh adds it). EXAMPLES_TARGET_DIR and EXAMPLES_OUT_DIR
# override the cargo target directory and where the .wasm files go.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="${EXAMPLES_TARGET_DIR:-$here/target}"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1
fi
cargo build --quiet --release --target wasm32-wasip1 \
  --manifest-path "$here/Cargo.toml" --target-dir "$target"
out="${EXAMPLES_OUT_DIR:-$here/wasm}"
mkdir -p "$out"
for bin in pi wordfreq sgd; do
  cp "$target/wasm32-wasip1/release/$bin.wasm" "$out/$bin.wasm"
done
ls -l "$out"/*.wasm >&2
