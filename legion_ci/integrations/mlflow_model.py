"""Finding the model an MLflow run logged and converting it to a GPPI folder, for the
`mlflow` toolchain (legion_ci.integrations.mlflow_trainer runs the project, then hands the
run to RunModels).

MLflow is imported only inside the methods, as in the trainer: validation never pays for it.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.base import TrainContext


def is_remote(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).scheme in ("http", "https", "databricks")


@dataclass(frozen=True)
class FoundModel:
    uri: str  # models:/<id> (MLflow 3 logged model) or runs:/<run id>/<path>
    location: str  # where its files are, for download_artifacts
    name: str  # what the user recognises: the logged model's name or its artifact path
    label: str
    flavors: tuple[str, ...]
    identity: str  # model_id/model_uuid, to count a model seen twice once

    @property
    def is_pyfunc(self) -> bool:
        return "python_function" in self.flavors


def mlflow_error(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:500]


class RunModels:
    """The models of one training run: every one it logged, the one to package, and its
    conversion into the binary's folder."""

    def __init__(self, client: Any, ctx: TrainContext, arguments: dict[str, Any], where: str):
        self.client = client  # the run's MlflowClient
        self.ctx = ctx
        self.arguments = arguments
        self.where = where  # the tracking URI without credentials

    def _models(self, run_id: str, experiment_id: str) -> list[FoundModel]:
        """Every MLflow model the run logged: MLflow 3 logged models and MLmodel folders
        among the run's own artifacts (MLflow 2, or save_model + log_artifacts)."""
        found: dict[str, FoundModel] = {}
        search = getattr(self.client, "search_logged_models", None)
        token = None
        while search is not None:
            try:
                page = search(
                    experiment_ids=[str(experiment_id)],
                    filter_string=f"source_run_id = '{run_id}'",
                    page_token=token,
                )
            except Exception as exc:  # an MLflow 2 server has no logged-model API
                self.ctx.log.line(f"mlflow: no logged-model search ({mlflow_error(exc)})")
                break
            for logged in page:
                mlmodel = self._mlmodel(logged.artifact_location)
                if mlmodel is None:
                    continue  # an external model with no files: nothing to package
                found.setdefault(
                    logged.model_id,
                    FoundModel(
                        uri=f"models:/{logged.model_id}",
                        location=logged.artifact_location,
                        name=logged.name,
                        label=f"{logged.name!r} ({logged.model_id})",
                        flavors=tuple(sorted(mlmodel.get("flavors") or {})),
                        identity=logged.model_id,
                    ),
                )
            token = getattr(page, "token", None)
            if not token:
                break
        for path in self._mlmodel_dirs(run_id, "", depth=0):
            uri = f"runs:/{run_id}/{path}" if path else f"runs:/{run_id}"
            mlmodel = self._mlmodel(uri)
            if mlmodel is None:
                continue
            identity = str(mlmodel.get("model_id") or mlmodel.get("model_uuid") or uri)
            found.setdefault(
                identity,
                FoundModel(
                    uri=uri,
                    location=uri,
                    name=path,
                    label=f"artifact path {path or '.'!r}",
                    flavors=tuple(sorted(mlmodel.get("flavors") or {})),
                    identity=identity,
                ),
            )
        return list(found.values())

    def _mlmodel_dirs(self, run_id: str, path: str, depth: int) -> list[str]:
        if depth > 4:  # models sit at the top or a level or two down; don't crawl datasets
            return []
        try:
            entries = self.client.list_artifacts(run_id, path or None)
        except Exception:
            return []
        if any(not e.is_dir and Path(e.path).name == "MLmodel" for e in entries):
            return [path]
        dirs: list[str] = []
        for entry in entries:
            if entry.is_dir:
                dirs += self._mlmodel_dirs(run_id, entry.path, depth + 1)
        return dirs

    def _mlmodel(self, uri: str) -> dict[str, Any] | None:
        import yaml
        from mlflow.artifacts import download_artifacts

        target = self.ctx.scratch_dir / "mlmodel" / str(abs(hash(uri)))
        target.mkdir(parents=True, exist_ok=True)
        try:
            local = download_artifacts(
                artifact_uri=f"{uri.rstrip('/')}/MLmodel",
                dst_path=str(target),
                tracking_uri=self.ctx.tracking_uri,
            )
            data = yaml.safe_load(Path(local).read_text(encoding="utf-8"))
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    def single(self, run_id: str, experiment_id: str) -> FoundModel:
        try:
            models = self._models(run_id, experiment_id)
        except Exception as exc:
            raise StageError(
                f"mlflow: cannot list the models of run {run_id}: {mlflow_error(exc)}"
            ) from None
        wanted = self.arguments.get("model")
        if wanted:
            chosen = [m for m in models if str(wanted) in (m.identity, m.name)]
            if not chosen:
                listed = "; ".join(f"{m.label}" for m in models) or "none"
                raise StageError(
                    f"mlflow: run {run_id} logged no model named {wanted!r} "
                    f"(arguments.model); it logged: {listed}"
                )
            models = chosen
        pyfunc = [m for m in models if m.is_pyfunc]
        if len(pyfunc) == 1:
            return pyfunc[0]
        listed = "; ".join(f"{m.label} [flavors: {', '.join(m.flavors) or 'none'}]" for m in models)
        if not models:
            raise StageError(
                f"mlflow: run {run_id} logged no model; the training must log one, "
                "e.g. mlflow.sklearn.log_model(model, name='model', input_example=...)"
            )
        if not pyfunc:
            raise StageError(
                f"mlflow: run {run_id} logged no python_function (pyfunc) model, only: {listed}"
            )
        raise StageError(
            f"mlflow: run {run_id} logged {len(pyfunc)} pyfunc models, expected one: {listed}; "
            "log one, or pick one with arguments.model"
        )

    def convert(self, model: FoundModel, run_id: str, experiment_id: str) -> None:
        import mlflow
        from mlflow.artifacts import download_artifacts

        from legion_ci.gppi.mlflow_convert import convert_mlflow_model

        ctx = self.ctx
        dest = ctx.scratch_dir / "mlflow-model"
        dest.mkdir(parents=True, exist_ok=True)
        try:
            local = download_artifacts(
                artifact_uri=model.location, dst_path=str(dest), tracking_uri=ctx.tracking_uri
            )
        except Exception as exc:
            raise StageError(
                f"mlflow: cannot download model {model.uri}: {mlflow_error(exc)}"
            ) from None
        convert_mlflow_model(
            Path(local),
            ctx.output_dir,
            name=ctx.model_name,
            version=ctx.model_version,
            toolchain_version=mlflow.__version__,
            output={
                "run_id": run_id,
                "experiment_id": str(experiment_id),
                "model_uri": model.uri,
                # A local store's URI is a path of the machine that trained the model: it
                # means nothing where the binary is served, so it stays in the run record only.
                **({"tracking_uri": self.where} if is_remote(self.where) else {}),
            },
        )
