"""The CI host legion-ci runs under: one interface, one module per host.

A host is a module with the functions of `terminal` (the default, which does nothing a plain
terminal cannot show). The CLI asks `detect()` for the host and calls it; nothing outside a
host's own module tests for that host. A new host is one module plus one row in HOSTS.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from legion_ci.records import RunRecord

# name -> module, tried in order; the first whose detect(env) is true is the host. The plain
# terminal comes last and always matches.
HOSTS: dict[str, str] = {
    "github": "legion_ci.ci.github",
    "gitlab": "legion_ci.ci.gitlab",
    "jenkins": "legion_ci.ci.jenkins",
    "terminal": "legion_ci.ci.terminal",
}


def detect(env: Mapping[str, str] | None = None) -> ModuleType:
    """The host module for `env` (default: this process's environment)."""
    env = os.environ if env is None else env
    for module in HOSTS.values():
        host = importlib.import_module(module)
        if host.detect(env):
            return host
    raise AssertionError("the terminal host always matches")  # pragma: no cover


# Outputs of the whole run, before the stages' own (stage_types.STAGES[*].ci_outputs). These and
# the stage table are the only place output names are spelled: the GitHub action, the GitLab
# dotenv, the Jenkins result and the Airflow XCom keys all follow them (tests/test_ci_hosts.py).
RUN_OUTPUTS: tuple[str, ...] = ("run-id", "status", "run-folder", "summary", "junit", "metrics")


def output_names() -> list[str]:
    """Every output name a run can have, run-level first, then stage by stage."""
    from legion_ci.stage_types import STAGES

    return [*RUN_OUTPUTS, *(name for stage in STAGES for name in stage.ci_outputs.values())]


def outputs(record: RunRecord) -> dict[str, Any]:
    """The run's outputs under their CI names; a stage output appears once it has a value."""
    from legion_ci.stage_types import BY_NAME

    result: dict[str, Any] = {
        "run-id": record.id,
        "status": record.status,
        "run-folder": str(record.folder),
        "summary": str(record.folder / "reports" / "summary.json"),
        "junit": str(record.folder / "reports" / "junit.xml"),
    }
    train = record.stages.get("train")
    if train is not None:
        result["metrics"] = dict(sorted(train.metrics.items()))
    for name, stage in record.stages.items():
        for key, ci_name in BY_NAME[name].ci_outputs.items():
            value = stage.outputs.get(key)
            if value is not None:
                result[ci_name] = value
    return result


def shareable(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The outputs as a host may hand them to later steps: redacted, except that identifiers
    (run id, paths, image) are kept where a secret shares them; the metrics are free text."""
    from legion_ci.redact import ACTIVE, IDENTIFIERS

    kept = [(name,) for name in outputs if name != "metrics"]
    return ACTIVE.fields(dict(outputs), kept, IDENTIFIERS.values())
