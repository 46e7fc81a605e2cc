"""A cancelled stage stops its child, wherever the signal lands (legion_ci.processes)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from procs import wait_gone

from legion_ci.errors import Cancelled, StageError
from legion_ci.processes import HeldSignals, StageLog, run_logged
from legion_ci.runner.engine import cancellation


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_landing_inside_popen_still_stops_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    # Under CPU load the child can be running before Popen has returned its pid to the
    # runner; a Ctrl-C or SIGTERM then raised inside Popen, and the trainer ran on, orphaned
    # (1 run in 10 of the CLI signal test beside two busy loops). Land the signal exactly there.
    real_popen = subprocess.Popen
    children: list[int] = []

    def popen_then_signal(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        children.append(proc.pid)
        signal.raise_signal(signum)
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen_then_signal)
    log = StageLog(tmp_path / "stage.log")
    with pytest.raises(Cancelled), cancellation():  # the runner's own Ctrl-C/SIGTERM handling
        run_logged(["sleep", "60"], log, what="the sleeper")
    monkeypatch.undo()
    (child,) = children
    wait_gone(child, 30, "the child of the cancelled stage")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert "$ sleep 60" in log.path.read_text()


def test_held_signals_leave_an_ignored_signal_ignored_and_run_nothing_unheld() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        held = HeldSignals()
        # An ignored SIGTERM is inherited by the child as before: it is not replaced.
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        held.release()  # nothing arrived: no handler runs, nothing is raised
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_held_signal_is_raised_at_release_and_a_failed_start_restores_handlers(
    tmp_path: Path,
) -> None:
    held = HeldSignals()
    signal.raise_signal(signal.SIGINT)  # held: nothing is raised yet
    with pytest.raises(KeyboardInterrupt):
        held.release()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # A start that fails leaves the block with nothing to stop: the held signal acts at once.
    with pytest.raises(KeyboardInterrupt), HeldSignals():
        signal.raise_signal(signal.SIGINT)
        raise OSError("cannot start")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(StageError, match="cannot start '/nonexistent/trainer'"):
        run_logged(["/nonexistent/trainer"], StageLog(tmp_path / "stage.log"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
