#!/usr/bin/env bash
# Validates the served /openapi.json as OpenAPI 3.1 with openapi-spec-validator (PyPI).
# Fails loudly when the validator cannot be installed or the document does not validate.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "openapi-spec-validator==0.9.*"
source scripts/dev-server.sh
doc=$(mktemp --suffix=.json)
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
rm -f "$doc"
