#!/usr/bin/env python3
"""Connection pooling benchmark (issue 13): a fresh embedded cluster with its managed pgbouncer, N tenants, and

1. new-connection latency of a tenant login, direct (TLS + SCRAM + a backend forked) vs through the pooler
   (TLS + SCRAM against pgbouncer, a pooled server connection reused): p50/p99 over --connects connects, each a
   full connect + `SELECT 1` + close, by one client (psycopg, libpq underneath: what applications do);
2. --clients-per-tenant clients on each of the N tenants through the pooler (1,000 = 10 × 100 by default) with
   `max_connections` = --max-connections on the server, against one direct client per tenant (N clients, as many
   as the server takes): client errors and transactions per second of each, pgbench running a one-statement
   transaction (`SELECT 1`) for --seconds.

    python3 bench/pooler.py [--tenants 100] [--connects 1000] [--clients-per-tenant 10] [--seconds 30]
                            [--max-connections 100] [--pool-size 1] [--binary PATH] [--json FILE]

The server's slots are the limit the pooler must respect: the N tenants' pools together hold N × --pool-size server
connections, so --pool-size 1 with 100 tenants and max_connections=100 fills the server exactly (the benchmark sets
superuser_reserved_connections = 0 so that all 100 are usable; nothing else connects during the runs). Needs
pgbouncer, pgbench and psycopg (`pip install "psycopg[binary]"`). Prints the figures as a Markdown table and, with
--json, writes them to FILE.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def default_binary() -> Path:
    """The newest of target/release and target/debug (a stale release build lacks the pooler)."""
    built = [ROOT / "target" / profile / "pgtenant" for profile in ("release", "debug")]
    built = [binary for binary in built if binary.exists()]
    if not built:
        raise SystemExit("no pgtenant binary: cargo build --release (or pass --binary)")
    return max(built, key=lambda binary: binary.stat().st_mtime)


def pgbench_program() -> str:
    versioned = Path("/usr/lib/postgresql/15/bin/pgbench")
    found = str(versioned) if versioned.exists() else shutil.which("pgbench")
    if not found:
        raise SystemExit("pgbench is not installed (apt-get install postgresql-client)")
    return found


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


class Fleet:
    """An embedded cluster with its pooler in a state dir of its own, and an apps repo of N tenants."""

    def __init__(self, binary: Path, tenants: int, pool_size: int):
        if not shutil.which("pgbouncer") and not Path("/usr/sbin/pgbouncer").exists():
            raise SystemExit("pgbouncer is not installed (apt-get install pgbouncer)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="pgtenant-bench-pooler-"))
        # The server (and pgbouncer) run as an unprivileged OS user, which must reach the state dir.
        self.dir.chmod(0o711)
        self.state = self.dir / "state"
        self.repo = self.dir / "repo"
        self.env = {**os.environ, "PGTENANT_STATE_DIR": str(self.state)}
        self.env.pop("PGTENANT_ADMIN_URL", None)
        self.tenants = [f"bench/t{i:04}" for i in range(tenants)]
        entries = "".join(
            f"  - name: t{i:04}\n    pooling: {{mode: transaction, size: {pool_size}}}\n" for i in range(tenants)
        )
        (self.repo / "bench" / "fleet").mkdir(parents=True)
        (self.repo / "bench" / "fleet" / "values.yaml").write_text(
            f"apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n{entries}"
        )

    def pgtenant(self, *args) -> str:
        return run([self.binary, *args], env=self.env, cwd=self.repo)

    def start(self, max_connections: int):
        status = json.loads(self.pgtenant("up", "--format", "json"))
        if (status.get("pooler") or {}).get("state") != "running":
            raise SystemExit(f"pgbouncer is not running after `pgtenant up`: {json.dumps(status)}")
        self.pgtenant("apply", str(self.repo))
        # The server's limit, set after provisioning (apply's own connections need no squeeze): the
        # auto.conf is read after postgresql.conf, so it wins; a restart applies it.
        data = self.state / "cluster" / "data"
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"max_connections = {max_connections}\nsuperuser_reserved_connections = 0\n")
        self.pgtenant("down")
        status = json.loads(self.pgtenant("up", "--format", "json"))
        if (status.get("pooler") or {}).get("state") != "running":
            raise SystemExit(f"pgbouncer is not running after the restart: {json.dumps(status)}")
        self.credentials = {
            tenant: json.loads(self.pgtenant("credentials", tenant, "--role", "write", "--format", "json"))
            for tenant in self.tenants
        }
        first = self.credentials[self.tenants[0]]
        if "pooler_uri" not in first:
            raise SystemExit(f"the credentials carry no pooled endpoint: {sorted(first)}")

    def close(self):
        try:
            self.pgtenant("down")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def connect_ms(uri: str, count: int) -> list:
    """Milliseconds of `count` sequential connect + SELECT 1 + close."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        with psycopg.connect(uri) as conn:
            conn.execute("SELECT 1").fetchone()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def percentile(samples: list, p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def pgbench_load(uris: list, clients: int, seconds: int) -> dict:
    """One pgbench per URI, `clients` clients each, all at once: total tps, failed transactions, error lines."""
    script = Path(tempfile.mkstemp(prefix="pgbench-", suffix=".sql")[1])
    script.write_text("SELECT 1;\n")
    program = pgbench_program()
    procs = [
        subprocess.Popen(
            [program, "-n", "-f", str(script), "-c", str(clients), "-j", "1", "-T", str(seconds), "-M", "simple", uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for uri in uris
    ]
    tps, failed, errors, transactions = 0.0, 0, [], 0
    for proc in procs:
        stdout, stderr = proc.communicate()
        for line in stdout.splitlines():
            if line.startswith("tps = "):
                tps += float(line.split()[2])
            elif line.startswith("number of failed transactions:"):
                failed += int(line.split(":")[1].split()[0])
            elif line.startswith("number of transactions actually processed:"):
                transactions += int(line.split(":")[1].split("/")[0])
        # Each client error is one `pgbench: error: …` line (connection refused, query failed).
        found = [line for line in stderr.splitlines() if "error" in line.lower() or "FATAL" in line]
        if proc.returncode != 0 and not found:
            found = [stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {proc.returncode}"]
        errors.extend(found)
    script.unlink()
    return {"tps": tps, "failed": failed, "errors": len(errors), "first_error": errors[:1], "transactions": transactions}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--connects", type=int, default=1000)
    parser.add_argument("--clients-per-tenant", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--pool-size", type=int, default=1)
    parser.add_argument("--binary", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    fleet = Fleet(args.binary or default_binary(), args.tenants, args.pool_size)
    try:
        fleet.start(args.max_connections)
        first = fleet.credentials[fleet.tenants[0]]
        # Direct first, while the pooler holds no server connection: the direct clients may take
        # every slot of the server. One warm-up connect each (the pooler's first server connection
        # is not what is measured).
        connect_ms(first["uri"], 1)
        direct = connect_ms(first["uri"], args.connects)
        direct_load = pgbench_load([fleet.credentials[t]["uri"] for t in fleet.tenants], 1, args.seconds)
        connect_ms(first["pooler_uri"], 1)
        pooled = connect_ms(first["pooler_uri"], args.connects)
        latency = {
            "direct_p50_ms": percentile(direct, 50),
            "direct_p99_ms": percentile(direct, 99),
            "pooled_p50_ms": percentile(pooled, 50),
            "pooled_p99_ms": percentile(pooled, 99),
        }
        latency["p50_ratio"] = latency["pooled_p50_ms"] / latency["direct_p50_ms"]
        latency["p99_ratio"] = latency["pooled_p99_ms"] / latency["direct_p99_ms"]

        pooled_load = pgbench_load(
            [fleet.credentials[t]["pooler_uri"] for t in fleet.tenants], args.clients_per_tenant, args.seconds
        )
        result = {
            "tenants": args.tenants,
            "connects": args.connects,
            "max_connections": args.max_connections,
            "pool_size": args.pool_size,
            "seconds": args.seconds,
            "latency": latency,
            "direct_clients": args.tenants,
            "pooled_clients": args.tenants * args.clients_per_tenant,
            "direct_load": direct_load,
            "pooled_load": pooled_load,
            "throughput_ratio": pooled_load["tps"] / direct_load["tps"] if direct_load["tps"] else None,
        }
    finally:
        fleet.close()

    print(f"## Connection pooling ({args.tenants} tenants, max_connections={args.max_connections}, "
          f"pool size {args.pool_size} per tenant)\n")
    print("| new connection of a tenant login | p50 | p99 |")
    print("|---|---|---|")
    print(f"| direct (TLS + SCRAM + backend) | {latency['direct_p50_ms']:.2f} ms | {latency['direct_p99_ms']:.2f} ms |")
    print(f"| through the pooler | {latency['pooled_p50_ms']:.2f} ms | {latency['pooled_p99_ms']:.2f} ms |")
    print(f"| pooled / direct | {latency['p50_ratio']:.2f}× | {latency['p99_ratio']:.2f}× |\n")
    print("| load (pgbench `SELECT 1`, %ds) | clients | tps | failed | client errors |" % args.seconds)
    print("|---|---|---|---|---|")
    for name, clients, load in (
        ("direct", result["direct_clients"], direct_load),
        ("through the pooler", result["pooled_clients"], pooled_load),
    ):
        print(f"| {name} | {clients} | {load['tps']:.0f} | {load['failed']} | {load['errors']} |")
    if result["throughput_ratio"] is not None:
        print(f"\npooled / direct throughput: {result['throughput_ratio']:.2f}×")
    for name, load in (("direct", direct_load), ("pooled", pooled_load)):
        if load["first_error"]:
            print(f"first {name} error: {load['first_error'][0]}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
