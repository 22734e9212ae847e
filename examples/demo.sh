#!/usr/bin/env bash
# The one-command demo: builds the example tasks (wasm32-wasip1) and the
# release binaries, then runs `askee-server demo` from the repository root.
# Extra arguments go to the demo (e.g. --exit-when-done, --dir DIR).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
examples/tasks/build.sh
cargo build --release -p askee-server -p askee-agent
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/askee-server" demo "$@"
