#!/usr/bin/env python3
"""pgtenant benchmark harness: starts its own embedded clusters and measures, side by side with a raw
baseline, the figures of docs/benchmarks.md. Timing lives here, never in tests.

    python3 bench/run.py [--sizes 1,100,1000] [--runs 3] [--out docs/benchmarks.md]

Figures (each the median of --runs runs, each run on a fresh cluster):
  apply N new tenants      vs one psql session running the same DDL (statements taken from `pgtenant plan`)
  no-op plan, N tenants    vs a sequential psql script connecting to each tenant database for one catalog query
  add 1 tenant at N        `apply --tenant` of the new one (must not grow with N), and a full `apply`
  peak RSS of pgtenant apply at N
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

    def __init__(self, tenants: int):
        self.dir = Path(tempfile.mkdtemp(prefix="pgtenant-bench-"))
        os.chmod(self.dir, 0o755)  # as root the server runs as another OS user
        self.state = self.dir / "state"
        self.repo = self.dir / "repo"
        self.env = {**os.environ, "PGTENANT_STATE_DIR": str(self.state)}
        self.env.pop("PGTENANT_ADMIN_URL", None)
        for i in range(tenants):
            self.declare(f"app{i:04d}")
        run([BINARY, "up"], env=self.env)
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

    def declare(self, name: str):
        folder = self.repo / "bench" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "values.yaml").write_text(f"postgresqlDatabases:\n  - name: {name}\n")

    def pgtenant(self, *args):
        return timed([BINARY, *args, str(self.repo)], env=self.env)

    def psql(self, script: str):
        path = self.dir / "script.sql"
        path.write_text(script)
        start = time.perf_counter()
        run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)], env=self.psql_env)
        return time.perf_counter() - start

    def close(self):
        subprocess.run([BINARY, "down"], env=self.env, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_script(plan: dict) -> str:
    """The plan's statements as one psql session: the DDL a DBA would run by hand."""
    lines, current = [], None
    verifier = scram_verifier("bench-password-not-secret-0123456789")
    for op in plan["operations"]:
        statement = op["statement"].replace(PLACEHOLDER, verifier)
        target = op["database"]
        if target != current:
            lines.append(f'\\c "{target}"' if target else '\\c postgres')
            if op["run_as"]:
                lines.append(f'SET ROLE "{op["run_as"]}";')
            current = target
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    results = [measure(int(n), args.runs) for n in args.sizes.split(",")]
    pg_version = run(["pg_ctl", "--version"]).stdout.strip() if shutil.which("pg_ctl") else "unknown"
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    rows = "\n".join(
        f"| {r['n']} | {r['apply']:.3f} | {r['raw']:.3f} | {r['apply'] / r['raw']:.2f}× "
        f"| {r['plan']:.3f} | {r['sequential']:.3f} | {r['plan'] / r['sequential']:.2f}× "
        f"| {r['add']:.3f} | {r['add_full']:.3f} | {r['rss_mb']:.1f} |"
        for r in results
    )
    text = f"""## Provisioning and planning

Produced by `python3 bench/run.py --sizes {args.sizes} --runs {args.runs}` (the harness starts its own embedded
clusters; each figure is the median of {args.runs} runs, each run on a fresh cluster, fsync on).

Machine: {platform.machine()}, {os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB.
PostgreSQL: {pg_version}. Date: {time.strftime('%Y-%m-%d')}.

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
