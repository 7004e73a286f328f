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

import scram_client

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

    def pids(self):
        """The postmaster's and pgbouncer's pids."""
        postmaster = int((self.state / "cluster" / "data" / "postmaster.pid").read_text().split()[0])
        status = json.loads(self.pgtenant("status", "--format", "json"))
        return postmaster, int(status["pooler"]["pid"])

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


def cheap_connect_ms(uri: str, count: int) -> list:
    """`connect_ms` with bench/scram_client.py: TLS and the same 4,096 SCRAM rounds, the rounds in hashlib."""
    host, port, user, password, dbname, cafile = scram_client.from_uri(uri)
    ctx = scram_client.context(cafile)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        scram_client.connect_once(host, port, user, password, dbname, ctx)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def percentile(samples: list, p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# The workloads the throughput is measured on. `tpcb` and `select-only` are pgbench's built-in TPC-B-like and
# select-only transactions, written out with 1,000 accounts (10 tellers, 1 branch) per tenant database instead of
# scale 1's 100,000, so that 100 tenant databases stay small: same statements, a smaller table.
NACCOUNTS = 1000
WORKLOADS = {
    "select1": "SELECT 1;\n",
    "select-only": f"\\set aid random(1, {NACCOUNTS})\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n",
    "tpcb": f"""\\set aid random(1, {NACCOUNTS})
\\set bid 1
\\set tid random(1, 10)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
""",
}

# pgbench's tables with NACCOUNTS accounts, made by the tenant's admin role.
TABLES = f"""
CREATE TABLE IF NOT EXISTS pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE IF NOT EXISTS pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE IF NOT EXISTS pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE IF NOT EXISTS pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
TRUNCATE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history;
INSERT INTO pgbench_branches SELECT 1, 0, '';
INSERT INTO pgbench_tellers SELECT t, 1, 0, '' FROM generate_series(1, 10) t;
INSERT INTO pgbench_accounts SELECT a, 1, 0, '' FROM generate_series(1, {NACCOUNTS}) a;
"""


def make_tables(fleet) -> None:
    """pgbench's tables in every tenant database, as its admin role, readable and writable by its write role."""
    for tenant in fleet.tenants:
        admin = json.loads(fleet.pgtenant("credentials", tenant, "--role", "admin", "--format", "json"))
        with psycopg.connect(admin["uri"], autocommit=True) as conn:
            conn.execute(TABLES)


def cpu_seconds(pids) -> float:
    """utime + stime of these processes so far (0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def server_cpu(postmaster: int) -> float:
    """CPU seconds of a server: the postmaster with its ended children, plus every live backend."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return cpu_seconds([postmaster, *children])


def pgbench_load(uris: list, clients: int, seconds: int, fleet, workload: str = "select1", jobs: int = 1) -> dict:
    """One pgbench per URI, `clients` clients each, all at once: total tps, failed transactions, error lines,
    and the CPU seconds pgbench, pgbouncer and the server (postgres, backends included) used meanwhile."""
    script = Path(tempfile.mkstemp(prefix="pgbench-", suffix=".sql")[1])
    script.write_text(WORKLOADS[workload])
    program = pgbench_program()
    postmaster, bouncer = fleet.pids()
    server_before = server_cpu(postmaster)
    bouncer_before = cpu_seconds([bouncer])
    children_before = os.times()
    load_before = os.getloadavg()[0]
    procs = [
        subprocess.Popen(
            [program, "-n", "-f", str(script), "-c", str(clients), "-j", str(jobs), "-T", str(seconds), "-M",
             "simple", "-P", "1", "--progress-timestamp", uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for uri in uris
    ]
    time.sleep(seconds / 2)
    load_mid = os.getloadavg()[0]
    tps, failed, errors, transactions = 0.0, 0, [], 0
    # Wall-clock second -> {process: tps} from each pgbench's progress lines (`progress: <epoch> s, <tps> tps`).
    seconds_seen = {}
    for index, proc in enumerate(procs):
        stdout, stderr = proc.communicate()
        for line in stderr.splitlines():
            if line.startswith("progress: "):
                parts = line.split()
                try:
                    seconds_seen.setdefault(int(float(parts[1])), {})[index] = float(parts[3])
                except (IndexError, ValueError):
                    pass
        stderr = "\n".join(line for line in stderr.splitlines() if not line.startswith("progress: "))
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
    # The steady state: seconds in which every pgbench reported (all connected, none finished), their summed tps.
    # pgbench's own `tps =` lines exclude each process's connection time, so their sum overstates the aggregate
    # when 1,000 SCRAM connects take seconds; transactions / wall time understates it by the same connect phase.
    full = sorted(sum(by.values()) for second, by in seconds_seen.items() if len(by) == len(procs))
    steady = statistics.median(full) if full else None
    children_after = os.times()
    # Every backend has ended and been reaped by now (the clients are gone): all in the postmaster's times.
    time.sleep(0.5)
    server_after = server_cpu(postmaster)
    script.unlink()
    return {
        "workload": workload,
        "tps": tps,
        "steady_tps": steady,
        "steady_seconds": len(full),
        "failed": failed,
        "errors": len(errors),
        "first_error": errors[:1],
        "transactions": transactions,
        "cpu_s": {
            "pgbench": (children_after.children_user + children_after.children_system)
            - (children_before.children_user + children_before.children_system),
            "pgbouncer": cpu_seconds([bouncer]) - bouncer_before,
            # Pooled server connections stay open after the run: their time so far is counted live.
            "server": server_after - server_before,
        },
        "load_1m": {"before": load_before, "mid": load_mid, "after": os.getloadavg()[0]},
    }


def release_server_connections(fleet) -> None:
    """RECONNECT every pool through the admin console and wait until pgbouncer holds no server connection, so
    that direct clients find every slot of the server free."""
    state = json.loads((fleet.state / "cluster" / "pooler" / "state.json").read_text())
    port = json.loads(fleet.pgtenant("status", "--format", "json"))["pooler"]["port"]
    with psycopg.connect(host=str(fleet.state / "cluster" / "pooler"), port=port, user="pgtenant_pooler_admin",
                         password=state["admin_password"], dbname="pgbouncer", autocommit=True) as admin:
        admin.pgconn.exec_(b"RECONNECT")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pools = admin.pgconn.exec_(b"SHOW POOLS")
            columns = [pools.fname(i).decode() for i in range(pools.nfields)]
            held = sum(
                int(pools.get_value(row, columns.index(column)) or 0)
                for row in range(pools.ntuples)
                for column in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
            )
            if held == 0:
                return
            time.sleep(0.2)
    raise SystemExit("pgbouncer still holds server connections after RECONNECT")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--connects", type=int, default=1000)
    parser.add_argument("--clients-per-tenant", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--pool-size", type=int, default=1)
    parser.add_argument("--workloads", default="select1,select-only,tpcb",
                        help="comma-separated, of: " + ", ".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=1, help="direct/pooled pairs per workload, interleaved")
    parser.add_argument("--jobs", type=int, default=1, help="pgbench -j of each pooled pgbench")
    parser.add_argument("--pgbouncer-nice", type=int, default=None,
                        help="experiment: give pgbouncer this nice value (a single process among many runnable ones "
                             "on a busy machine gets only its share of the CPU)")
    parser.add_argument("--binary", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    for workload in workloads:
        if workload not in WORKLOADS:
            raise SystemExit(f"unknown workload {workload}: expected one of {', '.join(WORKLOADS)}")

    fleet = Fleet(args.binary or default_binary(), args.tenants, args.pool_size)
    loads = []
    try:
        fleet.start(args.max_connections)
        first = fleet.credentials[fleet.tenants[0]]
        # One warm-up connect each (the pooler's first server connection is not what is measured), direct and
        # pooled interleaved in blocks of 100 so that both see the same machine load.
        connect_ms(first["uri"], 1)
        connect_ms(first["pooler_uri"], 1)
        direct, pooled = [], []
        load_connect = [os.getloadavg()[0]]
        for _ in range(max(1, args.connects // 100)):
            direct += connect_ms(first["uri"], min(100, args.connects))
            pooled += connect_ms(first["pooler_uri"], min(100, args.connects))
            load_connect.append(os.getloadavg()[0])
        latency = {
            "direct_p50_ms": percentile(direct, 50),
            "direct_p99_ms": percentile(direct, 99),
            "pooled_p50_ms": percentile(pooled, 50),
            "pooled_p99_ms": percentile(pooled, 99),
            "load_1m": {"min": min(load_connect), "max": max(load_connect)},
        }
        latency["p50_ratio"] = latency["pooled_p50_ms"] / latency["direct_p50_ms"]
        latency["p99_ratio"] = latency["pooled_p99_ms"] / latency["direct_p99_ms"]
        # The same with a client whose SCRAM is cheap (TLS 1.2: see bench/scram_client.py), each path on its own so
        # that a failure of one does not hide the other.
        cheap = {}
        for name, key in (("direct", "uri"), ("pooled", "pooler_uri")):
            try:
                samples = []
                for _ in range(max(1, args.connects // 100)):
                    samples += cheap_connect_ms(first[key], min(100, args.connects))
                cheap[f"{name}_p50_ms"] = percentile(samples, 50)
                cheap[f"{name}_p99_ms"] = percentile(samples, 99)
            except (ConnectionError, OSError) as error:
                cheap[f"{name}_error"] = str(error)
        cheap["load_1m"] = os.getloadavg()[0]
        latency["cheap_client"] = cheap

        if args.pgbouncer_nice is not None:
            os.setpriority(os.PRIO_PROCESS, fleet.pids()[1], args.pgbouncer_nice)
        if any(w != "select1" for w in workloads):
            make_tables(fleet)
        for workload in workloads:
            for _ in range(args.rounds):
                release_server_connections(fleet)
                direct_load = pgbench_load(
                    [fleet.credentials[t]["uri"] for t in fleet.tenants], 1, args.seconds, fleet, workload
                )
                pooled_load = pgbench_load(
                    [fleet.credentials[t]["pooler_uri"] for t in fleet.tenants], args.clients_per_tenant,
                    args.seconds, fleet, workload, args.jobs,
                )
                loads.append({
                    "workload": workload,
                    "direct": direct_load,
                    "pooled": pooled_load,
                    "ratio": pooled_load["tps"] / direct_load["tps"] if direct_load["tps"] else None,
                    "steady_ratio": pooled_load["steady_tps"] / direct_load["steady_tps"]
                    if pooled_load["steady_tps"] and direct_load["steady_tps"] else None,
                    "wall_ratio": pooled_load["transactions"] / direct_load["transactions"]
                    if direct_load["transactions"] else None,
                })
        result = {
            "tenants": args.tenants,
            "connects": len(direct),
            "max_connections": args.max_connections,
            "pool_size": args.pool_size,
            "pgbouncer_nice": args.pgbouncer_nice,
            "seconds": args.seconds,
            "latency": latency,
            "direct_clients": args.tenants,
            "pooled_clients": args.tenants * args.clients_per_tenant,
            "loads": loads,
        }
    finally:
        fleet.close()

    print(f"## Connection pooling ({args.tenants} tenants, max_connections={args.max_connections}, "
          f"pool size {args.pool_size} per tenant)\n")
    print(f"load average (1 min) during the connects: {latency['load_1m']['min']:.1f}–{latency['load_1m']['max']:.1f}\n")
    print("| new connection of a tenant login | p50 | p99 |")
    print("|---|---|---|")
    print(f"| direct (TLS + SCRAM + backend) | {latency['direct_p50_ms']:.2f} ms | {latency['direct_p99_ms']:.2f} ms |")
    print(f"| through the pooler | {latency['pooled_p50_ms']:.2f} ms | {latency['pooled_p99_ms']:.2f} ms |")
    print(f"| pooled / direct | {latency['p50_ratio']:.2f}× | {latency['p99_ratio']:.2f}× |")
    cheap = latency["cheap_client"]
    for name in ("direct", "pooled"):
        if f"{name}_p50_ms" in cheap:
            print(f"| {name}, hashlib SCRAM client (bench/scram_client.py) | {cheap[name + '_p50_ms']:.2f} ms "
                  f"| {cheap[name + '_p99_ms']:.2f} ms |")
        else:
            print(f"| {name}, hashlib SCRAM client | {cheap[name + '_error']} | |")
    if "direct_p50_ms" in cheap and "pooled_p50_ms" in cheap:
        print(f"| pooled / direct, hashlib client | {cheap['pooled_p50_ms'] / cheap['direct_p50_ms']:.2f}× "
              f"| {cheap['pooled_p99_ms'] / cheap['direct_p99_ms']:.2f}× |")
    print(f"\nload average (1 min) after the hashlib client's connects: {cheap['load_1m']:.1f}\n")
    print(f"| load ({args.seconds} s) | clients | steady tps (s) | sum of pgbench tps | transactions | failed "
          "| client errors | CPU s pgbench / pgbouncer / server | load 1m mid | pooled / direct: steady, sum, total |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for entry in loads:
        for name, clients, load in (
            ("direct", result["direct_clients"], entry["direct"]),
            ("pooled", result["pooled_clients"], entry["pooled"]),
        ):
            cpu = load["cpu_s"]
            ratio = ""
            if name == "pooled":
                ratio = ", ".join(f"{entry[k]:.2f}×" if entry[k] is not None else "–"
                                  for k in ("steady_ratio", "ratio", "wall_ratio"))
            steady = f"{load['steady_tps']:.0f} ({load['steady_seconds']})" if load["steady_tps"] else "–"
            print(f"| {entry['workload']} {name} | {clients} | {steady} | {load['tps']:.0f} | {load['transactions']} "
                  f"| {load['failed']} | {load['errors']} "
                  f"| {cpu['pgbench']:.1f} / {cpu['pgbouncer']:.1f} / {cpu['server']:.1f} "
                  f"| {load['load_1m']['mid']:.1f} | {ratio} |")
    for entry in loads:
        for name in ("direct", "pooled"):
            if entry[name]["first_error"]:
                print(f"first {entry['workload']} {name} error: {entry[name]['first_error'][0]}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
