"""The `mlflow` Toolchain Train Integration: run an MLflow project, convert its model to GPPI.

The project runs through MLflow's projects API (the same project loading, parameter
substitution and run bookkeeping `mlflow run` uses), but the entry point's command goes through
`run_logged`, so its output lands in the stage log, a cancelled stage kills it, and a failure
shows its exit code and last lines. MLflow is imported once, in this process, and only inside
`train()`: validation and `legion-ci --help` never pay for it.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legion_ci.errors import Cancelled, StageError
from legion_ci.integrations.base import TrainContext, TrainResult
from legion_ci.processes import StageLog, run_logged

DEFAULT_ENTRYPOINT = "main"
ENV_MANAGERS = ("local", "virtualenv")
# MLflow turns an entry point that is not in MLproject but names a script into a command.
SCRIPT_SUFFIXES = (".py", ".sh")
FLOAT_TYPES = ("float", "double", "number")
INT_TYPES = ("int", "integer", "long")

Problems = list[tuple[str, str]]


# --------------------------------------------------------------------------------------------
# MLproject reading for validate(): plain YAML, so validation stays fast and works without
# importing MLflow; train() re-reads the project with MLflow's own loader.


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any
    required: bool


def find_mlproject(project_dir: Path) -> Path | None:
    """MLflow matches the file name case-insensitively; so do we."""
    try:
        names = sorted(os.listdir(project_dir))
    except OSError:
        return None
    for name in names:
        if name.lower() == "mlproject" and (project_dir / name).is_file():
            return project_dir / name
    return None


def read_entry_points(mlproject: Path) -> tuple[dict[str, dict[str, Param]], str | None]:
    """Entry points with their declared parameters, or an error message for a broken file."""
    import yaml

    try:
        data = yaml.safe_load(mlproject.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return {}, f"{mlproject}: not valid YAML{where}"
    except OSError as exc:
        return {}, f"{mlproject}: cannot be read: {exc.strerror}"
    if not isinstance(data, dict):
        return {}, f"{mlproject}: must be a mapping with 'entry_points'"
    raw_points = data.get("entry_points") or {}
    if not isinstance(raw_points, dict):
        return {}, f"{mlproject}: entry_points must be a mapping of name to entry point"
    points: dict[str, dict[str, Param]] = {}
    for name, raw in raw_points.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("command"), str):
            return {}, f"{mlproject}: entry_points.{name}: needs a 'command' string"
        raw_params = raw.get("parameters") or {}
        if not isinstance(raw_params, dict):
            return {}, f"{mlproject}: entry_points.{name}.parameters: must be a mapping"
        params: dict[str, Param] = {}
        for pname, spec in raw_params.items():
            if isinstance(spec, str):  # `alpha: float` declares a required parameter
                params[str(pname)] = Param(str(pname), spec, None, True)
            elif isinstance(spec, dict):
                default = spec.get("default")
                ptype = str(spec.get("type", "string"))
                params[str(pname)] = Param(str(pname), ptype, default, default is None)
            else:
                return {}, (
                    f"{mlproject}: entry_points.{name}.parameters.{pname}: "
                    "must be a type name or a mapping with type and default"
                )
        points[str(name)] = params
    return points, None


def type_problem(param: Param, value: Any) -> str | None:
    """Why `value` does not fit the parameter's declared type, or None."""
    ptype = param.type.lower()
    if isinstance(value, (dict, list)):
        return f"must be a single value, got a {'mapping' if isinstance(value, dict) else 'list'}"
    if ptype in FLOAT_TYPES:
        if isinstance(value, bool):
            return f"must be a number ({param.type}), got {value!r}"
        if isinstance(value, (int, float)):
            return None
        try:
            float(str(value))
        except ValueError:
            return f"must be a number ({param.type}), got {value!r}"
    elif ptype in INT_TYPES:
        if isinstance(value, (bool, float)):
            return f"must be an integer ({param.type}), got {value!r}"
        if isinstance(value, int):
            return None
        try:
            int(str(value))
        except ValueError:
            return f"must be an integer ({param.type}), got {value!r}"
    return None


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def is_script(entrypoint: str) -> bool:
    return entrypoint.endswith(SCRIPT_SUFFIXES)


