"""Drive tests/groovy/Harness.groovy: Jenkinsfiles run in real Groovy 2.4 against the shared
library, with `sh` running the real legion-ci on real pipelines. One JVM runs a whole batch of
builds, because a JVM start costs seconds on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import FIXTURES, REPO, SH_PIPELINE, write

LIBRARY = REPO / "jenkins" / "shared-library"
EXAMPLES = REPO / "jenkins" / "examples"
HARNESS = Path(__file__).resolve().parent / "groovy"
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
# The legion-ci of this checkout, handed to the library as a preinstalled executable
# (LEGION_CI_COMMAND) except where a test installs one for real.
LEGION_CI_BIN = str(Path(sys.executable).parent / "legion-ci")
# What the runner of these tests may have set that would change legion-ci's behaviour.
IGNORED_ENV = {
    "GITHUB_ACTIONS",
    "MLFLOW_TRACKING_URI",
    "LEGION_CI_INTEGRATIONS",
    "JENKINS_URL",
    "GITLAB_CI",
}
SECRET = "jenkins-s3cr3t-7f1c"
REGISTRY_SECRET = "registry-s3cr3t-9a2b"

# The pipelines below grow conftest's SH_PIPELINE (the shell trainer on src/), whose train stage
# comes last so that more of its keys, then more stages, can follow it.
WITH_PACKAGER = SH_PIPELINE.replace(
    "integrations: [integrations/registration.yaml]",
    "integrations: [integrations/registration.yaml, packagers/registration.yaml]",
)

PIPELINE = (
    WITH_PACKAGER
    + """\
    gates:
      rmse: {max: %(rmse_max)s}
      r2: {min: 0.3}
  package:
    integration: sh-packager
"""
)

# The same pipeline with credentials, the way the declarative example's credentials reach it.
SECRET_PIPELINE = (
    WITH_PACKAGER.replace(
        "stages:\n",
        """\
connections:
  tracker:
    type: mlflow
    uri: http://127.0.0.1:9
    username: ci
    password: ${env:MLFLOW_PASSWORD}
  registry:
    type: docker
    uri: 127.0.0.1:5000
    username: ${env:REGISTRY_USER}
    password: ${env:REGISTRY_PASSWORD}
stages:
""",
    )
    + """\
    tracking: tracker
  package:
    integration: sh-packager
    targets: [{name: docker-push, connection: registry}]
"""
)

# Train with the shell trainer (y = 2a + b), then serve it with the `process` deploy target:
# a `legion-ci serve` in the background on 127.0.0.1, its URL the deploy stage's output.
DEPLOY_PIPELINE = (
    SH_PIPELINE
    + """\
  deploy:
    target: process
"""
)


def make_project(folder: Path, pipeline: str, name: str = "legion-ci.yaml") -> Path:
    """A repository as `checkout scm` would bring it: the shell trainer and packager
    registered beside the pipeline file."""
    shutil.copytree(FIXTURES / "sh-trainer", folder / "integrations")
    shutil.copytree(FIXTURES / "sh-packager", folder / "packagers")
    (folder / "src").mkdir()
    write(folder / name, pipeline)
    return folder


@dataclass
class Build:
    """What one Jenkinsfile run did, as the harness recorded it."""

    id: str
    result: str
    error: str | None
    description: str | None
    returned: Any
    events: list[dict[str, Any]]
    log: str
    root: Path
    trace: str | None = None

    def steps(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["step"] == name]

    def archived(self) -> list[Path]:
        archive = self.root / "archive"
        return sorted(p for p in archive.rglob("*") if p.is_file()) if archive.exists() else []

    def stage_status(self) -> dict[str, str]:
        """The last status of each Jenkins stage (started, succeeded, failed, skipped)."""
        return {e["name"]: e["status"] for e in self.steps("stage")}

    def everything(self) -> str:
        """All that Jenkins would show or keep: log, step arguments, returned value."""
        return json.dumps([self.events, self.log, self.returned, self.description, self.error])


@dataclass
class Scenario:
    id: str
    jenkinsfile: str
    project: Path
    credentials: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def run_builds(scenarios: list[Scenario], workdir: Path, timeout: float = 600) -> dict[str, Build]:
    """Run every scenario's Jenkinsfile in one Groovy JVM; their builds by id."""
    entries = []
    for scenario in scenarios:
        root = workdir / scenario.id
        root.mkdir(parents=True)
        jenkinsfile = write(root / "Jenkinsfile", scenario.jenkinsfile)
        entries.append(
            {
                "id": scenario.id,
                "library": str(LIBRARY),
                "jenkinsfile": str(jenkinsfile),
                "project": str(scenario.project),
                "root": str(root),
                "credentials": scenario.credentials,
                "env": {"LEGION_CI_COMMAND": LEGION_CI_BIN, **scenario.env},
            }
        )
    spec, out = workdir / "scenarios.json", workdir / "results.json"
    spec.write_text(json.dumps(entries), encoding="utf-8")
    classpath = f"{LIBRARY / 'src'}:{HARNESS / 'stubs'}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in IGNORED_ENV},
        "JAVA_HOME": JAVA_HOME,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "LEGION_CI_CACHE": str(workdir / "cache"),
    }
    proc = subprocess.run(
        ["groovy", "-cp", classpath, str(HARNESS / "Harness.groovy"), str(spec), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"harness exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    builds = {}
    for item in json.loads(out.read_text(encoding="utf-8")):
        builds[item["id"]] = Build(
            id=item["id"],
            result=item["result"],
            error=item.get("error"),
            description=item.get("description"),
            returned=item.get("returned"),
            events=item["events"],
            log=item["log"],
            root=workdir / item["id"],
            trace=item.get("trace"),
        )
    return builds


def library_scripts() -> set[str]:
    """Every script text the library hands to `sh`: each resource script after the argv-from-env.sh
    preamble (as LegionCli.argvScript joins them), and its one inline script."""
    resources = LIBRARY / "resources" / "com" / "epam" / "legion" / "ci"
    preamble = (resources / "argv-from-env.sh").read_text(encoding="utf-8")
    scripts = {
        preamble + p.read_text(encoding="utf-8")
        for p in resources.glob("*.sh")
        if p.name != "argv-from-env.sh"
    }
    cli = (LIBRARY / "src" / "com" / "epam" / "legion" / "ci" / "LegionCli.groovy").read_text()
    inline = cli.split("sh(script: '", 1)[1].split("'", 1)[0]
    return scripts | {inline}
