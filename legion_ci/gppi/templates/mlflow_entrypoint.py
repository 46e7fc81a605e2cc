"""GPPI entrypoint for a model logged with MLflow (written by legion-ci's mlflow toolchain).

The model's MLflow folder sits in ./model beside this file ($MODEL_LOCATION/model).
scikit-learn models are unpickled directly so the server starts without importing MLflow;
every other flavour goes through mlflow.pyfunc.
"""

import json
import os

_model = None
_columns = None
_input_schema = []
_output_schema = []
_output_names = ["prediction"]
_feature_names = False


def _location():
    return os.path.join(os.environ.get("MODEL_LOCATION", os.path.dirname(__file__)), "model")


def _read_mlmodel(folder):
    import yaml

    with open(os.path.join(folder, "MLmodel"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _load_example(folder, mlmodel):
    info = mlmodel.get("saved_input_example_info") or {}
    path = os.path.join(folder, info.get("artifact_path") or "input_example.json")
    if not os.path.isfile(path):
        return None, None
    with open(path, encoding="utf-8") as handle:
        example = json.load(handle)
    if isinstance(example, dict) and "dataframe_split" in example:
        example = example["dataframe_split"]
    if isinstance(example, dict) and "columns" in example and "data" in example:
        return list(example["columns"]), example["data"][0] if example["data"] else None
    if isinstance(example, list) and example and isinstance(example[0], dict):
        return list(example[0].keys()), list(example[0].values())
    if isinstance(example, dict):
        return list(example.keys()), [
            v[0] if isinstance(v, list) and v else v for v in example.values()
        ]
    return None, None


_TYPES = {
    "double": "number",
    "float": "number",
    "long": "integer",
    "integer": "integer",
    "boolean": "boolean",
    "string": "string",
    "datetime": "string",
    "binary": "string",
}


def init():
    global _model, _columns, _input_schema, _output_schema, _output_names, _feature_names
    folder = _location()
    mlmodel = _read_mlmodel(folder)
    flavors = mlmodel.get("flavors") or {}
    sklearn = flavors.get("sklearn")
    fmt = (sklearn or {}).get("serialization_format", "cloudpickle")
    if sklearn and fmt in ("pickle", "cloudpickle", "skops"):
        path = os.path.join(folder, sklearn.get("pickled_model", "model.pkl"))
        if fmt == "skops":
            import skops.io

            # The binary is code already (this file); trusting its own model adds no risk.
            trusted = skops.io.get_untrusted_types(file=path)
            _model = skops.io.load(path, trusted=trusted)
        else:
            try:
                import cloudpickle as loader
            except ImportError:
                import pickle as loader
            with open(path, "rb") as handle:
                _model = loader.load(handle)
        _feature_names = hasattr(_model, "feature_names_in_")
    else:
        import mlflow.pyfunc

        _model = mlflow.pyfunc.load_model(folder)
        _feature_names = True

    signature = mlmodel.get("signature") or {}
    inputs = json.loads(signature["inputs"]) if signature.get("inputs") else []
    outputs = json.loads(signature["outputs"]) if signature.get("outputs") else []
    ex_columns, ex_row = _load_example(folder, mlmodel)
    named = [c for c in inputs if c.get("name")]
    if named:
        _columns = [c["name"] for c in named]
    elif ex_columns:
        _columns = ex_columns
    elif hasattr(_model, "feature_names_in_"):
        _columns = [str(c) for c in _model.feature_names_in_]
    else:
        raise RuntimeError(
            "the MLflow model has neither a signature with column names nor an input example:"
            " log it with signature=... or input_example=..."
        )
    examples = dict(zip(ex_columns or [], ex_row or [], strict=False))
    types = {c["name"]: c.get("type", "double") for c in named}
    _input_schema = [
        {
            "name": name,
            "type": _TYPES.get(types.get(name, "double"), "string"),
            "required": True,
            "example": examples.get(name, 0.0 if types.get(name, "double") != "string" else ""),
        }
        for name in _columns
    ]
    out_named = [c for c in outputs if c.get("name")]
    _output_names = [c["name"] for c in out_named] or ["prediction"]
    _output_schema = [
        {"name": name, "type": "number", "required": True, "example": None}
        for name in _output_names
    ]
    return "matrix"


def info():
    return _input_schema, _output_schema


def predict_on_matrix(matrix, provided_columns_names=None):
    import pandas as pd

    columns = list(provided_columns_names) if provided_columns_names else _columns
    frame = pd.DataFrame(matrix, columns=columns)
    if columns != _columns:
        frame = frame[_columns]
    result = _model.predict(frame if _feature_names else frame.to_numpy())
    if hasattr(result, "columns"):
        return result, [str(c) for c in result.columns]
    return result, _output_names
