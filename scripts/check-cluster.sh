#!/usr/bin/env bash
# Cluster storage: the etcd backend of the shared state (vault-core's `etcd` feature) against a
# real 3-member etcd cluster on 127.0.0.1. Installs etcd and protoc from apt when missing, starts
# the members on free ports in temporary directories (removed on exit), runs the storage contract,
# conflict, doubt and oversize tests and a client-certificate test against a fourth member that
# requires them (certificates made with openssl), the cluster vault tests (init once per prefix,
# nodes opened and unsealed on their own, conflicts between nodes redone (one key's credits
# spent from two nodes at once: exact, and no caller hears a conflict), work split
# to fit one transaction, node registration: a live node id refused, every node listed, the
# watch-fed view: a revoke on one node refused on another, answered once every node
# acknowledged it, or after the timed wait with a node that stopped following (fenced); a
# node's data directory put back behind the checkpoint it published stays sealed; two members
# stopped: verifies fail
# `cluster_unavailable` within about a second and recover), then three keyvault nodes (the
# binary built with `--features etcd`, driven by scripts/check-cluster-nodes.py: a key made on
# one node verifies on the others, no VALID after a revoke is answered, exactly 300 VALID for
# 300 credits spent from three nodes with no 409, cluster status, per-node audit logs, two members
# stopped, a node killed with kill -9, the etcd leader killed under load and restarted, seal
# --cluster), then kills the leader and checks that
# requests go on through the other two, and runs clippy with the feature. Fails loudly: a missing tool, a member that does
# not start or a test that does not run is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update
    apt-get install -y "${need[@]}"
fi
etcd --version | sed -n 1p  # sed reads it all: `head` may close the pipe early, a SIGPIPE under pipefail

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Eight free ports (client and peer for each member and the TLS one), found by binding to 0.
read -r -a PORTS <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()')"
CLUSTER=""
for i in 0 1 2; do
    CLUSTER+="m$i=http://127.0.0.1:${PORTS[$((2 * i + 1))]},"
done
CLUSTER=${CLUSTER%,}
ENDPOINTS=()
for i in 0 1 2; do
    client=${PORTS[$((2 * i))]}
    peer=${PORTS[$((2 * i + 1))]}
    etcd --name "m$i" --data-dir "$WORK/m$i" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token "kv-check-$$" \
        --heartbeat-interval 50 --election-timeout 500 >"$WORK/m$i.log" 2>&1 &
    PIDS+=($!)
    ENDPOINTS+=("http://127.0.0.1:$client")
done
ALL=$(IFS=,; echo "${ENDPOINTS[*]}")
# What scripts/cluster_leader.py needs to kill the leader and start it again as it was; it
# writes the restarted member's pid back, read below.
export KEYVAULT_ETCD_MEMBERS="$WORK/members.json"
python3 -c '
import json, sys
work, cluster, ports, pids = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
members = [{"name": f"m{i}", "pid": int(pids[i]), "data_dir": f"{work}/m{i}",
            "client": f"http://127.0.0.1:{ports[2 * i]}", "peer": f"http://127.0.0.1:{ports[2 * i + 1]}",
            "log": f"{work}/m{i}.log"} for i in range(3)]
json.dump({"initial_cluster": cluster, "members": members}, open(f"{work}/members.json", "w"))
' "$WORK" "$CLUSTER" "${PORTS[*]}" "${PIDS[*]}"

# A single member that serves TLS and requires client certificates, from a CA made here.
TLS="$WORK/tls"
mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$TLS/ca.key" -out "$TLS/ca.crt" -subj "/CN=keyvault check etcd CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for leaf in server client; do
    usage=clientAuth
    [ "$leaf" = server ] && usage=serverAuth,clientAuth
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$leaf" \
        -keyout "$TLS/$leaf.key" -out "$TLS/$leaf.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=IP:127.0.0.1\n' \
        "$usage" >"$TLS/$leaf.ext"
    openssl x509 -req -in "$TLS/$leaf.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
        -days 2 -out "$TLS/$leaf.crt" -extfile "$TLS/$leaf.ext" 2>/dev/null
done
TLS_URL="https://127.0.0.1:${PORTS[6]}"
etcd --name tls --data-dir "$WORK/tls-data" \
    --listen-client-urls "$TLS_URL" --advertise-client-urls "$TLS_URL" \
    --listen-peer-urls "http://127.0.0.1:${PORTS[7]}" --initial-advertise-peer-urls "http://127.0.0.1:${PORTS[7]}" \
    --initial-cluster "tls=http://127.0.0.1:${PORTS[7]}" --initial-cluster-state new \
    --cert-file "$TLS/server.crt" --key-file "$TLS/server.key" --trusted-ca-file "$TLS/ca.crt" \
    --client-cert-auth >"$WORK/tls.log" 2>&1 &
PIDS+=($!)
healthy=no
for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$ALL" endpoint health >/dev/null 2>&1; then healthy=yes; break; fi
    sleep 0.1
