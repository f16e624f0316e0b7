#!/usr/bin/env bash
# The cluster figures of DESIGN section 8 on this host: installs what the run needs (etcd,
# protoc, wrk) if missing, builds the release binary with cluster support, then runs
# scripts/bench/cluster.py, which starts 3 etcd members, 3 keyvault nodes and a single-node
# sled vault (all on the real disk under $TMPDIR, removed afterwards) and prints each figure
# beside its target: a node's verify rate against the single node's in the same run, revoke
# latency p50/p99 (no VALID after a revoke was answered), and the credit-spend rate on one hot
# key from three nodes (exactly C VALID). About 6 minutes on the 2-core machine once built.
# Environment: see scripts/bench/cluster.py (KEYS, ROUNDS, SECONDS, REVOKES, CREDITS, SPENDERS).
set -euo pipefail
cd "$(dirname "$0")/.."
export TMPDIR="${TMPDIR:-/var/tmp}"   # the real disk, never tmpfs
export CARGO_INCREMENTAL=0

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
for tool in etcd protoc wrk; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is still missing" >&2; exit 1; }
done

cargo build -q --release --locked -p keyvault --features etcd
exec python3 scripts/bench/cluster.py
