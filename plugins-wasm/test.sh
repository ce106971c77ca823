#!/usr/bin/env bash
# Runs the plugins' unit tests natively. The workspace's default target is
# wasm32-wasip2, where tests cannot run, so the host target is named here.
set -euo pipefail

cd "$(dirname "$0")"
host=$(rustc -vV | sed -n 's/^host: //p')
cargo test --target "$host" "$@"
