#!/usr/bin/env bash
# Builds the static-route example plugin as a WebAssembly component
# (wasm32-wasip2, release profile) and copies it to out/static-route.wasm.
# Cargo names the artifact static_route.wasm, because a library name cannot
# contain '-'.
set -euo pipefail

cd "$(dirname "$0")"
cargo build --release

mkdir -p out
cp target/wasm32-wasip2/release/static_route.wasm out/static-route.wasm
ls -l out/static-route.wasm
