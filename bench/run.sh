#!/usr/bin/env bash
# Builds the release runtime and the benchmark, then runs the benchmark:
# cniwasm, the reference CNI plugins and a native floor on the seed chain,
# each in a throwaway host namespace. Every namespace this run creates starts
# with one prefix, and the trap removes them and the work directory, also
# when the run fails or is interrupted. Extra arguments go to
# `cniwasm-bench run` (see `target/release/cniwasm-bench run --help`).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix="cwb$$"
work=$(mktemp -d /tmp/cniwasm-bench.XXXXXX)

cleanup() {
  for netns in $(ip netns list | awk '{print $1}' | grep "^$prefix-" || true); do
    ip netns delete "$netns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [[ $(id -u) -ne 0 ]]; then
  echo "bench/run.sh needs root: it creates network namespaces" >&2
  exit 1
fi

if [[ -z "${CNIWASM_BENCH_NO_BUILD:-}" ]]; then
  (cd "$repo" && cargo build --release -p cniwasm-runtime -p cniwasm-bench)
fi

echo "# cniwasm benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r), $(iptables --version)"
"$repo/target/release/cniwasm-bench" run --repo "$repo" --work-dir "$work" --prefix "$prefix" "$@"
