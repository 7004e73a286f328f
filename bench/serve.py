#!/usr/bin/env python3
"""`pgtenant serve` benchmark: a fresh embedded cluster with N tenants applied, then the service.

    python3 bench/serve.py [--sizes 100,1000] [--samples 20] [--reconciles 1000] [--binary PATH]
                           [--no-pooler] [--skip-git] [--skip-drift] [--skip-rss]
    python3 bench/serve.py --compare A,B [--rounds 2] [--sizes ...] [--samples ...] [--no-pooler]

Figures, per N:
  change -> applied (directory)   a new tenant's values file written -> the API shows it in-sync
                                  (client side, polled every 5 ms): p50 and p99 over --samples,
                                  and the values files parsed meanwhile (the source is incremental)
  change -> applied (git webhook) a commit pushed to a bare repo and the signed webhook sent ->
                                  the API shows the new tenant in-sync with that commit
  drift pass                      the service's own "drift pass finished" log line (ms) for all N,
                                  and the most client backends the server had at once meanwhile
  drift repaired                  a REVOKE made by hand by a tenant's admin (first, middle and last
                                  tenant) -> the service has granted it again, in seconds, against
                                  the bound driftInterval + 1 s
  RSS                             of the serve process before and after --reconciles tenant
                                  reconciles (POST /api/v1/reconcile of everything, repeated)
  phases (directory)              medians over the samples, from the service's own log
                                  (PGTENANT_LOG_SPANS=1: every span's time when it closes):
                                  write -> source changed (debounce and read), -> apply started
                                  (queue), the apply's spans (observe, planning, verify,
                                  pooler_sync; execute = the rest of the apply, with the lock),
                                  apply finished -> the API shows it (state, publication, poll)
  load average                    of the machine at the start and the end of each N

--compare A,B runs only the directory change -> applied, on one cluster (grown with --binary),
starting serve binary A, then B, then A again… for samples / rounds new tenants each (interleaved
before/after on the same machine load); one JSON line per round and a summary per binary.
The phases include the pooler sync's parts (pooler_sync.base/store/files/reload) and, before the
apply, before_apply.source_read and before_apply.take_revision; none is subtracted twice.

--no-pooler runs without the managed pgbouncer (PGTENANT_PGBOUNCER=, as with no pgbouncer
installed). One JSON line per N is printed.

Timing lives here, never in tests. Everything runs on this machine (loopback only).
"""
import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPANS = ("apply", "observe", "planning", "verify", "pooler_sync")
# Inside pooler_sync (reported as pooler_sync.NAME, not subtracted from execute).
POOLER_SPANS = ("pooler_base", "pooler_store", "pooler_files", "pooler_reload")
# Before the apply, in the worker (part of the queue phase).
WORKER_SPANS = ("take_revision", "source_read")
BINARY = ROOT / "target" / "release" / "pgtenant"
TOKEN = "bench-token-not-secret"
WEBHOOK_SECRET = "bench-webhook-secret"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def git(cwd, *args):
    return run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com",
                "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
               cwd=cwd).stdout.strip()


def span_ms(text):
    """tracing's span times: `12.3ms`, `456µs`, `1.02s`, `789ns`."""
    match = re.fullmatch(r"([0-9.]+)\s*(ns|µs|us|ms|s)", text.strip())
    if not match:
        return 0.0
    scale = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def log_time(text):
    """An RFC 3339 log timestamp (UTC, microseconds) as seconds since the epoch."""
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


