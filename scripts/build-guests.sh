#!/usr/bin/env bash
# Builds the example pipelines (and with --all the test fixtures too) for
# wasm32-wasip2 into target/guests/wasm32-wasip2/release/*.wasm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
packages=()
dirs=(examples/*/)
[ "${1:-}" = "--all" ] && dirs+=(tests/fixtures/*/)
for dir in "${dirs[@]}"; do
    # Crates without a cdylib are libraries shared by guests, not components.
    grep -q cdylib "$dir/Cargo.toml" || continue
    packages+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)")
done
# As tests/build.rs builds them: without the test command's clippy-driver.
env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo build --release --target wasm32-wasip2 --target-dir target/guests "${packages[@]}"
