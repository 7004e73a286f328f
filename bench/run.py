#!/usr/bin/env python3
"""pgtenant benchmark harness: starts its own embedded clusters and measures, side by side with a raw
baseline, the figures of docs/benchmarks.md. Timing lives here, never in tests.

    python3 bench/run.py [--sizes 100,300,1000] [--runs 3] [--provision-sizes 1,100,1000] [--out docs/benchmarks.md]
                         [--binary PATH]

Fleet scale (section "## Fleet scale"): ONE cluster is grown to each of --sizes in turn (100 → 300 → 1000 tenants,
never a fresh cluster per size); at each size, the median of --runs runs of:
  full no-op `plan --full` (when the binary has it; else the plain plan is the full one), the default no-op `plan`,
  `check`, the sequential connect-and-query baseline (one psql session), `apply --tenant` of one new tenant (and
  of the same tenant again, converged),
  the control role's connection cost to a tenant database (pgbench -C, one trivial query), and the server's
  backend CPU per tenant database during the full no-op plan.
Provisioning (section "## Provisioning and planning", only with --provision-sizes): apply N new tenants on a
fresh cluster vs one psql session running the same DDL, peak RSS, as before.

Backend CPU is the kernel's accounting of the server's own processes: the postmaster reaps every backend, so
the growth of its children's user+system time (/proc/<postmaster>/stat, cutime + cstime) over one command is the
CPU all backends of that command used (plus the odd autovacuum worker), divided by the tenant databases inspected.
"""
import argparse
import hashlib
import base64
import hmac
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "pgtenant"
PLACEHOLDER = "'<scram-sha-256 verifier>'"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def timed(cmd, env=None):
    """Wall time and peak RSS (KiB) of one command."""
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if out.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    rss = int(out.stderr.strip().splitlines()[-1])
    return elapsed, rss, out.stdout


def scram_verifier(password: str) -> str:
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"'SCRAM-SHA-256$4096:{b64(salt)}${b64(stored)}:{b64(server)}'"


