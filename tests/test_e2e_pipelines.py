"""Whole pipelines through the real CLI: the README's wine pipeline on the embedded defaults
(real sqlite MLflow store, in a real git repo), and data bindings from a real S3 emulator."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import SH_PIPELINE, copy_wine_project, run_cli, write
from data_support import moto_server


@pytest.fixture
def wine_repo(tmp_path: Path) -> Path:
    """pipelines/ and examples/wine copied into a fresh git repository with one commit."""
    return copy_wine_project(tmp_path / "repo", git=True).parent.parent


def test_wine_pipeline_end_to_end(wine_repo: Path) -> None:
    pipeline = wine_repo / "pipelines" / "wine.yaml"
    outcome = run_cli("run", str(pipeline), "-o", "json").assert_success()
    result = json.loads(outcome.out)
    train = result["stages"]["train"]
    assert set(train["metrics"]) >= {"rmse", "r2", "mae"}
    assert train["metrics"]["rmse"] <= 0.8 and train["metrics"]["r2"] >= 0.3
    artifact = Path(train["outputs"]["artifact"])
    assert artifact.is_file() and artifact.name == "wine-1.0.zip"
    # A stable path for the latest binary; files holding no secret follow the umask.
    latest = wine_repo / "pipelines" / ".legion" / "artifacts" / "wine-1.0.zip"
    assert Path(train["outputs"]["artifact_latest"]) == latest
    assert latest.read_bytes() == artifact.read_bytes()
    umask = os.umask(0o022)
    os.umask(umask)
    for made in (artifact, latest, Path(result["record"])):
        assert stat.S_IMODE(made.stat().st_mode) == 0o666 & ~umask, made
    # The binary carries no absolute path of the machine that trained it.
    with zipfile.ZipFile(artifact) as zf:
        for name in zf.namelist():
            if name.endswith((".yaml", ".json", ".txt", "MLmodel", ".py")):
                text = zf.read(name).decode("utf-8", "replace")
                assert str(wine_repo) not in text, f"{name} holds {wine_repo}"

    # The MLflow run carries legion-ci's tags, the git commit included.
    commit = subprocess.run(
        ["git", "-C", str(wine_repo), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{wine_repo / 'pipelines/.legion/mlflow.db'}")
    tags = client.get_run(train["outputs"]["mlflow_run_id"]).data.tags
    assert tags["legion.git_commit"] == commit
    assert tags["legion.run_id"] == result["run_id"]
    assert tags["legion.model.name"] == "wine"

    md = (wine_repo / "pipelines" / ".legion" / "reports" / "summary.md").read_text()
    assert "baseline (baselines/wine-metrics.json)" in md
    assert "✅ rmse = " in md

    # The binary it made runs locally, columns given in any order.
    columns = train["outputs"]["input_columns"]
    info = json.loads(run_cli("model", "info", str(artifact), "-o", "json").assert_success().out)
    example = {f["name"]: f["example"] for f in info["input"]}
    rows = {"columns": columns[::-1], "data": [[example[c] for c in columns[::-1]]]}
    request = write(wine_repo / "rows.json", json.dumps(rows))
    forward = {"columns": columns, "data": [[example[c] for c in columns]]}
    request2 = write(wine_repo / "rows2.json", json.dumps(forward))
    a = run_cli("model", "predict", str(artifact), "-i", str(request)).assert_success().out
    b = run_cli("model", "predict", str(artifact), "-i", str(request2)).assert_success().out
    assert json.loads(a) == json.loads(b)

    # People read results on stdout; progress and stage logs go to stderr.
    human = run_cli("stage", "train", str(pipeline)).assert_success()
    assert "train: succeeded" in human.out and "artifact_latest:" in human.out
    assert "reports:" in human.out
    assert "train: succeeded" not in human.err and "$ " in human.err


def test_wine_gate_failure_leaves_no_artifact(wine_repo: Path) -> None:
    pipeline = wine_repo / "pipelines" / "wine.yaml"
    pipeline.write_text(pipeline.read_text().replace("rmse: {max: 0.8}", "rmse: {max: 0.1}"))
    outcome = run_cli("run", str(pipeline), "-q").assert_failed(1)
    assert "quality gate failed: rmse = " in outcome.err and "> max 0.1" in outcome.err
    assert not list((wine_repo / "pipelines" / ".legion").rglob("*.zip"))


def test_wine_validation_catches_unknown_parameter(wine_repo: Path) -> None:
    pipeline = wine_repo / "pipelines" / "wine.yaml"
    pipeline.write_text(pipeline.read_text().replace("l1_ratio: 0.5", "l1ratio: 0.5"))
    outcome = run_cli("validate", str(pipeline)).assert_failed(2)
    assert "stages.train.hyperParameters.l1ratio:" in outcome.err
    assert "l1_ratio" in outcome.err


S3_PIPELINE = (
    SH_PIPELINE
    + """    data:
      - {connection: store, remotePath: wine/train.csv, localPath: data/train.csv}
