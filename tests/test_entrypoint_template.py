"""The MLflow GPPI entrypoint template on real scikit-learn models: the fast all-float path
(one numpy array for the whole batch) must answer exactly what the careful per-column path
and the estimator itself answer, and fall back to the careful path with its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from legion_ci.gppi.loader import load_model
from legion_ci.gppi.mlflow_convert import convert_mlflow_model


def _close(got, expected) -> None:
    """Equal within floating-point rounding: what a matrix product (BLAS) promises between
    calls of different shapes or memory layouts. Trees are compared exactly instead."""
    np.testing.assert_allclose(
        np.asarray(got, float), np.asarray(expected, float), rtol=1e-12, atol=1e-12
    )


def _exact(got, expected) -> None:
    assert got == expected


def _binary(tmp: Path, model, x, name: str) -> Path:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    folder = tmp / f"{name}-mlflow"
    mlflow.sklearn.save_model(
        model,
        str(folder),
        signature=infer_signature(x, model.predict(x[:5])),
        serialization_format="cloudpickle",
    )
    out = tmp / f"{name}-gppi"
    convert_mlflow_model(folder, out, name=name, version="1", toolchain_version="test")
    return out


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).data


@pytest.fixture(scope="module")
def forest(tmp_path_factory, data):
    from sklearn.ensemble import RandomForestRegressor

    target = data["bmi"] * 3 + data["s5"]
    est = RandomForestRegressor(n_estimators=5, random_state=0).fit(data, target)
    return est, load_model(_binary(tmp_path_factory.mktemp("rf"), est, data, "rf"))


@pytest.fixture(scope="module")
def linear(tmp_path_factory, data):
    """A pipeline whose sums depend on the memory layout: batches must still match."""
    from sklearn.linear_model import ElasticNet
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    target = data["bmi"] * 3 + data["s5"]
    est = make_pipeline(StandardScaler(), ElasticNet(alpha=0.01)).fit(data, target)
    return est, load_model(_binary(tmp_path_factory.mktemp("en"), est, data, "en"))


@pytest.mark.parametrize("which", ["forest", "linear"])
def test_batch_equals_per_row_and_estimator(request, data, which):
    est, model = request.getfixturevalue(which)
    cols = list(data.columns)
    rows = data.iloc[:300].to_numpy().tolist()
    out, names = model.predict(rows, cols)
    assert names == ["prediction"]
    assert all(type(r[0]) is float for r in out)
    singles = [model.predict([row], cols)[0][0][0] for row in rows[:40]]
    expected = est.predict(data.iloc[:300]).tolist()
    no_header = [r[0] for r in model.predict(rows)[0]]  # the model's own order
    if which == "forest":
        # Trees compare and add leaf values: exact whatever the batch's shape.
        assert [r[0] for r in out] == expected
        assert singles == [r[0] for r in out[:40]]
        assert no_header == [r[0] for r in out]
    else:
        # A matrix product: BLAS kernels may sum a 1-row and an N-row call in a different
        # order, so the last bits can differ (seen with OpenBLAS's SkylakeX kernel).
        close = dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose([r[0] for r in out], expected, **close)
        np.testing.assert_allclose(singles, [r[0] for r in out[:40]], **close)
        np.testing.assert_allclose(no_header, [r[0] for r in out], **close)


@pytest.mark.parametrize("which", ["forest", "linear"])
def test_columns_in_any_order(request, data, which):
    _, model = request.getfixturevalue(which)
    cols = list(data.columns)
    rows = data.iloc[:50].to_numpy().tolist()
    expected = model.predict(rows, cols)[0]
    shuffled = cols[3:] + cols[:3]
    moved = data.iloc[:50][shuffled].to_numpy().tolist()
    check = _close if which == "linear" else _exact
    check(model.predict(moved, shuffled)[0], expected)
    check(model.predict(moved, shuffled)[0], expected)  # second time from the cached order
    check(model.predict(np.asarray(moved), shuffled)[0], expected)


def test_mixed_types_take_the_careful_path(forest, data):
    _, model = forest
    cols = list(data.columns)
    rows = data.iloc[:3].to_numpy().tolist()
    expected = model.predict(rows, cols)[0]
    as_text = [[str(v) for v in row] for row in rows]  # CSV gives strings
    assert model.predict(as_text, cols)[0] == expected
    mixed = [list(row) for row in rows]
    mixed[1][2] = str(mixed[1][2])
    assert model.predict(mixed, cols)[0] == expected
    ints = [[int(v * 1000) for v in row] for row in rows]
    floats = [[float(v) for v in row] for row in ints]
    assert model.predict(ints, cols)[0] == model.predict(floats, cols)[0]


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        ([[1.0] * 10, [1.0] * 9], None, "row 2 has 9 values for 10 columns"),
        ([[1.0] * 9], None, "row 1 has 9 values for 10 columns"),
        ([[1.0] * 10], ["age"] * 10, "duplicate input columns: age"),
        ([[1.0]], ["age"], "missing columns: sex, bmi"),
        ([[1.0] * 11], "extra", "unknown columns: nope"),
        ([["abc"] + [1.0] * 9], None, "column 'age': expected double"),
    ],
)
def test_bad_input_gets_the_careful_paths_errors(forest, data, rows, columns, message):
    _, model = forest
    cols = list(data.columns)
    if columns == "extra":
        columns = [*cols, "nope"]
    with pytest.raises(ValueError, match=message):
        model.predict(rows, columns or cols)


def test_none_is_missing_data_like_nan(forest, data):
    _, model = forest
    cols = list(data.columns)
    row = data.iloc[0].tolist()
    with_none, with_nan = [None, *row[1:]], [float("nan"), *row[1:]]
    assert model.predict([with_none], cols)[0] == model.predict([with_nan], cols)[0]


def test_dataframe_input_uses_its_own_columns(forest, data):
    est, model = forest
    part = data.iloc[:20]
    reversed_frame = part[list(part.columns)[::-1]]
    out = model.module.predict_on_matrix(reversed_frame)[0]
    assert np.asarray(out).ravel().tolist() == est.predict(part).tolist()


def test_model_without_feature_names_gets_a_plain_array(tmp_path, data):
    from sklearn.linear_model import LinearRegression

    x = data.to_numpy()
    est = LinearRegression().fit(x, data["bmi"].to_numpy() * 2)
    model = load_model(_binary(tmp_path, est, x, "bare"))
    assert model.module._frame_input is False
    out, _ = model.predict(x[:30].tolist())
    _close([r[0] for r in out], est.predict(x[:30]))
    assert all(type(r[0]) is float for r in out)
    as_text = [[str(v) for v in row] for row in x[:5].tolist()]  # the careful path
    _close(model.predict(as_text)[0], out[:5])


def test_whole_number_columns_are_checked(tmp_path):
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"a": [1, 2, 3, 4], "b": [0.5, 1.5, 2.5, 3.5]})
    est = LinearRegression().fit(x, [1.0, 2.0, 3.0, 4.0])
    model = load_model(_binary(tmp_path, est, x, "ints"))
    _close(model.predict([[2, 1.5]], ["a", "b"])[0], [[est.predict(x.iloc[[1]])[0]]])
    with pytest.raises(ValueError, match="column 'a': expected long"):
        model.predict([[2.5, 1.5]], ["a", "b"])


def test_the_model_never_gets_a_view_of_the_callers_array(forest, data):
    _, model = forest
    module = model.module
    cols = list(data.columns)
    given = np.asfortranarray(data.iloc[:5].to_numpy())  # already the layout the model gets
    seen = []
    original = module._predict
    module._predict = lambda x: seen.append(x) or original(x)
    try:
        module.predict_on_matrix(given, cols)
        module.predict_on_matrix(given.T[::-1].T, cols[::-1])
    finally:
        module._predict = original
    assert len(seen) == 2
    assert not any(np.shares_memory(np.asarray(x), given) for x in seen)


def test_string_labels_are_described_as_strings_with_a_real_example(tmp_path, data):
    from sklearn.tree import DecisionTreeClassifier

    from legion_ci.server.openapi import build_openapi

    labels = np.where(data["bmi"] > 0, "heavy", "light")
    est = DecisionTreeClassifier(max_depth=3, random_state=0).fit(data, labels)
    model = load_model(_binary(tmp_path, est, data, "labels"))
    (out,) = model.output_fields
    expected = est.predict(data.iloc[[0]])[0]
    assert out.type == "string" and out.example == expected  # a real prediction, not null
    doc = build_openapi(model)
    response = doc["paths"]["/api/model/invoke"]["post"]["responses"]["200"]
    assert response["content"]["application/json"]["example"]["prediction"] == [[expected]]
    assert doc["components"]["schemas"]["OutputRow"]["prefixItems"] == [
        {"type": ["string", "null"]}
    ]


def test_odahu_head_pickles_are_the_examples_without_signature(tmp_path, data):
    """An ODAHU-style MLflow project: no signature, no input example, but head_input.pkl and
    head_output.pkl logged beside the model."""
    import mlflow.sklearn
    from sklearn.ensemble import RandomForestRegressor

    from legion_ci.gppi.selfcheck import self_check

    target = (data["bmi"] * 3 + data["s5"]).rename("progression")
    est = RandomForestRegressor(n_estimators=3, random_state=0).fit(data, target)
    folder = tmp_path / "odahu-mlflow"
    mlflow.sklearn.save_model(est, str(folder), serialization_format="cloudpickle")
    head = data.iloc[5:10]
    head.to_pickle(folder / "head_input.pkl")
    target.iloc[5:10].to_pickle(folder / "head_output.pkl")
    out = tmp_path / "odahu-gppi"
    convert_mlflow_model(folder, out, name="odahu", version="1", toolchain_version="test")
    model = load_model(out)
    assert [f.name for f in model.input_fields] == list(data.columns)
    assert [f.example for f in model.input_fields] == head.iloc[0].tolist()  # not zeros
    assert {f.type for f in model.input_fields} == {"number"}
    (output,) = model.output_fields
    assert output.name == "progression" and output.type == "number"
    assert output.example == est.predict(head.iloc[[0]])[0]
    report = self_check(out)
    assert report["example"]["data"] == [head.iloc[0].tolist()]
    assert report["prediction"]["data"] == [[output.example]]


class _CallCounter:
    """A model with a side effect: each predict call appends a line to a file."""

    def __init__(self, calls: str):
        self.calls = calls

    def fit(self, x, y=None):
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x):
        with open(self.calls, "a", encoding="utf-8") as handle:
            handle.write("call\n")
        with open(self.calls, encoding="utf-8") as handle:
            count = len(handle.readlines())
        return np.full(len(x), float(count))


def test_a_recorded_self_check_spares_the_model_a_call_at_start(tmp_path, data):
    """Legion parity: the server calls the model only for a client. The train-time self-check
    records its answer in the binary; loading that binary (what `serve` does at start) must
    not call predict, so a counter answers 1 to its first client. Without the record the
    template still has to ask the model once (at train time, inside the self-check)."""
    import shutil

    from legion_ci.gppi.selfcheck import EXAMPLE_NAME, record_example, self_check

    calls = tmp_path / "calls.txt"
    binary = _binary(tmp_path, _CallCounter(str(calls)).fit(data.values), data.values, "counter")
    calls.unlink(missing_ok=True)  # signature inference called it
    report = self_check(binary)  # what the train stage runs before zipping
    assert record_example(binary, report)
    calls.unlink()

    served = tmp_path / "served"
    shutil.copytree(binary, served)
    model = load_model(served)
    assert not calls.exists(), "the model was called at start with no client request"
    columns, rows = model.example_rows()
    out_rows, _ = model.predict(rows, columns)
    assert out_rows == [[1.0]]
    assert model.output_fields[0].type == "number"

    bare = tmp_path / "bare"
    shutil.copytree(binary, bare)
    (bare / EXAMPLE_NAME).unlink()
    calls.unlink()
    load_model(bare)
    assert calls.read_text().count("call") == 1  # no record: init() asks the model once


def test_a_skops_model_loads_without_importing_all_of_scikit_learn(tmp_path, data):
    # skops.io's default trusted list imports every scikit-learn module at import (about a
    # third of a linear model's server start); the entrypoint trusts the file's own types,
    # so it imports skops.io without building that list. Fresh interpreter: a clean sys.modules.
    import subprocess
    import sys

    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import ElasticNet

    est = ElasticNet(alpha=0.01).fit(data, data["bmi"] * 3 + data["s5"])
    folder = tmp_path / "skops-mlflow"
    mlflow.sklearn.save_model(
        est,
        str(folder),
        signature=infer_signature(data, est.predict(data[:5])),
        serialization_format="skops",
    )
    out = tmp_path / "skops-gppi"
    convert_mlflow_model(folder, out, name="sk", version="1", toolchain_version="test")
    rows = data[:3].to_numpy().tolist()
    probe = (
        "import json, sys\n"
        "from legion_ci.gppi.loader import load_model\n"
        f"m = load_model({str(out)!r})\n"
        f"rows, _ = m.predict({rows!r}, {list(data.columns)!r})\n"
        "print(json.dumps([rows, 'sklearn.neural_network' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows_got, imported_everything = json.loads(done.stdout.splitlines()[-1])
    _close([r[0] for r in rows_got], est.predict(data[:3]))
    assert not imported_everything


def _forest_kinds():
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

    class Tweaked(RandomForestRegressor):
        def predict(self, X):  # a subclass may mean something else by predict
            return super().predict(X) + 1.0

    return {
        "random-forest": (RandomForestRegressor(n_estimators=20, random_state=0), True),
        "extra-trees": (ExtraTreesRegressor(n_estimators=20, max_depth=5, random_state=1), True),
        "subclass": (Tweaked(n_estimators=5, random_state=0), False),
    }


@pytest.mark.parametrize("kind", ["random-forest", "extra-trees", "subclass"])
def test_forests_skip_joblib_and_answer_bit_for_bit_what_predict_answers(tmp_path, data, kind):
    """The forest path adds the trees' answers without joblib's per-tree dispatch; it must
    give exactly predict()'s numbers (missing values and large batches included), and a
    subclass that overrides predict() must keep its own."""
    est, fast = _forest_kinds()[kind]
    target = data["bmi"] * 3 + data["s5"]
    est.fit(data, target)
    model = load_model(_binary(tmp_path, est, data, kind))
    uses_forest_path = model.module._predict != est.predict and (
        model.module._predict.__qualname__ == "_forest_predict.<locals>.predict"
    )
    assert uses_forest_path is fast
    cols = list(data.columns)
    rows = data.to_numpy().tolist()
    rows[3][2] = None  # missing: trees send NaN down their learnt side
    frame = pd.DataFrame(rows, columns=cols, dtype=float)
    expected = est.predict(frame).tolist()
    out, _ = model.predict(rows, cols)
    assert [r[0] for r in out] == expected
    assert [model.predict([row], cols)[0][0][0] for row in rows[:25]] == expected[:25]
    # All-float batches reach the forest as the float64 array itself (no DataFrame), with
    # the same answers; a NaN as a float, or a value float32 cannot hold, meets the forest's
    # own checks as it would in predict().
    assert model.module._array_input is fast
    floats = data.to_numpy().tolist()[:40]
    floats[7][4] = float("nan")
    expected = est.predict(pd.DataFrame(floats, columns=cols)).tolist()
    assert [r[0] for r in model.predict(floats, cols)[0]] == expected
    shuffled = cols[::-1]
    assert [r[0] for r in model.predict([row[::-1] for row in floats], shuffled)[0]] == expected
    huge = [[1e39, *floats[0][1:]]]
    with pytest.raises(ValueError) as ours:
        model.predict(huge, cols)
    with pytest.raises(ValueError) as theirs:
        est.predict(pd.DataFrame(huge, columns=cols))
    assert str(theirs.value).splitlines()[0] in str(ours.value)
    with pytest.raises(ValueError, match="column 'age': expected double"):
        model.predict([["x", *rows[0][1:]]], cols)
