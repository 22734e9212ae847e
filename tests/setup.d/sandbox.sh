#!/usr/bin/env bash
# askee-sandbox test needs: gcc with static glibc (hostile native programs),
# bubblewrap (benchmark reference), rustup targets for the wasm benchmark kernel and
# the Windows/macOS cross checks. Idempotent.
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v bwrap >/dev/null || need+=(bubblewrap)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
if command -v rustup >/dev/null; then
  installed=$(rustup target list --installed)
  for t in wasm32-wasip1 x86_64-pc-windows-msvc aarch64-apple-darwin; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
fi
