#!/usr/bin/env python3
"""Computes the tlog-cosignature test vector with Python's `cryptography`, an Ed25519
implementation independent of the one keyvault uses, following https://c2sp.org/tlog-cosignature
(cosignature/v1): the key hash is SHA-256(name || "\\n" || 0x04 || public key)[:4], the signed
message is "cosignature/v1\\n" || "time <t>\\n" || the checkpoint text, and the line carries
base64(key hash || big-endian u64 time || signature).

  python3 scripts/cosignature-vector.py > vault-core/testdata/cosignature-v1.txt
  python3 scripts/cosignature-vector.py --check vault-core/testdata/cosignature-v1.txt
"""
import base64
import hashlib
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

NAME = "witness.example/w1"
SEED = bytes([7] * 32)
TIME = 1679315147
CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def vector() -> str:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    typed = b"\x04" + public
    key_hash = hashlib.sha256(NAME.encode() + b"\n" + typed).digest()[:4]
    vkey = f"{NAME}+{key_hash.hex()}+{base64.b64encode(typed).decode()}"
    message = f"cosignature/v1\ntime {TIME}\n{CHECKPOINT}".encode()
    signature = key.sign(message)
    line = "\u2014 " + NAME + " " + base64.b64encode(key_hash + struct.pack(">Q", TIME) + signature).decode()
    return "\n".join([
        "# tlog-cosignature v1 (Ed25519) vector, made by scripts/cosignature-vector.py with",
        "# Python's cryptography; the checkpoint's newlines are written as \\n.",
        f"name: {NAME}",
        f"seed: {SEED.hex()}",
        f"vkey: {vkey}",
        f"time: {TIME}",
        "checkpoint: " + CHECKPOINT.replace("\n", "\\n"),
        f"line: {line}",
        "",
    ])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with open(sys.argv[2], encoding="utf-8") as f:
            if f.read() != vector():
                sys.exit(f"{sys.argv[2]} differs from what Python's cryptography computes")
        print(f"{sys.argv[2]}: matches Python's cryptography")
    else:
        sys.stdout.write(vector())
