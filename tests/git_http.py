"""A private git host for tests: `git http-backend` behind a small threaded WSGI
server (wsgiref) with TLS and HTTP basic auth, on 127.0.0.1 and a free port.

Its certificate is made at start (a self-signed one for 127.0.0.1, its own CA):
git trusts it through GIT_SSL_CAINFO. It serves every repository under `root`
(GIT_PROJECT_ROOT) to the one username and token it is given, and records each
request (method, path, whether the credentials checked out).

    with GitHttpServer(tmp_path / "git-http", root=repo.path.parent) as server:
        server.url("repo")     # https://127.0.0.1:PORT/repo
        server.ca_file         # for GIT_SSL_CAINFO
"""

from __future__ import annotations

import base64
import datetime
import hmac
import ipaddress
import os
import secrets
import socketserver
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


@dataclass
class Seen:
    method: str
    path: str
    authorized: bool
    sent_credentials: bool


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _Threaded(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def self_signed(directory: Path, address: str = "127.0.0.1", names: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A key and a self-signed certificate for `address` and `names` (it is its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slipway-test-git-host")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address)),
                                                        *(x509.DNSName(name) for name in names)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_file, cert_file = directory / "key.pem", directory / "cert.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


class GitHttpServer:
    def __init__(self, directory: Path, *, root: Path, username: str = "gitlab+deploy-token-1",
                 token: str | None = None, delay: float = 0.0, certificate: tuple[Path, Path] | None = None,
                 host: str = "127.0.0.1"):
        self.dir, self.root, self.username, self.host = directory, root, username, host
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = token or "gldt-" + secrets.token_urlsafe(24)  # made at run time, never a fixture
        self.delay = delay  # seconds each answer waits: keeps git alive long enough to be looked at
        self.requests: list[Seen] = []
        self.key_file, self.ca_file = certificate or self_signed(self.dir)  # one per module saves a worker restart
        self.server = None
        self.thread = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, name: str) -> str:
        return f"https://{self.host}:{self.port}/{name}"

    def _expected(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.token}".encode()).decode()

    def app(self, environ, start_response):
        given = environ.get("HTTP_AUTHORIZATION", "")
        authorized = hmac.compare_digest(given.encode(), self._expected().encode())
        self.requests.append(Seen(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), authorized, bool(given)))
        if self.delay:
            time.sleep(self.delay)
        if not authorized:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="slipway-test"'),
                                                ("Content-Length", "0")])
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GATEWAY_INTERFACE": "CGI/1.1",
            "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": environ["REQUEST_METHOD"], "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""), "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": self.username, "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": environ.get("SERVER_PROTOCOL", "HTTP/1.0"),
            "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
            "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", ""),
            "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(self.dir),
        }
        done = subprocess.run(["git", "http-backend"], input=body, env=cgi, capture_output=True, timeout=60)
        head, sep, rest = done.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, _, rest = done.stdout.partition(b"\n\n")
        status, headers = "200 OK", []
        for line in head.decode(errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name.strip(), value.strip()))
        headers.append(("Content-Length", str(len(rest))))
        start_response(status, headers)
        return [rest]

    def start(self) -> GitHttpServer:
        self.server = make_server(self.host, 0, self.app, server_class=_Threaded, handler_class=_Quiet)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, self.key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="git-http")
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(10)

    def __enter__(self) -> GitHttpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ProcessWatch:
    """Reads every process's command line and environment on this machine while it
    runs (a `ps` that also looks at /proc/PID/environ), to prove a secret is on
    neither. `seen` holds what it read of the processes whose command line holds
    `needle` (e.g. the repository URL), so a test can check the watch saw them."""

    def __init__(self, needle: str, interval: float = 0.002):
        self.needle, self.interval = needle, interval
        self.seen: dict[int, tuple[str, str]] = {}  # pid -> (command line, environment)
        self.leaks: list[tuple[int, str]] = []
        self.secrets: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="process-watch")

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                    with open(f"/proc/{entry.name}/environ", "rb") as f:
                        environ = f.read().replace(b"\0", b"\n").decode(errors="replace")
                except OSError:
                    continue
                for secret in self.secrets:
                    if secret in cmdline or secret in environ:
                        self.leaks.append((int(entry.name), cmdline[:200]))
                if self.needle in cmdline:
                    self.seen[int(entry.name)] = (cmdline, environ)
            time.sleep(self.interval)

    def __call__(self, *secrets_: str) -> ProcessWatch:
        self.secrets = [s for s in secrets_ if s]
        return self

    def __enter__(self) -> ProcessWatch:
        assert self.secrets, "a watch with nothing to look for"
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
