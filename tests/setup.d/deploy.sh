#!/usr/bin/env bash
# Deployment tests (tests/tests/installer.rs): systemd-analyze verifies the
# agent and server units. Debian ships it in the systemd package; the tests
# never start systemd or touch the host's units. Idempotent.
set -euo pipefail
if ! command -v systemd-analyze >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends systemd
fi
[ -d /usr/lib/systemd/system ] || [ -d /lib/systemd/system ]
