"""A loopback HTTP server for tests of download code: nothing here ever touches the internet."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Server:
    """A loopback HTTP server: `routes[path]` is a list of (status, body) replies, the last repeated.
    Status 0 promises more bytes than it sends; -1 sends a 200 without a Content-Length.
    `headers[path]`: extra response headers. A HEAD request gets the headers of the GET reply it
    would get (counted in `hits` as "HEAD <path>")."""

    url: str
    routes: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def reply(self, path: str, hit: str) -> tuple[int, bytes]:
        """Count a request (`hit`: its key in `hits`) and pick its reply."""
        self.hits[hit] += 1
        replies = self.routes.get(path, [(404, b"not found")])
        return replies[min(self.hits[hit], len(replies)) - 1]


@contextlib.contextmanager
def serve() -> Iterator[Server]:
    """Start a loopback HTTP server for the block; stop it afterwards."""
    state = Server(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            status, body = state.reply(self.path, self.path)
            if status == 0:  # a body cut short: promise more bytes than are sent
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) * 4))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            if status == -1:  # no Content-Length: the body ends when the connection closes
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            self.send(status, body)

        def do_HEAD(self) -> None:  # noqa: N802
            self.send(*state.reply(self.path, f"HEAD {self.path}"), with_body=False)

        def send(self, status: int, body: bytes, with_body: bool = True) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in state.headers.get(self.path, {}).items():
                self.send_header(name, value)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
