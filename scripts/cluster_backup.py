"""Backup and restore of a cluster vault with three real nodes, called by
`check-cluster-nodes.py` (which passes itself as `h`, for its helpers) while every node is up
and unsealed.

Keys made on each node and one revoked; `keyvault operator backup --cluster -o DIR` through
node 1 while the nodes keep verifying and writing (no verify refused, no write failed); the
directory holds a backup per node and `cluster.json`; refused restores (a prefix that holds a
vault, a node the backup has no log of); the three nodes restored in reverse order into a NEW
prefix and new data directories (the first writes the shared state, the others only their
logs); the restored nodes start sealed, unseal with the passphrase of the backup's time, every
key made before the backup verifies VALID on every one of them and the revoked one stays
REVOKED; each restored node's log verifies with the public key init printed, and its first
entry after the restored ones is `sys.restore`.
"""

import json
import os
import secrets
import shutil
import subprocess
import threading


def restore(binary, node, source, *extra):
    out = subprocess.run(
        [binary, "--json", "operator", "restore", source, "--config", node.config, *extra],
        capture_output=True, text=True, timeout=300,
    )
    return out.returncode, out.stdout, out.stderr


def check_backup(h, binary, workdir, nodes, token, public_key, endpoints, prefix):
    made = []
    for node in nodes:
        key, _ = h.create_key(node, token)
        made.append(key)
    revoked, revoked_id = h.create_key(nodes[1], token)
    status, body = h.call(nodes[1].port, "POST", f"/v1/keys/{revoked_id}/revoke", token)
    if status != 200:
        h.fail(f"the revoke on node 2: {status} {body}")
    for node in nodes:
        for key in made:
            h.until(f"a key verifies on {node.id} before the backup",
                    lambda node=node, key=key: h.answers(node, token, key, "VALID"), within=5)

    # Verifies on every node and writes on node 3 go on while the backup runs.
    stop = threading.Event()
    trouble = []
    counts = {"verifies": 0, "writes": 0}

    def load():
        while not stop.is_set():
            for node in nodes:
                code = h.code_of(h.verify(node, token, made[0]))
                if code != "VALID":
                    trouble.append(f"{node.id} answered {code} during the backup")
                counts["verifies"] += 1
            status, body = h.call(nodes[2].port, "POST", "/v1/keys", token, {"owner": "busy"})
            if status != 201:
                trouble.append(f"a write on node 3 during the backup: {status} {body}")
            counts["writes"] += 1

    loader = threading.Thread(target=load)
    loader.start()
    bundle = os.path.join(workdir, "cluster-backup")
    try:
        code, out, err = h.run_cli(binary, nodes[0].port, token, "--json", "operator", "backup",
                                   "--cluster", "-o", bundle)
    finally:
        stop.set()
        loader.join()
    if code != 0:
        h.fail(f"operator backup --cluster: exit {code}: {err}")
    if trouble:
        h.fail("; ".join(trouble[:5]))
    manifest = json.loads(out)
    ids = [n.id for n in nodes]
    if [n["node_id"] for n in manifest["nodes"]] != ids or manifest["first"] != ids[0]:
        h.fail(f"the cluster backup lists {manifest}")
    revisions = [n["etcd_revision"] for n in manifest["nodes"]]
    if revisions != sorted(revisions):
        h.fail(f"the node backups were not taken in order: revisions {revisions}")
    for n in manifest["nodes"]:
        path = os.path.join(bundle, n["file"])
        if oct(os.stat(path).st_mode & 0o777) != "0o600":
            h.fail(f"{path} is not owner-only")
    with open(os.path.join(bundle, "cluster.json")) as f:
        if json.load(f) != manifest:
            h.fail("cluster.json differs from what the backup printed")

    restored_dir = os.path.join(workdir, "restored")
    os.makedirs(restored_dir, exist_ok=True)
    new_prefix = f"/keyvault-check-restore/{secrets.token_hex(8)}"
    ports = h.free_ports(3)
    restored = [h.Node(binary, restored_dir, i + 1, ports[i], endpoints, new_prefix)
                for i in range(3)]

    # Refused: a node the backup has no log of, and the original prefix (it holds the vault).
    refused_dir = os.path.join(workdir, "refused")
    os.makedirs(refused_dir, exist_ok=True)
    stranger = h.Node(binary, refused_dir, 9, h.free_ports(1)[0], endpoints, new_prefix)
    original = h.Node(binary, refused_dir, 1, h.free_ports(1)[0], endpoints, prefix)
    for node, want in [(stranger, "holds no log of node node-9"), (original, "holds a vault")]:
        code, _, err = restore(binary, node, bundle)
        if code == 0 or want not in err:
            h.fail(f"a restore of {node.id} that must be refused ({want}): exit {code}: {err}")
        if os.path.exists(node.dir):
            h.fail(f"a refused restore of {node.id} left {node.dir} behind")

    # The nodes in reverse order: the first restored writes the shared state.
    entries = {}
    for i, node in enumerate(reversed(restored)):
        code, out, err = restore(binary, node, bundle)
        if code != 0:
            h.fail(f"restoring {node.id}: exit {code}: {err}")
        report = json.loads(out)
        if (report["shared_rows"] is None) != (i > 0):
            h.fail(f"restoring {node.id}: shared rows {report['shared_rows']} (restore {i + 1})")
        # The node's log is signed with the vault's key under the node's own name.
        if report["public_key"].split("+", 2)[2] != public_key.split("+", 2)[2]:
            h.fail(f"restoring {node.id}: audit key {report['public_key']}, init printed {public_key}")
        entries[node.id] = report["audit_entries"]

    try:
        for node in restored:
            status = node.start()
            if status.get("sealed") is not True:
                h.fail(f"restored {node.id} did not start sealed: {status}")
            node.unseal()
        for node in restored:
            for key in made:
                h.until(f"a key made before the backup verifies on restored {node.id}",
                        lambda node=node, key=key: h.answers(node, token, key, "VALID"), within=10)
            h.until(f"the key revoked before the backup stays refused on restored {node.id}",
                    lambda node=node: h.answers(node, token, revoked, "REVOKED"), within=10)
        for node in restored:
            path = os.path.join(restored_dir, f"{node.id}-audit.jsonl")
            code, _, err = h.run_cli(binary, node.port, token, "audit", "export", "-o", path)
            if code != 0:
                h.fail(f"audit export on restored {node.id}: exit {code}: {err}")
            out = subprocess.run([binary, "audit", "verify", path, "--public-key", public_key,
                                  "--complete"], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                h.fail(f"restored {node.id}'s log does not verify: {out.stderr}")
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            after = [e for e in lines if e.get("seq") == entries[node.id]]
            if not after or after[0]["event"] != "sys.restore":
                h.fail(f"restored {node.id}'s entry {entries[node.id]} is {after}, not sys.restore")
    finally:
        for node in restored:
            node.stop()
    shutil.rmtree(restored_dir, ignore_errors=True)
    shutil.rmtree(refused_dir, ignore_errors=True)
    shutil.rmtree(bundle, ignore_errors=True)
    h.say(f"operator backup --cluster during load ({counts['verifies']} verifies, "
          f"{counts['writes']} writes, none refused), refused restores, three nodes restored "
          f"into a new prefix in reverse order: every key verifies, the revoked one stays "
          f"refused, each log verifies and goes on with sys.restore: ok")
