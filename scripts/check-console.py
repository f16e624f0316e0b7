"""Drives the keyvault web console in headless Chromium; run by scripts/check-console.sh.

Usage: check-console.py ADDR ROOT_TOKEN SCREENSHOT_DIR PROFILE_DIR

Fails (exit 1, with the reason) on: a page that answers an error where it should not; a
browser console error or a CSP violation; an action a role may not do that succeeds; a key or
token visible in a page's source after its one showing; a cross-origin POST that is not
refused; a session cookie without HttpOnly and SameSite=Strict; a navigation link to a page the
role may not open; an audit page without entries, a signed checkpoint or the vault's public key,
or whose downloads fail, or work without a session, or hold other outcomes than the page's
outcome filter; an overview whose live parts (htmx) do not load, poll or show a new signal
without a reload; an overview without its chart of verifies per minute (an SVG labelled for
screen readers, its numbers in a table) for the roles that read usage, or with it for the
others; an overview without its disk line (ok or ALARM, with numbers) or its cluster nodes
("single node" on one host).
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ADDR, ROOT, SHOTS, PROFILE = sys.argv[1:5]
ERROR_TITLES = ("Forbidden", "Not Found", "Bad Request", "Unauthorized", "Internal Server Error",
                "Service Unavailable", "Conflict", "Error")
failures = []
secrets = {"root token": ROOT}


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    failures.append(message)


def api(method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(ADDR + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else None


def raw_post(path, fields, cookie, origin):
    """A POST outside the browser, with the session cookie: 403 expected where refused."""
    data = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(ADDR + path, data=data, method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    req.add_header("Cookie", cookie)
    if origin is not None:
        req.add_header("Origin", origin)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def browser():
    opts = Options()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={PROFILE}/{len(os.listdir(PROFILE))}"):
        opts.add_argument(flag)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_window_size(1280, 800)
    return driver


class Session:
    def __init__(self, role, token):
        self.role, self.token = role, token
        self.driver = browser()
        self.shots = 0

    def check_logs(self, where, refused=False):
        for entry in self.driver.get_log("browser"):
            # A page expected to be refused reports its own status; nothing else is allowed.
            if refused and entry["message"].startswith(ADDR + where + " - Failed to load resource: "
                                                        "the server responded with a status of 403"):
                continue
            if entry["level"] in ("SEVERE", "WARNING") or "Content Security Policy" in entry["message"]:
                fail(f"{self.role}: browser console on {where}: {entry['message']}")

    def check_source(self, where):
        source = self.driver.page_source
        for name, text in secrets.items():
            if text and text in source:
                fail(f"{self.role}: {name} visible in the source of {where}")

    def title(self):
        return self.driver.find_element(By.TAG_NAME, "h1").text

    def shot(self, name):
        for w, h, label in ((1280, 800, "desktop"), (390, 844, "phone")):
            self.driver.set_window_size(w, h)
            path = os.path.join(SHOTS, f"{self.role}-{self.shots:02d}-{name}-{label}.png")
            self.driver.save_screenshot(path)
            width = self.driver.execute_script("return document.documentElement.scrollWidth")
            if width > w + 1:
                fail(f"{self.role}: {name} is {width}px wide at {w}px (scrolls sideways)")
        self.driver.set_window_size(1280, 800)
        self.shots += 1

    def visit(self, path, name, expect_error=False):
        self.driver.get(ADDR + path)
        title = self.title()
        is_error = title in ERROR_TITLES
        if is_error != expect_error:
            fail(f"{self.role}: {path} showed {title!r} (expected {'an error' if expect_error else 'a page'})")
        self.check_logs(path, refused=expect_error)
        self.check_source(path)
        self.shot(re.sub(r"[^A-Za-z0-9_-]", "_", name))
        return title

    def submit(self, form_action_suffix):
        form = self.driver.find_element(By.CSS_SELECTOR, f"form[action$='{form_action_suffix}']")
        self.click_and_wait(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))

    def click_and_wait(self, element):
        """Clicks, then waits for the next page to replace this one."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        element.click()

        def replaced(_):
            # Chromium reports an element of the page being replaced either as stale or, in
            # the middle of the swap, as a node of no document: both mean the page went.
            try:
                old.is_enabled()
                return False
            except StaleElementReferenceException:
                return True
            except WebDriverException as e:
                if "does not belong to the document" in str(e):
                    return True
                raise

        WebDriverWait(self.driver, 20).until(replaced)

    def cookie_header(self):
        return "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies())

    def csrf(self):
        m = re.search(r'name="csrf" value="([0-9a-f]{64})"', self.driver.page_source)
        return m.group(1) if m else ""

    def sign_in(self):
        self.driver.get(ADDR + "/ui/sign-in")
        self.check_logs("/ui/sign-in")
        self.shot("sign-in")
        field = self.driver.find_element(By.ID, "token")
        label = self.driver.find_element(By.CSS_SELECTOR, "label[for=token]")
        if not label.text:
            fail("the token field has no label")
        field.send_keys(self.token)
        self.submit("/ui/sign-in")
        if self.title() != "Overview":
            fail(f"{self.role}: sign-in led to {self.title()!r}")
        cookies = {c["name"]: c for c in self.driver.get_cookies()}
        session = cookies.get("kv_session")
        if not session:
            fail(f"{self.role}: no session cookie after sign-in")
        elif not session.get("httpOnly") or session.get("sameSite") != "Strict":
            fail(f"{self.role}: session cookie is {session}")
        self.check_source("the overview")

    def nav(self):
        return [a.get_attribute("href").replace(ADDR, "")
                for a in self.driver.find_elements(By.CSS_SELECTOR, "nav a")]

    def keyboard_reaches(self, element_id):
        """Tab from the top of the page until `element_id` has focus (at most 40 presses)."""
        body = self.driver.find_element(By.TAG_NAME, "body")
        body.click()
        from selenium.webdriver.common.keys import Keys
        for _ in range(40):
            self.driver.switch_to.active_element.send_keys(Keys.TAB)
            if self.driver.switch_to.active_element.get_attribute("id") == element_id:
                return True
        return False

    def close(self):
        self.driver.quit()


