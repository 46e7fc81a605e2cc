"""Apache Airflow operators for legion-ci (`pip install legion-ci[airflow]`).

Importing this package imports Airflow; `import legion_ci` never imports it. Each operator
runs the real `legion-ci` in a child process, so the Airflow environment needs only Airflow
and this package, and legion-ci itself may live in another virtual environment.
"""

from __future__ import annotations

from legion_ci.airflow.operators import (
    LegionCIOperator,
    LegionDeployOperator,
    LegionPackageOperator,
    LegionTrainOperator,
    run_id_of,
)
from legion_ci.airflow.stages import pipeline_stages

__all__ = [
    "LegionCIOperator",
    "LegionDeployOperator",
    "LegionPackageOperator",
    "LegionTrainOperator",
    "pipeline_stages",
    "run_id_of",
]
