#!/usr/bin/env python3
"""The control role over the embedded cluster's Unix socket against TCP + TLS, interleaved on one cluster of
N converged tenants: the server's CPU per control-role connection (`pgbench -C`, one `SELECT 1`, from the
postmaster's reaped-children counters as bench/run.py reads them) and the wall time of `pgtenant plan --full`
with the admin URL pointing at the socket or at 127.0.0.1 with verify-full. Prints JSON with every figure
and the load average before and after.

    python3 bench/control_socket.py [--tenants 100] [--rounds 3] [--connections 100] [--binary target/debug/pgtenant]
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: the Cluster and its CPU accounting)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--binary", type=Path, default=bench.BINARY)
    args = parser.parse_args()
    loadavg = lambda: Path("/proc/loadavg").read_text().split()[:3]
    result = {"tenants": args.tenants, "binary": str(args.binary), "loadavg_before": loadavg()}
    cluster = bench.Cluster(args.tenants, args.binary)
    try:
        cluster.pgtenant("apply", "--format", "json")
        state = json.loads((cluster.state / "cluster" / "cluster.json").read_text())
        socket = (cluster.state / "cluster" / "socket").resolve()
        password, port = state["control_password"], state["port"]
        ca = cluster.state / "cluster" / "ca.crt"
        urls = {
            "socket": f"postgresql://pgtenant:{password}@/postgres?host={socket}&port={port}&sslmode=disable",
            "tls": f"postgresql://pgtenant:{password}@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}",
        }
        libpq = {"socket": {"PGHOST": str(socket), "PGSSLMODE": "disable"}, "tls": {}}
        script = cluster.dir / "one.sql"
        script.write_text("SELECT 1;\n")
        figures = {path: {"server_cpu_ms_per_connection": [], "plan_full_s": []} for path in urls}
        for round_ in range(args.rounds):
            for path in (["socket", "tls"] if round_ % 2 == 0 else ["tls", "socket"]):
                env = {**cluster.psql_env, **libpq[path]}
                before_children, before = cluster.backends(), cluster.children_cpu()
                bench.run(["pgbench", "-n", "-C", "-f", str(script), "-t", str(args.connections), "postgres"],
                          env=env)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and cluster.backends() - before_children:
                    time.sleep(0.01)
                cpu = (cluster.children_cpu() - before) * 1000 / args.connections
                figures[path]["server_cpu_ms_per_connection"].append(round(cpu, 2))
                cluster.env["PGTENANT_ADMIN_URL"] = urls[path]
                elapsed, _, _ = cluster.pgtenant("plan", "--full", "--format", "json")
                figures[path]["plan_full_s"].append(round(elapsed, 3))
        for path in figures:
            for key, values in list(figures[path].items()):
                figures[path][f"{key}_median"] = statistics.median(values)
        result["paths"] = figures
    finally:
        cluster.close()
    result["loadavg_after"] = loadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
