"""Third-party integrations: an entry-point plugin and a YAML `python:` registration, both
installed for real (a dist-info on PYTHONPATH), and the internal-error path (exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, write

PLUGIN = '''
from pathlib import Path

from legion_ci.integrations.base import TrainResult

ENTRYPOINT = """
def init():
    return "matrix"

def info():
    return ([{"name": "x", "type": "number", "required": True, "example": 3}],
            [{"name": "double", "type": "number", "required": True, "example": 6}])

def predict_on_matrix(matrix, provided_columns_names=None):
    return [[2 * row[0]] for row in matrix], ["double"]
"""


class PyTrainer:
    kind = "ToolchainIntegration"
    name = "py-trainer"
    description = "An in-process plugin trainer."
    arguments = {"type": "object", "properties": {"boom": {"type": "boolean"}},
                 "additionalProperties": False}

    def validate(self, stage, project_dir):
        if "alpha" not in (stage.get("hyperParameters") or {}):
            return [("hyperParameters", "alpha is required by py-trainer")]
        return []

    def train(self, ctx):
        if ctx.arguments.get("boom"):
            raise RuntimeError("plugin bug")
        ctx.log.line(f"py-trainer: alpha={ctx.hyper_parameters['alpha']}")
        out = Path(ctx.output_dir)
        (out / "model").mkdir()
        (out / "model" / "entrypoint.py").write_text(ENTRYPOINT)
        (out / "legion.model.yaml").write_text(
            "model: {name: double, version: '2', workDir: model, entrypoint: entrypoint}\\n"
            "toolchain: {name: py-trainer, version: '1'}\\n"
        )
        return TrainResult(metrics={"loss": 0.1}, tags={"plugin": "yes"},
                           outputs={"tags_seen": sorted(ctx.tags)})


class YamlRegisteredTrainer(PyTrainer):
    pass
'''


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    write(site / "legion_test_plugin.py", PLUGIN)
    dist = site / "legion_test_plugin-0.1.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: legion-test-plugin\nVersion: 0.1\n")
    write(
        dist / "entry_points.txt",
        "[legion_ci.integrations]\npy-trainer = legion_test_plugin:PyTrainer\n",
    )
    return {"PYTHONPATH": str(site)}


def pipeline(folder: Path, toolchain: str, extra: str = "") -> Path:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    return write(
        folder / "pipeline.yaml",
        f"""
        apiVersion: legion-ci/v1
        kind: Pipeline
        model: {{name: double, version: "2"}}
        stages:
          train:
            toolchain: {toolchain}
            workDir: src
            hyperParameters: {{alpha: 1}}
        """
        + extra,
    )


def test_entry_point_plugin_is_listed_and_runs(tmp_path: Path, plugin_env: dict) -> None:
    listing = json.loads(run_cli("integrations", "list", "-o", "json", env=plugin_env).out)
    plugin = next(row for row in listing if row["name"] == "py-trainer")
    assert plugin["source"] == "entry point py-trainer = legion_test_plugin:PyTrainer"
    path = pipeline(tmp_path / "p", "py-trainer")
    outcome = run_cli("run", str(path), "-o", "json", env=plugin_env).assert_success()
    train = json.loads(outcome.out)["stages"]["train"]
    assert train["metrics"] == {"loss": 0.1}
    assert train["outputs"]["input_columns"] == ["x"]
    assert train["outputs"]["tags_seen"] == [
        "legion.model.name",
        "legion.model.version",
        "legion.run_id",
    ]


def test_plugin_argument_schema_and_validate_hook(tmp_path: Path, plugin_env: dict) -> None:
    path = pipeline(tmp_path / "p", "py-trainer", "    arguments: {boom: yes-please}\n")
    outcome = run_cli("validate", str(path), env=plugin_env).assert_failed(2)
    assert "stages.train.arguments.boom: 'yes-please' is not of type 'boolean'" in outcome.err
    text = path.read_text().replace("hyperParameters: {alpha: 1}", "hyperParameters: {}")
    text = text.replace("    arguments: {boom: yes-please}\n", "")
    path.write_text(text)
    outcome = run_cli("validate", str(path), env=plugin_env).assert_failed(2)
    assert (
        f"{path}:8:22: stages.train.hyperParameters: alpha is required by py-trainer" in outcome.err
    )


def test_yaml_python_registration(tmp_path: Path, plugin_env: dict) -> None:
    write(
        tmp_path / "p" / "reg.yaml",
        """
        kind: ToolchainIntegration
        name: yaml-trainer
        python: legion_test_plugin:YamlRegisteredTrainer
        """,
    )
    path = pipeline(tmp_path / "p", "yaml-trainer")
    text = path.read_text().replace(
        "kind: Pipeline\n", "kind: Pipeline\nintegrations: [reg.yaml]\n"
    )
    path.write_text(text)
    run_cli("run", str(path), "-q", env=plugin_env).assert_success()


def test_duplicate_registration_is_an_error(tmp_path: Path, plugin_env: dict) -> None:
    write(
        tmp_path / "dup" / "reg.yaml",
        "kind: ToolchainIntegration\nname: py-trainer\ncommand: [/bin/true]\n",
    )
    env = {**plugin_env, "LEGION_CI_INTEGRATIONS": str(tmp_path / "dup")}
    outcome = run_cli("integrations", "list", env=env).assert_failed(2)
    assert "integration 'py-trainer' (ToolchainIntegration) is registered twice" in outcome.err


def test_plugin_crash_is_internal_error_with_log(tmp_path: Path, plugin_env: dict) -> None:
    path = pipeline(tmp_path / "p", "py-trainer", "    arguments: {boom: true}\n")
    outcome = run_cli("run", str(path), "-q", env=plugin_env).assert_failed(3)
    assert "legion-ci: internal error: RuntimeError: plugin bug" in outcome.err
    log_path = Path(outcome.err.split("details (versions, traceback) in ")[1].strip())
    crash = log_path.read_text()
    assert "Traceback" in crash and "plugin bug" in crash and "mlflow " in crash
    record = json.loads(run_cli("runs", "show", "--file", str(path), "-o", "json").out)
    assert record["stages"]["train"]["status"] == "failed"
    assert "internal error: RuntimeError: plugin bug" in record["stages"]["train"]["error"]
    # --output json: the one JSON document on exit 3 too, naming the crash log.
    crashed = run_cli("run", str(path), "-q", "-o", "json", env=plugin_env).assert_failed(3)
    error = json.loads(crashed.out)["error"]
    assert error["kind"] == "internal" and error["problems"] == []
    assert error["message"].startswith("internal error: RuntimeError: plugin bug (details in ")


def test_unknown_entry_point_kind(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write(site / "badplugin.py", "class Bad:\n    kind = 'Trainer'\n")
    write(
        site / "badplugin-0.1.dist-info" / "METADATA",
        "Metadata-Version: 2.1\nName: badplugin\nVersion: 0.1\n",
    )
    write(
        site / "badplugin-0.1.dist-info" / "entry_points.txt",
        "[legion_ci.integrations]\nbad = badplugin:Bad\n",
    )
    outcome = run_cli("integrations", "list", env={"PYTHONPATH": str(site)}).assert_failed(2)
    assert "entry point bad = badplugin:Bad: 'kind' must be one of" in outcome.err
