#!/usr/bin/env bash
# Checks what deploy/ ships and what the server exports with the tools operators run them
# with, failing loudly on any fault:
#   1. promtool check rules: deploy/prometheus/keyvault-alerts.yml;
#   2. promtool check metrics: a scrape of GET /metrics from a running server (after a few
#      verifies, so that every family has samples);
#   3. systemd-analyze verify: deploy/keyvault.service as shipped, with the binary where its
#      ExecStart says (/usr/local/bin/keyvault), placed in a private mount namespace so that the
#      host is not touched (needs root, as CI has).
# Installs Debian's prometheus package (for promtool) if promtool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v promtool >/dev/null || { echo "FAIL: promtool is not installed" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "FAIL: systemd-analyze is not installed" >&2; exit 1; }

echo "deploy: promtool check rules"
promtool check rules deploy/prometheus/keyvault-alerts.yml

echo "deploy: promtool check metrics"
source scripts/dev-server.sh
for key in pvk_not_a_key "$(printf 'x%.0s' {1..20})"; do
    curl -sf -o /dev/null -X POST "$ADDR/v1/keys/verify" \
        -H "authorization: Bearer $ROOT_TOKEN" -H "x-api-key: $key" || true
done
scrape=$(mktemp)
curl -sf "$ADDR/metrics" -o "$scrape"
if ! promtool check metrics <"$scrape"; then
    echo "FAIL: promtool check metrics found problems in GET /metrics" >&2
    exit 1
fi
rm -f "$scrape"

echo "deploy: systemd-analyze verify deploy/keyvault.service"
out=$(unshare -m bash -c '
    mount -t tmpfs -o mode=0755 keyvault-bin /usr/local/bin &&
    install -m 0755 target/debug/keyvault /usr/local/bin/keyvault &&
    systemd-analyze verify deploy/keyvault.service' 2>&1) || {
    echo "$out" >&2
    echo "FAIL: systemd-analyze verify refused deploy/keyvault.service" >&2
    exit 1
}
if [ -n "$out" ]; then
    echo "$out" >&2
    echo "FAIL: systemd-analyze verify complained about deploy/keyvault.service" >&2
    exit 1
fi
echo "deploy: rules, metrics and the unit pass"
