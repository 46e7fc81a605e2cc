"""The train stage: data bindings, the toolchain, self-check, gates, then the zipped binary.

The zip is written last and atomically, so a failed stage (a gate, a self-check, a crash)
leaves no artifact behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from legion_ci import fs
from legion_ci.atomic import atomic_output
from legion_ci.errors import ModelError, Problem
from legion_ci.fs import inside
from legion_ci.integrations.base import TrainContext, TrainerNeeds
from legion_ci.integrations.mlflow_store import ensure_store, sqlite_path
from legion_ci.integrations.registry import Registry
from legion_ci.processes import StageLog, terminate_group
from legion_ci.records import RunRecord, StageRecord
from legion_ci.runner.gates import evaluate_gates, load_baseline, raise_on_failures
from legion_ci.spec.pipeline import Pipeline
from legion_ci.spec.stage_checks import PIPELINE_FIELDS, integration_problems, split_field_path
from legion_ci.training.handoff import IN_TRAINING_POD
from legion_ci.yaml_loader import Located


def artifact_path(folder: Path, pipeline: Pipeline) -> Path:
    """<folder>/artifacts/<model>-<version>.zip, refused if the name would leave the folder."""
    return inside(folder / "artifacts", f"{pipeline.model_name}-{pipeline.model_version}.zip")


def tracking_settings(pipeline: Pipeline, stage: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The MLflow tracking URI and the credentials environment for the training."""
    name = stage.get("tracking")
    if name:
        conn = pipeline.connections[name]
        env = {}
        if conn.options.get("username"):
            env["MLFLOW_TRACKING_USERNAME"] = str(conn.options["username"])
        if conn.options.get("password"):
            env["MLFLOW_TRACKING_PASSWORD"] = str(conn.options["password"])
        if conn.options.get("token"):
            env["MLFLOW_TRACKING_TOKEN"] = str(conn.options["token"])
        return conn.uri, env
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], {}
    return f"sqlite:///{pipeline.workspace / 'mlflow.db'}", {}


class SelfCheck:
    """The GPPI self-check in a fresh interpreter, so model code cannot touch the runner.

    With warm=True the interpreter starts with the stage and imports the usual model
    libraries (numpy, pandas, scikit-learn) while the training runs, so that when the binary
    is ready it only has to import and call the model: most of the self-check's time for an
    MLflow scikit-learn model. Trainers that make other kinds of models skip the warm-up.
    """

    def __init__(self, warm: bool) -> None:
        self.proc: subprocess.Popen[str] | None = None
        if warm:
            self._start("--warm")

    def _start(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "legion_ci.gppi.selfcheck", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            start_new_session=True,
        )

    def run(self, gppi_dir: Path, log: StageLog) -> dict[str, Any]:
        if self.proc is None:
            self._start("--stdin")
        assert self.proc is not None
        out, err = self.proc.communicate(f"{gppi_dir}\n")
        if err:
            log.write(err)
        try:
            report = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ModelError(
                f"self-check of the trained model binary crashed (exit {self.proc.returncode});"
                f" see {log.path}"
            ) from None
        if not report.get("ok"):
            raise ModelError(f"self-check failed: {report.get('error')}")
        log.line(
            f"self-check passed: {len(report['input'])} input columns, prediction"
            f" {report['prediction']['data']} on the example row"
        )
        return report

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            terminate_group(self.proc, grace=2)


