#!/usr/bin/env python3
"""The no-op plan of N tenants split over 4 clusters of a fleet, against the same N on 1 cluster
(issue 15; section "## Fleet: 4 clusters against 1" of docs/benchmarks.md).

    python3 bench/fleet.py [--tenants 1000] [--clusters 4] [--runs 3] [--binary PATH] [--out docs/benchmarks.md]

Starts clusters+1 embedded clusters (fsync on), each in its own state dir as `pgtenant up` makes it: `clusters`
of them form the fleet of one platform config, the last is the only cluster of another config. The same apps
repo of N tenants is applied through each config (the fleet places them by headroom), then, for each, the median
of --runs runs of the full no-op `plan --full`, the default no-op `plan` and `check`. The control role reaches
each cluster over its private Unix socket, as `pgtenant` does on the embedded cluster.
"""
import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

import run as harness

ROOT = harness.ROOT


def admin_url(cluster: harness.Cluster) -> str:
    state = json.loads((cluster.state / "cluster" / "cluster.json").read_text())
    password, port = state["control_password"], state["port"]
    socket_dir = (cluster.state / "cluster" / "socket").resolve()
    if (socket_dir / f".s.PGSQL.{port}").exists():
        return (f"postgresql://pgtenant:{password}@/postgres?host={urllib.parse.quote(str(socket_dir), safe='')}"
                f"&port={port}&sslmode=disable")
    ca = urllib.parse.quote(str(cluster.state / "cluster" / "ca.crt"), safe="")
    return f"postgresql://pgtenant:{password}@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"


class Platform:
    """A platform config over some clusters, with its own local state dir, applying one shared repo."""

    def __init__(self, name: str, members: list, repo: Path, root: Path, binary: Path):
        self.binary = binary
        self.dir = root / name
        self.dir.mkdir(mode=0o700)
        config = f"repo: {repo}\nclusters:\n"
        for i, member in enumerate(members):
            url = self.dir / f"c{i}.url"
            url.write_text(admin_url(member) + "\n")
            os.chmod(url, 0o600)
            config += f"  - name: c{i}\n    adminUrl: file:{url}\n"
        (self.dir / "pgtenant.yaml").write_text(config)
        self.env = {**os.environ, "PGTENANT_CONFIG": str(self.dir / "pgtenant.yaml"),
                    "PGTENANT_STATE_DIR": str(self.dir / "state")}
        self.env.pop("PGTENANT_ADMIN_URL", None)

    def pgtenant(self, *args):
        elapsed, _, out = harness.timed([self.binary, *args], env=self.env)
        return elapsed, out


def operations(plan: dict) -> int:
    """Operations of a plan's JSON, fleet (per cluster) or single."""
    if "clusters" in plan:
        return sum(len(c.get("operations", [])) for c in plan["clusters"])
    return len(plan["operations"])


def measure(platform: Platform, runs: int, full: list) -> dict:
    grow, out = platform.pgtenant("apply", "--format", "json")
    applied = json.loads(out)
    spread = [c["tenants"] for c in applied["clusters"]] if "clusters" in applied else [None]
    samples = {"full": [], "plan": [], "check": []}
    for _ in range(runs):
        elapsed, out = platform.pgtenant(*full, "--format", "json")
        if operations(json.loads(out)):
            raise SystemExit(f"{platform.dir.name}: the no-op plan has operations: it did not converge")
        samples["full"].append(elapsed)
        samples["plan"].append(platform.pgtenant("plan", "--format", "json")[0])
        samples["check"].append(platform.pgtenant("check", "--format", "json")[0])
    result = {k: statistics.median(v) for k, v in samples.items()}
    result.update(grow=grow, spread=spread)
    print(f"{platform.dir.name}: " + json.dumps(result), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--binary", help="pgtenant to measure (default: a release build of this tree)")
    args = parser.parse_args()
    binary = Path(args.binary).resolve() if args.binary else harness.BINARY
    if not args.binary:
        harness.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    harness.BINARY = binary
    full = ["plan", "--full"] if harness.has_flag(binary, "plan", "--full") else ["plan"]
    root = Path(tempfile.mkdtemp(prefix="pgtenant-bench-fleet-"))
    os.chmod(root, 0o755)  # as root the servers run as another OS user
    repo = root / "repo"
    for i in range(args.tenants):
        folder = repo / "bench" / f"app{i:04d}"
        folder.mkdir(parents=True)
        (folder / "values.yaml").write_text(f"postgresqlDatabases:\n  - name: app{i:04d}\n")
    clusters = []
    try:
        for _ in range(args.clusters + 1):
            clusters.append(harness.Cluster(0, binary))
        fleet = measure(Platform("fleet", clusters[:-1], repo, root, binary), args.runs, full)
        single = measure(Platform("single", clusters[-1:], repo, root, binary), args.runs, full)
    finally:
        for c in clusters:
            c.close()
        harness.shutil.rmtree(root, ignore_errors=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    n, k = args.tenants, args.clusters
    row = lambda name, r: (f"| {name} | {r['full']:.3f} | {r['plan']:.3f} | {r['check']:.3f} | {r['grow']:.1f} "
                           f"| {', '.join(str(s) for s in r['spread']) if r['spread'] != [None] else n} |")
    text = f"""## Fleet: {k} clusters against 1

Produced by `python3 bench/fleet.py --tenants {n} --clusters {k} --runs {args.runs}`: {k + 1} embedded clusters on
this one machine (fsync on); the same apps repo of {n} tenants applied through a platform config of {k} clusters
(placed by headroom) and through one of a single cluster; each figure the median of {args.runs} runs.

Machine: {os.cpu_count()} cores ({cpu}). Date: {time.strftime('%Y-%m-%d')}.

| config | full no-op `{' '.join(full)}` (s) | default no-op `plan` (s) | `check` (s) | first apply of {n} (s) | tenants per cluster |
|---|---|---|---|---|---|
{row(f"{k} clusters", fleet)}
{row("1 cluster", single)}

- {k} clusters / 1: full no-op plan {fleet['full'] / single['full']:.2f}×, default plan {fleet['plan'] / single['plan']:.2f}×,
  check {fleet['check'] / single['check']:.2f}×.
- All clusters share the same 2 cores here, so the split shows what the fleet's own work costs (one inventory
  query and one observation per cluster, run concurrently) rather than the gain of clusters on machines of
  their own, where each cluster's share of the inspection runs on its own CPUs.

Load average when the run ended: {" / ".join(f"{x:.2f}" for x in os.getloadavg())} (1 / 5 / 15 min).
"""
    harness.write_section(Path(args.out), f"## Fleet: {k} clusters against 1", text)
    print(text)


if __name__ == "__main__":
    main()