connections:
  store:
    type: s3
    uri: s3://datasets
    endpoint: ${env:LEGION_TEST_S3_ENDPOINT}
    region: us-east-1
    keyID: ${env:LEGION_TEST_KEY_ID}
    keySecret: ${env:LEGION_TEST_KEY_SECRET}
"""
)


def test_s3_data_binding_through_the_pipeline(sh_project: Path, tmp_path: Path) -> None:
    import boto3

    secret = "very-secret-key-material"
    with moto_server(tmp_path / "moto.log") as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="AKIDTEST",
            aws_secret_access_key=secret,
        )
        s3.create_bucket(Bucket="datasets")
        s3.put_object(Bucket="datasets", Key="wine/train.csv", Body=b"a,b\n1,2\n")
        env = {
            "LEGION_TEST_S3_ENDPOINT": endpoint,
            "LEGION_TEST_KEY_ID": "AKIDTEST",
            "LEGION_TEST_KEY_SECRET": secret,
        }
        pipeline = write(sh_project / "pipeline.yaml", S3_PIPELINE)
        outcome = run_cli("run", str(pipeline), "-o", "json", env=env).assert_success()
        assert (sh_project / "src" / "data" / "train.csv").read_bytes() == b"a,b\n1,2\n"
        record = json.loads(run_cli("runs", "show", "--file", str(pipeline), "-o", "json").out)
        binding = record["stages"]["train"]["data"][0]
        assert binding["bytes"] == 8 and len(binding["sha256"]) == 64
        assert secret not in outcome.out + outcome.err

        missing = write(
            sh_project / "pipeline.yaml", S3_PIPELINE.replace("wine/train.csv", "wine/nope.csv")
        )
        failed = run_cli("run", str(missing), env=env).assert_failed(1)
        assert "missing object" in failed.err and "s3://datasets/wine/nope.csv" in failed.err
        assert "sh-trainer: training" not in failed.err  # failed before training started
    for path in (sh_project / ".legion").rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".xml", ".md"):
            assert secret not in path.read_text(errors="replace"), path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("drop-mlproject", "MLproject"),
        ("entrypoint: main", "unknown entry point 'mian'"),
    ],
)
def test_broken_project_fails_the_stage_and_is_recorded(
    wine_repo: Path, change: str, expected: str
) -> None:
    pipeline = wine_repo / "pipelines" / "wine.yaml"
    if change == "drop-mlproject":
        (wine_repo / "examples" / "wine" / "MLproject").unlink()
    else:
        pipeline.write_text(pipeline.read_text().replace(change, "entrypoint: mian"))
    # `validate` finds it up front ...
    assert expected in run_cli("validate", str(pipeline)).assert_failed(2).err
    # ... and a run records it as the train stage's failure, for the CI reports.
    outcome = run_cli("run", str(pipeline), "-q").assert_failed(1)
    assert expected in outcome.err
    assert len([line for line in outcome.err.splitlines() if "error:" in line]) == 1
    record = json.loads(run_cli("runs", "show", "--file", str(pipeline), "-o", "json").out)
    assert record["stages"]["train"]["status"] == "failed"
    assert expected in record["stages"]["train"]["error"]
    assert not list((wine_repo / "pipelines" / ".legion").rglob("*.zip"))
