"""`legion-ci validate`: every error path, each a located one-line error, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SH_PIPELINE, run_cli, write


def test_valid_pipeline(sh_pipeline: Path) -> None:
    outcome = run_cli("validate", str(sh_pipeline)).assert_success()
    assert "valid: model linear 1.0, stages train" in outcome.out


def errors(outcome) -> list[str]:
    return [line for line in outcome.err.splitlines() if ": validation failed:" not in line]


def test_all_errors_at_once_with_positions(sh_project: Path) -> None:
    path = write(
        sh_project / "p.yaml",
        """
        apiVersion: legion-ci/v2
        kind: Pipeline
        integrations: [integrations/registration.yaml]
        modle: {}
        model:
          name: Linear
          version: 1
        stages:
          train:
            toolchain: sh-trainer
            workDri: src
            hyperParameters: {alpha: [1]}
        """,
    )
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert f"{path}: validation failed: 6 errors" in outcome.err
    lines = errors(outcome)
    assert f"{path}:1:13: apiVersion: must be 'legion-ci/v1'" in lines
    assert f"{path}:4:1: modle: unknown key 'modle' (did you mean 'model'?)" in lines
    assert any(
        line.startswith(f"{path}:6:9: model.name: 'Linear' does not match") for line in lines
    )
    assert f"{path}:7:12: model.version: 1 is not of type 'string'" in lines
    assert (
        f"{path}:11:5: stages.train.workDri: unknown key 'workDri' (did you mean 'workDir'?)"
        in lines
    )
    assert any(
        line.startswith(f"{path}:12:30: stages.train.hyperParameters.alpha:") for line in lines
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "1:1: file is empty"),
        ("# only a comment\n", "1:1: file is empty"),
        ("a: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "a pipeline must be a YAML mapping"),
        ("a: 1\na: 2\n", "2:1: a: duplicate key 'a' (first at line 1)"),
        ("\tkey: value\n", "not valid YAML"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert expected in outcome.err
    assert len(errors(outcome)) == 1


def test_missing_file_and_directory(tmp_path: Path) -> None:
    outcome = run_cli("validate", str(tmp_path / "nope.yaml")).assert_failed(2)
    assert "nope.yaml:1:1: no such file" in outcome.err
    outcome = run_cli("validate", str(tmp_path)).assert_failed(2)
    assert "is a directory" in outcome.err or "Directory" in outcome.err


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"a: \xff\xfe\n")
    assert "not UTF-8" in run_cli("validate", str(path)).assert_failed(2).err


def test_alias_bomb_refused_quickly(tmp_path: Path) -> None:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    outcome = run_cli("validate", str(path), timeout=30).assert_failed(2)
    assert "alias bomb" in outcome.err


def test_huge_file_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    outcome = run_cli("validate", str(path), timeout=30).assert_failed(2)
    assert "refusing files over" in outcome.err


def test_unknown_toolchain_lists_known(sh_project: Path) -> None:
    path = write(
        sh_project / "p.yaml", SH_PIPELINE.replace("toolchain: sh-trainer", "toolchain: sh-trainr")
    )
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert (
        "stages.train.toolchain: unknown toolchain 'sh-trainr' (did you mean 'sh-trainer'?)"
        in outcome.err
    )
    assert "known: " in outcome.err and "sh-trainer" in outcome.err


def test_integration_arguments_validated_by_registration(sh_project: Path) -> None:
    path = write(sh_project / "p.yaml", SH_PIPELINE + "    arguments: {flavor: 1}\n")
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert (
        "stages.train.arguments.flavor: unknown key 'flavor' (did you mean 'flavour'?)"
        in outcome.err
    )


def test_unresolved_env_reference(sh_project: Path) -> None:
    text = (
        SH_PIPELINE
        + """
connections:
  data:
    type: s3
    uri: s3://bucket/data
    keyID: ${env:LEGION_TEST_KEY_ID}
    keySecret: ${env:LEGION_TEST_SECRET}
"""
    )
    path = write(sh_project / "p.yaml", text)
    outcome = run_cli("validate", str(path), env={"LEGION_TEST_KEY_ID": "AKIAEXAMPLE"})
    outcome.assert_failed(2)
    assert (
        "connections.data.keySecret: environment variable LEGION_TEST_SECRET is not set"
        in outcome.err
    )
    assert "LEGION_TEST_KEY_ID" not in outcome.err


def test_literal_secret_is_refused_and_not_echoed(sh_project: Path) -> None:
    text = (
        SH_PIPELINE
        + """
