#!/usr/bin/env bash
# API fuzzing from the outside: schemathesis (PyPI) against /openapi.json of a running dev
# server, with a token of each role. Fails on any server error or any response that breaks the
# schema. MAX_EXAMPLES bounds the run (default 25 per operation per role).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.*"
source scripts/dev-server.sh
MAX_EXAMPLES="${MAX_EXAMPLES:-25}"

token_for() {
    local body
    body=$(curl -s -w '\n%{http_code}' -X POST "$ADDR/v1/sys/tokens" -H "authorization: Bearer $ROOT_TOKEN" \
        -H 'content-type: application/json' -d "{\"role\":\"$1\",\"name\":\"schemathesis\"}")
    if [ "${body##*$'\n'}" != 201 ] && [ "${body##*$'\n'}" != 200 ]; then
        echo "FAIL: creating a $1 token answered: $body" >&2
        exit 1
    fi
    printf '%s' "${body%$'\n'*}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

# Every token is made before any run, and the admin run goes last: an admin may revoke any token
# it can list, the root token included, and the stateful phase sometimes does.
declare -A tokens
for role in verifier manager auditor operator; do
    tokens[$role]=$(token_for "$role")
done
tokens[admin]=$ROOT_TOKEN

status=0
# The route left out of the runs: 501 with the JSON error body for a role that may read it, 403
# for one that may not.
cluster=$(curl -s -w '\n%{http_code}' "$ADDR/v1/sys/cluster" -H "authorization: Bearer ${tokens[operator]}")
if [ "${cluster##*$'\n'}" != 501 ] || ! printf '%s' "${cluster%$'\n'*}" \
    | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["error"]["code"] != "not_clustered")'; then
    echo "FAIL: GET /v1/sys/cluster on one host answered: $cluster (want 501 not_clustered)" >&2
    exit 1
fi
cluster=$(curl -s -o /dev/null -w '%{http_code}' "$ADDR/v1/sys/cluster" -H "authorization: Bearer ${tokens[verifier]}")
if [ "$cluster" != 403 ]; then
    echo "FAIL: GET /v1/sys/cluster as a verifier answered $cluster (want 403)" >&2
    exit 1
fi
echo "GET /v1/sys/cluster on one host: 501 not_clustered, 403 to a verifier: ok"

for role in verifier manager auditor operator admin; do
    token=${tokens[$role]}
    echo "== schemathesis as $role"
    # Sealing, rekeying and minting root tokens would end or change the run: they are covered
    # by the integration tests instead. `GET /v1/sys/cluster` on this one-host server answers
    # 501 `not_clustered` as DESIGN section 6 says, which the server-error check would count:
    # it is checked on its own below, and served by the cluster nodes in check-cluster.sh.
    schemathesis run "$ADDR/openapi.json" \
        --header "Authorization: Bearer $token" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --exclude-path /v1/sys/seal --exclude-path /v1/sys/rekey --exclude-path /v1/sys/generate-root \
        --exclude-path /v1/audit/export --exclude-path /v1/sys/cluster \
        --max-examples "$MAX_EXAMPLES" --request-timeout 15 --no-color || status=1
    if ! curl -sf "$ADDR/v1/sys/health" >/dev/null; then
        echo "FAIL: the vault is no longer healthy after the $role run" >&2
        exit 1
    fi
done
exit $status
