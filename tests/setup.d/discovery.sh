#!/usr/bin/env bash
# Discovery: a real authoritative DNS server for the crawler's tests and
# benchmark (NSD), and dnsperf for the benchmark's reference ceiling.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v nsd >/dev/null && [ ! -x /usr/sbin/nsd ] || ! command -v dnsperf >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq nsd dnsperf
    # the package's own service is not needed: tests start their own nsd
    systemctl disable --now nsd >/dev/null 2>&1 || true
fi
