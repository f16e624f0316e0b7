#!/usr/bin/env bash
# One command for every figure of DESIGN section 8 but the cluster's (scripts/bench-cluster.sh,
# which needs etcd): installs what the run needs (wrk, PostgreSQL) if missing, builds the
# release binaries, then runs scripts/bench/run.py, which measures each figure beside its target
# and its same-run baseline (in process and over HTTP, with 1 k and 1 M keys, import, the
# console's pages, PostgreSQL doing the same job), prints the table and writes it into
# BENCHMARKS.md. Takes about 20 minutes on the 2-core machine and needs about 5 GB of free disk.
# Run it as root (PostgreSQL runs as a throwaway system user) on an otherwise idle machine.
# Environment: see scripts/bench/run.py (SECONDS_PER_POINT, LOAD_SECONDS, KEYS_LARGE, SKIP_PG,
# NO_WRITE).
set -euo pipefail
cd "$(dirname "$0")/.."
export TMPDIR="${TMPDIR:-/var/tmp}"   # the real disk, never tmpfs

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -n "${SKIP_PG:-}" ] || command -v pgbench >/dev/null || missing+=(postgresql postgresql-contrib)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build -q --release --locked -p keyvault
cargo build -q --release --locked -p vault-core --example bench_vault
cargo build -q --release --locked -p vault-server --example open_loop
cargo bench -q --locked -p vault-core --no-run --bench load --bench unknown_ids --bench audit_export \
    --bench import
cargo bench -q --locked -p vault-server --no-run --bench console_pages
exec python3 scripts/bench/run.py
