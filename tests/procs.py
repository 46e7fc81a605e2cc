"""The one way tests start and stop a real process (servers, emulators, daemons).

`service()` starts a command in its own process group with its output in a log file, waits
until `ready()` says so (polling a condition, never a fixed sleep), yields, and stops the whole
group by pid when the block ends, on failure too: SIGTERM, then SIGKILL after `grace` seconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from legion_ci.processes import terminate_group


def free_port() -> int:
    """A port nothing listens on right now (also used as the 'unreachable' port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def http_ok(url: str, *, statuses: Sequence[int] = (200,)) -> Callable[[], bool]:
    """A readiness check: `url` answers with one of `statuses`."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status in statuses
        except urllib.error.HTTPError as exc:
            return exc.code in statuses
        except (OSError, ValueError):
            return False

    return check


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll `condition` until true; raise naming `what` after `timeout` s, or as soon as
    `alive()` returns a reason the awaited process is gone."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None:
            reason = alive()
            if reason:
                raise RuntimeError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:.0f} s")
        time.sleep(interval)


def process_state(pid: int) -> str | None:
    """None once `pid` is gone; else its state, parent and command line, for a message.
    A zombie counts as running: it means nobody reaped it, which is worth failing on."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None if not Path(f"/proc/{pid}").exists() else f"pid {pid}: unreadable /proc"
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return (
        f"pid {pid} still there: state {fields.get('State', '?').strip()},"
        f" parent {fields.get('PPid', '?').strip()}, command {cmdline.strip()!r}"
    )


def wait_gone(pid: int, timeout: float = 30.0, what: str = "process") -> None:
    """Poll until `pid` no longer exists; fail naming what is left of it after `timeout` s."""
    deadline = time.monotonic() + timeout
    while (state := process_state(pid)) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} outlived its deadline of {timeout:.0f} s: {state}")
        time.sleep(0.05)


def run_group(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float
) -> tuple[int, str]:
    """Run `argv` in a process group of its own to the end; its exit code and its stdout and
    stderr together. The whole group is stopped afterwards, on a timeout too, so nothing a
    CI runner's job started outlives the test."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        terminate_group(proc, grace=10)
    return proc.returncode, out


@contextlib.contextmanager
def service(
    argv: Sequence[str],
    log_path: Path,
    *,
    ready: Callable[[], bool] | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    unset: Sequence[str] = (),
    cwd: Path | None = None,
    grace: float = 10.0,
    name: str | None = None,
    on_stop: Callable[[], None] | None = None,
) -> Iterator[Service]:
    """Run `argv` until the block ends; see the module docstring."""
    what = name or Path(argv[0]).name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    for key in unset:
        full_env.pop(key, None)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    svc = Service(proc, log_path)
    try:
        if ready is not None:

            def alive() -> str | None:
                if proc.poll() is None:
                    return None
                return f"exited with {proc.returncode}:\n{svc.log_tail()}"

            try:
                wait_for(ready, timeout, what, alive=alive)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{svc.log_tail()}") from None
        yield svc
    finally:
        terminate_group(proc, grace=grace)
        if on_stop is not None:
            on_stop()
