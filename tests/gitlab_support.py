"""Run a .gitlab-ci.yml that includes gitlab/legion-ci.yml for real with gitlab-ci-local.

gitlab-ci-local (npm, installed by scripts/setup.d/45-gitlab.sh) runs the jobs on this machine
with its shell executor (no `image:` is set, and --shell-executor-no-image keeps Docker out),
passes artifacts and dotenv reports between jobs as GitLab does, and keeps each job's log and
artifacts under <repo>/.gitlab-ci-local/. It sets GITLAB_CI=false to mark itself; the runs
here set the value GitLab sets (true), so legion-ci takes itself to be under GitLab. No GitLab
server is involved: what GitLab's web UI does with the reports is not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO, copy_wine_project
from procs import run_group

CACHE = Path(os.environ.get("LEGION_CI_CI_CACHE", Path.home() / ".cache" / "legion-ci-ci"))
GITLAB_CI_LOCAL = CACHE / "gitlab-ci-local" / "bin" / "gitlab-ci-local"  # setup.d/45-gitlab.sh
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


@dataclass
class GitlabRun:
    repo: Path
    code: int
    log: str

    def job_log(self, job: str) -> str:
        return (self.repo / ".gitlab-ci-local" / "output" / f"{job}.log").read_text()

    def artifacts(self, job: str) -> Path:
        """What the job uploaded, as GitLab would store it."""
        return self.repo / ".gitlab-ci-local" / "artifacts" / job


def make_repo(root: Path) -> Path:
    """The wine example and the template in a git repository with an `origin` remote
    (gitlab-ci-local reads the project's path from it), with the example .gitlab-ci.yml."""
    copy_wine_project(root, git=True)
    shutil.copytree(REPO / "gitlab", root / "gitlab")
    shutil.copyfile(REPO / "gitlab" / "examples" / ".gitlab-ci.yml", root / ".gitlab-ci.yml")
    subprocess.run(
        ["git", "-C", str(root), "remote", "add", "origin", "https://gitlab.invalid/ml/wine.git"],
        check=True,
    )
    commit(root, "the GitLab pipeline")
    return root


def commit(root: Path, message: str) -> None:
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qm", message], check=True)


def run_gitlab_ci_local(
    repo: Path, home: Path, *args: str, variables: dict[str, str] | None = None
) -> GitlabRun:
    """`gitlab-ci-local ARGS` in `repo`, with this checkout's legion-ci first on PATH."""
    assert GITLAB_CI_LOCAL.is_file(), (
        f"{GITLAB_CI_LOCAL} is missing: run scripts/setup.d/45-gitlab.sh"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("GITHUB_ACTIONS", "JENKINS_URL", "GITLAB_CI", "MLFLOW_TRACKING_URI")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["LEGION_CI_CACHE"] = str(home / "legion-ci-cache")
    # No Docker engine: the package stage writes the image's build context only (the
    # docker-rest packager says so and succeeds), so the jobs need no Docker at all.
    env["DOCKER_HOST"] = f"unix://{home}/no-docker.sock"
    argv = [str(GITLAB_CI_LOCAL), "--shell-executor-no-image", "--home", str(home), "--no-color"]
    for key, value in {"GITLAB_CI": "true", **(variables or {})}.items():
        argv += ["--variable", f"{key}={value}"]
    code, out = run_group([*argv, *args], cwd=repo, env=env, timeout=900)
    return GitlabRun(repo, code, out)