def download(path, cookie):
    """GET `path` with the session cookie only, as a browser's download would, following no
    redirect: status, content type, body."""
    req = urllib.request.Request(ADDR + path, headers={"Cookie": cookie})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, "", ""


def check_live(s, fragments):
    """htmx loaded on the overview, and each live fragment polled with 200, with no console
    error or CSP violation, within a few polling periods."""
    if s.driver.execute_script("return typeof htmx") != "object":
        fail(f"{s.role}: htmx did not load on the overview")
    polled = {}
    # The slowest fragment polls every 10 s: wait for two of its periods.
    for _ in range(40):
        entries = s.driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter(e => e.name.includes('/ui/live/'))"
            ".map(e => [new URL(e.name).pathname, e.responseStatus || 0])")
        polled = {path: status for path, status in entries}
        if all(f in polled for f in fragments):
            break
        time.sleep(0.5)
    for f in fragments:
        if f not in polled:
            fail(f"{s.role}: the overview never polled {f} (polled {polled})")
        elif polled[f] not in (0, 200, 204):
            fail(f"{s.role}: polling {f} answered {polled[f]}")
    s.check_logs("the overview's live parts")


def check_overview(s, reads_usage):
    """The overview's chart of verifies per minute (for the roles that read usage: an SVG
    labelled for screen readers and a table of the busy minutes holding the seeded verifies),
    its disk line and its cluster nodes."""
    charts = s.driver.find_elements(By.CSS_SELECTOR, "#live-verifies svg.chart")
    if not reads_usage:
        if charts:
            fail(f"{s.role}: the overview shows verifies per minute to a role that may not read usage")
    elif not charts:
        fail(f"{s.role}: the overview has no chart of verifies per minute")
    else:
        label = charts[0].get_attribute("aria-label") or ""
        if charts[0].get_attribute("role") != "img" or not re.search(r"Verifies per minute.*: [1-9]\d* verifies in all", label):
            fail(f"{s.role}: the chart of verifies per minute is not labelled for screen readers ({label!r})")
        if not charts[0].find_elements(By.CSS_SELECTOR, "rect.c-VALID"):
            fail(f"{s.role}: the chart of verifies per minute draws no VALID bar")
        tables = s.driver.find_elements(By.CSS_SELECTOR, "#live-verifies table")
        caption = tables[0].find_element(By.TAG_NAME, "caption").text if tables else ""
        rows = tables[0].find_elements(By.CSS_SELECTOR, "tbody tr") if tables else []
        totals = [r.find_elements(By.CSS_SELECTOR, "td.num") for r in rows]
        if "Verifies per minute" not in caption or not totals or sum(int(t[-1].text) for t in totals if t) < 6:
            fail(f"{s.role}: the chart's table ({caption!r}) does not hold the verifies: {[r.text for r in rows]}")
    disk = s.driver.find_elements(By.ID, "disk-line")
    text = disk[0].text if disk else ""
    if not re.match(r"Disk: (ok|ALARM) .*\d+\.\d% of the filesystem used \(alarm at \d+%\)", text):
        fail(f"{s.role}: the overview's disk line says {text!r}")
    nodes = s.driver.find_elements(By.ID, "nodes")
    if not nodes:
        fail(f"{s.role}: the overview has no cluster nodes")
    elif nodes[0].tag_name != "table" and "Single node" not in nodes[0].text:
        fail(f"{s.role}: the overview's cluster nodes say {nodes[0].text!r}")
    elif nodes[0].tag_name == "table" and not nodes[0].find_elements(By.CSS_SELECTOR, "tbody tr"):
        fail(f"{s.role}: the overview's nodes table is empty")


