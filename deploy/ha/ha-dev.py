#!/usr/bin/env python3
"""A highly available PostgreSQL cluster on loopback for development and tests: etcd + Patroni.

    deploy/ha/ha-dev.py up DIR [--nodes 3]    start etcd and N Patroni nodes, wait for a primary,
                                              print the cluster's description (JSON) on stdout
    deploy/ha/ha-dev.py status DIR            the description, with each member's role and state
    deploy/ha/ha-dev.py kill-primary DIR      kill -9 the primary's Patroni and postmaster: the node dies
                                              and a replica takes over after the leader key's ttl
                                              (`--postmaster-only`: Patroni restarts it in place)
    deploy/ha/ha-dev.py down DIR              stop everything and keep DIR; `--remove` deletes it

Everything lives under DIR (0700): etcd's data, each node's data directory, Patroni's configs and logs,
a CA and a server certificate (every node serves TLS; clients can verify-full against 127.0.0.1), and
`cluster.json` (0600) with the superuser's password, the multi-host admin URL and the Patroni REST URLs.
PostgreSQL refuses to run as root, so as root the servers run as the `postgres` account (or
PGTENANT_HA_USER). Ports are free ones picked at start. Uses Debian's `patroni`, `python3-etcd` and
`etcd-server` packages and the PostgreSQL 15 server binaries (PGTENANT_HA_BIN_DIR overrides).
"""

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN_DIR = os.environ.get("PGTENANT_HA_BIN_DIR", "/usr/lib/postgresql/15/bin")
SCOPE = "pgtenant-ha"
# Patroni's failure detection: the leader key lives `ttl` seconds, refreshed every `loop_wait`.
# Short values keep failover drills quick on loopback (a failover takes about ttl seconds).
TTL, LOOP_WAIT, RETRY_TIMEOUT = 10, 2, 5
# How far (bytes of WAL) behind the primary's last reported position a replica may be and still be
# promoted. Patroni's 1 MiB is less than one CREATE DATABASE writes (the template's ~8 MiB, STRATEGY
# WAL_LOG): a primary killed during a burst of them left both replicas "exceeding maximum replication
# lag", and no leader at all. A drill cluster prefers a leader that may miss the last commits, which
# is the case pgtenant's failover handling is built for (it plans again from the new primary's catalog).
MAXIMUM_LAG_ON_FAILOVER = 64 * 1024 * 1024
START_TIMEOUT = 120


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def server_account():
    if os.geteuid() != 0:
        return None
    name = os.environ.get("PGTENANT_HA_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        sys.exit(f"ha-dev: running as root needs the unprivileged account `{name}` (set PGTENANT_HA_USER)")


def spawn(cmd, account, log, home):
    """Starts `cmd` in its own session, as the server's account when we are root (so the pid is the
    program's own, not a wrapper's, and signals reach it)."""
    env = dict(os.environ, HOME=str(home))
    as_account = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if account else {}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env, cwd=home, **as_account)


def hand_over(path, account):
    if account:
        os.chown(path, account.pw_uid, account.pw_gid)


def private_dir(path, account=None):
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    hand_over(path, account)


def write_private(path, text, account=None):
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    hand_over(tmp, account)
    os.replace(tmp, path)


def make_certificates(root, account):
    tls = root / "tls"
    private_dir(tls, account)
    run = lambda *args: subprocess.run(args, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "30", "-subj", "/CN=pgtenant-ha-dev CA", "-keyout", str(tls / "ca.key"),
        "-out", str(tls / "ca.crt"))
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-keyout", str(tls / "server.key"), "-out", str(tls / "server.csr"))
    ext = tls / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(tls / "server.csr"), "-CA", str(tls / "ca.crt"),
        "-CAkey", str(tls / "ca.key"), "-CAcreateserial", "-days", "30", "-extfile", str(ext),
        "-out", str(tls / "server.crt"))
    for name in os.listdir(tls):
        os.chmod(tls / name, 0o600)
        hand_over(tls / name, account)
    return tls


