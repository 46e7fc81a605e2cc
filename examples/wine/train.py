"""Train an ElasticNet on scikit-learn's bundled wine data and log it with MLflow.

Predicts a wine's alcohol content from its 12 other chemical measurements. The data ships
inside scikit-learn, so nothing is downloaded and training takes well under a second.
"""

from __future__ import annotations

import argparse

import mlflow
import mlflow.sklearn
import numpy as np
from mlflow.models import infer_signature
from sklearn.datasets import load_wine
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

TARGET = "alcohol"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--l1-ratio", type=float, default=0.1)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--test-size", type=float, default=0.25)
    args = parser.parse_args()

    frame = load_wine(as_frame=True).frame.drop(columns=["target"])
    features = frame.drop(columns=[TARGET])
    # The column order the model is trained on travels with the signature and input example;
    # the GPPI entrypoint restores it whatever order a caller sends.
    x_train, x_test, y_train, y_test = train_test_split(
        features, frame[TARGET], test_size=args.test_size, random_state=42
    )

    model = make_pipeline(
        StandardScaler(),
        ElasticNet(
            alpha=args.alpha, l1_ratio=args.l1_ratio, max_iter=args.max_iter, random_state=42
        ),
    )
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)

    rmse = float(np.sqrt(mean_squared_error(y_test, predicted)))
    mae = float(mean_absolute_error(y_test, predicted))
    r2 = float(r2_score(y_test, predicted))
    print(
        f"ElasticNet(alpha={args.alpha}, l1_ratio={args.l1_ratio}): rmse={rmse:.4f} "
        f"mae={mae:.4f} r2={r2:.4f}"
    )

    # `mlflow run` (and legion-ci) start the run and pass its id in MLFLOW_RUN_ID;
    # start_run() attaches to it.
    with mlflow.start_run():
        mlflow.log_metrics({"rmse": rmse, "mae": mae, "r2": r2})
        mlflow.set_tag("target", TARGET)
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x_train, model.predict(x_train.head(5))),
            input_example=x_train.head(3),
        )


if __name__ == "__main__":
    main()
