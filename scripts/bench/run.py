#!/usr/bin/env python3
"""Every figure of DESIGN section 8 in one run, each beside its target and its same-run baseline.

Called by scripts/bench.sh, which installs what this needs (wrk, PostgreSQL) and builds the
release binaries first. Runs, in this order, on the real disk (TMPDIR, never tmpfs):

1. the in-process load benchmark (vault-core `--bench load`) with 1 M keys, and a 1 k-key vault
   verified in alternate rounds of the same run for the flat-in-key-count ratio;
2. the unknown-id memory benchmark (`--bench unknown_ids`);
3. audit export and offline verify (`--bench audit_export`);
4. import against creating keys one by one (`--bench import`, calls of 1,000 keys);
5. HTTP, with 1 k keys and then 1 M keys: `keyvault serve` on a vault made by the
   `bench_vault` example, `GET /v1/sys/health` then `POST /v1/keys/verify` under wrk at 64
   connections, the constant-rate generator at 70 % of the health rate, and the server's
   resident memory after the verifies; then, on the same 1 M-key vault once the server has
   stopped, every console page against health (vault-server `--bench console_pages`);
6. PostgreSQL doing the same job with 1 M keys (pgbench, synchronous commit, 64 clients).

The cluster's figures need an etcd cluster: `bash scripts/bench-cluster.sh` measures them.

Prints the table and writes it into BENCHMARKS.md between the `bench.sh` markers. A figure
that cannot be read from its benchmark's output stops the run with the output shown: a
benchmark that silently printed nothing is not a result.

Environment: SECONDS_PER_POINT (wrk and open-loop seconds, default 10), LOAD_SECONDS (in-process
seconds per point, default 5), KEYS_SMALL / KEYS_LARGE (default 1000 / 1000000), SKIP_PG=1 to
leave PostgreSQL out (its rows then say so), NO_WRITE=1 to print without touching BENCHMARKS.md,
RESUME=1 to keep the figures of the parts that ended in the last run (kept in
$TMPDIR/keyvault-bench-figures.json) and run only the rest.
"""

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMP = os.environ.get("TMPDIR", "/var/tmp")
SECONDS = int(os.environ.get("SECONDS_PER_POINT", "10"))
LOAD_SECONDS = os.environ.get("LOAD_SECONDS", "5")
SMALL = int(os.environ.get("KEYS_SMALL", "1000"))
LARGE = int(os.environ.get("KEYS_LARGE", "1000000"))
KEYVAULT = os.path.join(ROOT, "target/release/keyvault")
BENCH_VAULT = os.path.join(ROOT, "target/release/examples/bench_vault")
OPEN_LOOP = os.path.join(ROOT, "target/release/examples/open_loop")
START, END = "<!-- bench.sh: start -->", "<!-- bench.sh: end -->"


def log(*what):
    print(*what, file=sys.stderr, flush=True)


def run(cmd, env=None, cwd=ROOT):
    """Runs `cmd`, echoes its output to stderr, returns its stdout; fails on a non-zero exit."""
    # The benchmark vault's token is a throwaway, but a token is never printed all the same.
    log("$", " ".join("kvt_…" if arg.startswith("kvt_") else arg for arg in cmd))
    full_env = dict(os.environ, TMPDIR=TMP, **(env or {}))
    out = subprocess.run(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, text=True)
    log(out.stdout)
    if out.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited with {out.returncode}")
    return out.stdout


def bench(package, name, env=None):
    """Runs `cargo bench --bench name` of `package` (built by bench.sh) and returns its stdout."""
    return run(["cargo", "bench", "-q", "-p", package, "--bench", name], env=env)


def grab(pattern, text, what):
    """The first group of `pattern` in `text` as a float; stops the run if it is not there."""
    m = re.search(pattern, text)
    if not m:
        sys.exit(f"FAIL: no figure for {what} (pattern {pattern!r}) in:\n{text}")
    return float(m.group(1).replace(",", ""))