done
if [ "$healthy" != yes ]; then
    echo "FAIL: the etcd members did not become healthy; their logs:" >&2
    tail -n 20 "$WORK"/m*.log >&2
    exit 1
fi
healthy=no
for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$TLS_URL" --cacert "$TLS/ca.crt" --cert "$TLS/client.crt" \
        --key "$TLS/client.key" endpoint health >/dev/null 2>&1; then healthy=yes; break; fi
    sleep 0.1
done
if [ "$healthy" != yes ]; then
    echo "FAIL: the TLS etcd member did not become healthy; its log:" >&2
    tail -n 20 "$WORK/tls.log" >&2
    exit 1
fi
export KEYVAULT_ETCD_TLS="$TLS_URL,$TLS"

# The leader first: the kill test kills the first endpoint's member, which is then also the
# member the handle under test was using. The other two are the ones the fence test stops.
order_by_leader() {
    local leader=""
    for _ in $(seq 1 100); do
        leader=$(ETCDCTL_API=3 etcdctl --endpoints "$ALL" endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s["Status"]["header"]["member_id"] == s["Status"]["leader"]:
        print(s["Endpoint"])' || true)
        [ -n "$leader" ] && break
        sleep 0.1
    done
    [ -n "$leader" ] || { echo "FAIL: no etcd leader found" >&2; exit 1; }
    ORDERED=("$leader")
    KILL_PID=""
    STOP_PIDS=()
    for i in 0 1 2; do
        if [ "${ENDPOINTS[$i]}" = "$leader" ]; then
            KILL_PID=${PIDS[$i]}
        else
            ORDERED+=("${ENDPOINTS[$i]}")
            STOP_PIDS+=("${PIDS[$i]}")
        fi
    done
    KEYVAULT_ETCD_ENDPOINTS=$(IFS=,; echo "${ORDERED[*]}")
    export KEYVAULT_ETCD_ENDPOINTS
    echo "etcd members: $KEYVAULT_ETCD_ENDPOINTS (leader first, pid $KILL_PID)"
}
order_by_leader

# Every test must run and pass; the count is checked so that a filter that matches nothing
# cannot pass for a run.
run_tests() {
    local expect=$1
    shift
    local out="$WORK/test.out"
    if ! cargo test -p vault-core --features etcd --lib "$@" 2>&1 | tee "$out"; then
        echo "FAIL: cargo test $* failed" >&2
        exit 1
    fi
    local passed
    passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$out" | grep -Eo '[0-9]+' | head -1)
    if [ "${passed:-0}" -ne "$expect" ]; then
        echo "FAIL: expected $expect tests to pass, $passed did: $*" >&2
        exit 1
    fi
}
run_tests 7 storage::etcd::tests:: -- --skip a_killed_member
run_tests 2 storage::etcd::watch::
run_tests 1 storage::etcd::registry::
run_tests 3 storage::etcd::report::
run_tests 2 storage::etcd::published::
run_tests 1 storage::etcd::ack::
run_tests 16 vault::tests::cluster
# Two members stopped (SIGSTOP) and resumed by the test itself; then the leader may have moved.
KEYVAULT_ETCD_STOP_PIDS=$(IFS=,; echo "${STOP_PIDS[*]}") run_tests 1 vault::tests::etcd_fence::
for pid in "${STOP_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
order_by_leader

# Three keyvault nodes, the real binary built with cluster support, each on its own free port
# and data directory: init once, unseal, a key everywhere, a revoke probed from every node, 300
# credits spent from three nodes, cluster status, each node's audit log, two members stopped,
# a node killed with kill -9, seal --cluster (scripts/check-cluster-nodes.py says each check).
cargo build -p keyvault --features etcd
mkdir -p "$WORK/nodes"
python3 scripts/check-cluster-nodes.py target/debug/keyvault "$WORK/nodes" \
    "$KEYVAULT_ETCD_ENDPOINTS" "$(IFS=,; echo "${STOP_PIDS[*]}")"
for pid in "${STOP_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
# The leader-kill check started the member it killed again: its new pid.
read -r -a RESTARTED <<<"$(python3 -c '
import json, sys
print(" ".join(str(m["pid"]) for m in json.load(open(sys.argv[1]))["members"]))' "$KEYVAULT_ETCD_MEMBERS")"
for i in 0 1 2; do PIDS[$i]=${RESTARTED[$i]}; done
order_by_leader
KEYVAULT_ETCD_KILL_PID=$KILL_PID run_tests 1 storage::etcd::tests::a_killed_member
if kill -0 "$KILL_PID" 2>/dev/null; then
    echo "FAIL: the leader (pid $KILL_PID) is still running after the kill test" >&2
    exit 1
fi

# One invocation for the three crates: each crate is checked once, with the feature on.
cargo clippy -p vault-core -p vault-server -p keyvault \
    --features vault-core/etcd,vault-server/etcd,keyvault/etcd --all-targets -- -D warnings
echo "check-cluster: ok"
