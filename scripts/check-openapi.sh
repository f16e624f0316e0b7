#!/usr/bin/env bash
# Checks the served /openapi.json the way third-party tools take it, failing loudly on any fault:
#   1. it validates as OpenAPI 3.1 (openapi-spec-validator, PyPI);
#   2. a standard linter finds no error in it (@redocly/cli lint, npm);
#   3. a standard generator makes a Python client from it with no warning
#      (openapi-python-client, PyPI), and that client drives create, verify, rotate, revoke and
#      export against a running server (scripts/openapi-client-drive.py).
# Needs target/debug/keyvault, Python with pip, and Node with npx.
set -euo pipefail
cd "$(dirname "$0")/.."
REDOCLY="@redocly/cli@2.77.0"
python3 -m pip install --quiet --disable-pip-version-check \
    "openapi-spec-validator==0.9.*" "openapi-python-client==0.29.*"
command -v npx >/dev/null || { echo "FAIL: npx (Node) is needed for $REDOCLY" >&2; exit 1; }
source scripts/dev-server.sh
work=$(mktemp -d)
trap 'kill $DEV_PID 2>/dev/null; wait $DEV_PID 2>/dev/null; rm -f "$DEV_LOG"; rm -rf "$work"' EXIT
doc="$work/openapi.json"
curl -sf "$ADDR/openapi.json" -o "$doc"

python3 - "$doc" <<'PY'
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
doc = json.load(open(sys.argv[1]))
assert doc["openapi"].startswith("3.1"), doc["openapi"]
validate(doc, cls=OpenAPIV31SpecValidator)
paths = sorted(doc["paths"])
print(f"openapi: valid OpenAPI {doc['openapi']} document, {len(paths)} paths")
PY

echo "openapi: $REDOCLY lint"
(cd "$work" && npx --yes "$REDOCLY" lint --format=stylish openapi.json) \
    || { echo "FAIL: $REDOCLY lint found errors in /openapi.json" >&2; exit 1; }

echo "openapi: openapi-python-client generate"
# Streamed JSON Lines bodies are bytes to a generated client.
printf 'content_type_overrides:\n  application/x-ndjson: application/octet-stream\n' >"$work/gen.yaml"
(cd "$work" && openapi-python-client generate --path openapi.json --meta none \
    --output-path kvclient --config gen.yaml) >"$work/gen.log" 2>&1 \
    || { cat "$work/gen.log" >&2; echo "FAIL: openapi-python-client could not generate a client" >&2; exit 1; }
if grep -qi "warning" "$work/gen.log"; then
    cat "$work/gen.log" >&2
    echo "FAIL: openapi-python-client warned about /openapi.json" >&2
    exit 1
fi
python3 scripts/openapi-client-drive.py "$work" "$ADDR" "$ROOT_TOKEN"
