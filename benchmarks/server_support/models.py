"""The benchmark's two models, each logged with MLflow (sqlite store) and kept three ways:
the MLflow model folder (for `mlflow models serve`), a GPPI binary (for legion-ci) and a joblib
file (for MLServer's scikit-learn runtime).

- rf: RandomForestRegressor, 50 trees, on scikit-learn's bundled diabetes data.
- wine: the ElasticNet pipeline of examples/wine/train.py (same parameters) on the wine data.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class BenchModel:
    key: str
    mlflow_dir: Path
    gppi_dir: Path
    joblib_file: Path
    columns: list[str]
    rows: list[list[float]]  # real rows of the training data, for request bodies


def _train(key: str) -> tuple[Any, Any]:
    from sklearn.datasets import load_diabetes, load_wine

    if key == "rf":
        from sklearn.ensemble import RandomForestRegressor

        data = load_diabetes(as_frame=True)
        model = RandomForestRegressor(n_estimators=50, random_state=0)
        return model.fit(data.data, data.target), data.data
    from sklearn.linear_model import ElasticNet
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = load_wine(as_frame=True).frame.drop(columns=["target"])
    features = frame.drop(columns=["alcohol"])
    model = make_pipeline(
        StandardScaler(), ElasticNet(alpha=0.5, l1_ratio=0.1, max_iter=1000, random_state=42)
    )
    return model.fit(features, frame["alcohol"]), features


def build(workdir: Path, key: str) -> BenchModel:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import joblib
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from legion_ci.gppi.mlflow_convert import convert_mlflow_model

    base = workdir / key
    done = base / "done.json"
    if done.is_file():
        # The trained model is cached; its GPPI binary is not, so that it always carries the
        # current entrypoint template (what a fresh train stage would write).
        shutil.rmtree(base / "gppi", ignore_errors=True)
        convert_mlflow_model(
            base / "mlflow",
            base / "gppi",
            name=key,
            version="1",
            toolchain_version=mlflow.__version__,
        )
        meta = json.loads(done.read_text())
        return BenchModel(key, base / "mlflow", base / "gppi", base / "model.joblib", **meta)
    model, x = _train(key)
    base.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{base / 'mlflow.db'}")
    exp = mlflow.create_experiment(f"bench-{key}", artifact_location=(base / "art").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x.head(5))),
            input_example=x.head(3),
            serialization_format="cloudpickle",
        )
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(base / "dl")))
    os.replace(local, base / "mlflow")
    convert_mlflow_model(
        base / "mlflow", base / "gppi", name=key, version="1", toolchain_version=mlflow.__version__
    )
    joblib.dump(model, base / "model.joblib")
    meta = {"columns": [str(c) for c in x.columns], "rows": x.to_numpy().tolist()}
    done.write_text(json.dumps(meta))
    return BenchModel(key, base / "mlflow", base / "gppi", base / "model.joblib", **meta)
