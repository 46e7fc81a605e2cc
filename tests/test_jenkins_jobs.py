"""`legion-ci jenkins render|sync` through the real CLI.

render: offline, the XML jenkins-job-builder rendered is parsed and checked.
sync: NOT against Jenkins (no controller can run here). It talks to a FAKE Jenkins endpoint
below: a small HTTP server on 127.0.0.1 answering only the few REST calls python-jenkins makes
for job_exists / create_job / get_job_config / reconfig_job (and the CSRF crumb), with HTTP
basic auth. It proves what legion-ci sends and how it decides, not how Jenkins answers.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import REPO, run_cli, write
from procs import free_port

USER, TOKEN = "ci-bot", "api-t0ken-5ecret"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "pipelines", root / "pipelines", ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(REPO / "examples" / "wine", root / "examples" / "wine")
    return root


def jobs_of(output: str) -> dict[str, ET.Element]:
    """Each printed job: `<!-- job NAME from FILE -->` then one XML document."""
    jobs = {}
    for chunk in output.split("<!-- job ")[1:]:
        header, body = chunk.split("-->", 1)
        jobs[header.split()[0]] = ET.fromstring(body)
    return jobs


def test_render_pipeline_job_loads_library_and_runs_the_file(repo: Path) -> None:
    outcome = run_cli(
        "jenkins",
        "render",
        "pipelines/wine.yaml",
        "--git-url",
        "https://git.example/ml/wine.git",
        "--branch",
        "release",
        "--label",
        "gpu",
        "--prefix",
        "legion-",
        cwd=repo,
    ).assert_success()
    (name, job), *others = jobs_of(outcome.out).items()
    assert name == "legion-wine" and not others
    assert job.tag == "flow-definition"
    definition = job.find("definition")
    assert definition.get("class") == "org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition"
    assert definition.findtext("sandbox") == "true"
    script = definition.findtext("script")
    assert "@Library('legion-ci@0.1.0') _" in script
    assert "legionPipeline(pipeline: 'pipelines/wine.yaml', node: false)" in script
    assert "node('gpu') {" in script
    assert "git(url: 'https://git.example/ml/wine.git', branch: 'release')" in script
    triggers = job.find(
        "properties/org.jenkinsci.plugins.workflow.job.properties.PipelineTriggersJobProperty/triggers"
    )
    assert triggers.findtext("hudson.triggers.SCMTrigger/spec") == "H/5 * * * *"
    assert (
        job.find(
            "properties/org.jenkinsci.plugins.workflow.job.properties.DisableConcurrentBuildsJobProperty"
        )
        is not None
    )
    assert "model wine 1.0" in job.findtext("description")


def test_render_webhook_trigger_output_dir_and_literal_quoting(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "jobs"
    run_cli(
        "jenkins",
        "render",
        "pipelines/wine.yaml",
        "--git-url",
        "https://git.example/it's {weird}.git",
        "--library",
        "legion-ci@main",
        "--trigger",
        "github",
        "--output-dir",
        str(out),
        cwd=repo,
    ).assert_success()
    job = ET.parse(out / "wine" / "config.xml").getroot()
    triggers = job.find(".//triggers")
    assert [t.tag for t in triggers] == ["com.cloudbees.jenkins.GitHubPushTrigger"]
    script = job.findtext("definition/script")
    assert "@Library('legion-ci@main') _" in script
    # A value is always one single-quoted Groovy literal: its quote escaped, braces kept.
    assert "git(url: 'https://git.example/it\\'s {weird}.git', branch: 'main')" in script
    assert "node {" in script


def test_render_errors_are_one_located_line(repo: Path) -> None:
    write(repo / "pipelines" / "nameless.yaml", "apiVersion: legion-ci/v1\nmodel: {version: '1'}\n")
    outcome = run_cli(
        "jenkins", "render", "pipelines/nameless.yaml", "--git-url", "u", cwd=repo
    ).assert_failed(2)
    expected = "pipelines/nameless.yaml:2:8: model.name: required: it names the Jenkins job"
    assert expected in outcome.err
    shutil.copy(repo / "pipelines" / "wine.yaml", repo / "pipelines" / "wine-copy.yaml")
    twice = run_cli(
        "jenkins",
        "render",
        "pipelines/wine.yaml",
        "pipelines/wine-copy.yaml",
        "--git-url",
        "u",
        cwd=repo,
    ).assert_failed(2)
    assert (
        "job 'wine' comes from both pipelines/wine.yaml and pipelines/wine-copy.yaml" in twice.err
    )
    outside = run_cli(
        "jenkins", "render", "pipelines/wine.yaml", "--git-url", "u", "--root", "examples", cwd=repo
    ).assert_failed(2)
    assert "is outside the repository root examples" in outside.err
    missing = run_cli("jenkins", "render", "nope.yaml", "--git-url", "u", cwd=repo).assert_failed(2)
    assert "nope.yaml:1:1: no such file" in missing.err


@dataclass
class FakeJenkins:
    """A FAKE Jenkins endpoint (see the module docstring): not Jenkins."""

    url: str
    jobs: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    crumbs_seen: list[str | None] = field(default_factory=list)


@pytest.fixture
def fake_jenkins() -> Iterator[FakeJenkins]:
    state = FakeJenkins(url="")
    expected = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: str = "", kind: str = "application/json") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            state.requests.append((method, self.path))
            if self.headers.get("Authorization") != expected:
                return self._answer(401, "unauthorized", "text/plain")
            parts = urlsplit(self.path)
            segments = parts.path.strip("/").split("/")
            if parts.path == "/crumbIssuer/api/json":
                return self._answer(
                    200, json.dumps({"crumbRequestField": "Jenkins-Crumb", "crumb": "c1"})
                )
            if method == "POST":
                state.crumbs_seen.append(self.headers.get("Jenkins-Crumb"))
            if method == "POST" and parts.path == "/createItem":
                state.jobs[parse_qs(parts.query)["name"][0]] = body
                return self._answer(200)
            if len(segments) >= 3 and segments[0] == "job" and segments[1] in state.jobs:
                name = segments[1]
                if segments[2:] == ["api", "json"]:
                    return self._answer(200, json.dumps({"name": name}))
                if segments[2:] == ["config.xml"] and method == "GET":
                    return self._answer(200, state.jobs[name], "application/xml")
                if segments[2:] == ["config.xml"] and method == "POST":
                    state.jobs[name] = body
                    return self._answer(200)
            return self._answer(404, "not found", "text/plain")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def sync(repo: Path, url: str, *extra: str, token: str = TOKEN):
    env = {"JENKINS_USER": USER, "JENKINS_API_TOKEN": token}
    return run_cli(
        "jenkins",
        "sync",
        "pipelines/wine.yaml",
        "--git-url",
        "https://git.example/wine.git",
        "--url",
        url,
        *extra,
        cwd=repo,
        env=env,
    )


def test_sync_creates_then_leaves_alone_then_reconfigures(
    repo: Path, fake_jenkins: FakeJenkins
) -> None:
    first = sync(repo, fake_jenkins.url).assert_success()
    assert first.out == "created wine\n"
    script = ET.fromstring(fake_jenkins.jobs["wine"]).findtext("definition/script")
    assert "legionPipeline(pipeline: 'pipelines/wine.yaml', node: false)" in script
    posts = [r for r in fake_jenkins.requests if r[0] == "POST"]
    assert posts == [("POST", "/createItem?name=wine")]
    assert fake_jenkins.crumbs_seen == ["c1"]  # the CSRF crumb is fetched and sent

    fake_jenkins.requests.clear()
    again = sync(repo, fake_jenkins.url).assert_success()
    assert again.out == "unchanged wine\n"
    assert not [r for r in fake_jenkins.requests if r[0] == "POST"]

    changed = sync(repo, fake_jenkins.url, "--branch", "release").assert_success()
    assert changed.out == "updated wine\n"
    assert "branch: 'release'" in ET.fromstring(fake_jenkins.jobs["wine"]).findtext(
        "definition/script"
    )
    assert len(fake_jenkins.jobs) == 1
    for outcome in (first, again, changed):
        assert TOKEN not in outcome.out + outcome.err


def test_sync_failures_are_one_line_without_the_token(
    repo: Path, fake_jenkins: FakeJenkins
) -> None:
    denied = sync(repo, fake_jenkins.url, token="wrong-" + TOKEN).assert_failed(1)
    assert denied.err.startswith(f"legion-ci: error: jenkins sync: job wine at {fake_jenkins.url}:")
    assert len(denied.err.strip().splitlines()) == 1
    assert TOKEN not in denied.err and not fake_jenkins.jobs
    unreachable = sync(repo, f"http://127.0.0.1:{free_port()}/").assert_failed(1)
    assert "jenkins sync: job wine at http://127.0.0.1:" in unreachable.err
    in_url = sync(repo, f"http://{USER}:{TOKEN}@127.0.0.1:1/").assert_failed(2)
    assert "must not hold credentials" in in_url.err
    assert TOKEN not in in_url.err
    half = run_cli(
        "jenkins",
        "sync",
        "pipelines/wine.yaml",
        "--git-url",
        "u",
        "--url",
        fake_jenkins.url,
        cwd=repo,
        env={"JENKINS_USER": USER},
    ).assert_failed(2)
    assert "JENKINS_API_TOKEN is not set" in half.err
