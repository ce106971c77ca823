#!/usr/bin/env bash
# Builds the plugins as WebAssembly components (wasm32-wasip2, release
# profile) and copies each one to out/<CNI type>.wasm. Cargo names the
# host-local artifact host_local.wasm and the static one static_ipam.wasm, so
# the copy also puts a file named after the type next to the cargo output.
#
# The test-only plugins under misbehaving/ go to out-test/<name>.wasm, never
# to out/, so a CNI_PATH of out/ cannot pick one up by accident. The example
# third-party plugin in ../examples/static-route-plugin is a workspace of its
# own, built by its own script.
set -euo pipefail

cd "$(dirname "$0")"
cargo build --release

release=target/wasm32-wasip2/release
mkdir -p out
# Each entry is <cargo artifact>:<CNI type>. The static package is named
# static-ipam because `static` is a Rust keyword.
for entry in bridge:bridge host_local:host-local portmap:portmap loopback:loopback \
    static_ipam:static ptp:ptp tuning:tuning firewall:firewall; do
    crate=${entry%%:*}
    plugin_type=${entry#*:}
    cp "$release/$crate.wasm" "out/$plugin_type.wasm"
    if [ "$plugin_type" != "$crate" ]; then
        cp "$release/$crate.wasm" "$release/$plugin_type.wasm"
    fi
done
ls -l out/*.wasm

# Package misbehaving-<name> builds misbehaving_<name>.wasm.
mkdir -p out-test
for dir in misbehaving/*/; do
    name=$(basename "$dir")
    cp "$release/misbehaving_${name//-/_}.wasm" "out-test/$name.wasm"
done
ls -l out-test/*.wasm

../examples/static-route-plugin/build.sh
