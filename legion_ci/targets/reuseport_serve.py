"""Stand-in for `legion-ci serve --reuse-port`, used only while the server lacks that option.

The `process` target replaces a model by starting the new server on the same port beside the
old one, which needs SO_REUSEPORT on both listening sockets. `legion-ci serve --reuse-port`
(LEGION_SERVE_REUSE_PORT) is being added to the server; until it is there, the target runs
`python -m legion_ci.targets.reuseport_serve ARTIFACT [serve options]`, which is `legion-ci
serve` with two differences:
- the listening socket sets SO_REUSEPORT;
- the model is loaded once before the socket is bound, so a binary that cannot load never
  joins the port's group and never receives a client's connection;
- on SIGTERM an idle connection is closed after a short grace instead of at once: a
  connection accepted just before the signal may have its first request on the way, and
  closing it unread would reset that request.
Delete this module once `serve --reuse-port` has landed (process.py then stops using it).
"""

from __future__ import annotations

import socket
import sys

from legion_ci.errors import InputError


def _bind_reuse_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


DRAIN_IDLE_GRACE_S = 0.5


def _drain_with_grace(self) -> None:  # type: ignore[no-untyped-def]
    def close_if_idle() -> None:
        if not self.busy and not self.in_body and self.transport is not None:
            self.transport.close()

    self.loop.call_later(DRAIN_IDLE_GRACE_S, close_if_idle)


def main(argv: list[str]) -> None:
    from pathlib import Path

    from legion_ci.cli import main as cli_main
    from legion_ci.server import process

    artifact = argv[0]

    def bind(host: str, port: int) -> socket.socket:
        from legion_ci.gppi.archive import open_artifact
        from legion_ci.gppi.loader import load_model

        load_model(open_artifact(Path(artifact)))  # raises before the port is joined
        return _bind_reuse_port(host, port)

    process.bind = bind
    from legion_ci.server import native

    native.HttpProtocol.drain = _drain_with_grace
    cli_main.main(["serve", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
