#!/usr/bin/env bash
# The example tasks (examples/tasks) and the demo test build for wasm32-wasip1.
set -euo pipefail
if command -v rustup >/dev/null; then
  rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
fi