class Bench:
    def __init__(self, binary: Path, n: int, pooler: bool = True):
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="pgtenant-serve-bench-"))
        os.chmod(self.dir, 0o755)  # as root the server runs as another OS user
        self.state = self.dir / "state"
        self.repo = self.dir / "repo"
        self.env = {**os.environ, "PGTENANT_STATE_DIR": str(self.state)}
        self.env.pop("PGTENANT_ADMIN_URL", None)
        if not pooler:
            self.env["PGTENANT_PGBOUNCER"] = ""
        (self.dir / "token").write_text(TOKEN)
        (self.dir / "webhook").write_text(WEBHOOK_SECRET)
        for i in range(n):
            self.declare(self.repo, f"app{i:04d}")
        run([binary, "up"], env=self.env)
        run([binary, "apply", str(self.repo)], env=self.env)
        cluster = json.loads((self.state / "cluster" / "cluster.json").read_text())
        self.psql_env = {
            **os.environ,
            "PGHOST": "127.0.0.1", "PGPORT": str(cluster["port"]), "PGUSER": "pgtenant",
            "PGPASSWORD": cluster["control_password"], "PGDATABASE": "postgres",
            "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(self.state / "cluster" / "ca.crt"),
        }
        self.proc = None
        self.address = None

    @staticmethod
    def declare(repo: Path, name: str):
        folder = repo / "bench" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "values.yaml").write_text(f"postgresqlDatabases:\n  - name: {name}\n")

    def serve(self, source: str, drift: str = "1h", binary=None):
        self.log = open(self.dir / f"serve-{int(time.time() * 1000)}.log", "w+")
        self.proc = subprocess.Popen(
            [binary or self.binary, "--log-format", "json", "serve", source, "--listen", "127.0.0.1:0",
             "--poll-interval", "1h", "--drift-interval", drift,
             "--token-file", str(self.dir / "token"),
             "--webhook-secret-file", str(self.dir / "webhook")],
            env={**self.env, "PGTENANT_LOG": "info", "PGTENANT_LOG_SPANS": "1"},
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"http://(\S+?)/?$", line.strip())
        if not match:
            raise SystemExit(f"serve did not start: {line!r}")
        self.address = match.group(1)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None

    def request(self, path, method="GET", body=b"", headers=None):
        req = urllib.request.Request(f"http://{self.address}{path}", data=body if method == "POST" else None,
                                     method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def tenant(self, tenant):
        status, body = self.request(f"/api/v1/tenants/{tenant}")
        return json.loads(body) if status == 200 else None

    def wait_in_sync(self, tenant, revision=None, timeout=120):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            t = self.tenant(tenant)
            if t and t["state"] == "in-sync" and (revision is None or t.get("last_applied_revision") == revision):
                return time.perf_counter()
            time.sleep(0.005)
        raise SystemExit(f"{tenant} not in sync within {timeout} s")

    def wait_all(self, n, timeout=1800):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, body = self.request("/api/v1/tenants")
            tenants = json.loads(body)["tenants"] if status == 200 else []
            if sum(1 for t in tenants if t["state"] == "in-sync") >= n:
                return
            time.sleep(0.2)
        raise SystemExit("the service did not verify every tenant in time")

    def log_offset(self):
        self.log.flush()
        return os.path.getsize(self.log.name)

    def phases(self, offset, start_wall, visible_wall):
        """One sample's timeline from the log written since `offset` (see the module's doc)."""
        with open(self.log.name) as log:
            log.seek(offset)
            lines = [json.loads(line) for line in log if line.startswith("{")]
        source = next((log_time(e["timestamp"]) for e in lines
                       if e.get("fields", {}).get("message") == "source changed"), None)
        spans = {}
        apply_end = apply_wall = None
        for e in lines:
            fields = e.get("fields", {})
            name = e.get("span", {}).get("name")
            if fields.get("message") != "close" or name not in SPANS + POOLER_SPANS + WORKER_SPANS:
                continue
            wall = span_ms(fields.get("time.busy", "0ns")) + span_ms(fields.get("time.idle", "0ns"))
            if name in WORKER_SPANS:
                if apply_end is None:
                    spans[f"before_apply.{name}"] = spans.get(f"before_apply.{name}", 0.0) + wall
                continue
            if name in POOLER_SPANS:
                if apply_end is None:
                    key = f"pooler_sync.{name.removeprefix('pooler_')}"
                    spans[key] = spans.get(key, 0.0) + wall
                continue
            if name == "apply":
                if apply_end is not None:
                    continue  # a later apply (a drift batch) is not this sample's
                apply_end, apply_wall = log_time(e["timestamp"]), wall
            if apply_end is None or name == "apply":
                spans[name] = spans.get(name, 0.0) + wall
        if source is None or apply_end is None:
            return None
        inner = sum(v for k, v in spans.items() if k != "apply" and "." not in k)
        return {
            "debounce_and_read": (source - start_wall) * 1000,
            "queue": (apply_end - apply_wall / 1000 - source) * 1000,
            **{k: v for k, v in spans.items() if k != "apply"},
            "execute_and_lock": apply_wall - inner,
            "apply": apply_wall,
            "publish_and_poll": (visible_wall - apply_end) * 1000,
        }

    def drift_repaired_s(self, name, timeout):
        """REVOKE USAGE ON SCHEMA public FROM the read role, as the tenant's admin; seconds until
        the service has granted it again (polled every 20 ms on the admin's session)."""
        uri = run([self.binary, "credentials", f"bench/{name}", "--role", "admin", "--format", "uri"],
                  env=self.env).stdout.strip()
        read = f"bench-{name}-read"
        check = f"SELECT has_schema_privilege('{read}', 'public', 'USAGE');\n"
        poll = subprocess.Popen(["psql", "-X", "-At", "-f", "-", uri], env=self.psql_env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

        def granted():
            poll.stdin.write(check)
            poll.stdin.flush()
            return poll.stdout.readline().strip() == "t"

        try:
            if not granted():
                raise SystemExit(f"{read} has no USAGE on public before the REVOKE")
            run(["psql", "-X", "-q", "-c", f'REVOKE USAGE ON SCHEMA public FROM "{read}"', uri],
                env=self.psql_env)
            revoked = time.perf_counter()
            while not granted():
                if time.perf_counter() - revoked > timeout:
                    raise SystemExit(f"the REVOKE on {name} was not repaired within {timeout} s")
                time.sleep(0.02)
            return time.perf_counter() - revoked
        finally:
            poll.stdin.close()
            poll.wait()

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def reconciles_total(self):
        _, body = self.request("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
                   if line.startswith("pgtenant_reconciles_total"))

    def files_parsed(self):
        _, body = self.request("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
                   if line.startswith("pgtenant_source_files_parsed_total"))

    def close(self):
        try:
            self.stop()
        finally:
            subprocess.run([self.binary, "down"], env=self.env, capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)


class ConnectionWatch:
    """The most client backends the server has at once, sampled every 20 ms on one session."""

    def __init__(self, env):
        self.peak = 0
        self.stopping = False
        self.proc = subprocess.Popen(["psql", "-X", "-At", "-f", "-"], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        query = "SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend';\n"
        while not self.stopping:
            self.proc.stdin.write(query)
            self.proc.stdin.flush()
            self.peak = max(self.peak, int(self.proc.stdout.readline().strip() or 0))
            time.sleep(0.02)

    def close(self):
        self.stopping = True
        self.thread.join()
        self.proc.stdin.close()
        self.proc.wait()
        return self.peak


def load_average():
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def directory_samples(bench, n, first, samples, binary=None):
    """`samples` new tenants, one at a time, on a service started with `binary` (N served)."""
    bench.serve(str(bench.repo), binary=binary)
    bench.wait_all(n + first)
    latencies, timelines = [], []
    for i in range(first, first + samples):
        name = f"new{i:04d}"
        offset = bench.log_offset()
        start_wall = time.time()
        start = time.perf_counter()
        bench.declare(bench.repo, name)
        visible = bench.wait_in_sync(f"bench/{name}")
        latencies.append(visible - start)
        time.sleep(0.3)  # the log lines of this sample are written
        timeline = bench.phases(offset, start_wall, start_wall + (visible - start))
        if timeline:
            timelines.append(timeline)
    bench.stop()
    return latencies, timelines


def summary(latencies, timelines):
    result = {"p50_ms": round(statistics.median(latencies) * 1000),
              "p99_ms": round(percentile(latencies, 99) * 1000)}
    if timelines:
        keys = list(dict.fromkeys(k for t in timelines for k in t))
        result["phases_p50_ms"] = {
            k: round(statistics.median(t.get(k, 0.0) for t in timelines), 1) for k in keys}
    return result


def compare(binaries, n, samples, rounds, pooler=True):
    """Directory change -> applied of several serve binaries on one cluster, interleaved: each
    round starts every binary in turn for samples / rounds new tenants."""
    result = {"n": n, "pooler": pooler, "load_average_start": load_average()}
    bench = Bench(binaries[0], n, pooler)
    per = {b: ([], []) for b in binaries}
    first = 0
    try:
        for _ in range(rounds):
            for b in binaries:
                lat, tl = directory_samples(bench, n, first, samples // rounds, binary=b)
                first += samples // rounds
                per[b][0].extend(lat)
                per[b][1].extend(tl)
                print(json.dumps({"binary": str(b), **summary(lat, tl),
                                  "load_average": load_average()}), flush=True)
        result["binaries"] = [{"binary": str(b), **summary(*per[b])} for b in binaries]
    finally:
        result["load_average_end"] = load_average()
        bench.close()
    return result


def measure(binary: Path, n: int, samples: int, reconciles: int, pooler: bool = True,
            git_source: bool = True, drift_pass: bool = True, rss: bool = True) -> dict:
    result = {"n": n, "pooler": pooler, "load_average_start": load_average()}
    grow = time.time()
    bench = Bench(binary, n, pooler)
    result["grow_s"] = round(time.time() - grow, 1)
    try:
        # Directory source: N tenants served, then new tenants one at a time.
        bench.serve(str(bench.repo))
        bench.wait_all(n)
        latencies = []
        timelines = []
        parsed_before = bench.files_parsed()
        for i in range(samples):
            name = f"new{i:04d}"
            offset = bench.log_offset()
            start_wall = time.time()
            start = time.perf_counter()
            bench.declare(bench.repo, name)
            visible = bench.wait_in_sync(f"bench/{name}")
            latencies.append(visible - start)
            time.sleep(0.3)  # the log lines of this sample are written
            timeline = bench.phases(offset, start_wall, start_wall + (visible - start))
            if timeline:
                timelines.append(timeline)
        result["directory_p50_ms"] = round(statistics.median(latencies) * 1000)
        result["directory_p99_ms"] = round(percentile(latencies, 99) * 1000)
        # Values files parsed for the samples: one each (the other N are not parsed again).
        result["directory_files_parsed"] = int(bench.files_parsed() - parsed_before)
        if timelines:
            keys = list(dict.fromkeys(k for t in timelines for k in t))
            result["directory_phases_p50_ms"] = {
                k: round(statistics.median(t.get(k, 0.0) for t in timelines), 1) for k in keys}
        if not rss and not drift_pass and not git_source:
            return result

        # RSS before and after `reconciles` tenant reconciles.
        total = n + samples
        if not rss:
            reconciles = 0
        rss_before = bench.rss_kib()
        done_before = bench.reconciles_total()
        rounds = max(1, reconciles // total) if reconciles else 0
        for _ in range(rounds):
            target = bench.reconciles_total() + total
            status, body = bench.request("/api/v1/reconcile", "POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            if status != 202:
                raise SystemExit(f"POST /api/v1/reconcile: {status} {body!r}")
            while bench.reconciles_total() < target:
                time.sleep(0.05)
        result["reconciles"] = int(bench.reconciles_total() - done_before)
        result["rss_before_mib"] = round(rss_before / 1024, 1)
        result["rss_after_mib"] = round(bench.rss_kib() / 1024, 1)
        bench.stop()

        # Drift pass: a short interval, the service's own measure, connections sampled meanwhile.
        if not drift_pass:
            return result
        watch = ConnectionWatch(bench.psql_env)
        drift = max(10, total // 10)
        bench.serve(str(bench.repo), drift=f"{drift}s")
        deadline = time.time() + 3 * drift + 600
        passes = []
        while time.time() < deadline and len(passes) < 2:
            bench.log.seek(0)
            passes = [json.loads(line)["fields"]["ms"] for line in bench.log
                      if '"drift pass finished"' in line]
            time.sleep(0.5)
        result["drift_interval_s"] = drift
        # The first pass starts with the start-up reconcile of everything; the second is steady.
        result["drift_pass_ms"] = passes[-1] if passes else None
        result["drift_max_connections"] = watch.close()
        # A REVOKE made by hand (the tenant's admin, as a team would) -> the service repaired it.
        repairs = [bench.drift_repaired_s(f"app{i:04d}", timeout=3 * drift + 60)
                   for i in sorted({0, n // 2, n - 1})]
        result["drift_repair_s"] = [round(r, 2) for r in repairs]
        result["drift_repair_bound_s"] = drift + 1
        bench.stop()

        # Git source: the same tenants in a bare repo, a push and the signed webhook per sample.
        if not git_source:
            return result
        bare, work = bench.dir / "apps.git", bench.dir / "work"
        bare.mkdir()
        git(bare, "init", "-q", "--bare")
        git(bench.dir, "clone", "-q", str(bare), "work")
        git(work, "checkout", "-q", "-b", "main")
        shutil.copytree(bench.repo / "bench", work / "bench")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "tenants")
        git(work, "push", "-q", "origin", "main")
        bench.serve(f"file://{bare}")
        bench.wait_all(total)
        latencies = []
        for i in range(samples):
            name = f"git{i:04d}"
            start = time.perf_counter()
            bench.declare(work, name)
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", name)
            git(work, "push", "-q", "origin", "main")
            sha = git(work, "rev-parse", "HEAD")
            body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
            signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            status, answer = bench.request("/api/v1/hooks/git", "POST", body, {
                "Content-Type": "application/json", "X-GitHub-Event": "push",
                "X-Hub-Signature-256": signature})
            if status >= 300:
                raise SystemExit(f"webhook: {status} {answer!r}")
            latencies.append(bench.wait_in_sync(f"bench/{name}", revision=sha) - start)
        result["git_p50_ms"] = round(statistics.median(latencies) * 1000)
        result["git_p99_ms"] = round(percentile(latencies, 99) * 1000)
    finally:
        result["load_average_end"] = load_average()
        bench.close()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--reconciles", type=int, default=1000)
    parser.add_argument("--binary", default=str(BINARY))
    parser.add_argument("--no-pooler", action="store_true")
    parser.add_argument("--skip-git", action="store_true")
    parser.add_argument("--skip-drift", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--compare", help="serve binaries A,B,...: only the directory change -> "
                        "applied, interleaved on one cluster (--binary grows it)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for n in [int(s) for s in args.sizes.split(",")]:
        if args.compare:
            binaries = [Path(b) for b in args.compare.split(",")]
            print(json.dumps(compare(binaries, n, args.samples, args.rounds,
                                     pooler=not args.no_pooler)), flush=True)
            continue
        print(json.dumps(measure(Path(args.binary), n, args.samples, args.reconciles,
                                 pooler=not args.no_pooler, git_source=not args.skip_git,
                                 drift_pass=not args.skip_drift, rss=not args.skip_rss)),
              flush=True)


if __name__ == "__main__":
    main()
