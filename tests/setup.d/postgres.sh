#!/usr/bin/env bash
# PostgreSQL server binaries for the store conformance suite (askee-testkit's
# PgCluster runs its own throwaway clusters; the Debian service is not used).
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    # The package may start its own cluster; tests do not need it.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        for conf in /etc/postgresql/*/*; do
            [ -d "$conf" ] || continue
            pg_ctlcluster "$(basename "$(dirname "$conf")")" "$(basename "$conf")" stop || true
        done
    fi
fi