def run_train(
    pipeline: Pipeline,
    record: RunRecord,
    stage_record: StageRecord,
    log: StageLog,
) -> None:
    from legion_ci.gppi.archive import write_zip

    stage = pipeline.stage("train")
    if stage.get("cluster") and not os.environ.get(IN_TRAINING_POD):
        from legion_ci.runner.stages.train_cluster import train_on_cluster

        # The artifact's path is handed over, so the cluster side need not import this module.
        train_on_cluster(
            pipeline, record, stage_record, log, artifact_path(record.folder, pipeline)
        )
        return
    registration = pipeline.registration("train")
    project_dir = pipeline.resolve_path(stage["workDir"])
    scratch = record.folder / "work" / "train"
    if scratch.exists():
        shutil.rmtree(scratch)
    output_dir = scratch / "gppi"
    output_dir.mkdir(parents=True)
    trainer = registration.load()
    # Asked of the class, not its registered name, so a renamed registration behaves the same.
    needs = TrainerNeeds.of(trainer)
    checker = SelfCheck(warm=needs.warm_self_check)
    try:
        if stage.get("data"):
            from legion_ci.data.bindings import place_data

            log.line(f"placing {len(stage['data'])} data binding(s) into {project_dir}")
            stage_record.data = place_data(stage["data"], pipeline.connections, project_dir, log)
        tracking_uri, tracking_env = tracking_settings(pipeline, stage)
        store = sqlite_path(tracking_uri)
        if store is not None and needs.tracking_store:
            ensure_store(store, log)
        tags = {
            "legion.model.name": pipeline.model_name,
            "legion.model.version": pipeline.model_version,
            "legion.run_id": record.id,
        }
        if record.git_commit:
            tags["legion.git_commit"] = record.git_commit
        ctx = TrainContext(
            model_name=pipeline.model_name,
            model_version=pipeline.model_version,
            project_dir=project_dir,
            entrypoint=str(stage["entrypoint"]),
            hyper_parameters=dict(stage.get("hyperParameters") or {}),
            arguments=dict(stage.get("arguments") or {}),
            output_dir=output_dir,
            scratch_dir=scratch,
            tracking_uri=tracking_uri,
            env=tracking_env,
            tags=tags,
            run_id=record.id,
            log=log,
            connections=pipeline.connections,
            toolchain=registration.name,
            data=list(stage.get("data") or []),
        )
        log.line(f"toolchain {registration.name!r} ({registration.mode}), project {project_dir}")
        result = trainer.train(ctx)
        stage_record.metrics = dict(result.metrics)
        stage_record.tags = dict(result.tags)
        stage_record.outputs.update(result.outputs)
        report = checker.run(output_dir, log)

        baseline = load_baseline(
            stage.get("baseline"), pipeline.base_dir, pipeline.workspace, record.id, record.model
        )
        if baseline is not None:
            stage_record.baseline = {"source": baseline[1], "metrics": baseline[0]}
        if stage.get("gates"):
            stage_record.gates = evaluate_gates(
                stage["gates"], stage_record.metrics, baseline[0] if baseline else None
            )
            for gate in stage_record.gates:
                log.line(f"gate {'ok' if gate['ok'] else 'FAILED'}: {gate['message']}")
            raise_on_failures(stage_record.gates)
        artifact = artifact_path(record.folder, pipeline)
        digest = write_zip(output_dir, artifact)
        stage_record.outputs.update(
            {
                "artifact": str(artifact),
                "artifact_sha256": digest,
                "artifact_bytes": artifact.stat().st_size,
                "input_columns": [f["name"] for f in report["input"]],
                "example_row": [f.get("example") for f in report["input"]],
            }
        )
        # A stable path for the latest good binary of this model, beside the run folders.
        latest = artifact_path(pipeline.workspace, pipeline)
        with atomic_output(latest, binary=True) as handle, open(artifact, "rb") as source:
            shutil.copyfileobj(source, handle)
        stage_record.outputs["artifact_latest"] = str(latest)
        log.line(f"trained model binary: {artifact} (sha256 {digest}), also at {latest}")
    finally:
        checker.close()
        shutil.rmtree(scratch, ignore_errors=True)


def plan_train(pipeline: Pipeline, stage: dict[str, Any]) -> dict[str, Any]:
    return {
        "workDir": str(pipeline.resolve_path(stage["workDir"])),
        "entrypoint": stage["entrypoint"],
        "hyperParameters": stage.get("hyperParameters") or {},
        "tracking_uri": tracking_settings(pipeline, stage)[0],
        "data": stage.get("data") or [],
        "gates": stage.get("gates") or {},
    }


def validate_train(
    data: dict[str, Any],
    located: Located,
    base_dir: Path,
    registry: Registry,
    strict_project: bool,
) -> list[Problem]:
    """The project folder, the baseline file and the toolchain's own checks."""
    train = (data.get("stages") or {}).get("train")
    if not train:
        return []
    problems: list[Problem] = []
    base = ("stages", "train")
    project_dir = (base_dir / train["workDir"]).resolve()
    if not fs.is_dir(project_dir):
        problems.append(located.problem((*base, "workDir"), f"no such folder: {project_dir}"))
        return problems
    baseline = train.get("baseline")
    if isinstance(baseline, str) and not fs.is_file(base_dir / baseline):
        problems.append(located.problem((*base, "baseline"), f"no such file: {baseline}"))
    registration = registry.for_stage_named("train", train["toolchain"])
    if registration.mode != "python":
        return problems
    for field_path, message in integration_problems(registration, train, project_dir):
        if not strict_project and not field_path.startswith(PIPELINE_FIELDS):
            # The project itself (MLproject, entry point) is the train stage's to judge
            # when running, so the failure lands in the run record and the CI reports.
            continue
        problems.append(located.problem((*base, *split_field_path(field_path)), message))
    return problems
