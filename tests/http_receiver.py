"""A small HTTP server on 127.0.0.1 (or another loopback address, `host`) that records
what it receives, for the clients that call out (GitLab's commit status API,
notification webhooks). It answers 201/200, or 500, or hangs until the test ends."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    mode: str = "ok"  # "ok", "500" or "hang"
    status: int = 201
    requests: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free one

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                                  body))
                if receiver.mode == "hang":
                    receiver.released.wait(60)
                    return
                code = 500 if receiver.mode == "500" else receiver.status
                answer = b'{"message": "500 Internal Server Error"}' if code == 500 else b'{"id": 1}'
                reply_json(self, code, answer)

            def log_message(self, *args):
                pass

        self.server = serve(Handler, self.host, self.port, "http-receiver")
        return self

    def stop(self) -> None:
        shut(self.server, self.released)


def serve(handler: type[BaseHTTPRequestHandler], host: str, port: int, name: str) -> ThreadingHTTPServer:
    """A threaded HTTP server on (host, port; 0: a free one), serving in a daemon thread."""
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name=name).start()
    return server


def shut(server: ThreadingHTTPServer | None, released: threading.Event) -> None:
    """Let hanging handlers go (`released`), then stop and close the server."""
    released.set()
    if server:
        server.shutdown()
        server.server_close()


def reply_json(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
