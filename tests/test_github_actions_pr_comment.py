"""The run action's pull request comment, posted by its script through the real `gh` CLI to a
GitHub REST API emulator on 127.0.0.1 (HTTPS, as gh talks to a GitHub Enterprise host): the
first run posts one comment, the next run edits that comment, and nobody else's comment is
touched, also when the comment is past the first page."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from act_support import make_certificate
from conftest import REPO, SH_PIPELINE, run_cli, write
from procs import free_port, service

SCRIPT = REPO / "github-actions" / "run" / "pr-comment.sh"
TOKEN = "test-token-0123"
REPOSITORY = "legion-platform/models"
PR = 7
GATED = (
    SH_PIPELINE
    + """
    gates:
      rmse: {max: 0.8}
    baseline: baseline.json
"""
)


class GitHubApi:
    def __init__(self, url: str, cert: Path) -> None:
        self.url = url
        self.context = ssl.create_default_context(cafile=str(cert))

    def _call(self, method: str, path: str, data: object = None) -> object:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if data is None else json.dumps(data).encode(),
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
            return json.load(response)

    def comments(self) -> list[dict]:
        path = f"/api/v3/repos/{REPOSITORY}/issues/{PR}/comments?per_page=100"
        return self._call("GET", path)  # type: ignore[return-value]

    def post(self, body: str) -> None:
        self._call("POST", f"/api/v3/repos/{REPOSITORY}/issues/{PR}/comments", {"body": body})


@pytest.fixture
def github_api(tmp_path: Path) -> Iterator[GitHubApi]:
    cert, key = make_certificate(tmp_path)
    port = free_port()
    api = GitHubApi(f"https://127.0.0.1:{port}", cert)

    def ready() -> bool:
        try:
            api.comments()
            return True
        except OSError:
            return False

    argv = [sys.executable, str(REPO / "tests" / "act_support.py"), "github-api"]
    with service(
        [*argv, str(port), str(cert), str(key), TOKEN],
        tmp_path / "github-api.log",
        ready=ready,
        timeout=30,
        name="github api emulator",
    ):
        yield api


def _comment(
    pipeline: Path, api: GitHubApi, run_id: str, tmp_path: Path, token: str = TOKEN
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GH_", "RUNNER_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        GITHUB_SERVER_URL=api.url,
        SSL_CERT_FILE=str(tmp_path / "cert.pem"),
        GH_CONFIG_DIR=str(tmp_path / "gh-config"),
        GH_NO_UPDATE_NOTIFIER="1",
        GH_TOKEN=token,
        PIPELINE_FILE=str(pipeline),
        RUN_ID=run_id,
        PR_NUMBER=str(PR),
        REPOSITORY=REPOSITORY,
    )
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_one_comment_per_model_is_posted_then_kept_up_to_date(
    sh_project: Path, github_api: GitHubApi, tmp_path: Path
) -> None:
    # Other people's comments fill the first page (gh --paginate must reach the second); one
    # is another model's legion-ci comment.
    for i in range(31):
        github_api.post(f"comment {i}")
    github_api.post("<!-- legion-ci:pr-comment:other-model -->\nsomething else")
    pipeline = write(sh_project / "pipeline.yaml", GATED)
    write(sh_project / "baseline.json", '{"rmse": 0.6}')
    latest = sh_project / ".legion" / "latest"

    run_cli("run", str(pipeline)).assert_success()
    first = latest.read_text().strip()
    assert "posted a pull request comment" in _comment(pipeline, github_api, first, tmp_path)
    ours = [c for c in github_api.comments() if "pr-comment:linear" in c["body"]]
    assert len(ours) == 1
    assert ours[0]["body"].startswith("<!-- legion-ci:pr-comment:linear -->\n")
    assert f"run `{first}`" in ours[0]["body"] and "| rmse | 0.5 | 0.6 | -0.1 |" in ours[0]["body"]

    run_cli("run", str(pipeline)).assert_success()
    second = latest.read_text().strip()
    out = _comment(pipeline, github_api, second, tmp_path)
    assert f"updated pull request comment {ours[0]['id']}" in out
    comments = github_api.comments()
    assert len(comments) == 33
    now = [c for c in comments if "pr-comment:linear" in c["body"]]
    assert [c["id"] for c in now] == [ours[0]["id"]]
    assert f"run `{second}`" in now[0]["body"] and "bar [0.5, 0.5]" in now[0]["body"]
    assert [c["body"] for c in comments if c["id"] != now[0]["id"]][:2] == [
        "comment 0",
        "comment 1",
    ]
    assert "something else" in comments[31]["body"]


def test_a_comment_that_cannot_be_posted_is_a_warning_not_a_failure(
    sh_project: Path, github_api: GitHubApi, tmp_path: Path
) -> None:
    pipeline = write(sh_project / "pipeline.yaml", GATED)
    write(sh_project / "baseline.json", '{"rmse": 0.6}')
    run_cli("run", str(pipeline), "-q").assert_success()
    run_id = (sh_project / ".legion" / "latest").read_text().strip()
    out = _comment(pipeline, github_api, run_id, tmp_path, token="read-only-fork-token")
    assert "::warning title=legion-ci::the pull request comment could not be posted" in out
    assert github_api.comments() == []
