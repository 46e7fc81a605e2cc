"""What each kind of integration must provide, and what the runner hands it.

Integrations never call each other or the runner: the runner gives a trainer a TrainContext,
takes back a TrainResult and a GPPI folder, and does the shared work (self-check, zip,
checksum, gates) itself, so every trainer, in-process or not, is held to the same bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from legion_ci.processes import StageLog

if TYPE_CHECKING:
    from legion_ci.deployment_state import DeploymentState


@dataclass
class Connection:
    """A named connection from the pipeline, secret references already resolved."""

    name: str
    type: str
    uri: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # every other key (endpoint, keyID...)
    # "file:line:col: connections.name[.key]" of the entry ("") and each key, so an error met
    # while using it (an AWS login refused) points at the pipeline line to fix.
    located: dict[str, str] = field(default_factory=dict, repr=False)

    def where(self, key: str = "") -> str:
        return self.located.get(key) or self.located.get("") or f"connection {self.name!r}"


@dataclass
class TrainContext:
    model_name: str
    model_version: str
    project_dir: Path  # the training's workDir, resolved against the pipeline file
    entrypoint: str
    hyper_parameters: dict[str, Any]
    arguments: dict[str, Any]  # integration-specific, validated against its registration
    output_dir: Path  # empty folder: the trainer writes the GPPI binary folder here
    scratch_dir: Path  # the stage's own scratch space
    tracking_uri: str  # MLflow tracking URI, already chosen (connection, env, or sqlite default)
    env: dict[str, str]  # extra environment for the training (tracking credentials, ...)
    tags: dict[str, str]  # tags to set on the training run (model, version, run id, commit)
    run_id: str  # the legion-ci run id
    log: StageLog
    connections: Mapping[str, Connection] = field(default_factory=dict)
    toolchain: str = ""  # the registered name the pipeline chose
    data: Sequence[Mapping[str, Any]] = ()  # the stage's data bindings, already placed


@dataclass
class TrainResult:
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # e.g. mlflow_run_id, tracking_uri


@runtime_checkable
class Trainer(Protocol):
    """A Toolchain Train Integration (Legion's Model Trainer)."""

    def train(self, ctx: TrainContext) -> TrainResult:
        """Run the training; write the GPPI folder into ctx.output_dir; raise StageError."""
        ...


@dataclass(frozen=True)
class TrainerNeeds:
    """What a trainer asks the train stage to prepare, declared on its class as
    `needs_tracking_store = True` / `warm_self_check = True` (absent: False).

    Declared by the class, not by the name it is registered under, so the same class
    registered under another name is prepared for the same way."""

    tracking_store: bool = False  # make a sqlite tracking store (URI sqlite:///...) first
    warm_self_check: bool = False  # start the self-check's interpreter early, model libs loaded

    @classmethod
    def of(cls, trainer: object) -> TrainerNeeds:
        return cls(
            tracking_store=bool(getattr(trainer, "needs_tracking_store", False)),
            warm_self_check=bool(getattr(trainer, "warm_self_check", False)),
        )


@runtime_checkable
class ValidatesStage(Protocol):
    """Optional, for any kind: problems found before anything runs."""

    def validate(self, stage: Mapping[str, Any], folder: Path) -> Sequence[tuple[str, str]]:
        """(field path under the stage, message) pairs, e.g. ("entrypoint", "unknown entry
        point 'mian'; known: main"). `folder` is the training project for a trainer, the
        pipeline's folder for the other kinds."""
        ...


@dataclass
class PackageTarget:
    """Where a packed model goes (Legion's `targets`: e.g. docker-push to a registry)."""

    name: str  # the target's role, e.g. "docker-push"
    connection: Connection


@dataclass
class PackageContext:
    model_name: str
    model_version: str
    run_id: str  # the legion-ci run id
    git_commit: str | None
    artifact: Path  # the trained model binary (zip), checksum already verified
    artifact_dir: Path  # the same binary, safely extracted (a GPPI folder)
    arguments: dict[str, Any]  # integration-specific, validated against its registration
    targets: list[PackageTarget]
    output_dir: Path  # the run's artifacts folder: keep what should outlive the stage here
    scratch_dir: Path  # removed when the stage ends
    train_outputs: Mapping[str, Any]  # the train stage's outputs (mlflow_run_id, ...)
    log: StageLog
    clients: Any = None  # legion_ci.integrations.clients.Clients: Docker/Kubernetes, made once
    integration: str = ""  # the registered name the pipeline chose
    pipeline_file: Path | None = None  # the pipeline YAML (its sha256 goes into provenance)


@dataclass
class PackageResult:
    """What the packager hands back; checked against the package stage's declared outputs."""

    outputs: dict[str, Any] = field(default_factory=dict)  # image, digest, image_id, size, ...


@runtime_checkable
class Packager(Protocol):
    """A Toolchain Packaging Integration (Legion's Model Packager)."""

    def pack(self, ctx: PackageContext) -> PackageResult:
        """Pack ctx.artifact_dir (build, smoke-test, push); raise StageError on failure."""
        ...


@dataclass
class DeployContext:
    model_name: str
    model_version: str
    run_id: str
    artifact: Path | None  # the trained model binary (zip), when train ran in this run
    package_outputs: Mapping[str, Any]  # image, digest, ... when package ran
    arguments: dict[str, Any]
    connection: Connection | None  # e.g. a kubernetes connection
    workspace: Path  # deployment state lives under <workspace>/deployments/
    scratch_dir: Path
    log: StageLog
    clients: Any = None
    integration: str = ""  # the registered name the pipeline chose
    stage_spec: Mapping[str, Any] = field(default_factory=dict)
    # What the runner learnt from the earlier stages, so no target has to dig for it; None
    # when unknown (no train or package stage in this run, or a caller that leaves them out).
    example: Mapping[str, Any] | None = None  # {"columns": [...], "data": [[...]]}: info()'s
    image: str | None = None  # the package stage's image, by digest when it pushed it


@dataclass
class DeployResult:
    outputs: dict[str, Any] = field(default_factory=dict)  # url, ...


@runtime_checkable
class Deployer(Protocol):
    """A deploy target (Legion's Model Deployer)."""

    def deploy(self, ctx: DeployContext) -> DeployResult:
        """Deploy, wait until ready, smoke-test; raise StageError leaving the old one serving."""
        ...


# -- what `legion-ci deployments` asks of a target, each optional ---------------------------------
# A target that saved a DeploymentState under its registered name (`target`) is found again
# through the registry by that name, so a third-party target takes part in `legion-ci
# deployments status|logs|delete` by defining these, with no change to the CLI.
@runtime_checkable
class ReportsStatus(Protocol):
    def status(self, record: DeploymentState) -> tuple[str, str]:
        """(status, detail), checked live where that is cheap: "running" (exit 0), "recorded"
        (not checked, exit 0), anything else ("stale", "vanished", "exited") exits 1."""
        ...


@runtime_checkable
class ShowsLogs(Protocol):
    def logs(self, record: DeploymentState, lines: int) -> str:
        """The deployment's last `lines` log lines; raise InputError when it keeps none."""
        ...


@runtime_checkable
class Deletes(Protocol):
    def delete(self, record: DeploymentState, *, workspace: Path, drain_timeout: float) -> str:
        """Stop the deployment (drain first); returns what happened, in a few words. The CLI
        then forgets the state."""
        ...
