"""The CLI in-process through click's runner, and the importable API under it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import legion_ci
from legion_ci.cli.main import cli
from legion_ci.errors import SpecError, StageError


def test_help_lists_every_verb() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for verb in ("validate", "run", "stage", "schema", "runs", "integrations", "model", "serve"):
        assert f"  {verb} " in result.output


def test_validate_in_process(sh_pipeline: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(sh_pipeline)])
    assert result.exit_code == 0, result.output
    assert "valid: model linear 1.0" in result.output


def test_api_run_and_errors(sh_pipeline: Path, monkeypatch) -> None:
    record = legion_ci.run_pipeline(sh_pipeline)
    assert record.status == "succeeded"
    assert Path(record.stages["train"].outputs["artifact"]).is_file()
    monkeypatch.setenv("FAKE_TRAINER_FAIL", "5")
    try:
        legion_ci.run_pipeline(sh_pipeline)
    except StageError as exc:
        assert "exited with code 5" in str(exc)
    else:
        raise AssertionError("a failing trainer must raise StageError")
    bad = sh_pipeline.parent / "bad.yaml"
    bad.write_text("apiVersion: legion-ci/v1\n")
    try:
        legion_ci.validate_pipeline(bad)
    except SpecError as exc:
        assert {p.path for p in exc.problems} == {"kind", "model", "stages"}
    else:
        raise AssertionError("an incomplete pipeline must raise SpecError")
