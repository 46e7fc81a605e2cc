"""GitLab CI: outputs as a dotenv report, the stage log in a collapsible section.

GitLab reads a job's outputs from a dotenv file declared as `artifacts:reports:dotenv` and
puts them into the environment of later jobs; the template (gitlab/legion-ci.yml) declares
`$LEGION_CI_DOTENV`. A dotenv value is one line, so a multi-line value is left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from legion_ci.ci import shareable, terminal

if TYPE_CHECKING:
    from legion_ci.records import RunRecord

NAME = "gitlab"
SHOWS_REPRODUCE = True
DOTENV_ENV = "LEGION_CI_DOTENV"
DEFAULT_DOTENV = "legion-ci.env"


def detect(env: Mapping[str, str]) -> bool:
    return env.get("GITLAB_CI") == "true"


def variable(name: str) -> str:
    """The dotenv variable of an output: run-id -> LEGION_RUN_ID."""
    return "LEGION_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _metric_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_:]", "_", text)


def write_outputs(outputs: Mapping[str, object]) -> None:
    path = os.environ.get(DOTENV_ENV) or DEFAULT_DOTENV
    lines = []
    for name, value in shareable(outputs).items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if "\n" not in text and "\r" not in text:
            lines.append(f"{variable(name)}={text}\n")
    # Rewritten, not appended: a job that runs legion-ci twice hands on its last run.
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(lines)


REPORTS_ENV = "LEGION_CI_REPORTS"
DEFAULT_REPORTS = "legion-ci-reports"


def write_summary(record: RunRecord) -> None:
    """The run's reports copied to one fixed folder of the project ($LEGION_CI_REPORTS), where
    the template's `artifacts:reports` and `expose_as` find them (GitLab allows no variables
    in an exposed artifact's paths), and the metrics as GitLab's metrics report."""
    target = Path(os.environ.get(REPORTS_ENV) or DEFAULT_REPORTS)
    target.mkdir(parents=True, exist_ok=True)
    reports = record.folder / "reports"
    for path in sorted(reports.iterdir()) if reports.is_dir() else ():
        if path.is_file():
            shutil.copyfile(path, target / path.name)
    # GitLab's metrics report: `name value` per line (OpenMetrics text); GitLab shows the
    # change against the target branch's report in the merge request.
    lines = [
        f"{_metric_name(f'{stage}_{name}')} {value}\n"
        for stage, stage_record in record.stages.items()
        for name, value in sorted(stage_record.metrics.items())
    ]
    (target / "metrics.txt").write_text("".join(lines), encoding="utf-8")


annotate = terminal.annotate


def guard(stream: IO[str] | None, title: str) -> contextlib.AbstractContextManager[None]:
    """The stage log in a collapsible section of the job log (GitLab's section escape lines);
    GitLab obeys no commands in a job log, so nothing else needs guarding."""
    section = re.sub(r"[^a-z0-9_]", "_", title.lower())
    return terminal.between(
        stream,
        f"\x1b[0Ksection_start:{int(time.time())}:{section}\r\x1b[0K{title}\n",
        lambda: f"\x1b[0Ksection_end:{int(time.time())}:{section}\r\x1b[0K\n",
    )
