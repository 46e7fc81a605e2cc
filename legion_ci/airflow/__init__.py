"""Apache Airflow operators for legion-ci (`pip install legion-ci[airflow]`).

Each operator runs the real `legion-ci` in a child process, so the Airflow environment needs
only Airflow and this package; legion-ci itself may live in another virtual environment.
The operators (and so Airflow) are imported on first use: `import legion_ci` never imports
Airflow, and the Airflow-free helpers (`legion_ci.airflow.command`) import without it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LegionCIOperator",
    "LegionDeployOperator",
    "LegionPackageOperator",
    "LegionTrainOperator",
    "pipeline_stages",
    "run_id_of",
]


def __getattr__(name: str) -> Any:
    if name == "pipeline_stages":
        from legion_ci.airflow.stages import pipeline_stages

        return pipeline_stages
    if name in __all__:
        from legion_ci.airflow import operators

        return getattr(operators, name)
    raise AttributeError(name)
