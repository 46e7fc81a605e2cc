"""GPPI entrypoint for a model logged with MLflow (written by legion-ci's mlflow toolchain).

The model's MLflow folder sits in ./model beside this file ($MODEL_LOCATION/model), with
MLmodel.json beside it (the MLmodel file as JSON, so this module needs no YAML parser).
scikit-learn models are loaded directly so the server starts without importing MLflow; every
other flavour goes through mlflow.pyfunc. This file depends on nothing from legion-ci: it runs
in the model's own environment.
"""

import json
import os

import numpy as np

_model = None
_predict = None
_columns = []  # the input columns, in the order the model was trained on
_types = {}  # column -> MLflow type (double, long, string, ...)
_tensor = None  # numpy dtype name when the model takes a bare array, not named columns
_frame_input = True  # whether the model wants a DataFrame (named columns) or an array
_array_input = False  # a DataFrame-fitted model whose predict takes the float array itself
_input_schema = []
_output_schema = []
_output_names = []
_fast = False  # whether every input column is a float (or the model takes a bare array)
_index = None  # _columns as a pandas Index, built once
_orders = {}  # provided column names -> index array putting them in the model's order
_FLOAT_TYPES = ("double", "float")
_NUMERIC_KINDS = ("b", "i", "u", "f")

_JSON_TYPES = {
    "double": "number",
    "float": "number",
    "long": "integer",
    "integer": "integer",
    "boolean": "boolean",
    "string": "string",
    "datetime": "string",
    "binary": "string",
}


def _location():
    return os.path.join(os.environ.get("MODEL_LOCATION", os.path.dirname(__file__)), "model")


