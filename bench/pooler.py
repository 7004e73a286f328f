#!/usr/bin/env python3
"""Connection pooling benchmark (issue 13): a fresh embedded cluster with its managed pgbouncer, N tenants, and

1. new-connection latency of a tenant login, direct (TLS + SCRAM + a backend forked) vs through the pooler
   (TLS + SCRAM against pgbouncer, a pooled server connection reused): p50/p99 over --connects connects, each a
   full connect + `SELECT 1` + close, by three clients in turn (see CLIENTS): psycopg (libpq underneath: what
   applications do), bench/scram_client.py with SCRAM's 4,096 rounds per connect in hashlib, and the same with the
   SCRAM keys cached across connects (RFC 5802 section 5.1, as a long-lived app pool may), which leaves the
   servers' own cost; `--workloads ''` measures only these;
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
import base64
import hashlib
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
import psycopg.sql

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

    def start(self, max_connections: int, server_socket: bool = False):
        status = json.loads(self.pgtenant("up", "--format", "json"))
        if (status.get("pooler") or {}).get("state") != "running":
            raise SystemExit(f"pgbouncer is not running after `pgtenant up`: {json.dumps(status)}")
        self.pgtenant("apply", str(self.repo))
        # The server's limit, set after provisioning (apply's own connections need no squeeze): the
        # auto.conf is read after postgresql.conf, so it wins; a restart applies it.
        data = self.state / "cluster" / "data"
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"max_connections = {max_connections}\nsuperuser_reserved_connections = 0\n")
        if server_socket:
            # The experiment of --server-paths socket: the server also listens on a Unix socket in a directory
            # only its OS account (which pgbouncer runs as) can enter, with SCRAM for every login on it.
            self.socket = self.state / "cluster" / "socket"
            self.socket.mkdir(mode=0o700, exist_ok=True)
            owner = data.stat()
            os.chown(self.socket, owner.st_uid, owner.st_gid)
            with open(data / "postgresql.auto.conf", "a") as conf:
                conf.write(f"unix_socket_directories = '{self.socket}'\nunix_socket_permissions = 0700\n")
            with open(data / "pg_hba.conf", "a") as hba:
                hba.write("local all all scram-sha-256\n")
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


def scram_connect_ms(uri: str, count: int, cache=None) -> tuple:
    """`connect_ms` with bench/scram_client.py (TLS 1.3, the same 4,096 SCRAM rounds in hashlib; with `cache`, the
    keys kept across connects as RFC 5802 section 5.1 allows): (milliseconds of the connects that worked, errors)."""
    host, port, user, password, dbname, cafile = scram_client.from_uri(uri)
    ctx = scram_client.context(cafile)
    samples, errors = [], []
    for _ in range(count):
        start = time.perf_counter()
        try:
            scram_client.connect_once(host, port, user, password, dbname, ctx, cache)
        except (ConnectionError, OSError) as error:
            errors.append(str(error))
            continue
        samples.append((time.perf_counter() - start) * 1000)
    return samples, errors


# The connect clients, each measured direct and pooled: what applications use (libpq), a client whose SCRAM is
# one hashlib PBKDF2 call per connect, and one that caches the SCRAM keys (the servers' own cost).
CLIENTS = {
    "psycopg": "psycopg (libpq 15): Hi() per connect, one HMAC_Init_ex per round",
    "hashlib": "bench/scram_client.py: Hi() per connect, in one hashlib call",
    "cached": "bench/scram_client.py, keys cached (RFC 5802 §5.1): Hi() once per login",
}


def measure_connects(first: dict, connects: int) -> dict:
    """p50/p99 of each client in CLIENTS, direct and pooled, over `connects` connects each, all six series
    interleaved in blocks of 100 so that they see the same machine load."""
    caches = {"direct": scram_client.KeyCache(), "pooled": scram_client.KeyCache()}
    uris = {"direct": first["uri"], "pooled": first["pooler_uri"]}
    samples = {(c, p): [] for c in CLIENTS for p in uris}
    errors = {(c, p): [] for c in CLIENTS for p in uris}
    # One warm-up connect each: the pooler's first server connection and the cache's first Hi() are not measured.
    for path, uri in uris.items():
        connect_ms(uri, 1)
        scram_connect_ms(uri, 1, caches[path])
    load = [os.getloadavg()[0]]
    block = min(100, connects)
    for _ in range(max(1, connects // 100)):
        for client in CLIENTS:
            for path, uri in uris.items():
                if client == "psycopg":
                    samples[client, path] += connect_ms(uri, block)
                else:
                    done, failed = scram_connect_ms(uri, block, caches[path] if client == "cached" else None)
                    samples[client, path] += done
                    errors[client, path] += failed
        load.append(os.getloadavg()[0])
    result = {"load_1m": {"min": min(load), "max": max(load)}}
    for client in CLIENTS:
        entry = {"label": CLIENTS[client]}
        for path in uris:
            got = samples[client, path]
            entry[f"{path}_connects"] = len(got)
            entry[f"{path}_errors"] = len(errors[client, path])
            entry[f"{path}_first_error"] = errors[client, path][:1]
            if got:
                entry[f"{path}_p50_ms"] = percentile(got, 50)
                entry[f"{path}_p99_ms"] = percentile(got, 99)
        if "direct_p50_ms" in entry and "pooled_p50_ms" in entry:
            entry["p50_ratio"] = entry["pooled_p50_ms"] / entry["direct_p50_ms"]
            entry["p99_ratio"] = entry["pooled_p99_ms"] / entry["direct_p99_ms"]
        result[client] = entry
    return result


def verifier(password: str, iterations: int) -> str:
    """A SCRAM-SHA-256 verifier of `password` with `iterations` rounds and a random salt, in PostgreSQL's format."""
    salt = os.urandom(16)
    client_key, server_key = scram_client._keys(password, salt, iterations)
    b64 = lambda raw: base64.b64encode(raw).decode()
    return (f"SCRAM-SHA-256${iterations}:{b64(salt)}$"
            f"{b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}")


