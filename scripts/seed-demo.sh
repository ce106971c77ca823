#!/usr/bin/env bash
# Runs the seed scenario end to end: bridge + host-local + portmap on
# 10.244.10.0/24 with host port 9090 mapped to container port 80.
#
# Everything happens in two namespaces this script creates and removes: a
# throwaway "host" namespace (bridge, NAT rules, sysctls) and a "container"
# namespace. State and cache go to a temporary directory, so the machine's
# own network and /var/lib/cni stay untouched.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cniwasm="$repo/target/debug/cniwasm"
host="cwdemo-host-$$"
container="cwdemo-ctr-$$"
work=$(mktemp -d)
server_pid=""

cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
  ip netns delete "$container" 2>/dev/null || true
  ip netns delete "$host" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

ip netns add "$host"
ip netns add "$container"
ip -n "$host" link set lo up
ip -n "$container" link set lo up

export NETCONFPATH="$repo/examples"
export CNI_PATH="$repo/plugins-wasm/out"
export CAP_ARGS
CAP_ARGS=$(cat "$repo/examples/mynet-cap-args.json")
export CNIWASM_CACHE_DIR="$work/cache"
export CNIWASM_IPAM_DATA_DIR="$work/ipam"
export CNIWASM_COMPILE_CACHE="$repo/target/cniwasm-compile-cache"
netns="/var/run/netns/$container"

step "cniwasm add mynet $netns   (CAP_ARGS=$CAP_ARGS)"
ip netns exec "$host" "$cniwasm" add mynet "$netns"

step "container: ip addr show eth0; ip route"
ip -n "$container" -br addr show eth0
ip -n "$container" route

step "host: NAT rules (iptables-save -t nat)"
ip netns exec "$host" iptables-save -t nat | grep -E '^(-A|:CNI)'

step "HTTP server on port 80 in the container; curl 127.0.0.1:9090 on the host"
mkdir -p "$work/www"
echo "hello from the container" > "$work/www/index.html"
ip netns exec "$container" busybox httpd -f -p 80 -h "$work/www" &
server_pid=$!
for _ in $(seq 50); do
  ip netns exec "$container" ss -Hltn | grep -q ':80 ' && break
  sleep 0.1
done
ip netns exec "$host" curl --silent --show-error --max-time 5 http://127.0.0.1:9090/

step "cniwasm del mynet $netns"
ip netns exec "$host" "$cniwasm" del mynet "$netns"
echo "links left on the host: $(ip -n "$host" -br link | awk '{print $1}' | tr '\n' ' ')"
echo "reservations left: $(ls "$work/ipam/mynet" | grep -v -e lock -e last_reserved || true)"
echo "per-container NAT chains left: $(ip netns exec "$host" iptables-save -t nat | grep -c -e '^:CNI-DN-' -e '^:CNI-[0-9a-f]' || true)"
step "done; the namespaces are removed on exit"