def validate_stage(stage: Mapping[str, Any], project_dir: Path) -> Problems:
    """Every problem with a training stage's project, entry point and parameters."""
    problems: Problems = []
    project_dir = Path(project_dir)
    entrypoint = str(stage.get("entrypoint") or DEFAULT_ENTRYPOINT)
    hyper = stage.get("hyperParameters") or {}
    arguments = stage.get("arguments") or {}
    if not isinstance(hyper, Mapping):
        return [("hyperParameters", "must be a mapping of parameter name to value")]
    env_manager = arguments.get("envManager", "local") if isinstance(arguments, Mapping) else None
    if env_manager not in ENV_MANAGERS:
        problems.append(
            ("arguments.envManager", f"unknown {env_manager!r}; known: {', '.join(ENV_MANAGERS)}")
        )
    if not project_dir.is_dir():
        return [*problems, ("workDir", f"{project_dir}: no such directory")]

    mlproject = find_mlproject(project_dir)
    script = project_dir / entrypoint
    if mlproject is None:
        if not is_script(entrypoint):
            problems.append(
                (
                    "workDir",
                    f"{project_dir}: no MLproject file; add one, or set entrypoint to a "
                    f"{' or '.join(SCRIPT_SUFFIXES)} script in that folder",
                )
            )
        elif not script.is_file():
            problems.append(("entrypoint", f"no script {entrypoint!r} in {project_dir}"))
        return problems

    points, error = read_entry_points(mlproject)
    if error:
        return [*problems, ("workDir", error)]
    if "docker_env" in _top_keys(mlproject):
        problems.append(
            (
                "workDir",
                f"{mlproject}: docker_env projects are not supported; use envManager "
                "local or virtualenv",
            )
        )
    if entrypoint not in points:
        if is_script(entrypoint) and script.is_file():
            return problems  # MLflow runs a script that is not an entry point as-is
        known = ", ".join(sorted(points)) or "none"
        problems.append(
            (
                "entrypoint",
                f"unknown entry point {entrypoint!r} in {mlproject.name}"
                f"{did_you_mean(entrypoint, sorted(points))} (known: {known})",
            )
        )
        return problems

    declared = points[entrypoint]
    for name, param in declared.items():
        if param.required and name not in hyper:
            problems.append(
                (
                    f"hyperParameters.{name}",
                    f"required by entry point {entrypoint!r} ({param.type}, no default) "
                    "but not given",
                )
            )
    for name, value in hyper.items():
        name = str(name)
        if name not in declared:
            known = ", ".join(declared) or "none"
            problems.append(
                (
                    f"hyperParameters.{name}",
                    f"entry point {entrypoint!r} declares no parameter {name!r}"
                    f"{did_you_mean(name, list(declared))} (declared: {known})",
                )
            )
            continue
        if value is None:
            problems.append((f"hyperParameters.{name}", "has no value"))
            continue
        why = type_problem(declared[name], value)
        if why:
            problems.append((f"hyperParameters.{name}", why))
    return problems


