#!/usr/bin/env bash
# Full disk: a vault on a small tmpfs whose space is then used up. Writes must fail closed with
# 503 (never a 500, never a crash, never an answer without its audit entry), and once space is
# freed the vault must work again with an audit log that verifies, with no entry lost or
# duplicated. Needs root (mount). Fails loudly when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYVAULT_BIN="${KEYVAULT_BIN:-target/debug/keyvault}"
[ -x "$KEYVAULT_BIN" ] || { echo "FAIL: $KEYVAULT_BIN is missing: run cargo build first" >&2; exit 1; }
MNT=$(mktemp -d)
mount -t tmpfs -o size=24m tmpfs "$MNT" || { echo "FAIL: cannot mount a tmpfs (this check needs root)" >&2; exit 1; }
LOG=$(mktemp)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; umount "$MNT" 2>/dev/null; rmdir "$MNT"; rm -f "$LOG"; }
trap cleanup EXIT
printf 'full disk passphrase\n' > "$MNT/../kv-full-disk-pass"
PASS="$MNT/../kv-full-disk-pass"
INIT=$("$KEYVAULT_BIN" --json init --insecure-kdf --passphrase-file "$PASS" --data-dir "$MNT/vault")
ROOT=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["root_token"])' "$INIT")
PUBKEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["public_key"])' "$INIT")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$KEYVAULT_BIN" serve --data-dir "$MNT/vault" --listen "127.0.0.1:$PORT" --unseal-passphrase-file "$PASS" 2>"$LOG" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening" "$LOG" && break; sleep 0.1; done
python3 - "$PORT" "$ROOT" "$MNT" <<'PY'
import http.client, json, os, sys
port, root, mnt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def call(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"Authorization": "Bearer " + root, "Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")
status, key = call("POST", "/v1/keys", {"owner": "disk", "credits": 100000})
assert status == 201, key
# Fill the disk, leaving a little room, then keep writing until the vault refuses.
filler = os.path.join(mnt, "filler")
with open(filler, "wb") as f:
    try:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    except OSError:
        pass
os.truncate(filler, max(0, os.path.getsize(filler) - 256 * 1024))
acked, refused = 0, 0
for i in range(20000):
    status, body = call("POST", "/v1/keys/verify", {"key": key["key"]})
    assert status in (200, 503), (status, body)
    if status == 200:
        assert body["code"] == "VALID", body
        acked += 1
    else:
        assert body["error"]["code"] == "audit_unavailable", body
        refused += 1
        if refused >= 20:
            break
assert refused >= 20, f"the disk never filled ({acked} verifies acknowledged)"
print(f"full disk: {acked} verifies acknowledged, then {refused} refused with 503 audit_unavailable")
status, health = call("GET", "/v1/sys/health")
os.remove(filler)
for i in range(50):
    status, body = call("POST", "/v1/keys/verify", {"key": key["key"]})
    assert status == 200 and body["code"] == "VALID", (status, body)
status, info = call("GET", "/v1/keys/" + key["key_id"])
assert info["credits"] == 100000 - acked - 50, (info["credits"], acked)
print(f"recovered: credits {info['credits']} = 100000 - {acked} - 50, so no refused verify spent one")
PY
curl -sf "http://127.0.0.1:$PORT/v1/audit/export" -H "authorization: Bearer $ROOT" -o "$MNT/../kv-full-disk-export.jsonl"
"$KEYVAULT_BIN" audit verify "$MNT/../kv-full-disk-export.jsonl" --public-key "$PUBKEY"
rm -f "$MNT/../kv-full-disk-export.jsonl" "$PASS"
if grep -q "panicked" "$LOG"; then echo "FAIL: the server panicked:" >&2; cat "$LOG" >&2; exit 1; fi
echo "full disk: fails closed and recovers"
