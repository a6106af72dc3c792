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
    Status 0 promises more bytes than it sends; -1 sends a 200 without a Content-Length."""

    url: str
    routes: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)


@contextlib.contextmanager
def serve() -> Iterator[Server]:
    """Start a loopback HTTP server for the block; stop it afterwards."""
    state = Server(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            state.hits[self.path] += 1
            replies = state.routes.get(self.path, [(404, b"not found")])
            status, body = replies[min(state.hits[self.path], len(replies)) - 1]
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
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
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
