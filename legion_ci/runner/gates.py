"""Quality gates on training metrics, and the baseline they and the reports compare with."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from legion_ci.errors import GateError, InputError


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def load_baseline(
    spec: Any, base_dir: Path, workspace: Path, current_run: str, model: dict[str, str]
) -> tuple[dict[str, float], str] | None:
    """The baseline metrics and where they came from, or None when none is configured/found.

    `{run: latest}` is the latest succeeded run of the same model (by name, so a new version
    compares with the previous one): two pipelines sharing a workspace never compare with
    each other's runs."""
    if spec is None:
        return None
    if isinstance(spec, str):
        path = base_dir / spec
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{spec}: baseline cannot be read: {exc.strerror}") from None
        except ValueError as exc:
            raise InputError(f"{spec}: baseline is not valid JSON: {exc}") from None
        # Accept a plain {metric: value}, {"metrics": {...}} or a legion-ci summary.json.
        if isinstance(data, dict) and isinstance(data.get("stages"), dict):
            data = (data["stages"].get("train") or {}).get("metrics") or {}
        elif isinstance(data, dict) and isinstance(data.get("metrics"), dict):
            data = data["metrics"]
        if not isinstance(data, dict):
            raise InputError(f"{spec}: baseline must be a JSON object of metric: number")
        metrics = {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
        return metrics, spec
    from legion_ci.records import SUCCEEDED, list_records

    wanted = spec.get("run", "latest")
    for record in reversed(list_records(workspace)):
        if record.id == current_run:
            continue
        if wanted == "latest" and record.model.get("name") != model["name"]:
            continue
        train = record.stages.get("train")
        if train is None or train.status != SUCCEEDED:
            continue
        if wanted in ("latest", record.id):
            if record.model.get("name") != model["name"]:
                raise InputError(
                    f"baseline run {wanted} is of model {record.model.get('name')!r},"
                    f" not {model['name']!r}"
                )
            return dict(train.metrics), f"run {record.id}"
    if wanted != "latest":
        raise InputError(f"baseline run {wanted!r} not found among succeeded runs in {workspace}")
    return None


def evaluate_gates(
    gates: dict[str, dict[str, float]],
    metrics: dict[str, float],
    baseline: dict[str, float] | None,
) -> list[dict[str, Any]]:
    """Check each gate; returns one result per bound (see `raise_on_failures`)."""
    results: list[dict[str, Any]] = []
    for metric, bounds in gates.items():
        if metric not in metrics:
            logged = ", ".join(sorted(metrics)) or "none"
            message = (
                f"metric {metric!r} named in a gate was never logged by the run; logged: {logged}"
            )
            results.append({"metric": metric, "ok": False, "message": message})
            continue
        value = metrics[metric]
        for bound, limit in bounds.items():
            ok, message = _check(metric, value, bound, float(limit), baseline)
            results.append(
                {
                    "metric": metric,
                    "value": value,
                    "bound": bound,
                    "limit": limit,
                    "ok": ok,
                    "message": message,
                }
            )
    return results


def raise_on_failures(results: list[dict[str, Any]]) -> None:
    failures = [r["message"] for r in results if not r["ok"]]
    if failures:
        raise GateError("quality gate failed: " + "; ".join(failures))


def _check(
    metric: str, value: float, bound: str, limit: float, baseline: dict[str, float] | None
) -> tuple[bool, str]:
    if math.isnan(value):
        return False, f"{metric} = nan"
    if bound == "max":
        ok = value <= limit
        return ok, f"{metric} = {_fmt(value)} {'<=' if ok else '>'} max {_fmt(limit)}"
    if bound == "min":
        ok = value >= limit
        return ok, f"{metric} = {_fmt(value)} {'>=' if ok else '<'} min {_fmt(limit)}"
    if baseline is None or metric not in baseline:
        return False, f"{metric}: {bound} needs a baseline value, and there is none"
    delta = value - baseline[metric]
    if bound == "maxIncrease":
        ok = delta <= limit
        return ok, (
            f"{metric} = {_fmt(value)}, {_fmt(delta):>} over baseline {_fmt(baseline[metric])}"
            f" {'<=' if ok else '>'} maxIncrease {_fmt(limit)}"
        )
    ok = -delta <= limit
    return ok, (
        f"{metric} = {_fmt(value)}, {_fmt(-delta)} under baseline {_fmt(baseline[metric])}"
        f" {'<=' if ok else '>'} maxDecrease {_fmt(limit)}"
    )
