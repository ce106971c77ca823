#!/bin/sh
# Installs cniwasm on a node from the image built by deploy/Dockerfile. The
# DaemonSet in deploy/cniwasm-daemonset.yaml runs it with the node's
# directories mounted under HOST_ROOT.
#
# It copies the binary to <bin dir>/cniwasm, links each plugin type to it,
# copies the .wasm plugins, and copies the conflist and, if present, the
# policy. An existing file of a plugin type's name that is not a link to
# cniwasm (a native plugin) is kept unless FORCE=1.
#
# Environment:
#   HOST_ROOT        where the node's root is mounted [default: /host]
#   CNI_BIN_DIR      CNI bin directory on the node [default: /opt/cni/bin]
#   PLUGIN_DIR       .wasm directory on the node [default: /opt/cniwasm/plugins]
#   CNI_CONF_DIR     conflist directory on the node [default: /etc/cni/net.d]
#   POLICY_FILE      policy path on the node [default: /etc/cniwasm/policy.json]
#   CONFIG_SOURCE    directory with the conflist to install [default: /config]
#   POLICY_SOURCE    directory with an optional policy.json [default: /policy]
#   IMAGE_PLUGINS    .wasm files in the image [default: /opt/cniwasm/plugins]
#   IMAGE_BINARY     cniwasm in the image [default: /usr/local/bin/cniwasm]
#   FORCE            1 replaces native plugins of the same names
set -eu

host_root=${HOST_ROOT:-/host}
bin_dir=$host_root${CNI_BIN_DIR:-/opt/cni/bin}
plugin_dir=$host_root${PLUGIN_DIR:-/opt/cniwasm/plugins}
conf_dir=$host_root${CNI_CONF_DIR:-/etc/cni/net.d}
policy_file=$host_root${POLICY_FILE:-/etc/cniwasm/policy.json}
config_source=${CONFIG_SOURCE:-/config}
policy_source=${POLICY_SOURCE:-/policy}
image_plugins=${IMAGE_PLUGINS:-/opt/cniwasm/plugins}
image_binary=${IMAGE_BINARY:-/usr/local/bin/cniwasm}
force=${FORCE:-0}

# Check the policy and every link target before changing anything, so a
# rejected install leaves the node as it was. An invalid policy would make
# every plugin call fail with CNI error code 107.
if [ -f "$policy_source/policy.json" ]; then
    for wasm in "$image_plugins"/*.wasm; do
        "$image_binary" inspect "$wasm" --policy "$policy_source/policy.json" >/dev/null
    done
fi
for wasm in "$image_plugins"/*.wasm; do
    plugin_type=$(basename "$wasm" .wasm)
    target=$bin_dir/$plugin_type
    if [ -e "$target" ] || [ -L "$target" ]; then
        if [ "$(readlink "$target" || true)" != cniwasm ] && [ "$force" != 1 ]; then
            echo "install: $target exists and is not a link to cniwasm; set FORCE=1 to replace it" >&2
            exit 1
        fi
    fi
done

mkdir -p "$bin_dir" "$plugin_dir" "$conf_dir"

# Copy, then rename: a runtime that starts a plugin during the install runs
# either the old file or the new one, never a partial copy.
cp "$image_binary" "$bin_dir/.cniwasm.new"
chmod 0755 "$bin_dir/.cniwasm.new"
mv -f "$bin_dir/.cniwasm.new" "$bin_dir/cniwasm"

for wasm in "$image_plugins"/*.wasm; do
    plugin_type=$(basename "$wasm" .wasm)
    cp "$wasm" "$plugin_dir/.$plugin_type.wasm.new"
    mv -f "$plugin_dir/.$plugin_type.wasm.new" "$plugin_dir/$plugin_type.wasm"
    # A relative link resolves the same on the node and in this container.
    ln -sfn cniwasm "$bin_dir/.$plugin_type.new"
    mv -fT "$bin_dir/.$plugin_type.new" "$bin_dir/$plugin_type"
    echo "install: $plugin_type: $plugin_dir/$plugin_type.wasm, link $bin_dir/$plugin_type -> cniwasm"
done

for conflist in "$config_source"/*.conflist; do
    [ -e "$conflist" ] || continue
    name=$(basename "$conflist")
    cp "$conflist" "$conf_dir/.$name.new"
    mv -f "$conf_dir/.$name.new" "$conf_dir/$name"
    echo "install: network configuration $conf_dir/$name"
done

if [ -f "$policy_source/policy.json" ]; then
    mkdir -p "$(dirname "$policy_file")"
    cp "$policy_source/policy.json" "$policy_file.new"
    mv -f "$policy_file.new" "$policy_file"
    echo "install: policy $policy_file"
fi
