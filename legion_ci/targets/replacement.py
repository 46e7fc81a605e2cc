"""Replacing a running model server without dropping a request, for every local target.

Start the new server beside the old one on the same port (both sockets set SO_REUSEPORT, so
the kernel spreads new connections over both), prove it (ready, smoke-tested, still alive),
and only then drain the old one. A new server that fails is stopped at once, the old one keeps
serving untouched, and the stage fails with the reason and the new server's log tail. The
target says how its servers start, live, get ready, log and stop (a `NewServer`); the order,
the signal handling and the messages are the same for all of them.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from legion_ci.errors import StageError
from legion_ci.processes import HeldSignals
from legion_ci.targets import smoke

if TYPE_CHECKING:
    from legion_ci.processes import StageLog

READY_MARK = "; ready (pid "  # the server's log line once a worker has loaded the model


class NewServer(Protocol):
    """The server a target is starting, as the replacement procedure drives it."""

    kind: str  # how messages name it: "server", "container"

    def start(self) -> str:
        """Start it; returns how the log names it from now on ("pid 4242", "container x")."""
        ...

    def alive(self) -> str | None:
        """None while it runs; else why it is gone ("it exited with code 1 while starting")."""
        ...

    def ready(self) -> bool:
        """Its own log says every worker has loaded the model. Beside the old server,
        /healthcheck may be answered by either, so the new one's log is what tells."""
        ...

    def stop(self) -> None:
        """Kill it and remove what it leaves (it has no clients of its own to drain)."""
        ...

    def tail(self) -> str:
        """`last lines of its log (<where>):` and those lines, indented; called after stop()."""
        ...


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_port_free(host: str, port: int, holders: Callable[[], list[str]] = lambda: []) -> None:
    """A port someone else listens on must fail the deploy: with SO_REUSEPORT the new server
    could otherwise join another server's port (another deployment's) and share its traffic.
    `holders()` names the deployments known to listen there, for the message."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # SO_REUSEADDR passes over TIME_WAIT connections of an earlier server; without
        # SO_REUSEPORT the bind still fails while anything listens there.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            owners = holders()
            by = f" by deployment {', '.join(owners)}" if owners else ""
            raise StageError(
                f"port {port} on {host} is in use{by} ({exc.strerror}); choose another port"
            ) from None


def note_without_migration(log: StageLog, what: str) -> None:
    """Say in the stage log when the kernel will reset, not hand over, the connections queued
    on the old `what` (server, container) in the instant it leaves the port."""
    try:
        migrates = Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip() == "1"
    except OSError:
        migrates = False
    if not migrates:
        log.line(
            f"deploy: note: net.ipv4.tcp_migrate_req is 0 on this host, so a connection queued "
            f"on the old {what} in the instant it leaves the port is reset; set it to 1 to "
            f"have the kernel hand such connections to the new {what}"
        )


def start_and_prove(
    new: NewServer,
    *,
    failed: str,
    url: str,
    args: dict[str, Any],
    example: dict[str, Any] | None,
    replacing: bool,
    kept: str,
    log: StageLog,
) -> float:
    """Start `new` and prove it: ready within `readinessTimeout`, smoke-tested with `example`
    (`smokeRequests` times beside an old server), still alive. Returns the seconds it took.

    On failure `new` is stopped and StageError says `<failed> failed: <why><kept>` with its log
    tail; `failed` names it ("tiny: the new server (tiny 1.1)"), `kept` says what keeps
    serving. On Ctrl-C or SIGTERM it is stopped too: no unrecorded server may stay behind.
    """
    if replacing:
        note_without_migration(log, new.kind)
    began = time.monotonic()
    # A signal landing inside the start, before the target knows its pid or container, would
    # leave it running unrecorded: held until the try below can stop it.
    with HeldSignals() as held:
        label = new.start()
    try:
        held.release()
        smoke.prove_new_server(
            url, args, example, alive=new.alive, loaded=new.ready, shared=replacing
        )
    except StageError as exc:
        new.stop()
        raise StageError(f"{failed} failed: {exc}{kept}\n  {new.tail()}") from None
    except BaseException:
        new.stop()
        raise
    ready_s = time.monotonic() - began
    log.line(f"deploy: ready and smoke-tested in {ready_s:.2f} s ({label})")
    return ready_s


def drain_old(log: StageLog, kind: str, label: str, stop: Callable[[], str]) -> None:
    """Drain the replaced server once the new one is proven and recorded; `stop()` says how
    it went ("stopped", "killed", ...)."""
    log.line(f"deploy: draining the old {kind} {label}")
    log.line(f"deploy: old {kind} {stop()}")