def _read_mlmodel(folder):
    converted = os.path.join(os.path.dirname(folder), "MLmodel.json")
    if os.path.isfile(converted):
        with open(converted, encoding="utf-8") as handle:
            return json.load(handle)
    import yaml

    with open(os.path.join(folder, "MLmodel"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _load_example(folder, mlmodel):
    """(columns or None, first row or None) from the logged input example, any layout."""
    info = mlmodel.get("saved_input_example_info") or {}
    path = os.path.join(folder, info.get("artifact_path") or "input_example.json")
    if not os.path.isfile(path):
        return None, None
    with open(path, encoding="utf-8") as handle:
        example = json.load(handle)
    if isinstance(example, dict):
        for key in ("dataframe_split", "inputs", "instances"):
            if key in example and len(example) == 1:
                example = example[key]
                break
    if isinstance(example, dict) and "columns" in example and "data" in example:
        return list(example["columns"]), (example["data"][0] if example["data"] else None)
    if isinstance(example, list) and example and isinstance(example[0], dict):
        return list(example[0].keys()), list(example[0].values())
    if isinstance(example, list) and example:
        row = example[0] if isinstance(example[0], list) else example
        return None, row
    if isinstance(example, dict):
        return list(example.keys()), [
            v[0] if isinstance(v, list) and v else v for v in example.values()
        ]
    return None, None


_DTYPE_TYPES = {"f": "double", "i": "long", "u": "long", "b": "boolean"}


def _head(folder, name):
    """ODAHU's samples: `head_input.pkl` / `head_output.pkl` (a pandas head of the training
    input and output), logged beside the model by projects written for ODAHU's toolchain."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    import pandas as pd

    try:
        # A pickle, like the model itself: the binary is code already.
        head = pd.read_pickle(path)
    except Exception:
        return None
    if isinstance(head, pd.Series):
        head = head.to_frame(name=str(head.name) if head.name is not None else "prediction")
    if not isinstance(head, pd.DataFrame) or head.empty:
        return None
    columns = [str(c) for c in head.columns]
    types = {
        c: _DTYPE_TYPES.get(head[col].dtype.kind, "string")
        for c, col in zip(columns, head.columns, strict=True)
    }
    return columns, _plain(head.iloc[0].tolist()), types


def _value_type(value):
    """The JSON type of a real output value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _import_skops_io():
    """skops.io, imported without its default trusted-type list of every scikit-learn
    estimator: building that list imports every scikit-learn module (all_estimators), about a
    third of the server's start for a linear model. _load_sklearn passes the file's own types
    as trusted, so the default list is never consulted; left empty it only makes other skops
    loads in this process stricter, never laxer."""
    import sys

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    import sklearn.utils

    everything = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda *args, **kwargs: []
    try:
        import skops.io
    finally:
        sklearn.utils.all_estimators = everything
    return skops.io


def _load_sklearn(folder, flavor):
    path = os.path.join(folder, flavor.get("pickled_model", "model.pkl"))
    if flavor.get("serialization_format") == "skops":
        skops_io = _import_skops_io()
        # The binary is code already (this file); trusting its own model adds no risk.
        return skops_io.load(path, trusted=skops_io.get_untrusted_types(file=path))
    try:
        import cloudpickle as loader
    except ImportError:
        import pickle as loader
    with open(path, "rb") as handle:
        return loader.load(handle)


def _forest_predict(model):
    """A scikit-learn forest regressor's own predict() without joblib: for each call,
    predict() dispatches every tree through joblib and scikit-learn's per-task wrapper, which
    re-enters the config context and re-installs every warning filter per tree; for a 50-tree
    forest that is about 3 ms of a 1-row call, several times the trees' own work. This adds the
    trees' answers in the same order into the same float64 sum and divides the same way, so
    the answer is bit for bit the one predict() gives (with n_jobs=1; with threads its sum's
    order varies). Only for the exact classes whose predict() is scikit-learn's own; None
    otherwise, and the model's predict() is used."""
    try:
        from sklearn.ensemble import _forest
        from sklearn.tree import _classes
    except ImportError:
        return None
    if type(model) not in (_forest.RandomForestRegressor, _forest.ExtraTreesRegressor):
        return None
    if type(model).predict is not _forest.ForestRegressor.predict:
        return None
    estimators = list(getattr(model, "estimators_", None) or ())
    validate = getattr(model, "_validate_X_predict", None)
    if getattr(model, "n_outputs_", None) != 1 or not estimators or validate is None:
        return None
    tree_classes = (_classes.DecisionTreeRegressor, _classes.ExtraTreeRegressor)
    if any(type(e) not in tree_classes for e in estimators):
        return None
    if any(type(e).predict is not _classes.BaseDecisionTree.predict for e in estimators):
        return None
    trees = [e.tree_ for e in estimators]
    width = getattr(model, "n_features_in_", None)

    def predict(X):
        if (
            isinstance(X, np.ndarray)
            and X.dtype == np.float64
            and X.ndim == 2
            and X.shape[0] > 0
            and X.shape[1] == width
        ):
            # The all-float batch the template built in the model's own column order: the
            # same float32 cast scikit-learn's validation makes, without the DataFrame round
            # trip (a fifth of a 1,600-row call). Anything not finite after the cast goes
            # through the forest's own checks: its error, or its missing-value support.
            with np.errstate(over="ignore"):  # an overflow is reported by the checks below
                cast = X.astype(np.float32)
            X = cast if np.isfinite(cast).all() else validate(_named_frame(X))
        else:
            X = validate(X)  # the forest's own checks: feature names, float32, finiteness
        total = np.zeros(X.shape[0], dtype=np.float64)
        for tree in trees:
            total += tree.predict(X)[:, 0]
        total /= len(trees)
        return total

    predict.takes_array = True  # predict_on_matrix may hand it the float64 array itself
    return predict


def _named_frame(array):
    """`array` (the model's columns, in order) as the DataFrame the model would get."""
    import pandas as pd

    global _index
    if _index is None:
        _index = pd.Index(_columns)
    return pd.DataFrame(array, columns=_index, copy=False)


def _recorded_answer(folder, example_row):
    """(first output row, output columns) the train-time self-check recorded for this example
    row in legion.example.json at the binary's root (beside the manifest, the parent of this
    workDir), or (None, None)."""
    path = os.path.join(os.path.dirname(os.path.dirname(folder)), "legion.example.json")
    try:
        if os.path.getsize(path) > 64 * 1024:
            return None, None
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        if record["example"] != {"columns": list(_columns), "data": [example_row]}:
            return None, None
        rows, names = record["prediction"]["data"], record["prediction"]["columns"]
        if (
            isinstance(rows, list)
            and rows
            and isinstance(rows[0], list)
            and isinstance(names, list)
        ):
            return rows[0], names
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None, None


def _default_example(mlflow_type):
    return {"string": "", "boolean": False, "long": 0, "integer": 0}.get(mlflow_type, 0.0)


def init():
    global _model, _predict, _columns, _types, _tensor, _frame_input
    global _input_schema, _output_schema, _output_names, _fast, _index, _orders, _array_input
    folder = _location()
    mlmodel = _read_mlmodel(folder)
    flavors = mlmodel.get("flavors") or {}
    pyfunc = flavors.get("python_function") or {}
    sklearn = flavors.get("sklearn")
    fmt = (sklearn or {}).get("serialization_format", "cloudpickle")
    if (
        sklearn
        and pyfunc.get("loader_module") == "mlflow.sklearn"
        and fmt
        in (
            "pickle",
            "cloudpickle",
            "skops",
        )
    ):
        _model = _load_sklearn(folder, sklearn)
        # MLflow's sklearn pyfunc calls the method named by predict_fn (predict by default).
        predict_fn = pyfunc.get("predict_fn") or "predict"
        _predict = getattr(_model, predict_fn)
        if predict_fn == "predict":
            _predict = _forest_predict(_model) or _predict
        _frame_input = hasattr(_model, "feature_names_in_")
    else:
        import mlflow.pyfunc

        _model = mlflow.pyfunc.load_model(folder)
        _predict = _model.predict
        _frame_input = True

    signature = mlmodel.get("signature") or {}
    inputs = json.loads(signature["inputs"]) if signature.get("inputs") else []
    outputs = json.loads(signature["outputs"]) if signature.get("outputs") else []
    ex_columns, ex_row = _load_example(folder, mlmodel)
    head_types = {}
    if not inputs and ex_row is None:
        head = _head(folder, "head_input.pkl")
        if head is not None:
            ex_columns, ex_row, head_types = head
    named = [c for c in inputs if c.get("name")]
    tensors = [c for c in inputs if c.get("type") == "tensor"]
    if named:
        _columns = [str(c["name"]) for c in named]
        _types = {str(c["name"]): c.get("type", "double") for c in named}
    elif ex_columns:
        _columns = [str(c) for c in ex_columns]
    elif hasattr(_model, "feature_names_in_"):
        _columns = [str(c) for c in _model.feature_names_in_]
    elif tensors or ex_row is not None:
        # A model that takes a bare array: name its columns by position.
        spec = (tensors[0].get("tensor-spec") or {}) if tensors else {}
        shape = spec.get("shape") or []
        width = shape[1] if len(shape) > 1 and shape[1] > 0 else len(ex_row or [])
        if not width:
            raise RuntimeError("cannot tell how many input columns the model takes")
        _columns = [f"x{i}" for i in range(width)]
        _tensor = spec.get("dtype") or "float64"
        _frame_input = False
    else:
        raise RuntimeError(
            "the MLflow model has neither a signature with column names nor an input example:"
            " log it with signature=... or input_example=..."
        )
    # Only where the array's columns are the ones the model was fitted on, in that order.
    fitted = [str(c) for c in getattr(_model, "feature_names_in_", ())]
    _array_input = bool(getattr(_predict, "takes_array", False)) and fitted == _columns
    if _tensor is None and not named:
        _types = {c: head_types.get(c, "double") for c in _columns}
    examples = {}
    if ex_row is not None:
        keys = ex_columns if ex_columns else _columns
        examples = {str(k): v for k, v in zip(keys, ex_row, strict=False)}
    _input_schema = [
        {
            "name": name,
            "type": "number" if _tensor else _JSON_TYPES.get(_types.get(name, "double"), "string"),
            "required": True,
            "example": examples.get(name, _default_example(_types.get(name, "double"))),
        }
        for name in _columns
    ]
    out_named = [c for c in outputs if c.get("name")]
    if out_named:
        _output_names = [str(c["name"]) for c in out_named]
        out_types = [_JSON_TYPES.get(c.get("type", "double"), "string") for c in out_named]
    else:
        _output_names = ["prediction"]
        out_types = ["number"]
        for spec in (c.get("tensor-spec") or {} for c in outputs if c.get("type") == "tensor"):
            shape = spec.get("shape") or []
            if len(shape) > 1 and shape[1] > 1:
                _output_names = [f"prediction_{i}" for i in range(shape[1])]
                out_types = ["number"] * shape[1]
        head = None if outputs else _head(folder, "head_output.pkl")
        if head is not None:
            _output_names = head[0]
            out_types = [_JSON_TYPES.get(head[2][c], "string") for c in head[0]]
    _fast = _tensor is not None or all(_types.get(c) in _FLOAT_TYPES for c in _columns)
    _index = None
    _orders = {}
    # The output's real names, types and an example: the model's answer on the example row
    # (a string-label classifier answers strings, whatever a tensor signature says).
    out_examples = [None] * len(_output_names)
    example_row = [c["example"] for c in _input_schema]
    # Served from a binary whose train-time self-check recorded this answer, init() does not
    # call the model: a model with state (a counter, a database write) would see a call no
    # client made, at every start of every replica.
    first, names = _recorded_answer(folder, example_row)
    if first is None:
        try:
            rows, names = predict_on_matrix([example_row], _columns)
            first = _plain(rows.tolist() if hasattr(rows, "tolist") else rows)[0]
        except Exception:  # the self-check runs it again and reports the failure
            first, names = None, None
    if first is not None and len(first) == len(names):
        if list(names) != _output_names and not out_named:
            _output_names = [str(n) for n in names]
            out_types = [None] * len(names)
        if len(first) == len(_output_names):
            out_examples = list(first)
            if not out_named:
                out_types = [_value_type(v) or k for v, k in zip(first, out_types, strict=True)]
    _output_schema = [
        {"name": name, "type": kind or "string", "required": True, "example": example}
        for name, kind, example in zip(_output_names, out_types, out_examples, strict=True)
    ]
    return "matrix"


def info():
    return _input_schema, _output_schema


def _frame(matrix, provided_columns_names):
    """The input as a DataFrame in the model's own column order, with the signature's types."""
    import pandas as pd

    if isinstance(matrix, pd.DataFrame) and not provided_columns_names:
        frame = matrix.copy()
        frame.columns = [str(c) for c in frame.columns]
    else:
        rows = matrix.values.tolist() if hasattr(matrix, "values") else matrix
        rows = rows.tolist() if hasattr(rows, "tolist") else list(rows)
        columns = [str(c) for c in provided_columns_names] if provided_columns_names else _columns
        if len(set(columns)) != len(columns):
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            raise ValueError(f"duplicate input columns: {', '.join(dupes)}")
        for number, row in enumerate(rows, 1):
            if not isinstance(row, (list, tuple)) or len(row) != len(columns):
                width = len(row) if isinstance(row, (list, tuple)) else 1
                raise ValueError(
                    f"row {number} has {width} values for {len(columns)} columns"
                    f" ({', '.join(columns)})"
                )
        frame = pd.DataFrame(rows, columns=columns)
    missing = [c for c in _columns if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in _columns]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown columns: {', '.join(unknown)}")
        raise ValueError(f"{'; '.join(parts)} (the model takes: {', '.join(_columns)})")
    frame = frame[_columns]
    for column in _columns:
        frame[column] = _coerce(frame[column], _types.get(column), column)
    return frame


def _coerce(series, mlflow_type, column):
    """CSV and JSON give strings and ints where the model was trained on floats; convert as the
    signature says, and say which column is wrong when a value does not fit."""
    import pandas as pd

    try:
        if mlflow_type in ("double", "float"):
            return pd.to_numeric(series, errors="raise").astype("float64")
        if mlflow_type in ("long", "integer"):
            numbers = pd.to_numeric(series, errors="raise")
            if (numbers % 1 != 0).any():
                raise ValueError("not a whole number")
            return numbers.astype("int64" if mlflow_type == "long" else "int32")
        if mlflow_type == "boolean":
            mapping = {"true": True, "false": False, "1": True, "0": False}
            return series.map(lambda v: v if isinstance(v, bool) else mapping[str(v).lower()])
        if mlflow_type == "string":
            return series.astype(str)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"column {column!r}: expected {mlflow_type}: {exc}") from None
    return series


def _plain(value):
    """numpy and pandas values as plain JSON-safe Python."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    for method in ("tolist", "item"):
        func = getattr(value, method, None)
        if callable(func):
            return _plain(func())
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    return str(value)


def _rows(result):
    """Any model output (DataFrame, Series, ndarray, list, dict of arrays) as rows + names:
    numeric arrays stay numpy (GPPI callers convert them with one tolist()), anything else is
    made plain JSON-safe Python here."""
    import pandas as pd

    if isinstance(result, np.ndarray) and result.dtype.kind in _NUMERIC_KINDS:
        pass  # the usual case: on to the array code below
    elif isinstance(result, pd.DataFrame):
        names = [str(c) for c in result.columns]
        values = result.to_numpy()
        if values.dtype.kind in _NUMERIC_KINDS:
            return values, names  # numeric: the caller's tolist() makes plain Python
        return _plain(values.tolist()), names
    elif isinstance(result, pd.Series):
        name = str(result.name) if result.name is not None else _output_names[0]
        values = result.to_numpy()
        if values.dtype.kind in _NUMERIC_KINDS:
            return values.reshape(-1, 1), [name]
        return [[_plain(v)] for v in result.tolist()], [name]
    if isinstance(result, dict):
        names = [str(k) for k in result]
        columns = [np.asarray(v).reshape(len(v) if np.ndim(v) else 1, -1) for v in result.values()]
        if any(c.shape[1] != 1 for c in columns):
            return [[_plain(result)]], ["prediction"]
        return _plain(np.hstack(columns).tolist()), names
    array = np.asarray(result)
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array.reshape(-1, 1)
    elif array.ndim > 2:  # e.g. one image per row: keep each row's value whole
        return [[_plain(row)] for row in array], _output_names[:1]
    width = array.shape[1]
    if len(_output_names) == width:
        names = list(_output_names)
    elif width == 1:
        names = _output_names[:1] or ["prediction"]
    else:
        names = [f"prediction_{i}" for i in range(width)]
    if array.dtype.kind in _NUMERIC_KINDS:
        return array, names  # numeric: the caller's tolist() makes plain Python in one call
    return _plain(array.tolist()), names


def _order(provided_columns_names):
    """The index array taking provided columns to the model's order (None: already in it),
    worked out once per distinct header; raises the careful path's errors."""
    if not provided_columns_names:
        return None
    key = tuple([str(c) for c in provided_columns_names])
    order = _orders.get(key, False)
    if order is not False:
        return order
    columns = list(key)
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise ValueError(f"duplicate input columns: {', '.join(dupes)}")
    if sorted(columns) != sorted(_columns):
        return False  # missing or unknown columns: the careful path words the error
    order = None if columns == _columns else np.array([columns.index(c) for c in _columns])
    if len(_orders) < 256:
        _orders[key] = order
    return order


def _fast_array(matrix, provided_columns_names):
    """All-float input as one 2-D array in the model's column order, converted in one call;
    None when the careful path must look (strings, None, ragged rows, wrong columns, ...)."""
    if not _fast or (not provided_columns_names and hasattr(matrix, "columns")):
        return None
    order = _order(provided_columns_names)
    if order is False:
        return None
    try:
        array = np.asarray(matrix)  # no dtype: strings or None must not be parsed here
    except (ValueError, TypeError):
        return None
    if array.ndim != 2 or array.shape[0] == 0 or array.dtype.kind not in _NUMERIC_KINDS:
        return None
    if array.shape[1] != len(_columns):
        return None
    # The model gets an array of its own, never a view of the caller's (it may write to it),
    # in the memory layout MLflow's own server gives the estimator (its sums can depend on
    # it): a bare array row-major as parsed, a DataFrame's values column-major.
    copy = order is None and (array is matrix or array.base is not None)
    if _tensor is not None:
        if order is not None:
            array = array[:, order]
        return np.array(array, dtype=_tensor, order="C", copy=True if copy else None)
    if order is not None:
        array = array.T[order].T
    return np.array(array, dtype=np.float64, order="F", copy=True if copy else None)


def predict_on_matrix(matrix, provided_columns_names=None):
    array = _fast_array(matrix, provided_columns_names)
    if array is None:
        frame = _frame(matrix, provided_columns_names)
        if _tensor is not None:
            data = np.ascontiguousarray(frame.to_numpy(dtype=_tensor))
        elif _frame_input:
            data = frame
        else:
            data = frame.to_numpy()
    elif _frame_input and _tensor is None and not _array_input:
        data = _named_frame(array)
    else:
        data = array
    return _rows(_predict(data))


def get_output_json_serializer():
    """For servers that json.dumps the raw output: numpy and pandas values as plain JSON."""

    class Encoder(json.JSONEncoder):
        def default(self, o):
            return _plain(o)

    return Encoder
