"""Real servers on 127.0.0.1 for data-binding tests: moto's S3 emulator and a static HTTP server."""

from __future__ import annotations

import base64
import contextlib
import http.server
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from procs import free_port, http_ok, service


@contextlib.contextmanager
def moto_server(log_path: Path, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run moto's standalone server on 127.0.0.1; yield its endpoint URL; stop it by pid."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # The emulator must never see real credentials, whatever the machine has.
    with service(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log_path,
        ready=http_ok(f"{endpoint}/moto-api/"),
        timeout=startup_timeout,
        unset=AWS_KEYS,
        name="moto server",
    ):
        yield endpoint


AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@dataclass
class HttpFiles:
    """A static file server: /private/* needs basic auth; /truncated promises more than it sends."""

    root: Path
    username: str
    password: str
    url: str = ""
    seen_headers: list[dict[str, str]] = field(default_factory=list)


@contextlib.contextmanager
def http_files(root: Path, username: str, password: str) -> Iterator[HttpFiles]:
    state = HttpFiles(root=root, username=username, password=password)
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            state.seen_headers.append(dict(self.headers.items()))
            if self.path.startswith("/private/") and self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="data"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/truncated":
                # Announces 1 MiB, sends 10 bytes and hangs up: a download that breaks off.
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 20))
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest output clean

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
