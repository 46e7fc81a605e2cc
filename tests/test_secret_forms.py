"""Secrets in the forms that slipped past redaction (issue 21): a multi-line `${file:}` secret
streamed line by line, a `${file:}` hyper-parameter nested twice in the echoed `bash -c` line,
a short secret that is also the model's name, and the embedded MLflow store that holds every
secret the training logged."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import copy_wine_project, run_cli


def test_embedded_store_is_owner_only_even_when_made_wider(tmp_path: Path) -> None:
    from legion_ci.integrations.mlflow_store import ensure_store
    from legion_ci.processes import StageLog

    pipeline = copy_wine_project(tmp_path)
    workspace = pipeline.parent / ".legion"
    workspace.mkdir(mode=0o755)
    os.chmod(workspace, 0o755)
    db = workspace / "mlflow.db"
    log = StageLog(tmp_path / "store.log")
    ensure_store(db, log)  # as an older legion-ci made it: following the umask
    log.close()
    os.chmod(db, 0o644)
    run_cli("stage", "train", str(pipeline), cwd=tmp_path).assert_success()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    for journal in workspace.glob("mlflow.db-*"):
        assert stat.S_IMODE(journal.stat().st_mode) & 0o077 == 0, journal


# -- a multi-line secret, streamed a line at a time -------------------------------------------

KEY = (
    "-----BEGIN TEST KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ\n"
    "-----END TEST KEY-----\n"
)
KEY_LINES = [line for line in KEY.splitlines() if len(line) >= 4]


def leaked_lines(text: str) -> list[str]:
    return [line for line in KEY_LINES if line in text]


def test_multi_line_secret_streamed_by_a_child_is_redacted_line_by_line(tmp_path: Path) -> None:
    import io

    from legion_ci.processes import StageLog, run_logged
    from legion_ci.redact import Redactor

    (tmp_path / "key.pem").write_text(KEY)
    echo = io.StringIO()
    log = StageLog(tmp_path / "stage.log", Redactor([KEY]), echo)
    run_logged(["cat", str(tmp_path / "key.pem")], log)
    log.write(KEY)  # one write holding it all, as a message would
    log.close()
    written = (tmp_path / "stage.log").read_text()
    assert leaked_lines(written) == [] and leaked_lines(echo.getvalue()) == [], written
    assert written.count("***") == len(KEY_LINES) + 1  # each streamed line, then the whole


def test_multi_line_file_secret_stays_out_of_log_console_and_junit(
    sh_project: Path, tmp_path: Path
) -> None:
    from conftest import SH_PIPELINE, write

    (sh_project / "key.pem").write_text(KEY)
    pipeline = write(
        sh_project / "pipeline.yaml",
        SH_PIPELINE.replace("{alpha: 1}", "{alpha: 1, key: '${file:key.pem}'}"),
    )
    outcome = run_cli(
        "run",
        str(pipeline),
        cwd=tmp_path,
        env={"FAKE_TRAINER_ECHO": KEY, "FAKE_TRAINER_FAIL": "3"},
    ).assert_failed(1)
    workspace = sh_project / ".legion"
    junit = (workspace / "reports" / "junit.xml").read_text()
    assert "sh-trainer: log line 30" in junit  # the log tail is there, so is what it held
    stage_log = next(workspace.glob("runs/*/logs/train.log")).read_text()
    assert "***" in stage_log
    for name, text in {
        "stdout": outcome.out,
        "stderr": outcome.err,
        "stage log": stage_log,
        "junit.xml": junit,
        "record": next(workspace.glob("runs/*/record.json")).read_text(),
        "summary.json": (workspace / "reports" / "summary.json").read_text(),
    }.items():
        assert leaked_lines(text) == [], f"{name} holds lines of the secret"


# -- a secret nested twice in shell quoting ---------------------------------------------------


def test_file_secret_inside_an_echoed_bash_command_is_redacted(tmp_path: Path) -> None:
    import io
    import shlex

    from legion_ci.processes import StageLog, run_logged
    from legion_ci.redact import Redactor

    secret = "pa'ss\"UNIQUE-7f3a $x w0rd"
    echo = io.StringIO()
    log = StageLog(tmp_path / "stage.log", Redactor([secret]), echo)
    # What the MLflow trainer runs: an MLproject command with MLflow's quoted parameters.
    command = f"python -c 'import sys' --password {shlex.quote(secret)} > /dev/null"
    run_logged(["bash", "-c", command], log)
    log.close()
    written = (tmp_path / "stage.log").read_text()
    assert written.startswith("$ bash -c "), written
    assert "UNIQUE-7f3a" not in written and "UNIQUE-7f3a" not in echo.getvalue(), written
    assert "--password ***" in written, written


# -- a short secret that is also the model's name ---------------------------------------------


def test_secret_equal_to_the_model_name_keeps_identifiers_usable(
    sh_project: Path, tmp_path: Path
) -> None:
    import json

    from conftest import SH_PIPELINE, write

    pipeline = write(
        sh_project / "pipeline.yaml",
        SH_PIPELINE
        + "  deploy:\n    target: process\n"
        + "connections:\n  unused:\n    type: mlflow\n    uri: http://127.0.0.1:1\n"
        + "    password: ${env:LEGION_TEST_PW}\n",
    )
    gh_output = tmp_path / "gh-output"
    env = {
        "LEGION_TEST_PW": "linear",  # the model is named linear too
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(gh_output),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "gh-summary"),
    }
    workspace = sh_project / ".legion"
    try:
        first = run_cli("run", str(pipeline), "-o", "json", env=env).assert_success()
        warnings = [line for line in first.err.splitlines() if "warning:" in line]
        assert any("only 6 characters long" in line for line in warnings), first.err
        assert any("also occurs in the model name" in line for line in warnings), first.err
        run_id = json.loads(first.out)["run_id"]
        record = json.loads((workspace / "runs" / run_id / "record.json").read_text())
        assert record["model"] == {"name": "linear", "version": "1.0"}
        artifact = record["stages"]["train"]["outputs"]["artifact"]
        assert artifact.endswith("/linear-1.0.zip") and Path(artifact).is_file()
        outputs = gh_output.read_text()
        assert f"{workspace}/runs/{run_id}/artifacts/linear-1.0.zip" in outputs, outputs
        # Written for people: still masked.
        assert "linear" not in (workspace / "reports" / "junit.xml").read_text()
        assert "linear" not in (tmp_path / "gh-summary").read_text()

        listed = run_cli("runs", "list", str(pipeline), env=env).assert_success()
        assert run_id in listed.out, listed.out
        again = run_cli("stage", "deploy", str(pipeline), "--run-id", run_id, env=env)
        again.assert_success()
        state = json.loads((workspace / "deployments" / "linear.json").read_text())
        assert (state["name"], state["model_name"], state["run_id"]) == ("linear", "linear", run_id)
        assert Path(state["details"]["log"]).is_file()
        logs = run_cli("deployments", "logs", "linear", "--file", str(pipeline), env=env)
        assert logs.assert_success().out.strip(), "the deployment's log is empty"
    finally:
        run_cli("deployments", "delete", "linear", "--file", str(pipeline), env=env)


def test_free_text_in_a_record_is_still_redacted(tmp_path: Path, monkeypatch) -> None:
    import json

    from legion_ci import redact
    from legion_ci.records import RunRecord, StageRecord

    monkeypatch.setattr(redact, "ACTIVE", redact.Redactor(["linear", "linear-key-9"]))
    monkeypatch.setattr(redact, "IDENTIFIERS", {})
    record = RunRecord(
        id="20261206-000000-abcdef",
        pipeline=str(tmp_path / "linear.yaml"),
        pipeline_sha256="0" * 64,
        model={"name": "linear", "version": "1.0"},
        workspace=str(tmp_path / "ws"),
    )
    stage = StageRecord(name="train", integration="sh")
    stage.error = "login refused: password linear"
    stage.tags = {"note": "model linear"}
    stage.outputs = {"artifact": f"{record.folder}/artifacts/linear-1.0.zip", "key": "linear"}
    stage.outputs["image"] = "registry/linear:linear-key-9"  # a secret reaching past the name
    record.stages["train"] = stage
    record.save()
    saved = json.loads(record.record_path.read_text())
    assert saved["model"]["name"] == "linear"
    train = saved["stages"]["train"]
    assert train["outputs"]["artifact"].endswith("/linear-1.0.zip")
    assert train["error"] == "login refused: password ***"
    assert train["tags"] == {"note": "model ***"}
    assert train["outputs"]["key"] == "***"
    assert train["outputs"]["image"] == "registry/linear:***"
    assert (Path(record.workspace) / "latest").read_text().strip() == record.id
