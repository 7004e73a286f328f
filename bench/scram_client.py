"""A minimal PostgreSQL client for bench/pooler.py: TLS, SCRAM-SHA-256 with Python's hashlib (OpenSSL's PBKDF2 in
one call, not libpq's one HMAC_Init_ex per round), `SELECT 1`, close. It shows what connect latency the servers
(PostgreSQL, pgbouncer) give when the client's own SCRAM is cheap: the same 4,096 iterations, the same TLS (1.3,
as libpq negotiates).

Two modes, reported apart:
- *hashlib*: every connect computes SaltedPassword = Hi(password, salt, 4096) once, as any client must;
- *caching* (`cache=KeyCache()`): RFC 5802 section 5.1 lets a client keep ClientKey and ServerKey for the same
  password, salt and iteration count, as a long-lived application pool does (pgjdbc's and PgBouncer's own
  SCRAM clients keep the keys across logins too); only the first connect of a login pays the 4,096 rounds.
  What is left is TLS, the exchange's four messages, and the server's side: what the servers themselves cost.

    connect_once(host, port, user, password, dbname, ctx, cache=None)
"""
import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
from urllib.parse import parse_qs, unquote, urlparse


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _read(sock) -> tuple:
    head = _exactly(sock, 5)
    kind, length = head[:1], struct.unpack("!I", head[1:])[0]
    return kind, _exactly(sock, length - 4)


def _exactly(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def _error(body: bytes) -> str:
    fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
    return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')}"


def _auth(sock) -> tuple:
    kind, body = _read(sock)
    if kind == b"E":
        raise ConnectionError(_error(body))
    if kind != b"R":
        raise ConnectionError(f"expected an authentication message, got {kind!r}")
    return struct.unpack("!I", body[:4])[0], body[4:]


class KeyCache(dict):
    """(password, salt, iterations) -> (ClientKey, ServerKey): RFC 5802 section 5.1's client-side cache."""

    def keys_for(self, password: str, salt: bytes, iterations: int) -> tuple:
        key = (password, salt, iterations)
        if key not in self:
            self[key] = _keys(password, salt, iterations)
        return self[key]


def _keys(password: str, salt: bytes, iterations: int) -> tuple:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return hmac.digest(salted, b"Client Key", "sha256"), hmac.digest(salted, b"Server Key", "sha256")


def context(cafile, maximum_version=None) -> ssl.SSLContext:
    """verify-full with a CA file; without one, libpq's `sslmode=require` (encrypted, not verified). The newest
    TLS both sides have (1.3 here, like libpq) unless `maximum_version` caps it.

    An earlier version capped this at TLS 1.2 because pgbouncer 1.18 once refused its SCRAM proof over TLS 1.3
    (`SASL authentication failed`). With the same SCRAM code (gs2 header `n,,`, `c=biws`: no channel binding,
    the same over both TLS versions) that did not happen again in thousands of TLS 1.3 connects, cold pools
    (after RECONNECT) and warm, so the cap is gone (docs/pooling.md); bench/pooler.py counts any failed connect
    instead of stopping."""
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    return ctx


def connect_once(host: str, port: int, user: str, password: str, dbname: str, ctx: ssl.SSLContext,
                 cache: KeyCache = None) -> None:
    """One connect (SSLRequest, TLS, startup, SCRAM-SHA-256), `SELECT 1`, Terminate. A `host` starting with `/` is
    a Unix socket directory, as in libpq: no TLS then (`ctx` is not used). With `cache`, the SCRAM keys of a
    password, salt and iteration count seen before are reused (RFC 5802 section 5.1)."""
    if host.startswith("/"):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(f"{host}/.s.PGSQL.{port}")
    else:
        raw = socket.create_connection((host, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.sendall(struct.pack("!II", 8, 80877103))
        if _exactly(raw, 1) != b"S":
            raise ConnectionError("the server refused TLS")
        sock = ctx.wrap_socket(raw, server_hostname=host)
    try:
        params = b"user\0" + user.encode() + b"\0database\0" + dbname.encode() + b"\0\0"
        body = struct.pack("!I", 196608) + params
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        code, data = _auth(sock)
        if code != 10 or b"SCRAM-SHA-256\0" not in data:
            raise ConnectionError(f"expected SCRAM-SHA-256, got authentication code {code}")
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        sock.sendall(_message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
        code, data = _auth(sock)
        if code != 11:
            raise ConnectionError(f"expected SASLContinue, got {code}")
        server_first = data.decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        if not attrs["r"].startswith(nonce):
            raise ConnectionError("the server's nonce does not extend ours")
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        if cache is not None:
            client_key, server_key = cache.keys_for(password, salt, iterations)
        else:
            client_key, server_key = _keys(password, salt, iterations)
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
        sock.sendall(_message(b"p", final))
        code, data = _auth(sock)
        if code != 12:
            raise ConnectionError(f"expected SASLFinal, got {code}")
        expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
        if data.decode().strip("\0") != f"v={expected}":
            raise ConnectionError("the server's signature does not verify")
        while True:
            kind, body = _read(sock)
            if kind == b"E":
                raise ConnectionError(_error(body))
            if kind == b"Z":
                break
        sock.sendall(_message(b"Q", b"SELECT 1\0"))
        while True:
            kind, body = _read(sock)
            if kind == b"E":
                raise ConnectionError(_error(body))
            if kind == b"Z":
                break
        sock.sendall(_message(b"X", b""))
    finally:
        sock.close()


def from_uri(uri: str) -> tuple:
    """(host, port, user, password, dbname, cafile or None) of a libpq URI."""
    parsed = urlparse(uri)
    query = parse_qs(parsed.query)
    return (
        parsed.hostname,
        parsed.port or 5432,
        unquote(parsed.username),
        unquote(parsed.password),
        parsed.path.lstrip("/"),
        (query.get("sslrootcert") or [None])[0],
    )
