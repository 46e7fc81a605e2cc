"""Faults in the runner: legion-ci itself SIGKILLed mid-training and while MLflow's store is
being made, two runs at once in one workspace, a full disk. Each leaves the run record
consistent, nothing half-written, and a re-run that succeeds. Run alone with `-m faults`;
each prints its figures."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import LEGION_CI, SH_PIPELINE, copy_wine_project, run_cli, write
from procs import wait_for

pytestmark = pytest.mark.faults


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*LEGION_CI, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def records(workspace: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(workspace.glob("runs/*/record.json"))]


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def test_sigkilled_run_reads_as_interrupted_and_the_next_run_says_so(
    sh_pipeline: Path, figures
) -> None:
    project = sh_pipeline.parent
    pidfile = project / "trainer.pid"
    proc = start(
        "run",
        str(sh_pipeline),
        "-q",
        env={"FAKE_TRAINER_SLEEP": "120", "FAKE_TRAINER_PIDFILE": str(pidfile)},
    )
    try:
        wait_for(
            lambda: pidfile.is_file() and pidfile.read_text().strip() != "", 60, "trainer start"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if pidfile.is_file() and pidfile.read_text().strip():
            kill_quietly(int(pidfile.read_text()))
    (on_disk,) = records(project / ".legion")
    assert on_disk["status"] == "running"  # what the killed process left behind
    shown = json.loads(run_cli("runs", "show", str(sh_pipeline), "-o", "json").assert_success().out)
    assert shown["status"] == "interrupted"
    assert "is gone" in shown["stages"]["train"]["error"]
    again = run_cli("run", str(sh_pipeline)).assert_success()
    assert f"run {on_disk['id']} was interrupted" in again.err
    settled = json.loads((project / ".legion" / "runs" / on_disk["id"] / "record.json").read_text())
    assert (
        settled["status"] == "interrupted" and settled["stages"]["train"]["status"] == "interrupted"
    )
    latest = (project / ".legion" / "latest").read_text().strip()
    assert latest != on_disk["id"]
    figures.add("faults injected")
    figures.add("faults survived")
    print(f"\nfaults: SIGKILL mid-training -> run {on_disk['id']} recorded interrupted; re-run ok")


@pytest.fixture
def wine_pipeline(tmp_path: Path) -> Path:
    return copy_wine_project(tmp_path / "repo")


@pytest.mark.slow
def test_killed_while_the_tracking_store_is_made_then_rerun_succeeds(
    wine_pipeline: Path, figures
) -> None:
    workspace = wine_pipeline.parent / ".legion"
    kills = []
    for moment in ("store being made", "3 s in"):
        shutil.rmtree(workspace, ignore_errors=True)
        proc = start("run", str(wine_pipeline), "-q")
        started = time.monotonic()

        def due(
            proc: subprocess.Popen = proc, started: float = started, when: str = moment
        ) -> bool:
            if proc.poll() is not None:
                return True
            if when == "store being made":
                return any(workspace.glob(".mlflow.db.*.tmp"))
            return time.monotonic() - started > 3

        wait_for(due, 120, moment, interval=0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills.append(f"{moment} at {time.monotonic() - started:.1f}s")
        db = workspace / "mlflow.db"
        assert not db.exists() or db.stat().st_size > 0
        rerun = run_cli("run", str(wine_pipeline), "-o", "json", timeout=600)
        rerun.assert_success()
        assert json.loads(rerun.out)["status"] == "succeeded"
        figures.add("faults injected")
        figures.add("faults survived")
    print(f"\nfaults: SIGKILL {', '.join(kills)}; each re-run succeeded on the same workspace")


@pytest.mark.slow
def test_two_runs_at_once_in_one_workspace(wine_pipeline: Path, figures) -> None:
    first = start("run", str(wine_pipeline), "-o", "json")
    second = start("run", str(wine_pipeline), "-o", "json")
    outs = [p.communicate(timeout=900) for p in (first, second)]
    for proc, (_, err) in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    ids = {json.loads(out)["run_id"] for out, _ in outs}
    assert len(ids) == 2
    workspace = wine_pipeline.parent / ".legion"
    done = records(workspace)
    assert {r["id"] for r in done} == ids
    assert all(r["status"] == "succeeded" for r in done)
    assert (workspace / "latest").read_text().strip() in ids
    for run_id in ids:
        summary = json.loads((workspace / "runs" / run_id / "reports" / "summary.json").read_text())
        assert summary["id"] == run_id
        log = (workspace / "runs" / run_id / "logs" / "train.log").read_text()
        assert run_id in log and (ids - {run_id}).pop() not in log
    figures.add("faults injected")
    figures.add("faults survived")
    print(f"\nfaults: two concurrent runs {sorted(ids)} both complete, latest is one of them")


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, f"cannot mount a tmpfs (CI runs as root): {made.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_cleanly_and_a_rerun_succeeds(
    sh_project: Path, small_disk: Path, figures
) -> None:
    pipeline = write(sh_project / "pipeline.yaml", SH_PIPELINE + f"workspace: {small_disk}\n")
    run_cli("run", str(pipeline), "-q").assert_success()
    filler = small_disk / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    before = {p: p.read_bytes() for p in small_disk.rglob("*.json")}
    outcome = run_cli("run", str(pipeline), "-q")
    assert outcome.code in (1, 2), outcome.err
    assert "Traceback" not in outcome.err
    assert "No space left on device" in outcome.err or "disk is full" in outcome.err
    for path in small_disk.rglob("*"):
        if path.is_file() and path.suffix == ".json" and path.stat().st_size:
            json.loads(path.read_text())  # nothing half-written
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} changed on a full disk"
    assert not list(small_disk.rglob("*.tmp")), "temporary files left behind"
    filler.unlink()
    run_cli("run", str(pipeline), "-q").assert_success()
    figures.add("faults injected")
    figures.add("faults survived")
    print("\nfaults: full disk -> clean failure, no partial files, re-run ok")