def in_process():
    """The load benchmark at 1 M keys, with a 1 k-key vault verified in alternate rounds."""
    out = bench("vault-core", "load", env={
        "LOAD_KEYS": str(LARGE),
        "LOAD_SECONDS": LOAD_SECONDS,
        "LOAD_CALLERS": "8,64",
        "LOAD_USAGE_ROUNDS": "0",
        "LOAD_CHANGES": "0",
        "LOAD_FLAT_PEER": str(SMALL),
        "LOAD_FLAT_ROUNDS": os.environ.get("LOAD_FLAT_ROUNDS", "3"),
    })
    # The load bench's flat rounds run threads and tasks (LOAD_FLAT_MODES), one line each.
    flat = r"verify, {} {}, \d+ keys vs \d+ keys[^\n]*\[([^\]]*)\] vs \[([^\]]*)\] \| ratio per round ([\d.]+) ± ([\d.]+)"
    f = {
        "tasks64": grab(r"verify_async, 64 tasks[^|]*\| (\d+) verifies/s", out, "64 tasks"),
        "tasks64_p99": grab(r"verify_async, 64 tasks[^\n]*p99 (\d+) µs", out, "64 tasks p99"),
        "threads64": grab(r"\| verify, 64 callers \| (\d+) verifies/s", out, "64 threads"),
        "tasks8": grab(r"verify_async, 8 tasks[^|]*\| (\d+) verifies/s", out, "8 tasks"),
        "threads8": grab(r"\| verify, 8 callers \| (\d+) verifies/s", out, "8 threads"),
        "bound8": grab(r"fsync bound at 8 callers = (\d+) verifies/s", out, "fsync bound"),
        "sync8": grab(r"fdatasync of an 8-entry batch \| (\d+) µs", out, "fdatasync of 8"),
        "unseal": grab(r"unseal, Argon2id[^|]*\| ([\d.]+) s", out, "unseal"),
        "disk": grab(r"disk per key[^|]*\| (\d+) B", out, "disk per key"),
        "open": grab(r"open a \d+-key vault \| ([\d.]+) s", out, "open"),
        "memory": grab(r"resident memory per stored key \(a fresh process[^|]*\| (\d+) B", out, "memory per key"),
        "flat": {},
    }
    for mode in ("threads", "tasks"):
        for callers in (8, 64):
            m = re.search(flat.format(callers, mode), out)
            if not m:
                sys.exit(f"FAIL: no flat-in-keys figure for {callers} {mode} in:\n{out}")
            f["flat"][f"{callers} {mode}"] = (m.group(1), m.group(2), float(m.group(3)), float(m.group(4)))
    return f


def unknown_ids():
    out = bench("vault-core", "unknown_ids")
    return grab(r"end [\d.]+ MiB \(\+?(-?[\d.]+)\)", out, "unknown-id memory")


def audit_export():
    out = bench("vault-core", "audit_export",
                env={"EXPORT_ENTRIES": os.environ.get("EXPORT_ENTRIES", "1000000")})
    return (
        grab(r"audit export[^|]*\| (\d+) entries/s", out, "export"),
        grab(r"offline verify[^|]*\| (\d+) entries/s", out, "offline verify"),
    )


def import_keys():
    """Import in calls of 1,000 keys against creating them one by one, best of the rounds."""
    out = bench("vault-core", "import",
                env={"KEYVAULT_BENCH_ROUNDS": os.environ.get("IMPORT_ROUNDS", "3")})
    return (
        grab(r"best: import (\d+) keys/s", out, "import"),
        grab(r"create one by one (\d+) keys/s, ratio", out, "create one by one"),
    )


def console_pages(data):
    """Every console page's p99 on the `bench_vault` vault at `data` (not served meanwhile),
    with health's as the baseline: (health p99 ms, [(page, p99 ms)])."""
    out = bench("vault-server", "console_pages",
                env={"CONSOLE_BENCH_VAULT": data,
                     "CONSOLE_BENCH_ROUNDS": os.environ.get("CONSOLE_ROUNDS", "20")})
    # Rows of its table: | page | median | p99 | target | met |, times as "1.23 ms".
    rows = re.findall(r"^\| ([^|]+?) \| [\d.]+ ms \| ([\d.]+) ms \| ≤ 200 ms \|", out, re.M)
    health = [float(p99) for page, p99 in rows if page.startswith("GET /v1/sys/health")]
    pages = [(page, float(p99)) for page, p99 in rows if not page.startswith("GET /v1/sys/health")]
    if len(health) != 1 or not pages:
        sys.exit(f"FAIL: no console page times in:\n{out}")
    return health[0], pages


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    sys.exit(f"FAIL: no VmRSS for process {pid}")


def wait_idle(pid, limit=300):
    """Waits until process `pid` uses under a tenth of a core over two seconds."""
    def cpu():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    began = time.monotonic()
    while time.monotonic() - began < limit:
        before = cpu()
        time.sleep(2)
        if cpu() - before < 0.2:
            log(f"server idle after {time.monotonic() - began:.0f} s")
            return
    sys.exit(f"FAIL: the server was still busy {limit} s after unseal")


