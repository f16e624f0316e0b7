"""Rate limits shared approximately between three keyvault nodes (DESIGN section 10), driven
over HTTP by scripts/check-cluster-nodes.py, which passes itself in for its helpers.

Three nodes verify one key with a limit of 100 per 60 s at once, each at a steady pace, for
long enough that each alone would use the whole limit. Each node publishes the tokens it took
about once a second and takes the others' out of its own bucket, so the VALID answers across
the three stay near the limit where three nodes sharing nothing would each allow it whole
(about 350 here). The bound asserted: the limit, plus the refill over the run, plus what the
two other nodes can let through in LAG seconds (their tally not yet taken). Every refusal is
RATE_LIMITED with the key's rate-limit state in the answer.
"""

import threading
import time

LIMIT = 100
PERIOD = 60
# Each node's traffic: at most PACE verifies a second for RUN seconds (150 each).
PACE = 15
RUN = 10
# How late a node may take the others' tokens: a tally goes out with the node's report about
# once a second, later on this loaded host, and the others' watches bring it at once.
LAG = 2


def check_ratelimit(nodes, token, h):
    key, key_id = h.create_key(nodes[0], token, ratelimit={"limit": LIMIT, "period_seconds": PERIOD})
    for node in nodes[1:]:
        h.until(f"the rate-limited key is known on {node.id}",
                lambda node=node: h.call(node.port, "GET", f"/v1/keys/{key_id}", token)[0] == 200,
                within=5)
    counts = {node.id: {} for node in nodes}
    bad = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def hammer(node):
        while time.monotonic() < start:
            time.sleep(0.01)
        sent = start
        while sent < start + RUN:
            status, body = h.verify(node, token, key)
            code = h.code_of((status, body))
            with lock:
                counts[node.id][code] = counts[node.id].get(code, 0) + 1
                if code == "RATE_LIMITED":
                    state = (body or {}).get("ratelimit") or {}
                    if state.get("limit") != LIMIT or state.get("remaining") != 0 \
                            or not state.get("reset_seconds", 0) >= 1:
                        bad.append(f"{node.id}: a refusal without the key's state: {body}")
                elif code not in ("VALID", "503 cluster_unavailable"):
                    bad.append(f"{node.id} answered {code}: {body}")
            sent += 1 / PACE
            time.sleep(max(0.0, sent - time.monotonic()))

    threads = [threading.Thread(target=hammer, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if bad:
        h.fail(f"three nodes verifying one rate-limited key: {bad[:5]} (counts: {counts})")
    valid = sum(c.get("VALID", 0) for c in counts.values())
    limited = sum(c.get("RATE_LIMITED", 0) for c in counts.values())
    bound = LIMIT + RUN * LIMIT // PERIOD + (len(nodes) - 1) * PACE * LAG
    if valid > bound:
        h.fail(f"three nodes let {valid} VALID through for a limit of {LIMIT} per {PERIOD} s "
               f"(at most {bound}; counts: {counts})")
    if valid < LIMIT - 1 or limited == 0:
        h.fail(f"three nodes verifying one key with a limit of {LIMIT}: {valid} VALID, "
               f"{limited} RATE_LIMITED (counts: {counts})")
    h.say(f"a limit of {LIMIT} per {PERIOD} s shared by three nodes: {valid} VALID in all "
          f"(at most {bound}; {limited} RATE_LIMITED, each with its state; by node: {counts}): ok")
