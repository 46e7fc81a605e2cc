"""The `mlflow` Toolchain Train Integration: run an MLflow project, convert its model to GPPI.

Reading the project for validate() is legion_ci.integrations.mlflow_project; finding the run's
model and converting it, legion_ci.integrations.mlflow_model. The project runs through MLflow's
projects API (the same project loading, parameter substitution and run bookkeeping `mlflow
run` uses), but the entry point's command goes through `run_logged`, so its output lands in
the stage log, a cancelled stage kills it, and a failure shows its exit code and last lines.
MLflow is imported once, in this process, and only inside `train()`: validation and
`legion-ci --help` never pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from legion_ci.errors import Cancelled, StageError
from legion_ci.integrations.base import TrainContext, TrainResult
from legion_ci.integrations.mlflow_model import RunModels, mlflow_error
from legion_ci.integrations.mlflow_project import validate_stage
from legion_ci.processes import StageLog, run_logged


def param_text(value: Any) -> str:
    """How a hyperparameter reaches the command line: YAML's true/false as MLflow prints them
    would be 'True'/'False', which argparse-style scripts rarely expect."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def public_uri(uri: str) -> str:
    """The tracking URI without a user:password part, fit for logs and outputs."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """In-process MLflow reads credentials (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN...) from
    os.environ at request time, so ctx.env must be in place while the client talks to the
    server; restored afterwards so nothing leaks into later stages."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class _LogHandler(logging.Handler):
    """MLflow's own messages (store migrations, env creation) belong in the stage log."""

    def __init__(self, log: StageLog):
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._log.line(f"mlflow: {record.getMessage()}")


