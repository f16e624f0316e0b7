#!/usr/bin/env bash
# Drives the web console (/ui/) in headless Chromium through WebDriver, failing loudly on any
# fault (see scripts/check-console.py for the list): every page and action for each role,
# console errors and CSP violations, a role doing what it may not, a key or token visible after
# its one showing, a cross-origin POST not refused, a session cookie without HttpOnly and
# SameSite=Strict. Saves a screenshot of each page (at 1280x800 and 390x844) into
# $CONSOLE_SCREENSHOTS (default: a new temporary directory, printed at the end).
# Installs Debian's chromium and chromium-driver and Python's selenium. Serves the CLI named by
# $KEYVAULT_BIN (CI passes the one its tests built), or builds it when that is unset.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${need_apt[@]}"
fi
command -v chromium >/dev/null || { echo "FAIL: chromium is not installed" >&2; exit 1; }
command -v chromedriver >/dev/null || { echo "FAIL: chromedriver is not installed" >&2; exit 1; }
if ! python3 -c 'import selenium' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check selenium \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages selenium
fi
python3 -c 'import selenium' || { echo "FAIL: selenium did not install" >&2; exit 1; }

if [ -z "${KEYVAULT_BIN:-}" ]; then
    cargo build -p keyvault
fi
SHOTS="${CONSOLE_SCREENSHOTS:-$(mktemp -d)}"
mkdir -p "$SHOTS"
source scripts/dev-server.sh
PROFILE=$(mktemp -d)
trap 'kill $DEV_PID 2>/dev/null; wait $DEV_PID 2>/dev/null; rm -f "$DEV_LOG"; rm -rf "$PROFILE"' EXIT
python3 scripts/check-console.py "$ADDR" "$ROOT_TOKEN" "$SHOTS" "$PROFILE"
echo "console: screenshots in $SHOTS"
