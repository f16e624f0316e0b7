#!/usr/bin/env python3
"""The cluster figures of DESIGN section 8, measured on this host: 3 etcd members and 3 keyvault
nodes (the release binary built with `--features etcd`), and in the same run a single-node sled
vault, every data directory on the real disk ($TMPDIR, /var/tmp by default). Called by
scripts/bench-cluster.sh, which installs etcd and wrk and builds the binary.

1. Verify rate: `POST /v1/keys/verify` under wrk (64 connections, 2 threads, verify.lua) on node
   1 and on the single-node vault, each holding KEYS keys made the same way through the API, in
   alternating rounds (ROUNDS each, SECONDS long, after a warm-up of each): the node's mean rate
   against the single node's, target >= 90 %.
2. Revoke latency: REVOKES revokes, each of a fresh key made and verified VALID on all three
   nodes first, sent in turn to node 1, 2 and 3 while one thread per node verifies the key in a
   loop: p50 and p99 of the time from sending the revoke to its answer (target p99 <= 50 ms),
   and no probe sent after a revoke was answered may answer VALID.
3. Credits: one key with CREDITS credits spent from SPENDERS threads per node on all three nodes
   at once: spends per second (CREDITS over the time to the last VALID), and exactly CREDITS
   VALID answers, no 409.

Prints the table (figure, measured, target, met) and exits 1 when a correctness check fails (a
VALID after a revoke, a credit spent twice or lost); a speed target not met is reported, not a
failure. Environment: KEYS (1000), ROUNDS (3), SECONDS (10), REVOKES (200), CREDITS (600),
SPENDERS (4), KEYVAULT (the binary, target/release/keyvault).
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The nodes script imports its topic modules (cluster_follow, ...) from its own directory.
sys.path.insert(0, os.path.join(ROOT, "scripts"))
_spec = importlib.util.spec_from_file_location(
    "check_cluster_nodes", os.path.join(ROOT, "scripts", "check-cluster-nodes.py"))
nodes_lib = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nodes_lib)
call, code_of, create_key, fail = nodes_lib.call, nodes_lib.code_of, nodes_lib.create_key, nodes_lib.fail
verify, until, free_ports = nodes_lib.verify, nodes_lib.until, nodes_lib.free_ports

KEYVAULT = os.environ.get("KEYVAULT", os.path.join(ROOT, "target/release/keyvault"))
TMP = os.environ.get("TMPDIR", "/var/tmp")
KEYS = int(os.environ.get("KEYS", "1000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS", "10"))
REVOKES = int(os.environ.get("REVOKES", "200"))
CREDITS = int(os.environ.get("CREDITS", "600"))
SPENDERS = int(os.environ.get("SPENDERS", "4"))


BEGAN = time.monotonic()


def log(*what):
    print(f"bench-cluster: [{time.monotonic() - BEGAN:5.0f} s]", *what, file=sys.stderr, flush=True)


class Etcd:
    """Three etcd members on free ports, data in `workdir`."""

    def __init__(self, workdir):
        ports = free_ports(6)
        self.procs = []
        self.endpoints = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(3)]
        peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(3)]
        cluster = ",".join(f"m{i}={peers[i]}" for i in range(3))
        for i in range(3):
            out = open(os.path.join(workdir, f"etcd{i}.log"), "w")
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", f"m{i}", "--data-dir", os.path.join(workdir, f"etcd{i}"),
                 "--listen-client-urls", self.endpoints[i],
                 "--advertise-client-urls", self.endpoints[i],
                 "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                 "--initial-cluster", cluster, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"kv-bench-{os.getpid()}",
                 "--heartbeat-interval", "50", "--election-timeout", "500"],
                stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        for endpoint in self.endpoints:
            while True:
                try:
                    with urllib.request.urlopen(f"{endpoint}/health", timeout=1) as r:
                        if json.loads(r.read()).get("health") == "true":
                            break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    fail(f"etcd member {endpoint} did not become healthy (logs in {workdir})")
                time.sleep(0.1)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)


class Single:
    """A single-node sled vault served by `keyvault serve`."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "single")
        passfile = os.path.join(workdir, "passphrase")
        out = subprocess.run(
            [KEYVAULT, "--json", "init", "--data-dir", self.dir, "--passphrase-file", passfile,
             "--insecure-kdf"], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            fail(f"init of the single-node vault: {out.stderr}")
        self.token = json.loads(out.stdout)["root_token"]
        self.port = free_ports(1)[0]
        self.log = os.path.join(workdir, "single.log")
        self.proc = subprocess.Popen(
            [KEYVAULT, "serve", "--data-dir", self.dir, "--listen", f"127.0.0.1:{self.port}",
             "--unseal-passphrase-file", passfile],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
            env={**os.environ, "KEYVAULT_LOG": "warn"})
        def up():
            if self.proc.poll() is not None:
                fail(f"the single-node vault exited; its log:\n{nodes_lib.tail(self.log)}")
            status = call(self.port, "GET", "/v1/sys/health")[0]
            return status == 200 or status

        until("the single-node vault answers unsealed", up, within=60)
        self.id = "single"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def make_keys(target, token, path, n, threads=8):
    """`n` keys made on `target` through the API (same shape everywhere), written to `path`."""
    keys = []
    lock = threading.Lock()

    def work(count):
        for _ in range(count):
            key, _ = create_key(target, token)
            with lock:
                keys.append(key)

    workers = [threading.Thread(target=work, args=(n // threads + (i < n % threads),))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with open(path, "w") as f:
        f.write("\n".join(keys) + "\n")
    return keys


def wrk(port, token, keys_file, seconds):
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-s",
         os.path.join(ROOT, "scripts/bench/verify.lua"), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, env={**os.environ, "TOKEN": token, "KEYS_FILE": keys_file},
        timeout=seconds + 120)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if out.returncode != 0 or not m:
        fail(f"wrk failed: {out.stdout}{out.stderr}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    if errors:
        fail(f"wrk saw {errors.group(1)} error answers:\n{out.stdout}")
    return float(m.group(1))


def verify_rates(node, node_token, node_keys, single, single_keys):
    log(f"warming up both ({SECONDS} s each)")
    wrk(single.port, single.token, single_keys, SECONDS)
    wrk(node.port, node_token, node_keys, SECONDS)
    rates = {"single": [], "node": []}
    for r in range(ROUNDS):
        rates["single"].append(wrk(single.port, single.token, single_keys, SECONDS))
        rates["node"].append(wrk(node.port, node_token, node_keys, SECONDS))
        log(f"round {r + 1}: single {rates['single'][-1]:,.0f}/s, node {rates['node'][-1]:,.0f}/s")
    return rates


def revokes(nodes, token):
    """REVOKES revokes probed from every node; returns the latencies in ms."""
    current = [None]
    probes = []  # (key, node id, sent, code)
    lock = threading.Lock()
    stop = threading.Event()

    def probe(node):
        while not stop.is_set():
            key = current[0]
            if key is None:
                time.sleep(0.001)
                continue
            sent = time.monotonic()
            code = code_of(verify(node, token, key))
            with lock:
                probes.append((key, node.id, sent, code))

    threads = [threading.Thread(target=probe, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    latencies, answered = [], {}
    try:
        for i in range(REVOKES):
            maker = nodes[i % 3]
            key, key_id = create_key(maker, token)
            for node in nodes:
                until(f"key {i} verifies on {node.id}",
                      lambda node=node: nodes_lib.answers(node, token, key, "VALID"), within=10)
            current[0] = key
            time.sleep(0.01)
            revoker = nodes[(i + 1) % 3]
            sent = time.monotonic()
            status, body = call(revoker.port, "POST", f"/v1/keys/{key_id}/revoke", token)
            done = time.monotonic()
            if status != 200:
                fail(f"revoke {i} on {revoker.id}: {status} {body}")
            latencies.append((done - sent) * 1000)
            answered[key] = done
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    late = [p for p in probes if p[0] in answered and p[2] >= answered[p[0]] and p[3] == "VALID"]
    if late:
        fail(f"{len(late)} verifies sent after their revoke was answered answered VALID: {late[:5]}")
    after = sum(1 for p in probes if p[0] in answered and p[2] >= answered[p[0]])
    log(f"{len(probes)} probes, {after} sent after a revoke was answered, none VALID")
    return latencies, after


def credits(nodes, token):
    """One key's CREDITS credits spent from every node at once: (VALID count, seconds, others)."""
    key, key_id = create_key(nodes[0], token, credits=CREDITS)
    for node in nodes:
        until(f"the credited key verifies on {node.id}",
              lambda node=node: call(node.port, "GET", f"/v1/keys/{key_id}", token)[0] == 200,
              within=10)
    valid, last = [0], [0.0]
    others = {}
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + 600

    def spend(node):
        while time.monotonic() < deadline:
            code = code_of(verify(node, token, key))
            with lock:
                if code == "VALID":
                    valid[0] += 1
                    last[0] = time.monotonic()
                else:
                    others[code] = others.get(code, 0) + 1
            if code == "USAGE_EXCEEDED":
                return

    threads = [threading.Thread(target=spend, args=(n,)) for n in nodes for _ in range(SPENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status, record = call(nodes[1].port, "GET", f"/v1/keys/{key_id}", token)
    if status != 200 or record.get("credits") != 0:
        fail(f"the key's credits after the spend: {status} {record}")
    return valid[0], last[0] - start, others


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def table(rates, latencies, probes_after, spent, load):
    single, node = statistics.mean(rates["single"]), statistics.mean(rates["node"])
    ratio = node / single
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    valid, seconds, others = spent
    conflicts = sum(n for c, n in others.items() if c.startswith("409"))
    rows = [
        ("node verify rate / single-node vault's (wrk, 64 conn., "
         f"{ROUNDS} alternating rounds of {SECONDS} s)",
         f"{node:,.0f}/s / {single:,.0f}/s = {ratio:.0%}", ">= 90 %", ratio >= 0.9),
        (f"revoke latency p50 ({len(latencies)} revokes, verifies running on all nodes)",
         f"{p50:.1f} ms", "-", None),
        ("revoke latency p99", f"{p99:.1f} ms", "<= 50 ms", p99 <= 50),
        ("VALID after a revoke was answered", f"0 of {probes_after} probes", "0", True),
        (f"credit spends on one hot key from 3 nodes ({SPENDERS} callers each)",
         f"{valid / seconds:,.0f}/s", "-", None),
        (f"VALID answers for {CREDITS} credits", f"{valid} (409: {conflicts})",
         f"exactly {CREDITS}, no 409", valid == CREDITS and conflicts == 0),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}}  {'measured':<28}  {'target':<22}  met",
             "-" * (width + 60)]
    for figure, measured, target, met in rows:
        mark = "-" if met is None else ("met" if met else "NOT MET")
        lines.append(f"{figure:<{width}}  {measured:<28}  {target:<22}  {mark}")
    lines.append(f"rounds: single {', '.join(f'{r:,.0f}' for r in rates['single'])}; node "
                 f"{', '.join(f'{r:,.0f}' for r in rates['node'])}; other answers while "
                 f"spending: {others}; load average at start {load[0]}, at end {load[1]}")
    return "\n".join(lines)


def main():
    # A run stopped from outside still stops what it started and removes its files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench-cluster: stopped"))
    for tool in ("etcd", "wrk"):
        if shutil.which(tool) is None:
            fail(f"{tool} is not installed (scripts/bench-cluster.sh installs it)")
    if not os.access(KEYVAULT, os.X_OK):
        fail(f"{KEYVAULT} is missing: build it with cargo build --release --features etcd")
    load_start = open("/proc/loadavg").read().split()[0]
    workdir = tempfile.mkdtemp(prefix="keyvault-bench-cluster.", dir=TMP)
    etcd, single, nodes = None, None, []
    try:
        with open(os.path.join(workdir, "passphrase"), "w") as f:
            f.write(nodes_lib.PASSPHRASE + "\n")
        etcd = Etcd(workdir)
        prefix = f"/keyvault-bench/{os.getpid()}"
        ports = free_ports(3)
        nodes = [nodes_lib.Node(KEYVAULT, workdir, i + 1, ports[i], etcd.endpoints, prefix)
                 for i in range(3)]
        token, _ = nodes_lib.check_init(KEYVAULT, workdir, nodes)
        nodes_lib.check_start(nodes)
        single = Single(workdir)
        log(f"making {KEYS} keys on node 1 and on the single-node vault")
        node_keys = os.path.join(workdir, "node.keys")
        single_keys = os.path.join(workdir, "single.keys")
        make_keys(nodes[0], token, node_keys, KEYS)
        make_keys(single, single.token, single_keys, KEYS)
        rates = verify_rates(nodes[0], token, node_keys, single, single_keys)
        single.stop()
        single = None
        log(f"{REVOKES} revokes")
        latencies, after = revokes(nodes, token)
        log(f"{CREDITS} credits spent from three nodes")
        spent = credits(nodes, token)
        if spent[0] != CREDITS:
            fail(f"{CREDITS} credits gave {spent[0]} VALID (others: {spent[2]})")
        load_end = open("/proc/loadavg").read().split()[0]
        print(table(rates, latencies, after, spent, (load_start, load_end)), flush=True)
    finally:
        for node in nodes:
            node.stop()
        if single:
            single.stop()
        if etcd:
            etcd.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
