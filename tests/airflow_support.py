"""Driving a real Apache Airflow from the tests, in its own virtual environment.

Two halves in one file. The top is imported by pytest (in .venv, no Airflow): it finds the
Airflow venv that scripts/setup.d/50-airflow.sh built, prepares an AIRFLOW_HOME (sqlite,
migrated once per session) and runs this file as a script with Airflow's python. The bottom,
`python airflow_support.py parse|test ...`, runs inside Airflow's venv: it parses the DAG
folder with DagBag or runs one DAG with `dag.test()`, and writes what it saw (import errors,
task states, XCom values) as JSON for the test to assert on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import Service, service

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "examples" / "airflow"
REQUIREMENTS = REPO / "scripts" / "setup.d" / "airflow-requirements.txt"
# The operators run the legion-ci under test: the one in .venv, beside pytest's python.
LEGION_CI_EXECUTABLE = str(Path(sys.executable).parent / "legion-ci")


def airflow_venv() -> Path:
    """The venv 50-airflow.sh built for this pin set and Python version (same key)."""
    pyver = "python{}.{}".format(*sys.version_info[:2])
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + pyver.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("LEGION_CI_CI_CACHE") or Path.home() / ".cache" / "legion-ci-ci")
    venv = cache / f"airflow-venv-{key}"
    if not (venv / ".complete").is_file():
        raise RuntimeError(f"no Airflow venv at {venv}: run scripts/setup.d/50-airflow.sh")
    return venv


def airflow_env(home: Path, dags: Path = DAGS, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # legion_ci.airflow from this clone; its operators run .venv's legion-ci.
        "PYTHONPATH": str(REPO),
        "LEGION_CI_EXECUTABLE": LEGION_CI_EXECUTABLE,
    }
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env


def migrate(home: Path) -> None:
    """A fresh sqlite metadata database in `home` (`airflow db migrate`)."""
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(airflow_venv() / "bin" / "airflow"), "db", "migrate"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"airflow db migrate failed:\n{proc.stdout}\n{proc.stderr}"


def new_home(template: Path, folder: Path) -> Path:
    """An AIRFLOW_HOME with a copy of the migrated database: each test its own."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(template / "airflow.db", folder / "airflow.db")
    return folder


@dataclass
class DagRunOutcome:
    code: int
    log: str  # the driver's stdout and stderr: Airflow's task logs
    seen: dict[str, Any]

    def state(self, task_id: str) -> str | None:
        return self.seen["states"].get(task_id)

    def xcom(self, task_id: str, key: str) -> Any:
        return self.seen["xcoms"].get(task_id, {}).get(key)


@dataclass
class Driver:
    """A driver started by start_driver(), running until its block ends."""

    svc: Service
    out: Path

    @property
    def pid(self) -> int:
        return self.svc.pid

    def exited(self) -> str | None:
        """For wait_for(alive=...): why the driver is gone, None while it runs."""
        code = self.svc.proc.poll()
        return None if code is None else f"the Airflow driver exited {code}:\n{self._log()}"

    def finish(self, timeout: float = 300) -> DagRunOutcome:
        try:
            code = self.svc.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the Airflow driver did not finish in {timeout} s:\n{self._log()}"
            ) from None
        log = self._log()
        assert self.out.is_file(), f"the Airflow driver wrote no result (exit {code}):\n{log}"
        return DagRunOutcome(code, log, json.loads(self.out.read_text()))

    def _log(self) -> str:
        return self.svc.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def start_driver(
    home: Path,
    command: str,
    *,
    dags: Path = DAGS,
    dag_id: str = "legion_ci_retrain",
    env: dict[str, str] | None = None,
) -> Iterator[Driver]:
    """This file as a script, with Airflow's python: `command` (parse or test) on the DAG
    folder `dags`, writing what it saw to a result file. A tests/procs.py service: its own
    process group, stopped when the block ends."""
    out = home / f"{command}-result.json"
    log = home / f"{command}-driver.log"
    out.unlink(missing_ok=True)
    log.unlink(missing_ok=True)  # service() appends
    argv = [str(airflow_venv() / "bin" / "python"), __file__, command, str(out), dag_id]
    with service(
        argv,
        log,
        env=airflow_env(home, dags, **(env or {})),
        unset=("VIRTUAL_ENV",),
        cwd=home,
        name="the Airflow driver",
    ) as svc:
        yield Driver(svc, out)


def run_driver(home: Path, command: str, **options: Any) -> DagRunOutcome:
    """start_driver(home, command, **options), run to its end."""
    with start_driver(home, command, **options) as driver:
        return driver.finish()


# ---- below: runs inside Airflow's venv ---------------------------------------------------


def _dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


def _parse(_dag_id: str) -> dict[str, Any]:  # every DAG of the folder
    bag = _dagbag()
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "schedule": str(getattr(dag, "schedule", None) or dag.timetable.summary),
            "tasks": {
                task.task_id: {
                    "type": type(task).__name__,
                    "upstream": sorted(task.upstream_task_ids),
                    "trigger_rule": str(task.trigger_rule),
                    "stage": getattr(task, "stage", None),
                }
                for task in dag.tasks
            },
        }
    return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": dags}


def _test(dag_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    bag = _dagbag()
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    dag_run = dag.test()
    with create_session() as session:
        states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances(session=session)}
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id
            )
        ).all()
        xcoms: dict[str, dict[str, Any]] = {}
        for row in rows:
            xcoms.setdefault(row.task_id, {})[row.key] = XComModel.deserialize_value(row)
    return {"dag_run_state": str(dag_run.state), "states": states, "xcoms": xcoms}


def _main(argv: list[str]) -> None:
    command, out, dag_id = argv
    seen = {"parse": _parse, "test": _test}[command](dag_id)
    Path(out).write_text(json.dumps(seen, default=str, indent=2))


if __name__ == "__main__":
    _main(sys.argv[1:])
