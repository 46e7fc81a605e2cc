"""Child processes: run for a stage (argument lists only, logged, redacted, cancellable), stopped
by process group, and told apart from a reused pid by their start time.

The one place legion-ci starts, watches and stops processes, below every phase: the train,
package and deploy code, the data bindings and the Airflow operators all come here.

A pid alone can lie: the process may be gone (a stale pid), a zombie, or the pid reused by an
unrelated process. So a process that outlives the stage that started it is recorded with its
start time (field 22 of /proc/<pid>/stat, in clock ticks since boot), and counts as running
only while that pid exists, is not a zombie and still has the same start time.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from legion_ci.errors import Cancelled, StageError
from legion_ci.redact import Redactor

__all__ = [
    "HeldSignals",
    "StageLog",
    "is_running",
    "run_logged",
    "start_time",
    "stop_pid",
    "terminate_group",
]


class StageLog:
    """A stage's log file; every line passes the redactor, optionally echoed to stderr."""

    def __init__(self, path: Path, redact: Redactor | None = None, echo: IO[str] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.redact = redact or Redactor()
        self.echo = echo
        self._handle = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._lock = threading.Lock()
        self._tail: deque[str] = deque(maxlen=200)

    def write(self, text: str) -> None:
        text = self.redact(text)
        with self._lock:
            self._handle.write(text)
            self._handle.flush()
            self._tail.extend(text.splitlines())
            if self.echo is not None:
                self.echo.write(text)
                self.echo.flush()

    def line(self, text: str) -> None:
        self.write(text.rstrip("\n") + "\n")

    def tail(self, lines: int = 20) -> list[str]:
        return list(self._tail)[-lines:]

    def close(self) -> None:
        with self._lock:
            self._handle.close()


class HeldSignals:
    """SIGINT and SIGTERM held back while a child process is being started.

    A signal whose handler raises (Ctrl-C, a cancelling SIGTERM) can land inside
    subprocess.Popen after the fork, before it returns: the exception then leaves Popen and the
    caller never learns the child's pid, so nothing stops the child. Seen under CPU load: a
    cancelled run's trainer ran on, orphaned. Hold the handlers from before Popen until the
    caller can stop the child, then `release()` (first thing inside the caller's try) runs a
    held signal's handler there. Only Python-level handlers are held: an ignored or default
    disposition stays as it was, so a child still inherits an ignored SIGINT.

        with HeldSignals() as held:  # an exception leaving the block releases at once
            proc = subprocess.Popen(...)
        try:
            held.release()
            ...
        except BaseException:
            terminate_group(proc)
            raise
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._previous: dict[int, Callable[[int, FrameType | None], object]] = {}
        self._held: list[int] = []
        self._released = False
        if threading.current_thread() is not threading.main_thread():
            return  # handlers run in the main thread only; elsewhere there is nothing to hold
        for signum in self.SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):
                self._previous[signum] = handler
                signal.signal(signum, self._hold)

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        if self._released:  # arrived while release() was putting the handlers back
            self._previous[signum](signum, frame)
        else:
            self._held.append(signum)

    def __enter__(self) -> HeldSignals:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:  # no child to stop: the held signal may act at once
            self.release()

    def release(self) -> None:
        """Put the handlers back, then run the first held signal's handler (it may raise)."""
        if self._released:
            return
        self._released = True
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._held:
            signum = self._held[0]
            self._held.clear()
            self._previous[signum](signum, None)


def run_logged(
    argv: Sequence[str],
    log: StageLog,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    check: bool = True,
) -> int:
    """Run `argv` (never a shell string), stream its output into `log`, return its exit code.

    The child gets its own process group so that cancelling the stage (Ctrl-C, SIGTERM)
    stops it and everything it started. With check=True a non-zero exit raises StageError
    naming the command, its exit code and the last 20 lines of its output.
    """
    if isinstance(argv, str):  # a shell string would be a bug in legion-ci, not user input
        raise TypeError("run_logged takes an argument list, not a string")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    # Each argument redacted before it is quoted: quoting a `bash -c` command that already
    # holds a shell-quoted secret nests the quotes twice, a form no redactor would recognise.
    log.line(f"$ {shlex.join(log.redact(str(arg)) for arg in argv)}")
    with HeldSignals() as held:
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            what = what or argv[0]
            raise StageError(f"{what}: cannot start {argv[0]!r}: {exc.strerror}") from None
    try:
        held.release()
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
        code = proc.wait()
    except BaseException:
        terminate_group(proc)
        raise
    if code < 0 and -code in (signal.SIGINT, signal.SIGTERM):
        raise Cancelled(f"{what or argv[0]} was interrupted")
    if check and code != 0:
        tail = "\n".join(f"    {line}" for line in log.tail(20))
        raise StageError(
            f"{what or argv[0]} exited with code {code}; last lines of its log ({log.path}):\n"
            f"{tail}"
        )
    return code


def terminate_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it after `grace` seconds.

    Polls rather than blocking in Popen.wait(): a caller may be stopping the child from a
    signal handler on the thread that is already waiting, and Popen.wait() holds a lock a
    second wait would need (Airflow calls on_kill() that way).
    """
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    if not rest or rest[0] == "Z":  # field 3, the state: a zombie has exited
        return None
    return int(rest[19])


def _reap(pid: int) -> None:
    # A process this interpreter started itself (tests deploy twice in one process) stays a
    # zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(pid: int | None, started: int | None) -> bool:
    if not pid:
        return False
    _reap(pid)
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def stop_pid(pid: int, started: int | None, *, grace: float) -> str:
    """SIGTERM `pid` (the server drains), SIGKILL its process group after `grace` seconds.

    Returns what happened: "not running", "stopped" or "killed".
    """
    if not is_running(pid, started):
        return "not running"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_running(pid, started):
            return "stopped"
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the server runs in its own session: pgid == pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_running(pid, started) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "killed"