def wrk(addr, script, env):
    out = run(
        ["wrk", "-t2", "-c64", f"-d{SECONDS}s", "--latency", "-s", script, addr],
        env=env,
    )
    return grab(r"Requests/sec:\s+([\d.]+)", out, f"wrk {script}")


def http(keys, scratch, console=False):
    """Serves a `keys`-key vault and loads it; returns its figures (with the console's pages
    measured on the same vault after the server stopped, if `console`)."""
    data = os.path.join(scratch, f"vault-{keys}")
    run([BENCH_VAULT, data, str(keys)])
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    server_log = open(os.path.join(scratch, f"server-{keys}.log"), "w")
    server = subprocess.Popen(
        [KEYVAULT, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
         "--unseal-passphrase-file", data + ".passphrase"],
        stdout=server_log, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn"),
    )

    def stop():
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

    try:
        began = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() - began > 120:
                server_log.flush()
                sys.exit(f"FAIL: the server did not come up unsealed:\n{open(server_log.name).read()}")
            time.sleep(0.2)
        # The key cache warms in the background after unseal; measure the steady state.
        wait_idle(server.pid)
        env = {"TOKEN": open(data + ".token").read(), "KEYS_FILE": data + ".keys"}
        f = {"health": wrk(addr, "scripts/bench/health.lua", env)}
        f["verify"] = wrk(addr, "scripts/bench/verify.lua", env)
        # The generator's own ceiling first: closed loop against health on the same
        # connections, which must stay well above the rate asked of it below.
        out = run([OPEN_LOOP, "--route", "health", f"127.0.0.1:{port}", env["TOKEN"],
                   env["KEYS_FILE"], "max", str(SECONDS), "64"])
        f["generator_ceiling"] = grab(r"([\d.]+)/s answered", out, "generator ceiling")
        rate = int(0.7 * f["health"])
        out = run([OPEN_LOOP, f"127.0.0.1:{port}", env["TOKEN"], env["KEYS_FILE"], str(rate),
                   str(SECONDS), "64"])
        f["open_rate"] = rate
        f["open_achieved"] = grab(r"([\d.]+)/s answered", out, "open-loop rate")
        f["open_p99"] = grab(r"p99 ([\d.]+) µs", out, "open-loop p99")
        f["open_errors"] = grab(r"(\d+) errors", out, "open-loop errors")
        f["rss"] = rss_bytes(server.pid)
        stop()  # the console bench opens the vault itself
        if console:
            f["console"] = console_pages(data)
        return f
    finally:
        stop()
        shutil.rmtree(data, ignore_errors=True)
        for ext in (".keys", ".token", ".passphrase"):
            if os.path.exists(data + ext):
                os.remove(data + ext)


