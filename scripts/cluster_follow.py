"""Keyring rotation, rekey and rotate-audit-key done once, through node 1, and the other nodes
following (DESIGN section 10 "Seal"), with three keyvault nodes on a real etcd cluster.

Called by `scripts/check-cluster-nodes.py` with its own helpers (`h`: call, code_of, verify,
answers, create_key, until, run_cli, fail, say, PASSPHRASE). Checks, in order:

- `keyvault operator rotate` on node 1: a key made on node 2 afterwards verifies on nodes 1
  and 3, and keys made before verify everywhere;
- `keyvault operator rotate-audit-key` on node 1 while node 2 serves and node 3 is stopped:
  node 3 started and unsealed afterwards follows; every node's log holds its own
  `audit.key_rotated` entry, each node's export verifies with the key init printed (the
  rotation followed) and with the new key alone, and so does `audit export --cluster`;
- `keyvault operator rekey` to a new passphrase through node 1: the running nodes go on, a
  node restarted afterwards refuses the old passphrase and unseals with the new one (which
  the checks after this one use); after a rotate, a node that stayed unsealed through the
  rekey (holding the old root key, so the new keyring does not open for it) seals itself,
  answers verifies 503 `sealed` meanwhile, and unseals with the new passphrase only.
"""

import json
import os
import subprocess


def every_node_verifies(h, nodes, token, keys, what):
    for node in nodes:
        for key in keys:
            h.until(f"{what}: a key verifies on {node.id}",
                    lambda node=node, key=key: h.answers(node, token, key, "VALID"), within=5)


def check_rotate(h, binary, nodes, token):
    before = [h.create_key(node, token)[0] for node in nodes]
    code, out, err = h.run_cli(binary, nodes[0].port, token, "--json", "operator", "rotate")
    if code != 0:
        h.fail(f"keyvault operator rotate on node 1: exit {code}: {out} {err}")
    term = json.loads(out)
    after, _ = h.create_key(nodes[1], token)
    every_node_verifies(h, nodes, token, [after], "after a rotate on node 1, made on node 2")
    every_node_verifies(h, nodes, token, before, "after a rotate on node 1, made before")
    h.say(f"operator rotate on node 1 ({term}): a key made on node 2 verifies on nodes 1 and "
          "3, older keys everywhere: ok")


def export(h, binary, node, token, path, *args):
    code, _, err = h.run_cli(binary, node.port, token, "audit", "export", *args, "-o", path)
    if code != 0:
        h.fail(f"audit export {' '.join(args)} through {node.id}: exit {code}: {err}")


def audit_verify(binary, path, key, *args):
    return subprocess.run([binary, "--json", "audit", "verify", path, "--public-key", key, *args],
                          capture_output=True, text=True, timeout=120)


def check_rotate_audit_key(h, binary, workdir, nodes, token, public_key):
    # Node 3 stopped through the rotation: it follows once started and unsealed.
    nodes[2].stop()
    code, out, err = h.run_cli(binary, nodes[0].port, token, "--json", "operator",
                               "rotate-audit-key")
    if code != 0:
        h.fail(f"keyvault operator rotate-audit-key on node 1: exit {code}: {out} {err}")
    rotated = json.loads(out)
    new_key = rotated["public_key"]
    if not new_key.startswith(public_key.split("+", 1)[0] + "+") or new_key == public_key:
        h.fail(f"rotate-audit-key printed {new_key}; init printed {public_key} (the new key "
               "is named as the vault's)")
    status = nodes[2].start()
    if status.get("sealed") is not True:
        h.fail(f"{nodes[2].id} did not start sealed: {status}")
    nodes[2].unseal()
    # New entries on every node, after the rotation.
    made = [h.create_key(node, token)[0] for node in nodes]
    every_node_verifies(h, nodes, token, made, "after rotate-audit-key")

    for node in nodes:
        path = os.path.join(workdir, f"{node.id}-after-rotation.jsonl")

        def followed(node=node, path=path):
            export(h, binary, node, token, path)
            with open(path) as f:
                entries = [json.loads(line) for line in f if '"seq"' in line[:20]]
            rotations = [e for e in entries if e.get("event") == "audit.key_rotated"]
            return True if rotations else f"no audit.key_rotated entry in {node.id}'s log"
        h.until(f"{node.id}'s log announces the new audit key", followed, within=10)
        for key, which in ((public_key, "init's key (the rotation followed)"),
                           (new_key, "the new key alone")):
            out = audit_verify(binary, path, key, "--complete")
            report = json.loads(out.stdout) if out.stdout.strip() else {}
            if out.returncode != 0 or report.get("verified") is not True:
                h.fail(f"{node.id}'s export after rotate-audit-key does not verify with {which}: "
                       f"exit {out.returncode}: {out.stdout} {out.stderr}")

    path = os.path.join(workdir, "cluster-after-rotation.jsonl")

    def exported():
        code, _, err = h.run_cli(binary, nodes[1].port, token, "audit", "export", "--cluster",
                                 "-o", path)
        if code == 0:
            return True
        return f"exit {code}: {err.strip()}; {h.call(nodes[1].port, 'GET', '/v1/sys/cluster', token)}"
    # Node 3 publishes its address in its reports within a second or two of its start.
    h.until("audit export --cluster through node 2", exported, within=10)
    ids = [n.id for n in nodes]
    for key, which in ((public_key, "init's key"), (new_key, "the new key")):
        out = audit_verify(binary, path, key, "--complete")
        report = json.loads(out.stdout) if out.stdout.strip() else {}
        if (out.returncode != 0 or report.get("verified") is not True
                or [n["node"] for n in report.get("nodes", [])] != ids
                or not all(n["verified"] for n in report["nodes"])):
            h.fail(f"audit verify of the cluster export after rotate-audit-key with {which}: "
                   f"exit {out.returncode}: {out.stdout} {out.stderr}")
    h.say(f"rotate-audit-key on node 1 (generation {rotated['generation']}), node 3 stopped "
          "meanwhile: every node's log announces the new key, each node's export and the "
          "cluster export verify with init's key and with the new one: ok")


