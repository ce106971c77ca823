#!/usr/bin/env bash
# Installs what building and testing cniwasm needs: Debian packages for the
# kernel tools and the reference CNI plugins, and the wasm32-wasip2 target.
set -euo pipefail

# busybox-static rather than busybox: the two conflict, and podman's tests need
# the static one to build an image; both provide /bin/busybox. podman runs its
# containers with runc (crun fails on the hybrid cgroup layout of test machines).
# nftables provides the nft program, which the bridge's macspoofchk runs, the
# host's and the reference plugin's alike. qemu-system-x86, linux-image-amd64
# and cpio let scripts/vm-run.sh run tests under Debian's kernel, for kernel
# features the machine's own kernel may lack (bridge VLAN filtering).
packages=(iptables iproute2 conntrack containernetworking-plugins curl busybox-static util-linux procps podman runc nftables
  qemu-system-x86 linux-image-amd64 cpio)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