def raise_signal():
    """A wrong_secret signal through the API (a key's secret from before a rotation without
    grace): the key id."""
    made = api("POST", "/v1/keys", ROOT, {"owner": "cust_live", "name": "live"})
    secrets["live key"] = made["key"]
    api("POST", f"/v1/keys/{made['key_id']}/rotate", ROOT, {"grace_seconds": 0})
    api("POST", "/v1/keys/verify", ROOT, {"key": made["key"]})
    return made["key_id"]


def check_audit_page(s):
    """The audit page: filters by keyboard, the seeded key's entries, both downloads, the
    checkpoint and the public key, and the next stretch of older entries."""
    s.visit("/ui/audit", "audit")
    if not s.driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr"):
        fail(f"{s.role}: the audit page shows no entries")
    if not s.keyboard_reaches("owner"):
        fail(f"{s.role}: the audit filters cannot be reached by keyboard")
    s.driver.switch_to.active_element.send_keys("cust_console")
    s.driver.find_element(By.ID, "event").send_keys("key.verify")
    s.submit("/ui/audit")
    s.check_logs("/ui/audit (filtered)")
    rows = s.driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")
    if len(rows) < 6 or any("cust_console" not in r.text or "key.verify" not in r.text for r in rows):
        fail(f"{s.role}: the filtered audit page shows {[r.text for r in rows]}")
    s.shot("audit-filtered")
    if AUDIT_KEY not in s.driver.find_element(By.ID, "public-key").text:
        fail(f"{s.role}: the audit page's public key is not the vault's")
    if "\u2014 " not in s.driver.find_element(By.ID, "checkpoint").text:
        fail(f"{s.role}: the audit page shows no signed checkpoint")
    cookie = s.cookie_header()
    for label, kind in (("JSON Lines", "application/x-ndjson"), ("CSV", "text/csv")):
        href = s.driver.find_element(By.PARTIAL_LINK_TEXT, label).get_attribute("href")
        status, got, body = download(href.replace(ADDR, ""), cookie)
        lines = [l for l in body.splitlines() if l.strip()]
        if status != 200 or not got.startswith(kind) or not any("cust_console" in l for l in lines):
            fail(f"{s.role}: the {label} download answered {status} {got} with {len(lines)} lines")
    # The outcome filter: the page and its download hold the one verify refused for its scope.
    s.visit("/ui/audit?owner=cust_console&event=key.verify&outcome=INSUFFICIENT_SCOPE", "audit-outcome")
    rows = s.driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")
    if len(rows) != 1 or "INSUFFICIENT_SCOPE" not in rows[0].text:
        fail(f"{s.role}: the audit page filtered by outcome shows {[r.text for r in rows]}")
    href = s.driver.find_element(By.PARTIAL_LINK_TEXT, "JSON Lines").get_attribute("href")
    if "outcome=INSUFFICIENT_SCOPE" not in href:
        fail(f"{s.role}: the download link {href} leaves out the page's outcome")
    status, got, body = download(href.replace(ADDR, ""), cookie)
    entries = [json.loads(l) for l in body.splitlines() if l.startswith('{"seq":')]
    if status != 200 or len(entries) != 1 or entries[0]["outcome"] != "INSUFFICIENT_SCOPE":
        fail(f"{s.role}: the download filtered by outcome answered {status} with {entries}")
    status = download("/ui/audit/export", "")[0]
    if status != 303:
        fail(f"{s.role}: the audit download without a session answered {status}, not 303")


