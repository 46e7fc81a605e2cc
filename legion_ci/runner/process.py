"""Running child processes for a stage: argument lists only, logged, redacted, cancellable."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from legion_ci.errors import Cancelled, StageError
from legion_ci.redact import Redactor

__all__ = ["HeldSignals", "Redactor", "StageLog", "run_logged", "terminate_group"]


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
    """SIGTERM the child's process group, then SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
