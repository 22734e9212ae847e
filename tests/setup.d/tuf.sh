#!/usr/bin/env bash
# Agent self-update (TUF, tough 0.24): its crypto is aws-lc-rs, whose
# aws-lc-sys builds AWS-LC with the C compiler through the cc crate (no
# cmake needed on x86_64/aarch64 Linux). Any C toolchain Rust links with
# suffices; install one if missing. Idempotent.
set -euo pipefail
if ! command -v cc >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends build-essential
fi
