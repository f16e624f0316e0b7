#!/usr/bin/env bash
# One-command benchmark: the in-process load benchmark, then HTTP verify against
# GET /v1/sys/health on the same server (wrk), then PostgreSQL doing the same job (pgbench),
# all in one run on this machine. Installs wrk from Debian if missing. Prints a table.
# Usage: bash scripts/bench.sh   (LOAD_KEYS=1000000 for the 1 M-key in-process run;
# SKIP_INPROCESS=1 or SKIP_PG=1 to leave a part out)
set -euo pipefail
cd "$(dirname "$0")/.."
export TMPDIR="${TMPDIR:-/var/tmp}"   # the real disk, never tmpfs
SECONDS_PER_POINT="${SECONDS_PER_POINT:-10}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

if [ -z "${SKIP_INPROCESS:-}" ]; then
    echo "## in-process"
    cargo bench -q -p vault-core --bench load 2>/dev/null | grep -E '^\||^#'
    echo "## memory under a flood of unknown ids"
    cargo bench -q -p vault-core --bench unknown_ids 2>/dev/null
fi

echo "## HTTP (wrk, 2 threads, 64 connections, ${SECONDS_PER_POINT}s each)"
cargo build -q --release
cargo build -q --release -p vault-server --example open_loop
KEYVAULT_BIN=target/release/keyvault
source scripts/dev-server.sh
export TOKEN="$ROOT_TOKEN" KEYS_FILE="$TMPDIR/keyvault-bench-keys.txt"
python3 - "$ADDR" "$TOKEN" "$KEYS_FILE" <<'PY'
import http.client, json, sys, urllib.parse
addr, token, out = sys.argv[1], sys.argv[2], sys.argv[3]
u = urllib.parse.urlparse(addr)
c = http.client.HTTPConnection(u.hostname, u.port)
with open(out, "w") as f:
    for i in range(1000):
        c.request("POST", "/v1/keys", json.dumps({"owner": f"customer-{i % 100}", "scopes": ["photos:read"]}),
                  {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        r = c.getresponse(); body = json.loads(r.read())
        assert r.status == 201, body
        f.write(body["key"] + "\n")
PY
health=$(wrk -t2 -c64 -d"${SECONDS_PER_POINT}s" --latency -s scripts/bench/health.lua "$ADDR" | tee /dev/stderr | awk '/Requests\/sec/ {print $2}')
verify=$(wrk -t2 -c64 -d"${SECONDS_PER_POINT}s" --latency -s scripts/bench/verify.lua "$ADDR" | tee /dev/stderr | awk '/Requests\/sec/ {print $2}')
echo "| HTTP GET /v1/sys/health, 64 connections | $health requests/s |"
echo "| HTTP POST /v1/keys/verify, 64 connections | $verify requests/s | $(python3 -c "print(f'{$verify/$health:.0%}')") of health |"
# Open loop (constant rate, latency from when each request was due): at 70 % of the health
# rate (the target's point), then at fixed lower rates. The generator (one thread per
# connection) shares the two cores and saturates near 11k requests/s by itself.
seventy=$(python3 -c "print(int(0.7 * $health))")
for rate in "$seventy" 5000 2000; do
    result=$(target/release/examples/open_loop "${ADDR#http://}" "$TOKEN" "$KEYS_FILE" "$rate" "$SECONDS_PER_POINT" 64)
    echo "| open loop, 64 connections | $result |"
done
kill $DEV_PID; wait $DEV_PID 2>/dev/null || true

[ -n "${SKIP_PG:-}" ] && exit 0
echo "## PostgreSQL peer (pgbench, synchronous commit)"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
id kvbench >/dev/null 2>&1 || useradd --system --no-create-home kvbench
PGDATA=$(mktemp -d "$TMPDIR/keyvault-pg.XXXXXX"); chown kvbench "$PGDATA"
as_pg() { runuser -u kvbench -- "$@"; }
as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -o "-k $PGDATA -p 54329 -c listen_addresses='' -c synchronous_commit=on -c fsync=on -c max_connections=100" -l "$PGDATA/log" -w start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1; rm -rf "$PGDATA"' EXIT
psql() { as_pg /usr/bin/psql -h "$PGDATA" -p 54329 -U postgres -q "$@"; }
psql -c "CREATE TABLE api_keys (digest bytea PRIMARY KEY, owner text NOT NULL, scopes text[] NOT NULL);
         INSERT INTO api_keys SELECT sha256(('key-' || i)::bytea), 'customer-' || (i % 100), ARRAY['photos:read'] FROM generate_series(1, 1000) i;
         CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), key_digest bytea, outcome text, client text);"
for c in 8 64; do
    tps=$(as_pg /usr/bin/pgbench -h "$PGDATA" -p 54329 -U postgres -n -c $c -j 2 -T "$SECONDS_PER_POINT" -f scripts/bench/pg-verify.sql postgres | awk '/^tps/ {print $3}')
    echo "| PostgreSQL select + audit insert, $c clients | $tps transactions/s |"
    [ "$c" = 64 ] && echo "| keyvault HTTP verify / PostgreSQL at 64 | $(python3 -c "print(f'{$verify/$tps:.1f}x')") |"
done
