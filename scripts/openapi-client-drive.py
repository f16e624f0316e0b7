#!/usr/bin/env python3
"""Drives a keyvault server through a client generated from its own /openapi.json by
openapi-python-client: create, verify, rotate, revoke and export, as a third-party user would.

  python3 scripts/openapi-client-drive.py GENERATED_DIR ADDR ROOT_TOKEN

Fails (exit 1, naming the step) when an answer does not parse into the generated models or says
something else than the API promises.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
addr, token = sys.argv[2], sys.argv[3]

from kvclient import AuthenticatedClient  # noqa: E402
from kvclient.api.audit import export  # noqa: E402
from kvclient.api.keys import create_key, revoke_key, rotate_key  # noqa: E402
from kvclient.api.verify import verify_key  # noqa: E402
from kvclient.models import (  # noqa: E402
    CreateKeyRequest,
    IssuedKey,
    KeyInfo,
    RotateKeyRequest,
    Verdict,
    VerifyCode,
    VerifyKeyRequest,
)


def check(step, ok, got):
    if not ok:
        sys.exit(f"FAIL: {step}: got {got!r}")
    print(f"ok: {step}")


client = AuthenticatedClient(base_url=addr, token=token, raise_on_unexpected_status=True)

issued = create_key.sync(client=client, body=CreateKeyRequest(owner="generated-client", scopes=["photos:read"]))
check("create answers an IssuedKey with the key text", isinstance(issued, IssuedKey) and issued.key.startswith("pvk_"), issued)


def verify(text, scope=None):
    body = VerifyKeyRequest(key=text) if scope is None else VerifyKeyRequest(key=text, scope=scope)
    return verify_key.sync(client=client, body=body)


v = verify(issued.key, "photos:read")
check("verify answers VALID", isinstance(v, Verdict) and v.valid and v.code == VerifyCode.VALID and v.key_id == issued.key_id, v)
v = verify(issued.key, "photos:write")
check("verify of a missing scope answers INSUFFICIENT_SCOPE", isinstance(v, Verdict) and v.code == VerifyCode.INSUFFICIENT_SCOPE, v)

rotated = rotate_key.sync(issued.key_id, client=client, body=RotateKeyRequest(grace_seconds=3600))
check("rotate answers a new key text for the same id", isinstance(rotated, IssuedKey) and rotated.key_id == issued.key_id and rotated.key != issued.key, rotated)
v = verify(issued.key)
check("the old text verifies within its grace, and says so", isinstance(v, Verdict) and v.valid and v.previous_secret is not None, v)
check("the new text verifies", verify(rotated.key).code == VerifyCode.VALID, None)

revoked = revoke_key.sync(issued.key_id, client=client)
check("revoke answers the record, revoked", isinstance(revoked, KeyInfo) and revoked.revoked_at, revoked)
v = verify(rotated.key)
check("a revoked key answers REVOKED", isinstance(v, Verdict) and v.code == VerifyCode.REVOKED, v)

response = export.sync_detailed(client=client, key=issued.key_id)
lines = response.content.decode().splitlines()
check("export answers 200", response.status_code == 200, response.status_code)
events = []
for line in lines[2:]:
    entry = json.loads(line)
    if "event" in entry:
        events.append(entry["event"])
for wanted in ["key.create", "key.verify", "key.rotate", "key.revoke"]:
    check(f"the export holds {wanted} of the key", wanted in events, events)
print("openapi client: create, verify, rotate, revoke and export through the generated client")
