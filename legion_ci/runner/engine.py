"""The stage runner: one stage at a time, in order, each meeting the others only in the record."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from legion_ci.errors import Cancelled, InputError, LegionError, StageError, storage_error
from legion_ci.gitinfo import git_commit
from legion_ci.processes import StageLog
from legion_ci.records import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    RunRecord,
    StageRecord,
    current_owner,
    list_records,
    load_raw_status,
    load_record,
    new_run_id,
    now,
)
from legion_ci.spec.pipeline import Pipeline
from legion_ci.stage_types import BY_NAME, StageType, resolve


@contextmanager
def cancellation() -> Iterator[None]:
    """Turn SIGTERM and Ctrl-C into Cancelled, raised in the running stage."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: Any) -> None:
        raise Cancelled(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    except KeyboardInterrupt:
        raise Cancelled("interrupted (Ctrl-C)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _new_record(pipeline: Pipeline) -> RunRecord:
    record = RunRecord(
        id=new_run_id(),
        pipeline=str(pipeline.path),
        pipeline_sha256=pipeline.located.sha256,
        model={"name": pipeline.model_name, "version": pipeline.model_version},
        workspace=str(pipeline.workspace),
        git_commit=git_commit(pipeline.base_dir),
        owner=current_owner(),
    )
    for name in pipeline.stages:
        record.stages[name] = StageRecord(name=name, integration=pipeline.integration_name(name))
    return record


def _continue_record(pipeline: Pipeline, stage: str, run_id: str) -> RunRecord:
    record = load_record(pipeline.workspace, run_id)
    if record.model != {"name": pipeline.model_name, "version": pipeline.model_version}:
        raise InputError(
            f"run {record.id} is for model {record.model['name']} {record.model['version']},"
            f" not {pipeline.model_name} {pipeline.model_version}"
        )
    for earlier in pipeline.stages[: pipeline.stages.index(stage)]:
        previous = record.stages.get(earlier)
        if previous is None or previous.status != SUCCEEDED:
            status = previous.status if previous else "not run"
            raise InputError(
                f"stage {stage} needs the outputs of {earlier}, which is {status} in run"
                f" {record.id}; run `legion-ci stage {earlier}` first"
            )
    if stage not in record.stages:
        record.stages[stage] = StageRecord(name=stage, integration=pipeline.integration_name(stage))
    record.owner = current_owner()
    return record


def _settle_interrupted(pipeline: Pipeline) -> None:
    """Record runs whose legion-ci process died mid-stage as interrupted, and say so."""
    import sys

    for old in list_records(pipeline.workspace):
        if old.status == INTERRUPTED and any(s.status == INTERRUPTED for s in old.stages.values()):
            raw = load_raw_status(old)
            if raw == RUNNING:
                old.save(latest=False)
                stages = ", ".join(n for n, s in old.stages.items() if s.status == INTERRUPTED)
                print(
                    f"legion-ci: run {old.id} was interrupted (stage {stages}: its legion-ci"
                    f" process {(old.owner or {}).get('pid')} is gone); recorded as interrupted",
                    file=sys.stderr,
                )


def _run_stage(
    pipeline: Pipeline, record: RunRecord, name: str, echo: IO[str] | None
) -> StageRecord:
    stage_record = record.stages[name]
    stage_record.integration = pipeline.integration_name(name)
    stage_record.status, stage_record.started = RUNNING, now()
    stage_record.finished = stage_record.error = None
    stage_record.duration_s = None
    stage_record.outputs, stage_record.metrics, stage_record.tags = {}, {}, {}
    stage_record.gates, stage_record.data, stage_record.baseline = [], [], None
    stage_record.log = f"logs/{name}.log"
    log_path = record.folder / stage_record.log
    log_path.unlink(missing_ok=True)
    log = StageLog(log_path, pipeline.redactor, echo)
    record.status = RUNNING
    record.save()
    started = time.monotonic()
    stage_type = BY_NAME[name]
    try:
        resolve(stage_type.run)(pipeline, record, stage_record, log)
        check_outputs(stage_type, stage_record.integration, stage_record.outputs)
        stage_record.status = SUCCEEDED
    except (Cancelled, KeyboardInterrupt) as exc:
        reason = str(exc) if isinstance(exc, Cancelled) else "interrupted (Ctrl-C)"
        stage_record.status, stage_record.error = CANCELLED, pipeline.redactor(reason)
        log.line(f"stage {name} cancelled: {reason}")
        raise Cancelled(reason) from None
    except LegionError as exc:
        stage_record.status, stage_record.error = FAILED, pipeline.redactor(str(exc))
        # The log already holds the lines an error's tail quotes: say the first line only.
        log.line(f"stage {name} failed: {stage_record.error.splitlines()[0]}")
        if not isinstance(exc, StageError):
            raise StageError(stage_record.error) from exc
        raise
    except OSError as exc:
        full = storage_error(exc)
        stage_record.status = FAILED
        stage_record.error = pipeline.redactor(str(full or f"internal error: {exc!r}"))
        if full is None:
            raise
        raise StageError(str(full)) from None
    except Exception as exc:
        stage_record.status = FAILED
        stage_record.error = pipeline.redactor(f"internal error: {type(exc).__name__}: {exc}")
        raise
    finally:
        stage_record.finished = now()
        stage_record.duration_s = round(time.monotonic() - started, 3)
        log.close()
        record.save()
    return stage_record


def check_outputs(stage_type: StageType, integration: str, outputs: dict[str, Any]) -> None:
    """What the integration handed back must hold the stage's declared outputs."""
    from jsonschema import Draft202012Validator

    errors = sorted(
        Draft202012Validator(stage_type.outputs).iter_errors(outputs), key=lambda e: e.path
    )
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.path) or "outputs"
        raise StageError(
            f"{stage_type.noun} {integration!r} handed back bad outputs: {where}: {error.message}"
            f" (declared: {', '.join(stage_type.outputs.get('required', []))})"
        )


def finish(record: RunRecord, pipeline: Pipeline) -> None:
    from legion_ci.reports import write_reports

    record.status = record.overall_status()
    record.finished = now()
    record.save()
    write_reports(record)


def _selected_stages(pipeline: Pipeline, only: str | None) -> list[str]:
    if only is not None and only not in pipeline.stages:
        raise InputError(
            f"{pipeline.display}: no stage {only!r} in this pipeline; it has:"
            f" {', '.join(pipeline.stages)}"
        )
    return [only] if only else list(pipeline.stages)


def execute(
    pipeline: Pipeline,
    *,
    only: str | None = None,
    run_id: str | None = None,
    echo: IO[str] | None = None,
) -> RunRecord:
    """Run every stage (or only `only`); returns the record. Raises StageError or Cancelled
    after the record and reports are written, with the record as the exception's `record`."""
    names = _selected_stages(pipeline, only)
    _settle_interrupted(pipeline)
    first = pipeline.stages[0]
    if only is None or only == first:
        if run_id is not None:
            raise InputError(f"--run-id continues an earlier run; stage {first} starts a new one")
        record = _new_record(pipeline)
    else:
        record = _continue_record(pipeline, only, run_id or "latest")
    record.save()
    with cancellation():
        try:
            for name in names:
                _run_stage(pipeline, record, name, echo)
        except (StageError, Cancelled) as exc:
            exc.record = record  # type: ignore[attr-defined]
            raise
        finally:
            finish(record, pipeline)
    return record


def plan(pipeline: Pipeline, only: str | None = None) -> dict[str, Any]:
    """What would run, resolved and redacted, without running anything."""
    stages = []
    for name in _selected_stages(pipeline, only):
        spec = pipeline.stage(name)
        registration = pipeline.registration(name)
        entry: dict[str, Any] = {
            "stage": name,
            **registration.describe(spec.get("arguments") or {}),
        }
        entry.update(resolve(BY_NAME[name].plan)(pipeline, spec))
        stages.append(entry)
    return pipeline.redactor.data(
        {
            "pipeline": str(pipeline.path),
            "model": {"name": pipeline.model_name, "version": pipeline.model_version},
            "workspace": str(pipeline.workspace),
            "stages": stages,
        }
    )
