"""The server calls the model only for a client's request (issue 22, Legion parity): Legion's
`counter` test binary answers [[1]] to the first request. The OpenAPI response example comes
from the prediction the train-time self-check recorded in the binary, or from info()'s
declared output for a binary without one (Legion's)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import run_cli

from legion_ci.gppi.selfcheck import EXAMPLE_NAME
from tests.server_support import Server

COUNTER_MANIFEST = """\
binaries: {type: python, dependencies: pip}
legionVersion: '1.0'
model: {name: counter, version: '1', workDir: legion_model, entrypoint: entrypoint}
toolchain: {name: handmade, version: '0'}
output: {}
"""

# Answers, for every row, how many times predict_on_matrix() has been called in this process.
COUNTER_ENTRYPOINT = """\
_calls = 0


def init():
    return "matrix"


def info():
    return (
        [{"name": "x", "type": "number", "required": True, "example": 1.0}],
        [{"name": "calls", "type": "integer", "required": True, "example": None}],
    )


def predict_on_matrix(matrix, provided_columns_names=None):
    global _calls
    _calls += 1
    return [[_calls] for _ in matrix], ["calls"]
"""


def make_counter_model(path: Path) -> Path:
    (path / "legion_model").mkdir(parents=True)
    (path / "legion.project.yaml").write_text(COUNTER_MANIFEST, encoding="utf-8")
    (path / "legion_model" / "entrypoint.py").write_text(COUNTER_ENTRYPOINT, encoding="utf-8")
    return path


def self_check_as_the_train_stage_does(folder: Path) -> dict:
    """`python -m legion_ci.gppi.selfcheck --stdin`, the path on stdin (train.py's SelfCheck)."""
    run = subprocess.run(
        [sys.executable, "-m", "legion_ci.gppi.selfcheck", "--stdin"],
        input=f"{folder}\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def response_example(srv: Server) -> tuple[dict, list]:
    status, _, doc = srv.request("GET", "/api/model/info")
    assert status == 200, doc
    invoke = doc["paths"]["/api/model/invoke"]["post"]["responses"]["200"]
    example = invoke["content"]["application/json"]["example"]
    return example, doc["components"]["schemas"]["OutputRow"]["prefixItems"]


@pytest.mark.parametrize("front", ["native", "uvicorn"])
def test_first_request_is_the_models_first_call(tmp_path: Path, front: str) -> None:
    srv = Server(make_counter_model(tmp_path / "counter"), "--http", front)
    try:
        srv.wait_ready()
        status, _, body = srv.request("POST", "/api/model/invoke", {"data": [[5.0]]})
        assert status == 200 and body == {"prediction": [[1]], "columns": ["calls"]}, body
        # No recorded prediction (a Legion binary): info()'s declared output, typed.
        example, items = response_example(srv)
        assert example == {"prediction": [[0]], "columns": ["calls"]}
        assert items == [{"type": ["integer", "null"]}]
        # Documenting the example did not call the model either.
        status, _, body = srv.request("POST", "/api/model/invoke", {"data": [[5.0]]})
        assert status == 200 and body == {"prediction": [[2]], "columns": ["calls"]}, body
    finally:
        assert srv.stop() == 0, srv.log


@pytest.mark.parametrize("front", ["native", "uvicorn"])
def test_recorded_self_check_prediction_is_the_response_example(tmp_path: Path, front: str) -> None:
    folder = make_counter_model(tmp_path / "counter")
    report = self_check_as_the_train_stage_does(folder)
    assert report["ok"] and report["prediction"] == {"columns": ["calls"], "data": [[1]]}
    recorded = json.loads((folder / EXAMPLE_NAME).read_text(encoding="utf-8"))
    assert recorded["prediction"] == {"columns": ["calls"], "data": [[1]]}
    srv = Server(folder, "--http", front)
    try:
        srv.wait_ready()
        example, items = response_example(srv)
        assert example == {"prediction": [[1]], "columns": ["calls"]}
        assert items == [{"type": ["integer", "null"]}]
        status, _, body = srv.request("POST", "/api/model/invoke", {"data": [[5.0]]})
        assert status == 200 and body == {"prediction": [[1]], "columns": ["calls"]}, body
    finally:
        assert srv.stop() == 0, srv.log


def test_a_record_for_another_example_row_is_not_used(tmp_path: Path) -> None:
    """A stale or foreign record (its example is not info()'s) must not be documented."""
    folder = make_counter_model(tmp_path / "counter")
    (folder / EXAMPLE_NAME).write_text(
        json.dumps(
            {
                "example": {"columns": ["x"], "data": [[99.0]]},
                "prediction": {"columns": ["calls"], "data": [[42]]},
            }
        ),
        encoding="utf-8",
    )
    srv = Server(folder)
    try:
        srv.wait_ready()
        assert response_example(srv)[0] == {"prediction": [[0]], "columns": ["calls"]}
        assert srv.request("POST", "/api/model/invoke", {"data": [[5.0]]})[2]["prediction"] == [[1]]
    finally:
        assert srv.stop() == 0, srv.log


def test_the_train_stage_records_the_example_in_the_binary(sh_pipeline: Path) -> None:
    run_cli("stage", "train", str(sh_pipeline)).assert_success()
    artifact = sh_pipeline.parent / ".legion" / "artifacts" / "linear-1.0.zip"
    with zipfile.ZipFile(artifact) as zf:
        recorded = json.loads(zf.read(EXAMPLE_NAME))
    assert recorded == {
        "example": {"columns": ["a", "b"], "data": [[1.0, 2.0]]},
        "prediction": {"columns": ["y"], "data": [[4.0]]},
    }
