"""The CI-host interface (legion_ci/ci/) and the one JSON document of `--output json`.

Output names are spelled only in the stage table (and ci.RUN_OUTPUTS): the GitHub action, the
GitLab dotenv, the Jenkins result and the Airflow XCom keys are held to it here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SH_PIPELINE, run_cli, write

from legion_ci import ci
from legion_ci.airflow import command
from legion_ci.ci import gitlab
from legion_ci.stage_types import STAGES

PACKAGED = (
    SH_PIPELINE.replace(
        "integrations: [integrations/registration.yaml]",
        "integrations: [integrations/registration.yaml, packagers/registration.yaml]",
    )
    + "    gates:\n      rmse: {max: 0.8}\n  package:\n    integration: sh-packager\n"
)


@pytest.mark.parametrize(
    ("env", "host"),
    [
        ({}, "terminal"),
        ({"GITHUB_ACTIONS": "true"}, "github"),
        ({"GITHUB_ACTIONS": "false"}, "terminal"),
        ({"GITLAB_CI": "true"}, "gitlab"),
        ({"JENKINS_URL": "http://127.0.0.1:9/"}, "jenkins"),
    ],
)
def test_the_host_is_detected_from_the_environment(env: dict[str, str], host: str) -> None:
    assert host == ci.detect(env).NAME


def test_every_host_implements_the_whole_interface() -> None:
    interface = ("NAME", "SHOWS_REPRODUCE", "detect", "write_outputs", "write_summary")
    for module in ci.HOSTS.values():
        host = __import__(module, fromlist=["NAME"])
        for name in (*interface, "annotate", "guard"):
            assert hasattr(host, name), f"{module} lacks {name}"


def test_no_host_is_tested_for_outside_its_module() -> None:
    # The CLI asks ci.detect(); only a host's own module reads its environment variable.
    marks = re.compile(r"""environ(\.get\(|\[)\s*["'](GITHUB_ACTIONS|JENKINS_URL|GITLAB_CI)""")
    for path in (REPO / "legion_ci").rglob("*.py"):
        if path.parent.name == "ci" and path.stem in ("github", "jenkins", "gitlab"):
            continue
        assert not marks.search(path.read_text()), path


def test_output_names_come_from_the_stage_table() -> None:
    stage_names = [name for stage in STAGES for name in stage.ci_outputs.values()]
    assert ci.output_names() == [*ci.RUN_OUTPUTS, *stage_names]
    action = yaml.safe_load((REPO / "github-actions" / "run" / "action.yml").read_text())
    assert sorted(action["outputs"]) == sorted(ci.output_names())
    # The Jenkins result lifts the document's outputs by name and spells none of them.
    groovy = (
        REPO / "jenkins/shared-library/src/com/epam/legion/ci/LegionResult.groovy"
    ).read_text()
    assert "json.outputs" in groovy
    for stage in STAGES:
        for key in stage.ci_outputs:
            assert not re.search(rf"\b{key}\s*:", groovy), f"LegionResult names {key}"


def test_airflow_xcom_keys_are_the_output_names(sh_project: Path) -> None:
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED + "  deploy:\n    target: process\n")
    try:
        outcome = run_cli("run", str(pipeline), "-o", "json").assert_success()
    finally:
        run_cli("deployments", "delete", "linear", "--file", str(pipeline))
    document = json.loads(outcome.out)
    assert sorted(document["outputs"]) == sorted(ci.output_names())  # every output, set
    values = command.xcom_values(document)
    assert set(values) == {name.replace("-", "_") for name in ci.output_names()} | {"record"}
    assert values["run_id"] == document["run_id"]
    assert values["url"].startswith("http://127.0.0.1:")
    assert values["metrics"] == {"r2": 0.9, "rmse": 0.5}


def test_one_json_document_on_exit_0_1_and_2(sh_project: Path, tmp_path: Path) -> None:
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED)
    ok = json.loads(run_cli("stage", "train", str(pipeline), "-o", "json").assert_success().out)
    assert ok["status"] == "partial" and "error" not in ok  # one stage of two ran
    assert ok["outputs"]["run-id"] == ok["run_id"]
    assert ok["outputs"]["artifact-sha256"] == ok["stages"]["train"]["outputs"]["artifact_sha256"]

    gate = run_cli("stage", "train", str(pipeline), "-o", "json", env={"FAKE_TRAINER_RMSE": "0.9"})
    failed = json.loads(gate.assert_failed(1).out)
    assert failed["status"] == "failed" and failed["run_id"]
    assert failed["error"] == {
        "kind": "stage-failed",
        "message": "quality gate failed: rmse = 0.9 > max 0.8",
        "problems": [],
    }

    invalid = write(sh_project / "invalid.yaml", PACKAGED.replace("toolchain: sh-trainer", "x: 1"))
    bad = run_cli("run", str(invalid), "--output=json").assert_failed(2)
    document = json.loads(bad.out)  # exactly one document: json.loads refuses trailing text
    assert document["run_id"] is None and document["error"]["kind"] == "invalid-input"
    located = [
        (p["file"], p["line"], p["column"], p["field"]) for p in document["error"]["problems"]
    ]
    assert located == [
        (str(invalid), 8, 3, "stages.train.toolchain"),
        (str(invalid), 9, 5, "stages.train.x"),
    ]
    assert "\n" not in document["error"]["message"]

    usage = run_cli("stage", "train", str(pipeline), "-o", "json", "--no-such-option")
    assert json.loads(usage.assert_failed(2).out)["error"] == {
        "kind": "invalid-input",
        "message": "No such option '--no-such-option'.",
        "problems": [],
    }