def admin_console(fleet):
    state = json.loads((fleet.state / "cluster" / "pooler" / "state.json").read_text())
    port = json.loads(fleet.pgtenant("status", "--format", "json"))["pooler"]["port"]
    return psycopg.connect(host=str(fleet.state / "cluster" / "pooler"), port=port, user="pgtenant_pooler_admin",
                           password=state["admin_password"], dbname="pgbouncer", autocommit=True)


def use_iterations(fleet, credential: dict, iterations: int, bump: int) -> None:
    """Gives the login of `credential` a verifier of its unchanged password with `iterations` rounds, on the server
    (the login changes its own password: no superuser needed) and in pgbouncer's auth file (the same verifier, as
    pgbouncer needs), then RELOAD and RECONNECT, so that the pool logs in to the server again with the new keys.
    `bump`: seconds added to the auth file's mtime (pgbouncer re-reads it only when size or mtime changed)."""
    login, password = credential["username"], credential["password"]
    new = verifier(password, iterations)
    with psycopg.connect(credential["uri"], autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {psycopg.sql.Identifier(login).as_string(conn)} PASSWORD "
                     f"{psycopg.sql.Literal(new).as_string(conn)}")
    users = fleet.state / "cluster" / "pooler" / "users.txt"
    lines = [f'"{login}" "{new}"' if line.startswith(f'"{login}" ') else line
             for line in users.read_text().splitlines()]
    with open(users, "w") as out:  # in place: owner and mode stay
        out.write("\n".join(lines) + "\n")
    os.utime(users, (time.time() + bump, time.time() + bump))
    with admin_console(fleet) as admin:
        admin.pgconn.exec_(b"RELOAD")
        admin.pgconn.exec_(b"RECONNECT")