def postgres(keys, scratch):
    pgbin = sorted(
        (d for d in os.listdir("/usr/lib/postgresql")), key=lambda v: [int(x) for x in v.split(".")]
    )[-1]
    pgbin = f"/usr/lib/postgresql/{pgbin}/bin"
    pgdata = tempfile.mkdtemp(prefix="keyvault-pg.", dir=scratch)
    subprocess.run(["useradd", "--system", "--no-create-home", "kvbench"], stderr=subprocess.DEVNULL)
    shutil.chown(pgdata, "kvbench")
    os.chmod(scratch, 0o755)

    def as_pg(*cmd):
        return run(["runuser", "-u", "kvbench", "--", *cmd])

    as_pg(f"{pgbin}/initdb", "-D", pgdata, "-A", "trust", "-U", "postgres")
    as_pg(f"{pgbin}/pg_ctl", "-D", pgdata, "-o",
          f"-k {pgdata} -p 54329 -c listen_addresses='' -c synchronous_commit=on -c fsync=on "
          "-c max_connections=100", "-l", f"{pgdata}/log", "-w", "start")
    try:
        psql = ["/usr/bin/psql", "-h", pgdata, "-p", "54329", "-U", "postgres", "-q", "-c"]
        as_pg(*psql, f"""
            CREATE TABLE api_keys (digest bytea PRIMARY KEY, owner text NOT NULL,
                                   name text NOT NULL, scopes text[] NOT NULL, meta jsonb NOT NULL);
            INSERT INTO api_keys SELECT sha256(('key-' || i)::bytea), 'customer-' || (i % 5000),
                'photo uploads', ARRAY['photos:read', 'photos:write', 'albums:read'],
                jsonb_build_object('plan', 'pro', 'region', 'eu-west', 'note', repeat('x', 60))
                FROM generate_series(1, {keys}) i;
            CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(),
                                key_digest bytea, outcome text, client text);""")
        as_pg(*psql, "VACUUM ANALYZE")  # not allowed in the transaction of a multi-statement -c
        script = os.path.join(pgdata, "verify.sql")
        with open(os.path.join(ROOT, "scripts/bench/pg-verify.sql")) as src, open(script, "w") as dst:
            dst.write(src.read().replace("random(1, 1000)", f"random(1, {keys})"))
        os.chmod(script, 0o644)
        out = as_pg("/usr/bin/pgbench", "-h", pgdata, "-p", "54329", "-U", "postgres", "-n",
                    "-c", "64", "-j", "2", "-T", str(SECONDS), "-f", script, "postgres")
        return grab(r"tps = ([\d.]+)", out, "pgbench tps")
    finally:
        subprocess.run(["runuser", "-u", "kvbench", "--", f"{pgbin}/pg_ctl", "-D", pgdata, "-m",
                        "fast", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(pgdata, ignore_errors=True)


def row(figure, measured, baseline, ratio, target, met):
    return f"| {figure} | {measured} | {baseline} | {ratio} | {target} | {'yes' if met else '**no**'} |"


def table(large, unknown, export, imported, http_small, http_large, pg):
    n = f"{LARGE:,}"
    rows = [
        "| figure (1 M keys unless said) | measured | baseline in the same run | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
        row("in-process verify, 64 tasks", f"{large['tasks64']:,.0f}/s, p99 {large['tasks64_p99'] / 1000:.2f} ms",
            "—", "—", "≥ 100 k/s, p99 ≤ 2 ms",
            large["tasks64"] >= 100_000 and large["tasks64_p99"] <= 2000),
    ]
    for kind in ("tasks", "threads"):
        r = large[f"{kind}8"] / large["bound8"]
        rows.append(row(f"in-process verify, 8 {kind}", f"{large[kind + '8']:,.0f}/s",
                        f"fsync bound 8 / {large['sync8']:.0f} µs = {large['bound8']:,.0f}/s",
                        f"{r:.0%}", "≥ 80 % of the fsync bound", r >= 0.8))
    # Threads first, then tasks; fewer callers first.
    order = lambda item: (item[0].split()[1] != "threads", int(item[0].split()[0]))
    for what, (big, small, ratio, within) in sorted(large["flat"].items(), key=order):
        rows.append(row(f"flat in key count, in process ({what}, alternating rounds)",
                        f"{n} keys: {big} /s", f"{SMALL:,} keys: {small} /s",
                        f"{ratio:.2f} ± {within:.2f}", "≥ 0.8", ratio >= 0.8))
    r = http_large["verify"] / http_small["verify"]
    rows.append(row("flat in key count, HTTP verify (64 connections)", f"{n} keys: {http_large['verify']:,.0f}/s",
                    f"{SMALL:,} keys: {http_small['verify']:,.0f}/s", f"{r:.2f}", "≥ 0.8", r >= 0.8))
    r = http_large["verify"] / http_large["health"]
    rows.append(row("HTTP verify, 64 connections (wrk)", f"{http_large['verify']:,.0f}/s",
                    f"GET /v1/sys/health {http_large['health']:,.0f}/s", f"{r:.0%}", "≥ 80 % of health", r >= 0.8))
    rows.append(row("HTTP verify p99, open loop at 70 % of health",
                    f"p99 {http_large['open_p99'] / 1000:.2f} ms at {http_large['open_achieved']:,.0f}/s",
                    f"asked {http_large['open_rate']:,}/s; the generator's own ceiling "
                    f"{http_large['generator_ceiling']:,.0f}/s", "—", "p99 ≤ 2 ms",
                    http_large["open_p99"] <= 2000 and http_large["open_errors"] == 0
                    and http_large["open_achieved"] >= 0.95 * http_large["open_rate"]))
    if pg is None:
        rows.append("| HTTP verify vs PostgreSQL, 64 clients | not run (SKIP_PG) | | | ≥ 6× | — |")
    else:
        r = http_large["verify"] / pg
        rows.append(row("HTTP verify vs PostgreSQL, 64 clients", f"{http_large['verify']:,.0f}/s",
                        f"pgbench select + audit insert {pg:,.0f} tx/s", f"{r:.1f}×", "≥ 6×", r >= 6))
    per_key = http_large["rss"] / LARGE
    rows.append(row("resident memory per stored key (server, after the verifies, usage on)",
                    f"{per_key:,.0f} B ({http_large['rss'] / 2**20:,.0f} MiB)", "—", "—", "≤ 1 KiB", per_key <= 1024))
    rows.append(row("resident memory per stored key (in process: a fresh process opens the vault, verifies every key once, usage on)",
                    f"{large['memory']:,.0f} B", "—", "—", "≤ 1 KiB", large["memory"] <= 1024))
    rows.append(row("resident memory after 1 M verifies of unknown ids", f"+{unknown:.1f} MiB",
                    "start of the run", "—", "≤ +64 MiB", unknown <= 64))
    rows.append(row("disk per key (typical shape, with its audit entry and index)", f"{large['disk']:,.0f} B",
                    "—", "—", "≤ 1 KiB", large["disk"] <= 1024))
    rows.append(row("unseal, default Argon2id", f"{large['unseal']:.3f} s", "—", "—", "≤ 1.5 s", large["unseal"] <= 1.5))
    rows.append(row(f"open a {n}-key vault", f"{large['open']:.3f} s", "—", "—", "≤ 1 s", large["open"] <= 1))
    rows.append(row("audit export", f"{export[0]:,.0f} entries/s", "—", "—", "≥ 1 M/s", export[0] >= 1e6))
    rows.append(row("offline verify of an unfiltered export", f"{export[1]:,.0f} entries/s", "—", "—",
                    "≥ 1 M/s", export[1] >= 1e6))
    rows.append(row("import, calls of 1,000 keys of the typical shape (best of the rounds)",
                    f"{imported[0]:,.0f} keys/s", f"create one by one {imported[1]:,.0f} keys/s",
                    f"{imported[0] / imported[1]:.1f}×", "≥ 20 k keys/s", imported[0] >= 20_000))
    if "console" in http_large:
        health, pages = http_large["console"]
        page, worst = max(pages, key=lambda p: p[1])
        rows.append(row(f"console pages at {n} keys, slowest p99 of {len(pages)} (request to body's end)",
                        f"{worst:.2f} ms ({page})", f"GET /v1/sys/health p99 {health:.2f} ms", "—",
                        "≤ 200 ms each", worst <= 200))
    else:
        # Only a RESUME from figures kept by a run before the console was measured.
        rows.append("| console pages | not measured in this run (its HTTP figures were resumed from an older run) | | | ≤ 200 ms each | — |")
    rows.append('| cluster (DESIGN §8, section 10) | not measured by this command: it needs a 3-member etcd (`bash scripts/bench-cluster.sh`, see "Cluster") | | | | — |')
    return "\n".join(rows)


def main():
    # Each part's figures are kept as it ends, so that a run stopped by a failure can go on
    # from the part that failed (RESUME=1); the table then says when each part ran.
    saved_path = os.path.join(TMP, "keyvault-bench-figures.json")
    saved = {}
    if os.environ.get("RESUME") and os.path.exists(saved_path):
        saved = json.load(open(saved_path))
    scratch = tempfile.mkdtemp(prefix="keyvault-bench.", dir=TMP)

    def part(name, measure):
        if name not in saved:
            began = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M")
            saved[name] = {"figures": measure(), "began": began}
            with open(saved_path, "w") as f:
                json.dump(saved, f)
        return saved[name]["figures"]

    try:
        large = part("in_process", in_process)
        unknown = part("unknown_ids", unknown_ids)
        export = part("audit_export", audit_export)
        imported = part("import", import_keys)
        http_small = part("http_small", lambda: http(SMALL, scratch))
        http_large = part("http_large", lambda: http(LARGE, scratch, console=True))
        pg = None if os.environ.get("SKIP_PG") else part("postgres", lambda: postgres(LARGE, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    times = ", ".join(f"{name} {p['began']}" for name, p in saved.items())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"One run of `bash scripts/bench.sh` (finished {when}; parts began at {times} UTC; "
            f"{SECONDS} s per HTTP point, {LOAD_SECONDS} s per in-process point).\n\n"
            + table(large, unknown, export, imported, http_small, http_large, pg))
    print(text)
    if os.environ.get("NO_WRITE"):
        return
    path = os.path.join(ROOT, "BENCHMARKS.md")
    doc = open(path).read()
    if START not in doc or END not in doc:
        sys.exit(f"FAIL: BENCHMARKS.md has no {START} ... {END} markers")
    before, rest = doc.split(START, 1)
    after = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(f"{before}{START}\n{text}\n{END}{after}")
    log(f"wrote the table into {path}")


if __name__ == "__main__":
    main()