def node_config(root, tls, index, node, etcd_port, superuser_password, replication_password):
    name = f"node{index}"
    data_dir = root / name / "data"
    return {
        "scope": SCOPE,
        "name": name,
        "log": {"dir": str(root / name), "file_size": 10_000_000, "file_num": 2},
        "restapi": {"listen": f"127.0.0.1:{node['rest']}", "connect_address": f"127.0.0.1:{node['rest']}"},
        "etcd3": {"hosts": [f"127.0.0.1:{etcd_port}"]},
        "bootstrap": {
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": MAXIMUM_LAG_ON_FAILOVER,
                "postgresql": {
                    "use_pg_rewind": True,
                    "parameters": {
                        "ssl": "on",
                        "ssl_cert_file": str(tls / "server.crt"),
                        "ssl_key_file": str(tls / "server.key"),
                        "ssl_ca_file": str(tls / "ca.crt"),
                        "password_encryption": "scram-sha-256",
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "wal_log_hints": "on",
                        "max_connections": 200,
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth": "scram-sha-256"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node['pg']}",
            "connect_address": f"127.0.0.1:{node['pg']}",
            "data_dir": str(data_dir),
            "bin_dir": BIN_DIR,
            "pgpass": str(root / name / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": superuser_password},
                "replication": {"username": "replicator", "password": replication_password},
                "rewind": {"username": "postgres", "password": superuser_password},
            },
            "pg_hba": [
                "local all all scram-sha-256",
                "hostssl replication replicator 127.0.0.1/32 scram-sha-256",
                "host replication replicator 127.0.0.1/32 scram-sha-256",
                "hostssl all all 127.0.0.1/32 scram-sha-256",
                "hostssl all all ::1/128 scram-sha-256",
            ],
            "parameters": {"unix_socket_directories": str(root / name)},
        },
    }


def rest(url, timeout=2.0):
    """(status, JSON body) of a Patroni REST endpoint; (None, None) when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, None
    except (OSError, ValueError):
        return None, None


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    sys.exit(f"ha-dev: {what} within {timeout} s failed; see the logs under the cluster directory")


def load(root):
    path = root / "cluster.json"
    if not path.exists():
        sys.exit(f"ha-dev: {root} holds no cluster (no cluster.json); start one with `up {root}`")
    return json.loads(path.read_text())


def primary_of(desc):
    for member in desc["members"]:
        status, body = rest(member["patroni"] + "/primary")
        if status == 200:
            return member, body
    return None


def up(root, nodes):
    account = server_account()
    if (root / "cluster.json").exists():
        sys.exit(f"ha-dev: {root} already holds a cluster; `down {root} --remove` first")
    private_dir(root, account)
    tls = make_certificates(root, account)
    etcd_client, etcd_peer = free_ports(2)
    ports = free_ports(2 * nodes)
    members = [{"pg": ports[2 * i], "rest": ports[2 * i + 1]} for i in range(nodes)]
    superuser_password = secrets.token_urlsafe(24)
    replication_password = secrets.token_urlsafe(24)

    etcd_dir = root / "etcd"
    private_dir(etcd_dir, account)
    etcd_log = open(root / "etcd.log", "ab")
    etcd = spawn(["etcd", "--name", "ha-dev", "--data-dir", str(etcd_dir / "data"),
                  "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                  "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                  "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                  "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                  "--initial-cluster", f"ha-dev=http://127.0.0.1:{etcd_peer}"], account, etcd_log, etcd_dir)
    wait_for("etcd answering", lambda: rest(f"http://127.0.0.1:{etcd_client}/health")[0] == 200, 30)

    desc = {
        "scope": SCOPE,
        "etcd": {"url": f"http://127.0.0.1:{etcd_client}", "pid": etcd.pid},
        "ca_file": str(tls / "ca.crt"),
        "superuser": "postgres",
        "superuser_password": superuser_password,
        "ttl": TTL,
        "loop_wait": LOOP_WAIT,
        "retry_timeout": RETRY_TIMEOUT,
        "members": [],
    }
    for i, node in enumerate(members):
        name = f"node{i}"
        private_dir(root / name, account)
        config = node_config(root, tls, i, node, etcd_client, superuser_password, replication_password)
        config_path = root / name / "patroni.yml"
        write_private(config_path, json.dumps(config, indent=2), account)  # JSON is YAML
        log = open(root / name / "patroni.out", "ab")
        proc = spawn(["patroni", str(config_path)], account, log, root / name)
        desc["members"].append({"name": name, "host": "127.0.0.1", "port": node["pg"],
                                "patroni": f"http://127.0.0.1:{node['rest']}", "patroni_pid": proc.pid,
                                "data_dir": str(root / name / "data")})
        if i == 0:
            # The first node bootstraps; the others then clone it instead of racing to initdb.
            wait_for("a primary", lambda: primary_of(desc), START_TIMEOUT)

    hosts = ",".join(f"127.0.0.1:{m['port']}" for m in desc["members"])
    desc["admin_url"] = (f"postgresql://postgres:{superuser_password}@{hosts}/postgres"
                         f"?target_session_attrs=read-write&sslmode=verify-full&sslrootcert={tls / 'ca.crt'}")
    write_private(root / "cluster.json", json.dumps(desc, indent=2))

    def all_streaming():
        body = cluster_view(desc)
        if not body:
            return False
        states = [(m.get("role"), m.get("state")) for m in body.get("members", [])]
        return len(states) == nodes and all(
            s in ("running", "streaming") for _, s in states)
    wait_for(f"{nodes} members running", all_streaming, START_TIMEOUT)
    print(json.dumps(describe(root, desc), indent=2))


def cluster_view(desc):
    """Patroni's view of the cluster from the first member that answers (a dead one cannot)."""
    for member in desc["members"]:
        status, body = rest(member["patroni"] + "/cluster")
        if status == 200 and body:
            return body
    return None


def describe(root, desc):
    shown = {k: v for k, v in desc.items() if k != "superuser_password"}
    shown["admin_url"] = desc["admin_url"].replace(desc["superuser_password"], "***")
    shown["cluster_file"] = str(root / "cluster.json")
    body = cluster_view(desc)
    for member in shown["members"]:
        live = next((m for m in (body or {}).get("members", []) if m.get("name") == member["name"]), {})
        member["role"] = live.get("role", "unknown")
        member["state"] = live.get("state", "unreachable")
    return shown


def postmaster_pid(data_dir):
    try:
        return int(Path(data_dir, "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def kill_primary(root, postmaster_only):
    desc = load(root)
    found = primary_of(desc)
    if not found:
        sys.exit("ha-dev: no member answers as primary")
    member, _ = found
    pid = postmaster_pid(member["data_dir"])
    if not pid:
        sys.exit(f"ha-dev: {member['name']} has no postmaster.pid")
    if not postmaster_only:
        # Patroni first, or it would restart the postmaster before we are done.
        os.kill(member["patroni_pid"], signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    killed = {"killed": member["name"], "postmaster_pid": pid, "at": time.time()}
    if not postmaster_only:
        killed["patroni_pid"] = member["patroni_pid"]
    print(json.dumps(killed))


def down(root, remove):
    desc = load(root)
    for member in desc["members"]:
        stop(member["patroni_pid"])
    stop(desc["etcd"]["pid"])
    for member in desc["members"]:
        # Patroni stops its postmaster on SIGTERM; one killed -9 in a drill may have left a server.
        pid = postmaster_pid(member["data_dir"])
        if pid:
            stop(pid)
    if remove:
        shutil.rmtree(root)


def stop(pid, timeout=30):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "status", "kill-primary", "down"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--nodes", type=int, default=3, choices=[2, 3])
    parser.add_argument("--remove", action="store_true", help="down: delete the directory too")
    parser.add_argument("--postmaster-only", action="store_true",
                        help="kill-primary: kill only the postmaster (Patroni restarts it, no failover)")
    args = parser.parse_args()
    root = args.dir.resolve()
    for tool in ("patroni", "etcd", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"ha-dev: `{tool}` is not installed (apt-get install patroni python3-etcd etcd-server openssl)")
    if args.command == "up":
        up(root, args.nodes)
    elif args.command == "status":
        print(json.dumps(describe(root, load(root)), indent=2))
    elif args.command == "kill-primary":
        kill_primary(root, args.postmaster_only)
    else:
        down(root, args.remove)


if __name__ == "__main__":
    main()
