"""Processes that outlive the stage that started them, known only by a recorded pid.

A pid alone can lie: the process may be gone (a stale pid), a zombie, or the pid reused by an
unrelated process. So a deployment records the pid with the process's start time (field 22 of
/proc/<pid>/stat, in clock ticks since boot), and a process counts as running only while that
pid exists, is not a zombie and still has the same start time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


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


def stop(pid: int, started: int | None, *, grace: float) -> str:
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