@contextlib.contextmanager
def mlflow_logs_to(log: StageLog) -> Iterator[None]:
    """Route the `mlflow` logger into the stage log for the duration, instead of stderr."""
    import mlflow  # noqa: F401  (configures its logger on import; we override it afterwards)

    logger = logging.getLogger("mlflow")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers = [_LogHandler(log)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers, level, logger.propagate = saved[0], saved[1], saved[2]
        logger.setLevel(level)


def _warm_imports() -> None:
    """Imported while the training runs (it waits on a pipe, so a second core is idle) to
    take them off the path between the training's end and the stage's end."""
    with contextlib.suppress(Exception):
        import mlflow.artifacts
        import mlflow.models  # noqa: F401
        import yaml  # noqa: F401


class MlflowTrainer:
    """Runs an MLflow project and converts the run's single pyfunc model into a GPPI folder."""

    name = "mlflow"
    # What the train stage prepares for it (integrations.base.TrainerNeeds): its sqlite
    # tracking store, and a self-check warmed with scikit-learn-style model libraries.
    needs_tracking_store = True
    warm_self_check = True

    def validate(self, stage: Mapping[str, Any], project_dir: Path) -> Sequence[tuple[str, str]]:
        return validate_stage(stage, project_dir)

    def train(self, ctx: TrainContext) -> TrainResult:
        arguments = dict(ctx.arguments or {})
        problems = validate_stage(
            {
                "entrypoint": ctx.entrypoint,
                "hyperParameters": ctx.hyper_parameters,
                "arguments": arguments,
            },
            ctx.project_dir,
        )
        if problems:
            raise StageError("; ".join(f"{path}: {message}" for path, message in problems))

        env = {
            # MLflow 3 otherwise calls home from the runner and from the training.
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_TRACKING_URI": ctx.tracking_uri,
            **ctx.env,
        }
        with patched_environ(env), mlflow_logs_to(ctx.log):
            return _Training(ctx, arguments, env).run()


def _private_store(ctx: TrainContext) -> None:
    """A sqlite tracking store holds every parameter and tag the training logged, `${file:}`
    secrets included: owner-only (0600), also one made 0644 by MLflow or an older legion-ci,
    and so is the folder holding it when that is legion-ci's workspace (the run's scratch
    space lives in it). SQLite gives its journal files the database's mode."""
    from legion_ci.integrations.mlflow_store import sqlite_path

    db = sqlite_path(ctx.tracking_uri)
    if db is None or not db.is_file():
        return
    for path in (db, *(db.with_name(db.name + s) for s in ("-journal", "-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o600)
    folder = db.parent.resolve()
    if Path(ctx.scratch_dir).resolve().is_relative_to(folder):
        os.chmod(folder, 0o700)


class _Training:
    """One train() call: the state shared by its steps."""

    def __init__(self, ctx: TrainContext, arguments: dict[str, Any], env: dict[str, str]):
        self.ctx = ctx
        self.arguments = arguments
        self.env = env
        self.env_manager = str(arguments.get("envManager", "local"))
        self.params = {str(k): param_text(v) for k, v in (ctx.hyper_parameters or {}).items()}
        self.where = public_uri(ctx.tracking_uri)

    def run(self) -> TrainResult:
        ctx = self.ctx
        from mlflow.tracking import MlflowClient

        _private_store(ctx)
        self.client = MlflowClient(tracking_uri=ctx.tracking_uri)
        experiment_id = self._experiment_id()
        _private_store(ctx)  # MLflow made the store just now if there was none
        run_id = self._create_run(experiment_id)
        ctx.log.line(
            f"mlflow: run {run_id} in experiment {experiment_id} at {self.where}, "
            f"entry point {ctx.entrypoint!r}, envManager {self.env_manager}"
        )
        try:
            self._execute(run_id, experiment_id)
        finally:  # a failed training may have logged a secret too
            from legion_ci.integrations.mlflow_secrets import scrub_run

            scrub_run(self.client, ctx.tracking_uri, run_id, ctx.log)

        try:
            run = self.client.get_run(run_id)
        except Exception as exc:
            raise StageError(f"mlflow: cannot read run {run_id}: {mlflow_error(exc)}") from None
        models = RunModels(self.client, ctx, self.arguments, self.where)
        model = models.single(run_id, experiment_id)
        ctx.log.line(f"mlflow: converting model {model.label} ({model.uri})")
        models.convert(model, run_id, experiment_id)
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
        return TrainResult(
            metrics={k: float(v) for k, v in run.data.metrics.items()},
            tags=tags,
            outputs={
                "mlflow_run_id": run_id,
                "experiment_id": experiment_id,
                "tracking_uri": self.where,
                "model_uri": model.uri,
            },
        )

    # -- tracking --------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        name = str(self.arguments.get("experiment") or self.ctx.model_name)
        try:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.lifecycle_stage == "deleted":
                    raise StageError(
                        f"mlflow: experiment {name!r} is deleted at {self.where}; restore it "
                        "or choose another arguments.experiment"
                    )
                return experiment.experiment_id
            return self.client.create_experiment(name, artifact_location=self._artifact_location())
        except StageError:
            raise
        except Exception as exc:
            raise StageError(
                f"mlflow: cannot open experiment {name!r} at {self.where}: {mlflow_error(exc)}"
            ) from None

    def _artifact_location(self) -> str | None:
        """Beside a sqlite store, not under whatever the current directory happens to be
        (MLflow's default, ./mlruns); a server chooses its own."""
        parts = urllib.parse.urlsplit(self.ctx.tracking_uri)
        if parts.scheme != "sqlite" or not parts.path or parts.path == "/:memory:":
            return None
        # sqlite:///relative.db and sqlite:////abs/path.db: the path follows the third slash.
        db_file = Path(urllib.parse.unquote(parts.path[1:]))
        return (db_file.parent / "mlartifacts").resolve().as_uri()

    def _create_run(self, experiment_id: str) -> str:
        from mlflow.entities import Param as MlflowParam
        from mlflow.projects.utils import load_project
        from mlflow.utils import mlflow_tags

        ctx = self.ctx
        tags = {
            mlflow_tags.MLFLOW_SOURCE_NAME: str(ctx.project_dir),
            mlflow_tags.MLFLOW_SOURCE_TYPE: "PROJECT",
            mlflow_tags.MLFLOW_PROJECT_ENTRY_POINT: ctx.entrypoint,
            mlflow_tags.MLFLOW_PROJECT_ENV: self.env_manager,
            mlflow_tags.MLFLOW_USER: os.environ.get("USER") or os.environ.get("LOGNAME") or "",
            **{str(k): str(v) for k, v in (ctx.tags or {}).items()},
        }
        run_name = self.arguments.get("runName")
        try:
            self.project = load_project(str(ctx.project_dir))
            self.entry = self.project.get_entry_point(ctx.entrypoint)
            # Raises on a missing parameter, as `mlflow run` would, before a run exists.
            self.entry.compute_parameters(self.params, storage_dir=None)
        except Exception as exc:
            raise StageError(f"mlflow: {ctx.project_dir}: {mlflow_error(exc)}") from None
        try:
            run = self.client.create_run(
                experiment_id, tags=tags, run_name=str(run_name) if run_name else None
            )
            # Unquoted values, as `mlflow run` logs them.
            logged = {**self.params}
            for key, param in self.entry.parameters.items():
                if key not in logged and param.default is not None:
                    logged[key] = str(param.default)
            self.client.log_batch(
                run.info.run_id, params=[MlflowParam(k, v) for k, v in logged.items()]
            )
        except Exception as exc:
            raise StageError(
                f"mlflow: cannot create a run at {self.where}: {mlflow_error(exc)}"
            ) from None
        return run.info.run_id

    def _finish(self, run_id: str, status: str) -> None:
        """Like `mlflow run`: leave a status the training code set itself alone."""
        from mlflow.entities import RunStatus

        with contextlib.suppress(Exception):
            current = self.client.get_run(run_id).info.status
            if not RunStatus.is_terminated(RunStatus.from_string(current)):
                self.client.set_terminated(run_id, status)

    # -- running the entry point -----------------------------------------------------------

    def _child_env(self, run_id: str, experiment_id: str) -> dict[str, str]:
        env = {
            **self.env,
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_EXPERIMENT_ID": str(experiment_id),
            "MLFLOW_TRACKING_URI": self.ctx.tracking_uri,
        }
        if self.env_manager == "local":
            # "local" is the environment legion-ci runs in: its interpreter first on PATH, so
            # `python` in an MLproject command is the one that has mlflow, even when the CI
            # calls .venv/bin/legion-ci without activating the virtualenv.
            bindir = str(Path(sys.executable).parent)
            path = env.get("PATH", os.environ.get("PATH", ""))
            env["PATH"] = f"{bindir}{os.pathsep}{path}" if path else bindir
        return env

    def _argv(self, run_id: str, experiment_id: str) -> list[str]:
        ctx = self.ctx
        if self.env_manager == "virtualenv":
            # Creating the environment (pyenv, venv, pip) is MLflow's job; `mlflow run` does
            # it in the child, so its output is logged and cancelling kills it too.
            argv = [
                sys.executable,
                "-m",
                "mlflow",
                "run",
                str(ctx.project_dir),
                "--entry-point",
                ctx.entrypoint,
                "--env-manager",
                "virtualenv",
                "--run-id",
                run_id,
                "--experiment-id",
                str(experiment_id),
            ]
            for key, value in self.params.items():
                argv += ["-P", f"{key}={value}"]
            return argv
        storage = ctx.scratch_dir / "mlflow-params"
        storage.mkdir(parents=True, exist_ok=True)
        try:
            command = self.entry.compute_command(self.params, str(storage))
        except Exception as exc:
            raise StageError(
                f"mlflow: entry point {ctx.entrypoint!r}: {mlflow_error(exc)}"
            ) from None
        # An MLproject command is a shell command by definition; bash runs it, as in MLflow.
        return ["bash", "-c", command]

    def _execute(self, run_id: str, experiment_id: str) -> None:
        ctx = self.ctx
        argv = self._argv(run_id, experiment_id)
        warm = threading.Thread(target=_warm_imports, daemon=True)
        warm.start()
        try:
            run_logged(
                argv,
                ctx.log,
                cwd=ctx.project_dir,
                env=self._child_env(run_id, experiment_id),
                what=f"training (entry point {ctx.entrypoint!r})",
            )
        except Cancelled:
            self._finish(run_id, "KILLED")
            raise
        except StageError:
            self._finish(run_id, "FAILED")
            raise
        except BaseException:
            self._finish(run_id, "KILLED")
            raise
        self._finish(run_id, "FINISHED")
        warm.join()