class Cluster:
    """A fresh embedded cluster in its own state dir, and an apps repo beside it."""

    def __init__(self, tenants: int, binary: Path = None):
        self.binary = binary or BINARY
        self.dir = Path(tempfile.mkdtemp(prefix="pgtenant-bench-"))
        os.chmod(self.dir, 0o755)  # as root the server runs as another OS user
        self.state = self.dir / "state"
        self.repo = self.dir / "repo"
        self.env = {**os.environ, "PGTENANT_STATE_DIR": str(self.state)}
        self.env.pop("PGTENANT_ADMIN_URL", None)
        for i in range(tenants):
            self.declare(f"app{i:04d}")
        run([self.binary, "up"], env=self.env)
        state = json.loads((self.state / "cluster" / "cluster.json").read_text())
        ca = self.state / "cluster" / "ca.crt"
        self.psql_env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(state["port"]),
            "PGUSER": "pgtenant",
            "PGPASSWORD": state["control_password"],
            "PGDATABASE": "postgres",
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(ca),
        }
        # pgtenant's own transport to its embedded cluster: the private Unix socket (no TLS), when the
        # server listens there; the baseline is measured over both.
        socket_dir = self.state / "cluster" / "socket"
        self.socket_env = None
        if (socket_dir / f".s.PGSQL.{state['port']}").exists():
            self.socket_env = {**self.psql_env, "PGHOST": str(socket_dir.resolve()), "PGSSLMODE": "disable"}

    def declare(self, name: str):
        folder = self.repo / "bench" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "values.yaml").write_text(f"postgresqlDatabases:\n  - name: {name}\n")

    def pgtenant(self, *args):
        return timed([self.binary, *args, str(self.repo)], env=self.env)

    def psql(self, script: str, socket: bool = False):
        path = self.dir / "script.sql"
        path.write_text(script)
        start = time.perf_counter()
        run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)], env=self.env_for(socket))
        return time.perf_counter() - start

    def env_for(self, socket: bool) -> dict:
        if socket and not self.socket_env:
            raise SystemExit("the embedded cluster does not listen on its Unix socket")
        return self.socket_env if socket else self.psql_env

    def postmaster_pid(self) -> int:
        return int((self.state / "cluster" / "data" / "postmaster.pid").read_text().split()[0])

    def backends(self) -> set:
        pid = self.postmaster_pid()
        return set((Path(f"/proc/{pid}/task/{pid}/children").read_text()).split())

    def children_cpu(self) -> float:
        """User + system seconds of the server's exited (reaped) processes: the kernel's accounting."""
        fields = Path(f"/proc/{self.postmaster_pid()}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: fields[0] is the state (stat field 3); cutime, cstime are fields 16, 17.
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def backend_cpu(self, *args):
        """Runs pgtenant `args`; returns (wall seconds, exit output, server CPU seconds its backends used)."""
        before_children = self.backends()
        before = self.children_cpu()
        elapsed, _, out = self.pgtenant(*args)
        deadline = time.monotonic() + 10
        # The command's backends exit right after it does; wait until the postmaster reaped them.
        while time.monotonic() < deadline and self.backends() - before_children:
            time.sleep(0.01)
        return elapsed, out, self.children_cpu() - before

    def connect_ms(self, database: str, connections: int = 50, socket: bool = False) -> float:
        """Average time of one control-role connection to `database` (TLS unless over the socket, SCRAM,
        backend start, the CONNECT check), from pgbench -C with a one-query script."""
        path = self.dir / "one.sql"
        path.write_text("SELECT 1;\n")
        out = run(["pgbench", "-n", "-C", "-f", str(path), "-t", str(connections), database],
                  env=self.env_for(socket))
        for line in out.stdout.splitlines():
            if line.startswith("average connection time"):
                return float(line.split("=")[1].split()[0])
        raise SystemExit(f"pgbench printed no connection time:\n{out.stdout}")

    def close(self):
        subprocess.run([self.binary, "down"], env=self.env, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_script(plan: dict) -> str:
    """The plan's statements as one psql session: the DDL a DBA would run by hand."""
    lines, current, role = [], None, None
    verifier = scram_verifier("bench-password-not-secret-0123456789")
    for op in plan["operations"]:
        statement = op["statement"].replace(PLACEHOLDER, verifier)
        target = op["database"]
        if target != current:
            lines.append(f'\\c "{target}"' if target else '\\c postgres')
            current, role = target, None
        if op["run_as"] != role:
            # A new database is set up as its owner on the control connection too (then RESET ROLE).
            lines.append(f'SET ROLE "{op["run_as"]}";' if op["run_as"] else "RESET ROLE;")
            role = op["run_as"]
        lines.append(statement)
    return "\n".join(lines) + "\n"


def measure(n: int, runs: int) -> dict:
    apply_s, raw_s, plan_s, seq_s, add_s, add_full_s, rss = [], [], [], [], [], [], []
    for _ in range(runs):
        c = Cluster(n)
        try:
            _, _, plan_json = c.pgtenant("plan", "--format", "json")
            script = raw_script(json.loads(plan_json))
            raw_s.append(c.psql(script))
        finally:
            c.close()
        c = Cluster(n)
        try:
            elapsed, peak, _ = c.pgtenant("apply", "--format", "json")
            apply_s.append(elapsed)
            rss.append(peak)
            elapsed, _, _ = c.pgtenant("plan", "--format", "json")
            plan_s.append(elapsed)
            seq = "".join(f'\\c "bench-app{i:04d}"\nSELECT count(*) FROM pg_catalog.pg_class;\n' for i in range(n))
            seq_s.append(c.psql(seq))
            c.declare("extra")
            elapsed, _, _ = c.pgtenant("apply", "--tenant", "bench/extra", "--format", "json")
            add_s.append(elapsed)
            c.declare("extra2")
            elapsed, _, _ = c.pgtenant("apply", "--format", "json")
            add_full_s.append(elapsed)
        finally:
            c.close()
    med = statistics.median
    return {
        "n": n,
        "apply": med(apply_s), "raw": med(raw_s),
        "plan": med(plan_s), "sequential": med(seq_s),
        "add": med(add_s), "add_full": med(add_full_s), "rss_mb": max(rss) / 1024,
    }


def has_flag(binary: Path, command: str, flag: str) -> bool:
    return flag in run([binary, command, "--help"]).stdout


def grow(n_sizes, runs: int, binary: Path) -> list:
    """One cluster grown to each size; the figures of the fleet-scale table at each."""
    full = ["plan", "--full"] if has_flag(binary, "plan", "--full") else ["plan"]
    results, declared, extra = [], 0, 0
    c = Cluster(0, binary)
    try:
        for n in n_sizes:
            for i in range(declared, n):
                c.declare(f"app{i:04d}")
            grow_s, _, _ = c.pgtenant("apply", "--format", "json")
            declared = n
            r = {"n": n, "grow": grow_s, "grown_by": n - (results[-1]["n"] if results else 0)}
            samples = {k: [] for k in ("full", "plan", "check", "sequential", "sequential_socket", "add", "again",
                                       "cpu", "connect", "connect_socket")}
            seq = "".join(f'\\c "bench-app{i:04d}"\nSELECT count(*) FROM pg_catalog.pg_class;\n' for i in range(n))
            for _ in range(runs):
                elapsed, out, cpu = c.backend_cpu(*full, "--format", "json")
                if json.loads(out)["operations"]:
                    raise SystemExit(f"the no-op plan at N={n} has operations: the cluster did not converge")
                samples["full"].append(elapsed)
                samples["cpu"].append(cpu / n)
                samples["plan"].append(c.pgtenant("plan", "--format", "json")[0])
                samples["check"].append(c.pgtenant("check", "--format", "json")[0])
                samples["sequential"].append(c.psql(seq))
                samples["sequential_socket"].append(c.psql(seq, socket=True))
                samples["connect"].append(c.connect_ms(f"bench-app{n - 1:04d}"))
                samples["connect_socket"].append(c.connect_ms(f"bench-app{n - 1:04d}", socket=True))
                c.declare(f"extra{extra:04d}")
                samples["add"].append(c.pgtenant("apply", "--tenant", f"bench/extra{extra:04d}", "--format", "json")[0])
                # The same tenant again, converged: what a scoped run costs besides its DDL (the lock, the
                # tenant's rows of the cluster catalog, its database read), as `serve` pays per change.
                samples["again"].append(c.pgtenant("apply", "--tenant", f"bench/extra{extra:04d}", "--format", "json")[0])
                extra += 1
            r.update({k: statistics.median(v) for k, v in samples.items()})
            r["full_flag"] = " ".join(full)
            results.append(r)
            print(f"N={n}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    finally:
        c.close()
    return results


def targets(results) -> str:
    """Issue 11's speed targets, each against the figures above (met or not)."""
    if not results:
        return ""
    first, last = results[0], results[-1]
    mark = lambda ok: "met" if ok else "NOT met"
    full_ratio = last["full"] / last["sequential"]
    full_socket_ratio = last["full"] / last["sequential_socket"]
    check_ratio = last["check"] / last["sequential"]
    flat = last["add"] / first["add"]
    lines = [
        f"- full no-op plan at N={last['n']}: {last['full']:.2f} s, {full_ratio:.2f}× the sequential baseline over "
        f"TLS, {full_socket_ratio:.2f}× the same baseline over the Unix socket pgtenant uses "
        f"(target ≤ 15 s and ≤ 0.2×: {mark(last['full'] <= 15 and full_ratio <= 0.2)})",
        f"- check at N={last['n']}: {last['check']:.2f} s, {check_ratio:.2f}× the sequential baseline over TLS; default "
        f"no-op plan {last['plan']:.2f} s (with the skip, idle: target ≤ 2 s: "
        f"{mark(max(last['plan'], last['check']) <= 2)})",
        f"- apply --tenant of one new tenant: {last['add']:.3f} s at N={last['n']} vs {first['add']:.3f} s at "
        f"N={first['n']}: {flat:.2f}× (target ≤ 1.2×: {mark(flat <= 1.2)})",
        "- backend CPU per tenant database, full plan: "
        + ", ".join(f"{r['cpu'] * 1000:.1f} ms at N={r['n']}" for r in results),
    ]
    return "\n".join(lines)


def fleet_section(results, args, machine: str) -> str:
    rows = "\n".join(
        f"| {r['n']} | {r['full']:.3f} | {r['plan']:.3f} | {r['check']:.3f} | {r['sequential']:.3f} "
        f"| {r['sequential_socket']:.3f} | {r['full'] / r['sequential']:.2f}× | {r['full'] / r['sequential_socket']:.2f}× "
        f"| {r['cpu'] * 1000:.1f} | {r['connect']:.1f} | {r['connect_socket']:.1f} | {r['add']:.3f} "
        f"| {r['again']:.3f} | {r['grow']:.1f} ({r['grown_by']} new) |"
        for r in results
    )
    return f"""## Fleet scale

Produced by `python3 bench/run.py --sizes {args.sizes} --runs {args.runs}`: one embedded cluster (fsync on) grown
to each size in turn; each figure is the median of {args.runs} runs at that size. The full no-op plan is
`pgtenant {results[0]['full_flag'] if results else 'plan'}`.

{machine}

| tenants N | full no-op plan (s) | default no-op plan (s) | check (s) | sequential connect+query, TLS (s) | the same, Unix socket (s) | full plan / sequential TLS | full plan / sequential socket | backend CPU per tenant database, full plan (ms) | control-role connection, TLS (ms) | the same, Unix socket (ms) | apply --tenant, 1 new (s) | apply --tenant, same one again (s) | growing to N (s) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{rows}

Targets (issue 11):
{targets(results)}

Load average when the run ended: {" / ".join(f"{x:.2f}" for x in os.getloadavg())} (1 / 5 / 15 min).

- *full no-op plan*: every tenant database inspected; *default no-op plan*: `pgtenant plan` (which may trust
  the last verification of databases whose statistics did not move); *check*: `pgtenant check --format json`.
- *sequential connect+query*: one psql session doing `\\c` into each tenant database and one catalog query, over
  TLS on loopback (the baseline issue 11's targets were set against) and over the cluster's private Unix socket
  (what pgtenant itself uses for its control role on the embedded cluster: no TLS handshake, peer authentication
  instead of SCRAM).
- *backend CPU per tenant database*: the server's CPU for the whole full plan (its backends' user+system time,
  from the kernel's accounting of the postmaster's reaped children), divided by N.
- *control-role connection*: `pgbench -C` as the control role into one tenant database, 50 connections, one
  `SELECT 1` each: TLS handshake and SCRAM (over the socket: peer authentication), backend start and the CONNECT check.
- *apply --tenant, 1 new*: declaring one more tenant and `pgtenant apply --tenant` of it (must stay flat in N).
- *apply --tenant, same one again*: the scoped apply repeated on the converged tenant: the fixed cost of a scoped
  run (process start, repo, apply lock, the tenant's rows of the cluster catalog, its database read).
"""


def main():
    global BINARY
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,300,1000", help="the one cluster is grown to each, in turn")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--provision-sizes", default="", help="also apply N new on fresh clusters (old section)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--binary", help="pgtenant to measure (default: a release build of this tree)")
    args = parser.parse_args()
    binary = Path(args.binary).resolve() if args.binary else BINARY
    if not args.binary:
        run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    BINARY = binary
    pg_version = run(["pg_ctl", "--version"]).stdout.strip() if shutil.which("pg_ctl") else "unknown"
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    machine = (f"Machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
               f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB.\n"
               f"PostgreSQL: {pg_version}. Date: {time.strftime('%Y-%m-%d')}.")
    if args.sizes:
        sizes = sorted(int(n) for n in args.sizes.split(","))
        text = fleet_section(grow(sizes, args.runs, binary), args, machine)
        write_section(Path(args.out), "## Fleet scale", text)
        print(text)
    if args.provision_sizes:
        provision(args, machine)


def provision(args, machine: str):
    results = [measure(int(n), args.runs) for n in args.provision_sizes.split(",")]
    rows = "\n".join(
        f"| {r['n']} | {r['apply']:.3f} | {r['raw']:.3f} | {r['apply'] / r['raw']:.2f}× "
        f"| {r['plan']:.3f} | {r['sequential']:.3f} | {r['plan'] / r['sequential']:.2f}× "
        f"| {r['add']:.3f} | {r['add_full']:.3f} | {r['rss_mb']:.1f} |"
        for r in results
    )
    text = f"""## Provisioning and planning

Produced by `python3 bench/run.py --provision-sizes {args.provision_sizes} --runs {args.runs}` (the harness starts its own embedded
clusters; each figure is the median of {args.runs} runs, each run on a fresh cluster, fsync on).

{machine}

| tenants N | apply N new (s) | raw psql DDL (s) | ratio | no-op plan (s) | sequential connect+query (s) | ratio | add 1 at N, scoped (s) | add 1 at N, full apply (s) | peak RSS of apply (MB) |
|---|---|---|---|---|---|---|---|---|---|
{rows}

- *apply N new*: `pgtenant apply` of N declared tenants on an empty cluster (database, 3 login roles, grants,
  default privileges, credentials stored), process start to exit.
- *raw psql DDL*: the same statements, taken from `pgtenant plan --format json`, run by one `psql -f` session
  with a precomputed SCRAM verifier — what a DBA's script costs.
- *no-op plan*: `pgtenant plan` over N converged tenants (reads the cluster, inspects every tenant database).
- *sequential connect+query*: one psql session doing `\\c` into each tenant database and one catalog query.
- *add 1 at N, scoped*: `pgtenant apply --tenant bench/extra` after declaring one more tenant on a cluster
  that holds N: only the new tenant's database is looked at, so this must stay flat in N.
- *add 1 at N, full apply*: a plain `pgtenant apply` after declaring another one: it also re-checks every
  other tenant's database for drift, which is what grows with N.
"""
    write_section(Path(args.out), "## Provisioning and planning", text)
    print(text)


def write_section(path: Path, heading: str, text: str):
    """Replaces this harness's section of the file, keeping the others (bench/restore.py writes one)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    sections = old.split("\n## ")
    head, rest = sections[0], ["## " + s for s in sections[1:]]
    kept = [s for s in rest if not s.startswith(heading)]
    path.write_text(head.rstrip() + "\n\n" + text.strip() + "\n\n" + "\n".join(k.rstrip() + "\n" for k in kept))


if __name__ == "__main__":
    main()