def token(role):
    t = api("POST", "/v1/sys/tokens", ROOT, {"role": role, "name": f"console-{role}"})["token"]
    secrets[f"{role} token"] = t
    return t


MANAGER_PAGES = {"/ui/", "/ui/keys", "/ui/keys/new", "/ui/signals"}
AUDITOR_PAGES = {"/ui/", "/ui/signals", "/ui/audit"}
AUDIT_KEY = api("GET", "/v1/audit/public-key", ROOT)["public_key"]
roles = {"admin": ROOT}
for role in ("manager", "auditor", "operator", "verifier"):
    roles[role] = token(role)

# A key made through the API, for the pages that show one key.
seed = api("POST", "/v1/keys", ROOT, {"owner": "cust_console", "name": "seeded"})
secrets["seeded key"] = seed["key"]
seed_page = f"/ui/keys/{seed['key_id']}"
# Verifies for its usage chart: some valid, one with a scope it lacks; and a wrong secret with
# its id, which raises a signal.
for body in [{"key": seed["key"]}] * 5 + [{"key": seed["key"], "scope": "photos:admin"}]:
    api("POST", "/v1/keys/verify", ROOT, body)

for role, tok in roles.items():
    s = Session(role, tok)
    try:
        s.sign_in()
        s.shot("overview")
        reads_signals = role in ("admin", "manager", "auditor")
        check_overview(s, reads_usage=reads_signals)
        check_live(s, ["/ui/live/seal"] + (["/ui/live/signals", "/ui/live/verifies"] if reads_signals else []))
        if role == "auditor":
            # A signal raised while the overview is open shows up without a reload.
            key_id = raise_signal()
            deadline = time.time() + 30
            while key_id not in s.driver.find_element(By.ID, "live-signals").text:
                if time.time() > deadline:
                    fail("auditor: a new signal did not appear on the open overview")
                    break
                time.sleep(0.5)
            s.check_logs("the overview after a live update")
            s.shot("overview-live-signal")
        links = s.nav()
        manages = role in ("admin", "manager")
        expected = MANAGER_PAGES if manages else AUDITOR_PAGES if role == "auditor" else {"/ui/"}
        if role == "admin":
            expected = MANAGER_PAGES | AUDITOR_PAGES | {"/ui/tokens"}
        if set(links) != expected:
            fail(f"{role}: navigation lists {links}, expected {sorted(expected)}")
        for link in links:
            s.visit(link, link.strip("/").replace("/", "-") or "overview")
        if manages:
            # Create: the key is shown once.
            s.visit("/ui/keys/new", "new-key")
            s.driver.find_element(By.ID, "owner").send_keys(f"cust_{role}")
            s.driver.find_element(By.ID, "name").send_keys("from the console")
            s.driver.find_element(By.ID, "scopes").send_keys("photos:read photos:write")
            s.driver.find_element(By.ID, "credits").send_keys("100")
            s.submit("/ui/keys/new")
            if s.title() != "Key created":
                fail(f"{role}: create led to {s.title()!r}")
            created = s.driver.find_element(By.ID, "new-key").text
            s.check_logs("create")
            s.shot("key-created")
            secrets[f"{role} created key"] = created
            link = s.driver.find_element(By.CSS_SELECTOR, "main a[href^='/ui/keys/']").get_attribute("href")
            key_page = link.replace(ADDR, "")
            s.visit(f"/ui/keys?owner=cust_{role}", "keys-by-owner")
            s.visit(key_page, "key")
            if not s.keyboard_reaches("grace_seconds"):
                fail(f"{role}: the grace field cannot be reached by keyboard")
            # Rotate with grace: the new key shown once, then never.
            field = s.driver.find_element(By.ID, "grace_seconds")
            field.clear()
            field.send_keys("600")
            s.submit("/rotate")
            if s.title() != "Key rotated":
                fail(f"{role}: rotate led to {s.title()!r}")
            secrets[f"{role} rotated key"] = s.driver.find_element(By.ID, "new-key").text
            s.check_logs("rotate")
            s.shot("key-rotated")
            s.visit(key_page, "key-after-rotate")
            # Revoke after the confirmation step.
            s.click_and_wait(s.driver.find_element(By.CSS_SELECTOR, "a[href$='/revoke']"))
            if s.title() != "Revoke key":
                fail(f"{role}: the revoke link led to {s.title()!r}")
            s.shot("revoke-confirm")
            s.driver.find_element(By.ID, "confirm").send_keys(f"cust_{role}")
            s.submit("/revoke")
            s.check_logs("revoke")
            if "revoked" not in s.driver.find_element(By.TAG_NAME, "main").text:
                fail(f"{role}: the key page after revoke does not say revoked")
            s.shot("key-revoked")
            s.check_source("the revoked key's page")
            s.visit(seed_page, "seeded-key")
        else:
            refused = ["/ui/keys", "/ui/keys/new", seed_page, seed_page + "/revoke"]
            if role != "auditor":
                refused.append("/ui/signals")
            for path in refused:
                s.visit(path, "refused-" + path.strip("/").replace("/", "-")[:20], expect_error=True)
        if role in ("admin", "auditor"):
            check_audit_page(s)
        else:
            s.visit("/ui/audit", "refused-audit", expect_error=True)
            status = download("/ui/audit/export", s.cookie_header())[0]
            if status != 403:
                fail(f"{role}: the audit download answered {status}, not 403")
        if role == "admin":
            # A token made on the page: shown once, works, then revoked from the list.
            s.visit("/ui/tokens", "tokens")
            s.driver.find_element(By.ID, "name").send_keys("made in the console")
            s.submit("/ui/tokens")
            if s.title() != "Token created":
                fail(f"admin: token create led to {s.title()!r}")
            made = s.driver.find_element(By.ID, "new-key").text
            made_id = re.search(r"Token <code>([0-9a-f]{24})</code>", s.driver.page_source).group(1)
            secrets["console-made token"] = made
            s.check_logs("token create")
            s.shot("token-created")
            if not api("POST", "/v1/keys/verify", made, {"key": seed["key"]})["valid"]:
                fail("admin: the token made in the console does not work")
            s.visit("/ui/tokens", "tokens-after-create")
            s.submit(f"/ui/tokens/{made_id}/revoke")
            s.check_logs("token revoke")
            s.shot("token-revoked")
            tokens_now = {t["token_id"]: t for t in api("GET", "/v1/sys/tokens", ROOT)["tokens"]}
            if not tokens_now[made_id].get("revoked_at"):
                fail("admin: the token revoked in the console is not revoked")
        else:
            s.visit("/ui/tokens", "refused-tokens", expect_error=True)
        # Forms a role may not post, with its own session and CSRF token: refused.
        s.driver.get(ADDR + "/ui/")
        csrf = s.csrf()
        cookie = s.cookie_header()
        own = ADDR
        if not manages:
            for path, fields in (("/ui/keys/new", {"owner": "cust_forbidden"}),
                                 (seed_page + "/revoke", {"confirm": "cust_console"}),
                                 (seed_page + "/rotate", {"grace_seconds": "0"})):
                status = raw_post(path, dict(fields, csrf=csrf), cookie, own)
                if status != 403:
                    fail(f"{role}: POST {path} answered {status}, not 403")
        if role != "admin":
            status = raw_post("/ui/tokens", {"role": "verifier", "csrf": csrf}, cookie, own)
            if status != 403:
                fail(f"{role}: POST /ui/tokens answered {status}, not 403")
        # Cross-origin and token-less posts are refused whatever the role.
        for origin, fields in (("http://evil.example", {"csrf": csrf, "owner": "cust_evil"}),
                               (None, {"csrf": csrf, "owner": "cust_evil"}),
                               (own, {"owner": "cust_evil"})):
            status = raw_post("/ui/keys/new", fields, cookie, origin)
            if status != 403:
                fail(f"{role}: POST /ui/keys/new from {origin} ({sorted(fields)}) answered {status}")
        # Sign out: the session is gone.
        s.submit("/ui/sign-out")
        if s.title() != "Sign in":
            fail(f"{role}: sign-out led to {s.title()!r}")
        if "kv_session" in {c["name"] for c in s.driver.get_cookies()}:
            fail(f"{role}: the session cookie outlived sign-out")
        # The old cookie, replayed with its CSRF token, acts no more.
        status = raw_post("/ui/keys/new", {"csrf": csrf, "owner": "cust_evil"}, cookie, own)
        if status != 303:
            fail(f"{role}: a signed-out session's POST answered {status}, not 303 to sign-in")
        s.driver.get(ADDR + "/ui/keys")
        if s.title() != "Sign in":
            fail(f"{role}: after sign-out /ui/keys showed {s.title()!r}")
    finally:
        s.close()

