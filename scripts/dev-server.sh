# Sourced by the check scripts: starts `keyvault serve --dev` on a free loopback port and sets
# ADDR and ROOT_TOKEN; stops it on exit. Needs target/debug/keyvault (cargo build).
KEYVAULT_BIN="${KEYVAULT_BIN:-target/debug/keyvault}"
[ -x "$KEYVAULT_BIN" ] || { echo "FAIL: $KEYVAULT_BIN is missing: run cargo build first" >&2; exit 1; }
DEV_LOG=$(mktemp)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$KEYVAULT_BIN" serve --dev --listen "127.0.0.1:$PORT" >"$DEV_LOG" 2>&1 &
DEV_PID=$!
trap 'kill $DEV_PID 2>/dev/null; wait $DEV_PID 2>/dev/null; rm -f "$DEV_LOG"' EXIT
for _ in $(seq 1 100); do
    grep -q "Root token" "$DEV_LOG" && break
    kill -0 $DEV_PID 2>/dev/null || { echo "FAIL: the dev server exited:" >&2; cat "$DEV_LOG" >&2; exit 1; }
    sleep 0.1
done
ROOT_TOKEN=$(sed -n 's/^Root token (admin): *//p' "$DEV_LOG" | head -1)
[ -n "$ROOT_TOKEN" ] || { echo "FAIL: no root token in the dev server's output" >&2; cat "$DEV_LOG" >&2; exit 1; }
ADDR="http://127.0.0.1:$PORT"
export ADDR ROOT_TOKEN
