"""`legion-ci model self-check|info|predict` on real binaries trained with the mlflow toolchain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow_support import make_ctx, pyfunc_project, write_project

from legion_ci.gppi.archive import write_zip
from legion_ci.integrations.mlflow_trainer import MlflowTrainer


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real binary (pyfunc model: prediction = b * 10 + a, columns b then a), zipped."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        tmp = tmp_path_factory.mktemp("model-cli")
        ctx = make_ctx(tmp, pyfunc_project(tmp / "project"), model_name="weighted")
        MlflowTrainer().train(ctx)
        write_zip(ctx.output_dir, tmp / "weighted.zip")
    finally:
        mp.undo()
    return tmp / "weighted.zip"


def test_self_check_passes(artifact):
    outcome = run_cli("model", "self-check", str(artifact)).assert_success()
    assert "self-check passed: weighted 1.2" in outcome.out
    report = json.loads(run_cli("model", "self-check", str(artifact), "--json").out)
    assert report["ok"] is True
    assert report["prediction"] == {"columns": ["prediction"], "data": [[10.5]]}


def test_self_check_fails_on_a_broken_binary(artifact, tmp_path):
    folder = tmp_path / "broken"
    shutil.unpack_archive(artifact, folder)
    (folder / "legion_model" / "entrypoint.py").write_text("raise ImportError('no numpy')\n")
    outcome = run_cli("model", "self-check", str(folder)).assert_failed(1)
    assert "import failed: ImportError: no numpy" in outcome.err
    outcome = run_cli("model", "self-check", str(tmp_path / "missing.zip")).assert_failed(1)
    assert "no such trained model binary" in outcome.err


def test_info_lists_columns_in_model_order(artifact):
    outcome = run_cli("model", "info", str(artifact)).assert_success()
    assert "model: weighted 1.2" in outcome.out
    assert outcome.out.index("  b: number") < outcome.out.index("  a: number")
    data = json.loads(run_cli("model", "info", str(artifact), "--json").out)
    assert [f["name"] for f in data["input"]] == ["b", "a"]
    assert data["toolchain"]["name"] == "mlflow"
    assert data["output"]["model_uri"].startswith("models:/")


def test_predict_json_split_records_and_mlflow_payloads(artifact, tmp_path):
    split = write_project(tmp_path, {"split.json": '{"columns": ["a", "b"], "data": [[1, 2]]}'})
    outcome = run_cli("model", "predict", str(artifact), "--input", str(split / "split.json"))
    assert json.loads(outcome.assert_success().out) == {
        "columns": ["prediction"],
        "prediction": [[21.0]],
    }
    records = tmp_path / "records.json"
    records.write_text('[{"b": 1, "a": 0.5}, {"a": 0, "b": 3}]')
    outcome = run_cli("model", "predict", str(artifact), "-i", str(records))
    assert json.loads(outcome.assert_success().out)["prediction"] == [[10.5], [30.0]]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text('{"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1]]}}')
    outcome = run_cli("model", "predict", str(artifact), "-i", str(wrapped))
    assert json.loads(outcome.assert_success().out)["prediction"] == [[21.0]]
    # without --input: the model's own example row
    outcome = run_cli("model", "predict", str(artifact)).assert_success()
    assert json.loads(outcome.out)["prediction"] == [[10.5]]


def test_predict_csv_in_and_out(artifact, tmp_path):
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n0.5,1\n")
    outcome = run_cli("model", "predict", str(artifact), "-i", str(data), "--output", "csv")
    assert outcome.assert_success().out == "prediction\n21.0\n10.5\n"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", '{"columns": ["a", "b"], "data": [[1, 2]', "bad.json: the request body is"),
        ("keys.json", '{"rows": []}', 'the body has no "data" (a list of rows)'),
        ("width.json", '{"columns": ["a", "b"], "data": [[1]]}', "row 0 has 1 values, expected 2"),
        ("rec.json", '[{"a": 1, "b": 2}, {"a": 1}]', "record 1: missing columns: b"),
        ("cols.json", '{"columns": ["a", "c"], "data": [[1, 2]]}', "missing columns: b"),
        ("cell.csv", "a,b\n1,x\n", "cell.csv:2: column 'b': expected a number, got 'x'"),
        ("nan.csv", "a,b\n1,2\n1,nan\n", "nan.csv:3: column 'b': non-finite numbers are not"),
        ("ragged.csv", "a,b\n1,2,3\n", "ragged.csv:2: 3 values for 2 columns"),
        ("empty.csv", "", "empty CSV"),
        ("header.csv", "a,b\n\n", "no data rows after the header"),
    ],
)
def test_predict_bad_input_is_a_one_line_input_error(artifact, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    outcome = run_cli("model", "predict", str(artifact), "--input", str(path)).assert_failed(2)
    assert message in outcome.err
    assert str(path) in outcome.err
    assert len(outcome.err.strip().splitlines()) == 1


# Bodies both readers must refuse: a number sent as a string, an unknown record key or column,
# an unexpected key. (route on the server, body) -> the same 400 message on both.
SHARED_BAD_INPUTS = [
    ("/api/model/invoke", {"columns": ["a", "b"], "data": [[1, "2"]]}),
    ("/api/model/invoke", {"columns": ["a", "b", "c"], "data": [[1, 2, 3]]}),
    ("/api/model/invoke", {"columns": ["a", "b"], "data": [[1, 2]], "rows": 1}),
    ("/invocations", {"dataframe_records": [{"a": 1, "b": 2, "c": 3}]}),
    ("/invocations", {"dataframe_records": [{"a": "1", "b": 2}]}),
]


def test_predict_and_the_server_refuse_the_same_inputs_the_same_way(artifact, tmp_path):
    from server_support import Server

    server = Server(artifact)
    try:
        server.wait_ready()
        for number, (route, body) in enumerate(SHARED_BAD_INPUTS):
            status, _headers, answer = server.request("POST", route, body)
            assert status == 400, (route, body, answer)
            path = tmp_path / f"bad-{number}.json"
            path.write_text(json.dumps(body))
            outcome = run_cli("model", "predict", str(artifact), "-i", str(path)).assert_failed(2)
            assert outcome.err.strip() == f"legion-ci: error: {path}: {answer['message']}"
    finally:
        server.stop()
    # A list of records (predict's shorthand for dataframe_records) is read by the same parser.
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"a": 1, "b": 2, "c": 3}]))
    outcome = run_cli("model", "predict", str(artifact), "-i", str(path)).assert_failed(2)
    assert "record 0: unknown columns: c" in outcome.err


def test_predict_missing_input_file(artifact, tmp_path):
    outcome = run_cli("model", "predict", str(artifact), "-i", str(tmp_path / "nope.json"))
    assert "no such input file" in outcome.assert_failed(2).err


LABEL_ENTRYPOINT = """\
def init():
    return "matrix"

def info():
    # Says number, as Legion's templates often did; the model answers strings.
    return ([{"name": "x", "type": "number", "required": True, "example": 2.5}],
            [{"name": "label", "type": "number", "required": True, "example": None}])

def predict_on_matrix(matrix, provided_columns_names=None):
    return [["big" if row[0] > 1 else "small"] for row in matrix], ["label"]
"""


def test_info_describes_outputs_by_what_the_model_answers(tmp_path):
    from server_support import make_tiny_model

    folder = make_tiny_model(tmp_path / "labels")
    (folder / "legion_model" / "entrypoint.py").write_text(LABEL_ENTRYPOINT)
    data = json.loads(run_cli("model", "info", str(folder), "--json").assert_success().out)
    assert data["outputs"] == [
        {"name": "label", "type": "string", "required": True, "example": "big"}
    ]
    text = run_cli("model", "info", str(folder)).assert_success().out
    assert "  label: string (example: 'big')" in text