# Every key shown once must appear in no page any role can see afterwards.
s = Session("final", ROOT)
try:
    s.sign_in()
    for path in ("/ui/", "/ui/keys", "/ui/keys?owner=cust_admin", "/ui/keys?owner=cust_manager", seed_page):
        s.visit(path, "final-" + path.strip("/").replace("/", "-")[:30])
    # Nothing a refused role posted was created.
    forbidden = api("GET", "/v1/keys?owner=cust_forbidden", ROOT)["keys"] + \
        api("GET", "/v1/keys?owner=cust_evil", ROOT)["keys"]
    if forbidden:
        fail(f"keys made by refused posts: {forbidden}")
    if api("GET", f"/v1/keys/{seed['key_id']}", ROOT).get("revoked_at"):
        fail("the seeded key was revoked by a role that may not")
    # Sealed: the overview shows the unseal form, to anyone.
    api("POST", "/v1/sys/seal", ROOT)
    s.visit("/ui/", "sealed-overview")
    if not s.driver.find_elements(By.CSS_SELECTOR, "form[action='/ui/unseal']"):
        fail("the sealed overview has no unseal form")
    check_live(s, ["/ui/live/seal"])
    if "sealed" not in s.driver.find_element(By.ID, "seal-state").text:
        fail("the sealed overview's live seal state does not say sealed")
finally:
    s.close()

shots = len([f for f in os.listdir(SHOTS) if f.endswith(".png")])
if failures:
    print(f"console: {len(failures)} failure(s)", file=sys.stderr)
    sys.exit(1)
print(f"console: every role walked, {shots} screenshots, no failure")
