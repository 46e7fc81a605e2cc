"""MLflow's scoring protocol against a real scikit-learn model logged with MLflow: our
/invocations must answer what MLflow's own scoring server answers for the same payloads, and
MLflow's own client must work unchanged. Also: batched answers equal per-request predictions."""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from tests.server_support import Server, train_mlflow_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_mlflow_model(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def server(trained: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = Server(trained, "--feedback-db", str(tmp_path_factory.mktemp("fb") / "fb.sqlite3"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0


@pytest.fixture(scope="module")
def mlflow_reference(trained: Path):
    """MLflow's own scoring logic (parse, predict, encode) on the same model, in-process."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(str(trained / "legion_model" / "model"))
    schema = model.metadata.get_input_schema()

    def answer(payload: bytes, content_type: str):
        result = scoring_server.invocations(payload, content_type, model, schema)
        assert result.status == 200, result.response
        return json.loads(result.response)

    return answer


@pytest.fixture(scope="module")
def frame():
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).data


def _payloads(frame) -> list[tuple[str, bytes, str]]:
    """Request bodies in each of MLflow's documented input formats."""
    part = frame.iloc[3:8]
    cols = list(part.columns)
    rows = part.to_numpy().tolist()
    records = part.to_dict(orient="records")
    shuffled = cols[::-1]
    return [
        (
            "dataframe_split",
            json.dumps({"dataframe_split": {"columns": cols, "data": rows}}).encode(),
            "application/json",
        ),
        (
            "dataframe_split_with_index_other_order",
            json.dumps(
                {
                    "dataframe_split": {
                        "index": list(range(5)),
                        "columns": shuffled,
                        "data": part[shuffled].to_numpy().tolist(),
                    }
                }
            ).encode(),
            "application/json",
        ),
        (
            "pandas_to_json_split",
            ('{"dataframe_split": ' + part.to_json(orient="split") + "}").encode(),
            "application/json",
        ),
        (
            "dataframe_records",
            json.dumps({"dataframe_records": records}).encode(),
            "application/json",
        ),
        ("instances_records", json.dumps({"instances": records}).encode(), "application/json"),
        ("inputs_records", json.dumps({"inputs": records}).encode(), "application/json"),
        (
            "inputs_columnar",
            json.dumps({"inputs": {c: part[c].tolist() for c in cols}}).encode(),
            "application/json",
        ),
        (
            "with_params_and_charset",
            json.dumps({"dataframe_records": records, "params": {}}).encode(),
            "application/json; charset=utf-8",
        ),
        ("csv", part.to_csv(index=False).encode(), "text/csv"),
    ]


def test_invocations_answer_like_mlflows_scoring_server(server, mlflow_reference, frame) -> None:
    for name, payload, ctype in _payloads(frame):
        status, headers, body = server.request(
            "POST", "/invocations", raw=payload, headers={"Content-Type": ctype}
        )
        assert status == 200, (name, body)
        expected = mlflow_reference(payload, ctype)
        assert body.keys() == expected.keys() == {"predictions"}, name
        assert body["predictions"] == pytest.approx(expected["predictions"], rel=1e-12), name
        assert headers["model-name"] == "diabetes"


def test_mlflow_client_works_unchanged(server, frame) -> None:
    import mlflow
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", server.port)
    client.wait_server_ready(timeout=10)
    assert client.get_version() == mlflow.__version__
    result = client.invoke(frame.iloc[:4])
    predictions = result.get_predictions(predictions_format="ndarray")
    assert predictions.shape[0] == 4


def test_mlflow_protocol_errors_are_4xx(server) -> None:
    cases = [
        (
            b'{"dataframe_split": {"columns": ["age"], "data": [[1]]}}',
            "application/json",
            400,
            "missing columns",
        ),
        (
            b'{"dataframe_records": [{"age": 1}], "inputs": [[1]]}',
            "application/json",
            400,
            "exactly one of",
        ),
        (b'{"something": 1}', "application/json", 400, "exactly one of"),
        (b'{"dataframe_records": [{"nope": 1}]}', "application/json", 400, "unknown columns: nope"),
        (b"age,sex\n1,2\n", "text/csv", 400, "missing columns"),
        (b"<xml/>", "application/xml", 415, "application/json or text/csv"),
        (b"{}", "application/json; charset=latin-1", 415, "charset"),
        (b"", "text/csv", 400, "empty"),
    ]
    for raw, ctype, status, message in cases:
        got, _, body = server.request(
            "POST", "/invocations", raw=raw, headers={"Content-Type": ctype}
        )
        assert got == status, (raw, body)
        assert message in body["message"], (raw, body)


def test_non_numeric_csv_value_is_400(server, frame) -> None:
    text = frame.iloc[:2].to_csv(index=False).replace(str(frame.iloc[1, 0])[:6], "abc", 1)
    status, _, body = server.request(
        "POST", "/invocations", raw=text.encode(), headers={"Content-Type": "text/csv"}
    )
    assert status == 400 and "expected a number" in body["message"]


def test_batched_predictions_equal_per_request_predictions(server, trained, frame) -> None:
    """Concurrent requests, merged into shared predict() calls, get exactly what a predict()
    call of their own gives (the same model, loaded in the test)."""
    import pickle

    with open(trained / "legion_model" / "model" / "model.pkl", "rb") as handle:
        estimator = pickle.load(handle)
    cols = list(frame.columns)
    rng = random.Random(7)
    bodies = []
    for _ in range(120):
        start = rng.randrange(0, len(frame) - 20)
        bodies.append(frame.iloc[start : start + rng.randint(1, 20)])

    def send(part):
        body = {"columns": cols, "data": part.to_numpy().tolist()}
        return server.request("POST", "/api/model/invoke", body)

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(send, bodies))
    for part, (status, _, body) in zip(bodies, answers, strict=True):
        assert status == 200
        expected = estimator.predict(part).tolist()
        assert [row[0] for row in body["prediction"]] == expected  # exact, not approximate
    text = server.request("GET", "/metrics")[2]
    assert "legion_model_batch_requests_sum" in text
