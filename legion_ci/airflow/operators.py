"""Airflow operators: each task runs one legion-ci stage (or the whole pipeline) in a child
process, streams the stage log into the task log, and hands its outputs on through XCom."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

# Airflow 3's Task SDK only: a worker that has just the Task SDK can run these operators.
from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException
from airflow.sdk.log import mask_secret

from legion_ci.airflow.command import (
    LegionCIError,
    LegionProcess,
    build_argv,
    child_environment,
    failure_message,
    find_executable,
    parse_result,
    xcom_values,
)
from legion_ci.airflow.stages import STAGE_ORDER
from legion_ci.processes import HeldSignals

# Connection fields an operator may hand to legion-ci, and whether they are secret (masked
# in Airflow's logs). "extra.KEY" reads one key of the connection's JSON extra (secret).
CONNECTION_FIELDS = {
    "login": False,
    "password": True,
    "host": False,
    "port": False,
    "schema": False,
    "uri": True,
}


def run_id_of(task_id: str) -> str:
    """A template for `run_id`: the legion-ci run started (or continued) by `task_id`."""
    return "{{ ti.xcom_pull(task_ids=" + repr(task_id) + ", key='run_id') }}"


class LegionCIOperator(BaseOperator):
    """Run `legion-ci stage STAGE PIPELINE` (or `legion-ci run PIPELINE` without a stage).

    :param pipeline: the pipeline file (templated); relative to `workspace` if relative.
    :param stage: train, package or deploy; None runs every stage of the pipeline in order.
    :param run_id: the legion-ci run a later stage continues (templated), usually
        `run_id_of("train")`; without it legion-ci continues the latest run.
    :param workspace: the checkout the command runs in (templated); default: the worker's
        working directory. Run records go where the pipeline's `workspace:` key says.
    :param env: extra environment variables for legion-ci (templated; not for secrets,
        since Airflow stores rendered templates).
    :param connections: `{conn_id: {ENV_VAR: field}}`, field one of login, password, host,
        port, schema, uri or extra.KEY: credentials read from Airflow connections when the
        task runs and handed to legion-ci as environment variables only, never in its
        command line or XCom. Pipelines refer to them as `${env:ENV_VAR}`.
    :param executable: the `legion-ci` to run; default `$LEGION_CI_EXECUTABLE`, else the
        one beside this interpreter, else the first on PATH.
    :param kill_grace_s: when the task is killed, seconds between SIGTERM (legion-ci
        records the stage as cancelled) and SIGKILL.
    """

    template_fields: Sequence[str] = ("pipeline", "run_id", "workspace", "env")
    ui_color = "#d9ecf7"
    default_stage: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        pipeline: str,
        stage: str | None = None,
        run_id: str | None = None,
        workspace: str | None = None,
        env: Mapping[str, str] | None = None,
        connections: Mapping[str, Mapping[str, str]] | None = None,
        executable: str | None = None,
        kill_grace_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.stage = stage if stage is not None else self.default_stage
        if self.stage is not None and self.stage not in STAGE_ORDER:
            raise ValueError(f"stage must be train, package or deploy, not {self.stage!r}")
        self.run_id = run_id
        self.workspace = workspace
        self.env = dict(env or {})
        self.connections = {conn: dict(fields) for conn, fields in (connections or {}).items()}
        for conn_id, fields in self.connections.items():
            for variable, field in fields.items():
                if field not in CONNECTION_FIELDS and not field.startswith("extra."):
                    raise ValueError(
                        f"connections[{conn_id!r}][{variable!r}]: unknown field {field!r};"
                        f" use one of {', '.join(CONNECTION_FIELDS)} or extra.KEY"
                    )
        self.executable = executable
        self.kill_grace_s = kill_grace_s
        self._process: LegionProcess | None = None

    def _credentials(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for conn_id, fields in self.connections.items():
            conn = BaseHook.get_connection(conn_id)
            for variable, field in fields.items():
                if field.startswith("extra."):
                    value, secret = conn.extra_dejson.get(field.removeprefix("extra.")), True
                elif field == "uri":
                    value, secret = conn.get_uri(), True
                else:
                    value, secret = getattr(conn, field), CONNECTION_FIELDS[field]
                if value is None or value == "":
                    raise AirflowException(
                        f"connection {conn_id!r} has no {field} (wanted for {variable})"
                    )
                values[variable] = str(value)
                if secret:
                    mask_secret(str(value))
        return values

    def _continued_run(self) -> str | None:
        run_id = (self.run_id or "").strip()
        if not run_id:
            return None
        if run_id == "None":  # what an xcom_pull that found nothing renders to
            raise AirflowException(
                "run_id rendered to None: the task it is pulled from pushed no run_id"
            )
        return run_id

    def execute(self, context: Any) -> dict[str, Any]:
        what = f"legion-ci stage {self.stage}" if self.stage else "legion-ci run"
        try:
            argv = build_argv(
                find_executable(self.executable), self.pipeline, self.stage, self._continued_run()
            )
            env = child_environment(os.environ, self.env, self._credentials())
            self.log.info("running %s", shlex.join(argv))
            # Airflow's SIGTERM handler calls on_kill(): held until the child is known to it.
            with HeldSignals() as held:
                self._process = LegionProcess(
                    argv,
                    env=env,
                    cwd=self.workspace,
                    on_line=lambda line: self.log.info("%s", line),
                )
        except LegionCIError as exc:
            raise AirflowException(str(exc)) from None
        try:
            held.release()
            code, out = self._process.wait()
        except BaseException:
            # A timeout or any other exception raised into execute: the child must not
            # outlive the task.
            self._process.stop(self.kill_grace_s)
            raise
        result = parse_result(out)
        if result is not None:
            values = xcom_values(result)
            ti = context["ti"]
            for key, value in values.items():
                if value is not None:
                    ti.xcom_push(key=key, value=value)
            self.log.info(
                "legion-ci run %s: %s (%s)",
                result["run_id"],
                result["status"],
                result.get("record"),
            )
        if code != 0:
            raise AirflowException(failure_message(code, result, list(self._process.tail), what))
        if result is None:
            raise AirflowException(f"{what} printed no result JSON")
        return result

    def on_kill(self) -> None:
        if self._process is not None:
            self.log.info("stopping legion-ci (SIGTERM, then SIGKILL after %ss)", self.kill_grace_s)
            self._process.stop(self.kill_grace_s)


class LegionTrainOperator(LegionCIOperator):
    """`legion-ci stage train`: trains, self-checks and gates; starts a new run."""

    default_stage = "train"


class LegionPackageOperator(LegionCIOperator):
    """`legion-ci stage package`: packs the trained binary of `run_id`'s run."""

    default_stage = "package"


class LegionDeployOperator(LegionCIOperator):
    """`legion-ci stage deploy`: deploys the packed model of `run_id`'s run."""

    default_stage = "deploy"
