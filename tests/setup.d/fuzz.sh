# cargo fuzz needs a nightly toolchain and the cargo-fuzz subcommand.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