connections:
  registry: {type: docker, uri: 127.0.0.1:5000, username: ci, password: hunter2-literal}
"""
    )
    path = write(sh_project / "p.yaml", text)
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert "connections.registry.password: credentials must be a secret reference" in outcome.err
    assert "hunter2-literal" not in outcome.err + outcome.out


def test_unknown_connection_in_data_binding(sh_project: Path) -> None:
    text = (
        SH_PIPELINE
        + """    data:
      - {connection: wine-dat, remotePath: wine.csv, localPath: data/wine.csv}
connections:
  wine-data: {type: local, uri: ./datasets}
"""
    )
    path = write(sh_project / "p.yaml", text)
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert (
        "stages.train.data[0].connection: unknown connection 'wine-dat' (did you mean 'wine-data'?)"
    ) in outcome.err


def test_missing_work_dir_and_baseline(sh_project: Path) -> None:
    text = SH_PIPELINE.replace("workDir: src", "workDir: nowhere") + "    baseline: none.json\n"
    path = write(sh_project / "p.yaml", text)
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert "stages.train.workDir: no such folder" in outcome.err


def test_missing_registration_file(sh_project: Path) -> None:
    path = write(sh_project / "p.yaml", SH_PIPELINE.replace("registration.yaml", "nope.yaml"))
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert "integrations[0]: no such registration file: integrations/nope.yaml" in outcome.err


def test_bad_registration_file_is_located(sh_project: Path) -> None:
    reg = sh_project / "integrations" / "registration.yaml"
    reg.write_text(reg.read_text().replace("kind: ToolchainIntegration", "kind: Toolchain"))
    outcome = run_cli("validate", str(sh_project / "pipeline.yaml"))
    outcome = run_cli("validate", str(write(sh_project / "pipeline.yaml", SH_PIPELINE)))
    outcome.assert_failed(2)
    assert f"{reg}:2:7: kind: 'Toolchain' is not one of" in outcome.err


def test_github_annotations(sh_project: Path) -> None:
    path = write(sh_project / "p.yaml", SH_PIPELINE.replace("workDir", "workdir"))
    outcome = run_cli("validate", str(path), env={"GITHUB_ACTIONS": "true"}).assert_failed(2)
    assert f"::error file={path},line=10,col=5::stages.train.workdir: unknown key" in outcome.err


def test_schema_command_matches_published_schema() -> None:
    outcome = run_cli("schema").assert_success()
    schema = json.loads(outcome.out)
    published = json.loads(
        (Path(__file__).resolve().parent.parent / "pipelines" / "schema.json").read_text()
    )
    assert schema == published, "pipelines/schema.json is stale: legion-ci schema > it"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_includes_extra_registrations(sh_project: Path) -> None:
    outcome = run_cli("schema", "--integrations", str(sh_project / "integrations"))
    schema = json.loads(outcome.assert_success().out)
    train = schema["properties"]["stages"]["properties"]["train"]
    assert "sh-trainer" in train["properties"]["toolchain"]["enum"]


def test_validate_json_output(tmp_path: Path) -> None:
    good = run_cli("validate", str(REPO / "pipelines" / "wine.yaml"), "-o", "json")
    assert json.loads(good.assert_success().out)["valid"] is True
    bad = write(tmp_path / "bad.yaml", "apiVersion: legion-ci/v1\nkind: Pipeline\nmodel: {}\n")
    outcome = run_cli("validate", str(bad), "-o", "json").assert_failed(2)
    result = json.loads(outcome.out)
    assert result["valid"] is False
    assert {e["path"] for e in result["errors"]} >= {"model.name", "stages"}


def test_the_generated_validator_keeps_its_bytecode_where_python_writes_none(tmp_path: Path):
    # Compiling the generated validator costs more than validating with it: its bytecode is
    # written once even under PYTHONDONTWRITEBYTECODE (which CI machines often set).
    env = {**os.environ, "LEGION_CI_CACHE": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [
        sys.executable,
        "-m",
        "legion_ci.cli.main",
        "validate",
        str(REPO / "pipelines/wine.yaml"),
    ]
    subprocess.run(argv, env=env, check=True, capture_output=True)
    generated = sorted((tmp_path / "validators").glob("schema_*.py"))
    assert generated, "no validator generated"
    compiled = sorted((tmp_path / "validators" / "__pycache__").glob("schema_*.pyc"))
    assert [p.name.split(".")[0] for p in compiled] == [p.stem for p in generated]
