"""Run records: one JSON file per run, always written atomically.

Layout under the workspace (default `.legion/` beside the pipeline):
    runs/<run id>/record.json      the record
    runs/<run id>/logs/<stage>.log stage logs (secrets redacted)
    runs/<run id>/artifacts/       trained model binary, packaging results
    runs/<run id>/reports/         summary.json, junit.xml, summary.md
    reports/                       a copy of the latest run's reports, for CI globs
    latest                         the id of the latest run
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from legion_ci import processes
from legion_ci.atomic import atomic_output
from legion_ci.errors import InputError
from legion_ci.fs import inside

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, SKIPPED, PARTIAL, INTERRUPTED = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
    "partial",
    "interrupted",  # its legion-ci process died (SIGKILL, a crashed agent) mid-stage
)


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass
class StageRecord:
    name: str
    integration: str
    status: str = PENDING
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    log: str | None = None  # relative to the run folder
    outputs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    data: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


# Outputs later stages, the CLI and CI steps read back (paths, image references, ids).
IDENTIFIER_OUTPUTS = (
    "artifact",
    "artifact_latest",
    "artifact_sha256",
    "image",
    "image_id",
    "digest",
    "pushed",
    "url",
    "mlflow_run_id",
    "experiment_id",
    "model_uri",
    "context",
)
# Record fields holding identifiers (paths as in Redactor.fields); the rest is free text.
RECORD_IDENTIFIER_FIELDS = (
    *((name,) for name in ("id", "pipeline", "pipeline_sha256", "model", "workspace")),
    *((name,) for name in ("status", "started", "finished", "git_commit", "owner")),
    ("stages", "<key>"),
    *(("stages", "*", name) for name in ("name", "integration", "status", "log")),
    *(("stages", "*", "outputs", name) for name in IDENTIFIER_OUTPUTS),
)


def write_redacted(path: Path, text: str) -> None:
    """Write text already redacted as data (see Redactor.fields) atomically, as it is:
    redacting it again as text would mask the identifiers it keeps."""
    with atomic_output(path) as handle:
        handle.write(text)


@dataclass
class RunRecord:
    id: str
    pipeline: str
    pipeline_sha256: str
    model: dict[str, str]
    workspace: str
    status: str = RUNNING
    started: str = field(default_factory=now)
    finished: str | None = None
    git_commit: str | None = None
    stages: dict[str, StageRecord] = field(default_factory=dict)
    # The legion-ci process running it: {pid, start (kernel start time), host}
    owner: dict[str, Any] | None = None

    @property
    def folder(self) -> Path:
        return inside(Path(self.workspace) / "runs", self.id)

    @property
    def record_path(self) -> Path:
        return self.folder / "record.json"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = {name: asdict(stage) for name, stage in self.stages.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        stages = {name: StageRecord(**raw) for name, raw in (data.get("stages") or {}).items()}
        fields = {k: v for k, v in data.items() if k != "stages"}
        return cls(**fields, stages=stages)

    def identifiers(self) -> dict[str, str]:
        """What legion-ci reads back from a record to find runs, models and binaries."""
        return {
            "model name": str(self.model.get("name", "")),
            "model version": str(self.model.get("version", "")),
            "run id": self.id,
            "workspace path": self.workspace,
            "pipeline path": self.pipeline,
        }

    def kept_identifiers(self) -> list[str]:
        """The identifiers, and the binary's file name made of two of them."""
        name, version = self.model.get("name"), self.model.get("version")
        return [*self.identifiers().values(), f"{name}-{version}"]

    def save(self, *, latest: bool = True) -> None:
        from legion_ci.redact import ACTIVE, protect_identifiers

        identifiers = self.identifiers()
        protect_identifiers(identifiers)
        # Redacted as data, before JSON escaping can change how a secret looks; identifiers
        # kept, so a secret that is also the model's name cannot hide the run from `runs
        # list`, `stage package --run-id` or the binary's path.
        data = ACTIVE.fields(self.to_dict(), RECORD_IDENTIFIER_FIELDS, self.kept_identifiers())
        write_redacted(self.record_path, json.dumps(data, indent=2))
        if latest:
            write_redacted(Path(self.workspace) / "latest", self.id + "\n")

    def settle(self) -> bool:
        """A run that says `running` but whose legion-ci process is gone was interrupted:
        say so (in memory; the caller saves). Returns whether anything changed."""
        if RUNNING not in (self.status, *(s.status for s in self.stages.values())):
            return False
        if owner_alive(self.owner):
            return False
        pid = (self.owner or {}).get("pid")
        reason = f"interrupted: its legion-ci process (pid {pid}) is gone"
        for stage in self.stages.values():
            if stage.status == RUNNING:
                stage.status, stage.error = INTERRUPTED, reason
        self.status = self.overall_status()
        return True

    def overall_status(self) -> str:
        """The run's status, derived from its stages'. `partial`: what ran succeeded and
        later stages are still to run (`legion-ci stage` one at a time)."""
        statuses = [s.status for s in self.stages.values()]
        for status in (CANCELLED, INTERRUPTED, FAILED, RUNNING):
            if status in statuses:
                return status
        if statuses and all(s == SUCCEEDED for s in statuses):
            return SUCCEEDED
        return PARTIAL if SUCCEEDED in statuses else PENDING


def _recorded_start(pid: int) -> str | None:
    # Records written before processes.start_time kept the start as a string.
    start = processes.start_time(pid)
    return None if start is None else str(start)


def current_owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "start": _recorded_start(os.getpid()), "host": socket.gethostname()}


def owner_alive(owner: dict[str, Any] | None) -> bool:
    if not owner or owner.get("host") != socket.gethostname():
        return True  # another agent's run, or a record from before owners: cannot tell
    start = _recorded_start(int(owner["pid"]))
    return start is not None and start == owner.get("start")


def load_record(workspace: Path, run_id: str = "latest") -> RunRecord:
    workspace = Path(workspace)
    if run_id == "latest":
        pointer = workspace / "latest"
        if not pointer.is_file():
            raise InputError(f"{workspace}: no runs yet (run `legion-ci run` or a train stage)")
        run_id = pointer.read_text(encoding="utf-8").strip()
    path = inside(workspace / "runs", run_id) / "record.json"
    if not path.is_file():
        known = ", ".join(r.id for r in list_records(workspace)[-5:]) or "(none)"
        raise InputError(f"{workspace}: no run {run_id!r}; recent runs: {known}")
    try:
        record = RunRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: unreadable run record: {exc}") from None
    # A later stage may run on another CI agent with the workspace at another path (stash /
    # unstash, a shared volume): the record lives where it was found, not where it was made.
    record.workspace = str(workspace.resolve())
    record.settle()
    return record


def list_records(workspace: Path) -> list[RunRecord]:
    runs = Path(workspace) / "runs"
    records = []
    if runs.is_dir():
        for folder in sorted(runs.iterdir()):
            path = folder / "record.json"
            if path.is_file():
                try:
                    record = RunRecord.from_dict(json.loads(path.read_text("utf-8")))
                except (ValueError, TypeError):
                    continue
                record.workspace = str(Path(workspace).resolve())
                record.settle()
                records.append(record)
    # Ids sort by second only; the start time (milliseconds) orders runs within a second.
    return sorted(records, key=lambda r: (r.started, r.id))


def load_raw_status(record: RunRecord) -> str | None:
    """The status as written on disk, before `settle()` looked at its owner."""
    try:
        return json.loads(record.record_path.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError):
        return None