def _top_keys(mlproject: Path) -> set[str]:
    import yaml

    with contextlib.suppress(Exception):
        data = yaml.safe_load(mlproject.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return {str(k) for k in data}
    return set()


# --------------------------------------------------------------------------------------------
# train()


def param_text(value: Any) -> str:
    """How a hyperparameter reaches the command line: YAML's true/false as MLflow prints them
    would be 'True'/'False', which argparse-style scripts rarely expect."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_remote(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).scheme in ("http", "https", "databricks")


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


@dataclass(frozen=True)
class FoundModel:
    uri: str  # models:/<id> (MLflow 3 logged model) or runs:/<run id>/<path>
    location: str  # where its files are, for download_artifacts
    name: str  # what the user recognises: the logged model's name or its artifact path
    label: str
    flavors: tuple[str, ...]
    identity: str  # model_id/model_uuid, to count a model seen twice once

    @property
    def is_pyfunc(self) -> bool:
        return "python_function" in self.flavors


def mlflow_error(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:500]


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
        model = self._single_model(run_id, experiment_id)
        ctx.log.line(f"mlflow: converting model {model.label} ({model.uri})")
        self._convert(model, run_id, experiment_id)
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

    # -- the model -------------------------------------------------------------------------

    def _models(self, run_id: str, experiment_id: str) -> list[FoundModel]:
        """Every MLflow model the run logged: MLflow 3 logged models and MLmodel folders
        among the run's own artifacts (MLflow 2, or save_model + log_artifacts)."""
        found: dict[str, FoundModel] = {}
        search = getattr(self.client, "search_logged_models", None)
        token = None
        while search is not None:
            try:
                page = search(
                    experiment_ids=[str(experiment_id)],
                    filter_string=f"source_run_id = '{run_id}'",
                    page_token=token,
                )
            except Exception as exc:  # an MLflow 2 server has no logged-model API
                self.ctx.log.line(f"mlflow: no logged-model search ({mlflow_error(exc)})")
                break
            for logged in page:
                mlmodel = self._mlmodel(logged.artifact_location)
                if mlmodel is None:
                    continue  # an external model with no files: nothing to package
                found.setdefault(
                    logged.model_id,
                    FoundModel(
                        uri=f"models:/{logged.model_id}",
                        location=logged.artifact_location,
                        name=logged.name,
                        label=f"{logged.name!r} ({logged.model_id})",
                        flavors=tuple(sorted(mlmodel.get("flavors") or {})),
                        identity=logged.model_id,
                    ),
                )
            token = getattr(page, "token", None)
            if not token:
                break
        for path in self._mlmodel_dirs(run_id, "", depth=0):
            uri = f"runs:/{run_id}/{path}" if path else f"runs:/{run_id}"
            mlmodel = self._mlmodel(uri)
            if mlmodel is None:
                continue
            identity = str(mlmodel.get("model_id") or mlmodel.get("model_uuid") or uri)
            found.setdefault(
                identity,
                FoundModel(
                    uri=uri,
                    location=uri,
                    name=path,
                    label=f"artifact path {path or '.'!r}",
                    flavors=tuple(sorted(mlmodel.get("flavors") or {})),
                    identity=identity,
                ),
            )
        return list(found.values())

    def _mlmodel_dirs(self, run_id: str, path: str, depth: int) -> list[str]:
        if depth > 4:  # models sit at the top or a level or two down; don't crawl datasets
            return []
        try:
            entries = self.client.list_artifacts(run_id, path or None)
        except Exception:
            return []
        if any(not e.is_dir and Path(e.path).name == "MLmodel" for e in entries):
            return [path]
        dirs: list[str] = []
        for entry in entries:
            if entry.is_dir:
                dirs += self._mlmodel_dirs(run_id, entry.path, depth + 1)
        return dirs

    def _mlmodel(self, uri: str) -> dict[str, Any] | None:
        import yaml
        from mlflow.artifacts import download_artifacts

        target = self.ctx.scratch_dir / "mlmodel" / str(abs(hash(uri)))
        target.mkdir(parents=True, exist_ok=True)
        try:
            local = download_artifacts(
                artifact_uri=f"{uri.rstrip('/')}/MLmodel",
                dst_path=str(target),
                tracking_uri=self.ctx.tracking_uri,
            )
            data = yaml.safe_load(Path(local).read_text(encoding="utf-8"))
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    def _single_model(self, run_id: str, experiment_id: str) -> FoundModel:
        try:
            models = self._models(run_id, experiment_id)
        except Exception as exc:
            raise StageError(
                f"mlflow: cannot list the models of run {run_id}: {mlflow_error(exc)}"
            ) from None
        wanted = self.arguments.get("model")
        if wanted:
            chosen = [m for m in models if str(wanted) in (m.identity, m.name)]
            if not chosen:
                listed = "; ".join(f"{m.label}" for m in models) or "none"
                raise StageError(
                    f"mlflow: run {run_id} logged no model named {wanted!r} "
                    f"(arguments.model); it logged: {listed}"
                )
            models = chosen
        pyfunc = [m for m in models if m.is_pyfunc]
        if len(pyfunc) == 1:
            return pyfunc[0]
        listed = "; ".join(f"{m.label} [flavors: {', '.join(m.flavors) or 'none'}]" for m in models)
        if not models:
            raise StageError(
                f"mlflow: run {run_id} logged no model; the training must log one, "
                "e.g. mlflow.sklearn.log_model(model, name='model', input_example=...)"
            )
        if not pyfunc:
            raise StageError(
                f"mlflow: run {run_id} logged no python_function (pyfunc) model, only: {listed}"
            )
        raise StageError(
            f"mlflow: run {run_id} logged {len(pyfunc)} pyfunc models, expected one: {listed}; "
            "log one, or pick one with arguments.model"
        )

    def _convert(self, model: FoundModel, run_id: str, experiment_id: str) -> None:
        import mlflow
        from mlflow.artifacts import download_artifacts

        from legion_ci.gppi.mlflow_convert import convert_mlflow_model

        ctx = self.ctx
        dest = ctx.scratch_dir / "mlflow-model"
        dest.mkdir(parents=True, exist_ok=True)
        try:
            local = download_artifacts(
                artifact_uri=model.location, dst_path=str(dest), tracking_uri=ctx.tracking_uri
            )
        except Exception as exc:
            raise StageError(
                f"mlflow: cannot download model {model.uri}: {mlflow_error(exc)}"
            ) from None
        convert_mlflow_model(
            Path(local),
            ctx.output_dir,
            name=ctx.model_name,
            version=ctx.model_version,
            toolchain_version=mlflow.__version__,
            output={
                "run_id": run_id,
                "experiment_id": str(experiment_id),
                "model_uri": model.uri,
                # A local store's URI is a path of the machine that trained the model: it
                # means nothing where the binary is served, so it stays in the run record only.
                **({"tracking_uri": self.where} if is_remote(self.where) else {}),
            },
        )