def check_rekey(h, binary, workdir, nodes, token):
    old = h.PASSPHRASE
    new = "a new passphrase for the cluster " + os.urandom(4).hex()
    current_file = os.path.join(workdir, "passphrase-current")
    new_file = os.path.join(workdir, "passphrase-new")
    for path, text in ((current_file, old), (new_file, new)):
        with open(path, "w") as f:
            f.write(text + "\n")
    before, _ = h.create_key(nodes[0], token)
    code, out, err = h.run_cli(binary, nodes[0].port, token, "operator", "rekey",
                               "--new-passphrase-file", new_file, "--passphrase-file",
                               current_file)
    if code != 0 or "rekeyed" not in out:
        h.fail(f"keyvault operator rekey on node 1: exit {code}: {out} {err}")
    h.PASSPHRASE = new
    # The running nodes go on.
    after, _ = h.create_key(nodes[0], token)
    every_node_verifies(h, nodes, token, [before, after], "after a rekey through node 1")

    # A node restarted afterwards: the old passphrase refused, the new one unseals.
    node = nodes[2]
    node.stop()
    status = node.start()
    if status.get("sealed") is not True:
        h.fail(f"{node.id} did not start sealed after the rekey: {status}")
    status, body = h.call(node.port, "POST", "/v1/sys/unseal", body={"passphrase": old})
    if status == 200 and body.get("sealed") is False:
        h.fail(f"{node.id} unsealed with the passphrase a rekey replaced")
    if not 400 <= status < 500 or "error" not in (body or {}):
        h.fail(f"the old passphrase on {node.id}: {status} {body} (want a 4xx with a JSON error)")
    refused = body["error"]["code"]
    node.unseal()
    every_node_verifies(h, [node], token, [before, after], "a node restarted after the rekey")
    made, _ = h.create_key(node, token)
    every_node_verifies(h, nodes, token, [made], "a key made on the restarted node")

    # Node 2 ran through the rekey, unsealed with the old root key: it cannot open a keyring
    # rotated after it, so it seals itself (never an answer from a keyring it lacks a term of)
    # and unseals with the new passphrase only (its watch brought the new seal configuration).
    node = nodes[1]
    code, out, err = h.run_cli(binary, nodes[0].port, token, "operator", "rotate")
    if code != 0:
        h.fail(f"keyvault operator rotate after the rekey: exit {code}: {out} {err}")
    made, _ = h.create_key(nodes[0], token)
    h.until(f"{node.id}, unsealed through the rekey, sealed by a rotation after it",
            lambda: h.call(node.port, "GET", "/v1/sys/seal-status")[1].get("sealed") is True
            or h.call(node.port, "GET", "/v1/sys/seal-status")[1], within=10)
    answer = h.code_of(h.verify(node, token, made))
    if answer != "503 sealed":
        h.fail(f"{node.id}, sealed for a keyring it cannot open, answered {answer}")
    status, body = h.call(node.port, "POST", "/v1/sys/unseal", body={"passphrase": old})
    if not 400 <= status < 500 or "error" not in (body or {}):
        h.fail(f"the old passphrase on {node.id}, sealed after the rekey: {status} {body}")
    node.unseal()
    every_node_verifies(h, nodes, token, [made, before], "after a rekey and a rotate")
    h.say(f"operator rekey through node 1: the running nodes go on; {nodes[2].id} restarted "
          f"refuses the old passphrase ({refused}) and unseals with the new one; after a rotate "
          f"{node.id}, unsealed through the rekey, sealed itself (verifies {answer}), refused "
          "the old passphrase and unsealed with the new one; the new term verifies everywhere: ok")


def check_follow(h, binary, workdir, nodes, token, public_key):
    check_rotate(h, binary, nodes, token)
    check_rotate_audit_key(h, binary, workdir, nodes, token, public_key)
    check_rekey(h, binary, workdir, nodes, token)
