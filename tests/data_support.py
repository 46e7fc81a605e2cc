"""Real servers on 127.0.0.1 for data-binding tests: moto's S3 emulator and a static HTTP server."""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from legion_ci.runner.process import terminate_group


def free_port() -> int:
    """A port nothing listens on right now (also used as the 'unreachable storage' port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server(log_path: Path, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run moto's standalone server on 127.0.0.1; yield its endpoint URL; stop it by pid."""
    port = free_port()
    env = dict(os.environ)
    # The emulator must never see real credentials, whatever the machine has.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(key, None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited early:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto server not ready in {startup_timeout}s:\n{log_path.read_text()}"
                    ) from None
                time.sleep(0.1)
        yield endpoint
    finally:
        terminate_group(proc, grace=10)


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
