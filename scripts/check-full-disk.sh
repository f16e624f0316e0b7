#!/usr/bin/env bash
# Full disk: a vault on a small tmpfs whose space is then used up. The disk alarm must rise
# before the first refusal; writes must then fail closed with 503 (never a 500, never a crash,
# never an answer without its audit entry); and once an audit archive frees space the vault must
# work again, with the archive and the live log each verifying and no entry lost or duplicated.
# Needs root (mount). Fails loudly when it cannot run.
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
CONFIG="$MNT/../kv-full-disk.toml"
printf '[disk]\nhigh_water_percent = 90\ncheck_interval_seconds = 1\n' > "$CONFIG"
"$KEYVAULT_BIN" serve --config "$CONFIG" --data-dir "$MNT/vault" --listen "127.0.0.1:$PORT" --unseal-passphrase-file "$PASS" 2>"$LOG" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening" "$LOG" && break; sleep 0.1; done
ARCHIVE="$MNT/../kv-full-disk-archive.jsonl"
rm -f "$ARCHIVE"
python3 - "$PORT" "$ROOT" "$MNT" "$KEYVAULT_BIN" "$ARCHIVE" <<'PY'
import http.client, json, os, subprocess, sys
port, root, mnt, binary, archive = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def call(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"Authorization": "Bearer " + root, "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if path == "/metrics":
        return r.status, data.decode()
    return r.status, json.loads(data or b"null")
def alarm():
    status, text = call("GET", "/metrics")
    assert status == 200, status
    for line in text.splitlines():
        if line.startswith("keyvault_disk_alarm "):
            return float(line.split()[1]) == 1.0
    return False
status, key = call("POST", "/v1/keys", {"owner": "disk", "credits": 100000})
assert status == 201, key
# Fill the disk to leave 4 MiB (the alarm is at 90 % of 24 MiB, 2.4 MiB left), then verify
# until the vault refuses, watching the alarm.
filler = os.path.join(mnt, "filler")
with open(filler, "wb") as f:
    try:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    except OSError:
        pass
os.truncate(filler, max(0, os.path.getsize(filler) - 4 * 1024 * 1024))
assert not alarm(), "the alarm rose before the disk passed its high-water mark"
acked, refused, alarm_at = 0, 0, None
for i in range(200000):
    status, body = call("POST", "/v1/keys/verify", {"key": key["key"]})
    assert status in (200, 503), (status, body)
    if status == 200:
        assert body["code"] == "VALID", body
        acked += 1
        if alarm_at is None and acked % 50 == 0 and alarm():
            alarm_at = acked
    else:
        assert body["error"]["code"] == "audit_unavailable", body
        refused += 1
        if refused >= 20:
            break
assert refused >= 20, f"the disk never filled ({acked} verifies acknowledged)"
assert alarm_at is not None, f"the disk alarm never rose before the first 503 ({acked} verifies acknowledged)"
print(f"full disk: the alarm rose after {alarm_at} verifies; {acked} acknowledged, then {refused} refused with 503 audit_unavailable")

# Archive the whole log off the full filesystem; that frees the space the entries took.
env = dict(os.environ, KEYVAULT_ADDR=f"http://127.0.0.1:{port}", KEYVAULT_TOKEN=root)
done = subprocess.run([binary, "--json", "audit", "archive", "--upto", "latest", "-o", archive],
                      env=env, capture_output=True, text=True)
assert done.returncode == 0, done.stderr
archived = json.loads(done.stdout)
print(f"archived entries {archived['first_seq']}..{archived['upto']}: dropped {archived['dropped']}, freed {archived['bytes_freed']} bytes")
assert archived["bytes_freed"] > 0, archived
ok = 0
for i in range(2000):
    status, body = call("POST", "/v1/keys/verify", {"key": key["key"]})
    assert status == 200 and body["code"] == "VALID", (i, status, body)
    ok += 1
status, info = call("GET", "/v1/keys/" + key["key_id"])
assert info["credits"] == 100000 - acked - ok, (info["credits"], acked)
print(f"recovered after the archive: {ok} more verifies; credits {info['credits']} = 100000 - {acked} - {ok}, so no refused verify spent one")
PY
curl -sf "http://127.0.0.1:$PORT/v1/audit/export" -H "authorization: Bearer $ROOT" -o "$MNT/../kv-full-disk-export.jsonl"
"$KEYVAULT_BIN" audit verify "$ARCHIVE" --public-key "$PUBKEY"
"$KEYVAULT_BIN" audit verify "$MNT/../kv-full-disk-export.jsonl" --public-key "$PUBKEY"
python3 - "$ARCHIVE" "$MNT/../kv-full-disk-export.jsonl" <<'PY'
import json, sys
seqs = []
for path in sys.argv[1:]:
    with open(path) as f:
        seqs += [json.loads(l)["seq"] for l in f if l.startswith('{"seq":')]
assert seqs == list(range(len(seqs))), "entries lost or duplicated across the archive"
print(f"archive + live log: entries 0..{len(seqs)} each exactly once")
PY
rm -f "$MNT/../kv-full-disk-export.jsonl" "$PASS" "$ARCHIVE" "$CONFIG"
if grep -q "panicked" "$LOG"; then echo "FAIL: the server panicked:" >&2; cat "$LOG" >&2; exit 1; fi
grep -q "DISK ALARM" "$LOG" || { echo "FAIL: no disk alarm in the server's log" >&2; exit 1; }
grep -q "released the disk reserve" "$LOG" || { echo "FAIL: the archive did not release the disk reserve" >&2; exit 1; }
echo "full disk: the alarm rises first, writes fail closed, and an archive brings the vault back"