def test_gitlab_outputs_are_a_dotenv_and_the_log_a_section(sh_project: Path) -> None:
    pipeline = write(sh_project / "pipeline.yaml", PACKAGED)
    dotenv, reports = sh_project / "legion-ci.env", sh_project / "legion-ci-reports"
    env = {"GITLAB_CI": "true", "LEGION_CI_DOTENV": str(dotenv), "LEGION_CI_REPORTS": str(reports)}
    outcome = run_cli("run", str(pipeline), cwd=sh_project, env=env).assert_success()
    # the reports where the template's artifacts:reports find them, metrics in GitLab's format
    assert (reports / "metrics.txt").read_text() == "train_r2 0.9\ntrain_rmse 0.5\n"
    assert (reports / "junit.xml").is_file()
    values = dict(line.split("=", 1) for line in dotenv.read_text().splitlines())
    document = json.loads(run_cli("runs", "show", "--file", str(pipeline), "-o", "json").out)
    assert values["LEGION_RUN_ID"] == document["id"]
    assert values["LEGION_IMAGE"] == "127.0.0.1:5000/linear:1.0"
    assert values["LEGION_DIGEST"] == document["stages"]["package"]["outputs"]["digest"]
    assert json.loads(values["LEGION_METRICS"]) == {"r2": 0.9, "rmse": 0.5}
    assert set(values) <= {gitlab.variable(name) for name in ci.output_names()}
    # run_cli reads text with universal newlines: the \r inside an escape line splits it too.
    lines = outcome.err.splitlines()
    start = next(i for i, line in enumerate(lines) if "section_start:" in line)
    end = next(i for i, line in enumerate(lines) if "section_end:" in line)
    assert lines[start].startswith("\x1b[0Ksection_start:")
    assert re.fullmatch(r"\x1b\[0Ksection_start:\d+:legion_ci_run", lines[start])
    assert lines[start + 1] == "\x1b[0Klegion-ci run"
    assert re.fullmatch(r"\x1b\[0Ksection_end:\d+:legion_ci_run", lines[end])
    assert start < lines.index("sh-trainer: done") < end

    failed = run_cli(
        "stage", "train", str(pipeline), cwd=sh_project, env={**env, "FAKE_TRAINER_FAIL": "4"}
    )
    assert "legion-ci: reproduce locally with: legion-ci stage train" in failed.assert_failed(1).err
    local = run_cli("stage", "train", str(pipeline), env={"FAKE_TRAINER_FAIL": "4"})
    assert "reproduce locally" not in local.assert_failed(1).err
