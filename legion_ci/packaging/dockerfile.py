"""The model image's Dockerfile, rendered from templates/Dockerfile.in.

The template is a plain Dockerfile with `{{name}}` markers, so what gets built can be read in
one file; every marker is filled here, and a marker left unfilled is a bug caught at render.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources

# The variables `legion-ci serve` reads (its options' envvars in legion_ci/cli/serve.py).
SERVE_HOST_ENV = "LEGION_SERVE_HOST"
SERVE_PORT_ENV = "LEGION_SERVE_PORT"
SERVE_WORKERS_ENV = "LEGION_SERVE_WORKERS"
FEEDBACK_DB_ENV = "LEGION_FEEDBACK_DB"
_MARKER = re.compile(r"\{\{(\w+)\}\}")


@dataclass
class ImageSpec:
    model_name: str
    model_version: str
    image: str  # the reference the image is tagged with
    base_image: str
    legion_ci_wheel: str  # file name inside wheels/
    port: int = 5000
    workers: int = 1
    keep_test_suites: bool = False  # arguments.keepTestSuites
    labels: dict[str, str] = field(default_factory=dict)


def serve_env(spec: ImageSpec) -> dict[str, str]:
    return {
        SERVE_HOST_ENV: "0.0.0.0",  # inside a container only; the port mapping decides exposure
        SERVE_PORT_ENV: str(spec.port),
        SERVE_WORKERS_ENV: str(spec.workers),
        FEEDBACK_DB_ENV: "/tmp/legion/feedback.sqlite3",
    }


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def render(spec: ImageSpec) -> str:
    env_lines = [f"    {key}={_quote(value)}" for key, value in serve_env(spec).items()]
    label_lines = [f"{key}={_quote(value)}" for key, value in sorted(spec.labels.items())]
    # The packages' own test suites out before compileall, so they are not compiled either.
    slim_step = (
        ""
        if spec.keep_test_suites
        else " && /opt/legion/venv/bin/python -I -m legion_ci.packaging.slim_venv"
        " /opt/legion/venv/lib \\\n"
    )
    values = {
        "slim_step": slim_step,
        "model_name": spec.model_name,
        "model_version": spec.model_version,
        "image": spec.image,
        "base_image": spec.base_image,
        "legion_ci_wheel": spec.legion_ci_wheel,
        "port": str(spec.port),
        "serve_env": " \\\n".join(env_lines),
        "labels": " \\\n      ".join(label_lines) if label_lines else 'legion.model="unknown"',
    }
    template = resources.files("legion_ci.packaging").joinpath("templates/Dockerfile.in")

    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]  # KeyError: a marker this module does not know

    return _MARKER.sub(fill, template.read_text(encoding="utf-8"))
