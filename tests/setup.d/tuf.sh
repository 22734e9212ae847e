#!/usr/bin/env bash
# Agent self-update (TUF, tough 0.24): its crypto is aws-lc-rs, whose
# aws-lc-sys builds AWS-LC with the C compiler through the cc crate (no
# cmake needed on x86_64/aarch64 Linux). Any C toolchain Rust links with
# suffices; install one if missing.
command -v cc >/dev/null 2>&1 || apt_install build-essential