def measure_iterations(fleet, first: dict, counts: list, connects: int, block: int = 20) -> dict:
    """p50/p99 of the psycopg and hashlib clients, direct and pooled, with the login's verifier at each of `counts`
    iterations, over `connects` connects per series: the counts interleaved in blocks of `block` connects (each
    block: set the count, one unmeasured connect per path, then `block` connects per client and path), small blocks
    so that every count sees the same swings of a shared machine's load."""
    clients = ("psycopg", "hashlib")
    uris = {"direct": first["uri"], "pooled": first["pooler_uri"]}
    samples = {(n, c, p): [] for n in counts for c in clients for p in uris}
    errors = {(n, c, p): [] for n in counts for c in clients for p in uris}
    load, bump = [os.getloadavg()[0]], 0
    block = min(block, connects)
    for _ in range(max(1, connects // block)):
        for n in counts:
            bump += 2
            use_iterations(fleet, first, n, bump)
            for path, uri in uris.items():
                connect_ms(uri, 1)  # the pool's new server login, and a check that the count works
                for client in clients:
                    if client == "psycopg":
                        samples[n, client, path] += connect_ms(uri, block)
                    else:
                        done, failed = scram_connect_ms(uri, block)
                        samples[n, client, path] += done
                        errors[n, client, path] += failed
            load.append(os.getloadavg()[0])
    result = {"load_1m": {"min": min(load), "max": max(load)}, "series": []}
    for n in counts:
        for client in clients:
            entry = {"iterations": n, "client": client}
            for path in uris:
                got = samples[n, client, path]
                entry[f"{path}_connects"] = len(got)
                entry[f"{path}_errors"] = len(errors[n, client, path])
                if got:
                    entry[f"{path}_p50_ms"] = percentile(got, 50)
                    entry[f"{path}_p99_ms"] = percentile(got, 99)
            result["series"].append(entry)
    return result


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


def use_server_path(fleet, path: str) -> None:
    """Points every pool entry at the server over TCP + TLS (`tls`, as pgtenant renders it) or over the server's
    Unix socket (`socket`), by rewriting the databases file in place, then RELOAD (and RECONNECT, in
    `release_server_connections`)."""
    databases = fleet.state / "cluster" / "pooler" / "databases.ini"
    text = databases.read_text()
    tcp, unix = "host=127.0.0.1 ", f"host={fleet.socket} "
    text = text.replace(unix, tcp) if path == "tls" else text.replace(tcp, unix)
    with open(databases, "w") as out:  # in place: owner and mode stay
        out.write(text)
    state = json.loads((fleet.state / "cluster" / "pooler" / "state.json").read_text())
    port = json.loads(fleet.pgtenant("status", "--format", "json"))["pooler"]["port"]
    with psycopg.connect(host=str(fleet.state / "cluster" / "pooler"), port=port, user="pgtenant_pooler_admin",
                         password=state["admin_password"], dbname="pgbouncer", autocommit=True) as admin:
        admin.pgconn.exec_(b"RELOAD")
    release_server_connections(fleet)


def print_iterations(by_count: dict, connects: int) -> None:
    print(f"## Connect latency by SCRAM iteration count ({connects} connects per series, interleaved; "
          f"load average (1 min) {by_count['load_1m']['min']:.1f}–{by_count['load_1m']['max']:.1f})\n")
    print("| iterations | client | direct p50 / p99 | pooled p50 / p99 | pooled / direct p50 | failed direct / pooled |")
    print("|---|---|---|---|---|---|")
    for e in by_count["series"]:
        cells = [f"{e[p + '_p50_ms']:.2f} / {e[p + '_p99_ms']:.2f} ms" if p + "_p50_ms" in e else "–"
                 for p in ("direct", "pooled")]
        ratio = f"{e['pooled_p50_ms'] / e['direct_p50_ms']:.2f}×" if "pooled_p50_ms" in e and "direct_p50_ms" in e \
            else "–"
        print(f"| {e['iterations']} | {e['client']} | {cells[0]} | {cells[1]} | {ratio} "
              f"| {e['direct_errors']} / {e['pooled_errors']} |")


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
    parser.add_argument("--server-paths", default="tls",
                        help="comma-separated, of: tls (pgbouncer to the server over TCP + TLS, as rendered), socket "
                             "(experiment: over the server's Unix socket); each pooled run is repeated per path")
    parser.add_argument("--iterations", default=None,
                        help="comma-separated SCRAM iteration counts, e.g. 4096,1024,256,16: measure connect latency "
                             "(psycopg, hashlib; direct and pooled) with the first tenant's verifier at each count, "
                             "interleaved, instead of the three clients at pgtenant's count")
    parser.add_argument("--binary", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    for workload in workloads:
        if workload not in WORKLOADS:
            raise SystemExit(f"unknown workload {workload}: expected one of {', '.join(WORKLOADS)}")

    paths = [p for p in args.server_paths.split(",") if p]
    if not paths or any(p not in ("tls", "socket") for p in paths):
        raise SystemExit("--server-paths: tls, socket or both")
    fleet = Fleet(args.binary or default_binary(), args.tenants, args.pool_size)
    loads = []
    try:
        fleet.start(args.max_connections, "socket" in paths)
        first = fleet.credentials[fleet.tenants[0]]
        if args.iterations:
            counts = [int(n) for n in args.iterations.split(",") if n]
            by_count = measure_iterations(fleet, first, counts, args.connects)
            print_iterations(by_count, args.connects)
            if args.json:
                args.json.write_text(json.dumps({"tenants": args.tenants, "iterations": by_count}, indent=2) + "\n")
            return
        latency = measure_connects(first, args.connects)

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
                for path in paths:
                    if len(paths) > 1 or path != "tls":
                        use_server_path(fleet, path)
                    pooled_load = pgbench_load(
                        [fleet.credentials[t]["pooler_uri"] for t in fleet.tenants], args.clients_per_tenant,
                        args.seconds, fleet, workload, args.jobs,
                    )
                    loads.append({
                        "workload": workload,
                        "server_path": path,
                        "direct": direct_load,
                        "pooled": pooled_load,
                        "ratio": pooled_load["tps"] / direct_load["tps"] if direct_load["tps"] else None,
                        "steady_ratio": pooled_load["steady_tps"] / direct_load["steady_tps"]
                        if pooled_load["steady_tps"] and direct_load["steady_tps"] else None,
                        "wall_ratio": pooled_load["transactions"] / direct_load["transactions"]
                        if direct_load["transactions"] else None,
                    })
                    release_server_connections(fleet)
        result = {
            "tenants": args.tenants,
            "connects": args.connects,
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
    print("| new connection + SELECT 1 + close | direct p50 / p99 | pooled p50 / p99 | pooled / direct p50 / p99 "
          "| failed connects direct / pooled |")
    print("|---|---|---|---|---|")
    for client in CLIENTS:
        entry = latency[client]
        cells = []
        for path in ("direct", "pooled"):
            cells.append(f"{entry[path + '_p50_ms']:.2f} / {entry[path + '_p99_ms']:.2f} ms"
                         if f"{path}_p50_ms" in entry else "–")
        ratio = f"{entry['p50_ratio']:.2f}× / {entry['p99_ratio']:.2f}×" if "p50_ratio" in entry else "–"
        print(f"| {entry['label']} | {cells[0]} | {cells[1]} | {ratio} "
              f"| {entry['direct_errors']} / {entry['pooled_errors']} |")
        for path in ("direct", "pooled"):
            if entry[f"{path}_first_error"]:
                print(f"first {client} {path} connect error: {entry[path + '_first_error'][0]}")
    print()
    print(f"| load ({args.seconds} s) | clients | steady tps (s) | sum of pgbench tps | transactions | failed "
          "| client errors | CPU s pgbench / pgbouncer / server | load 1m mid | pooled / direct: steady, sum, total |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    shown = set()
    for entry in loads:
        rows = [(f"pooled, server over {entry['server_path']}", result["pooled_clients"], entry["pooled"])]
        if id(entry["direct"]) not in shown:
            shown.add(id(entry["direct"]))
            rows.insert(0, ("direct", result["direct_clients"], entry["direct"]))
        for name, clients, load in rows:
            cpu = load["cpu_s"]
            ratio = ""
            if name != "direct":
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
