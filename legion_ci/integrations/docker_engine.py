"""Docker engine helpers both phases use: the packager (legion_ci.packaging) and the docker
deploy target (legion_ci.targets.docker) meet here instead of importing each other.

One-line engine errors, the errors of an engine that went away, the error in a chunk of its
JSON stream, a free port for a container on the host network, and the model's example read
from inside an image. The Docker SDK is imported
inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

from legion_ci.errors import StageError


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def api_error_text(exc: Exception) -> str:
    """A Docker SDK error in one line: the engine's explanation when it gave one."""
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return one_line(explanation if explanation else exc)


def connection_errors() -> tuple[type[Exception], ...]:
    """What the Docker SDK raises when the engine goes away mid-call (a killed dockerd cuts a
    build stream with urllib3's ProtocolError, which is neither an APIError nor an OSError)."""
    import requests
    import urllib3
    from docker.errors import DockerException

    return (DockerException, requests.exceptions.RequestException, urllib3.exceptions.HTTPError)


def lost_engine_text(exc: Exception) -> str:
    return f"the Docker engine stopped answering ({type(exc).__name__}: {api_error_text(exc)})"


def stream_error(chunk: dict[str, Any]) -> str | None:
    """The error a chunk of the engine's JSON stream (build, push) reports, if any."""
    detail = chunk.get("errorDetail")
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"]).strip()
    if chunk.get("error"):
        return str(chunk["error"]).strip()
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Example:
    columns: list[str]
    rows: list[list[Any]]
    output_columns: list[str]


def is_podman(client: Any) -> bool:
    """True when the Docker API answering is podman's (`podman system service`)."""
    components = client.version().get("Components") or []
    return any(str(c.get("Name", "")).startswith("Podman") for c in components)


def engine_ulimits(client: Any) -> list[Any]:
    """Ulimits to ask for explicitly. podman gives containers nofile=1048576 by default, which
    its runtime cannot set above the service's own hard limit without CAP_SYS_RESOURCE (an
    agent pod, a container): the agent's own limits then, and a process cap a model server
    never reaches (as the buildah smoke test does). dockerd's containers inherit its limits."""
    if not is_podman(client):
        return []
    import resource

    from docker.types import Ulimit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [Ulimit(name="nofile", soft=soft, hard=hard), Ulimit(name="nproc", soft=4096, hard=4096)]


def model_example(client: Any, image_id: str) -> Example:
    """The example row from the binary's info(), read inside the image itself (no network,
    read-only root): the agent needs none of the model's dependencies."""
    from docker.errors import APIError, ContainerError

    try:
        raw = client.containers.run(
            image_id,
            ["legion-ci", "model", "info", "/model", "--json"],
            remove=True,
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m"},
            ulimits=engine_ulimits(client) or None,  # None: dockerd as before
            stdout=True,
            stderr=False,
        )
    except ContainerError as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        reason = (stderr.strip().splitlines() or [f"exit {exc.exit_status}"])[-1]
        raise StageError(
            f"smoke test: the image cannot read the model's info(): {one_line(reason)}; "
            "the image is not pushed"
        ) from None
    except APIError as exc:
        raise StageError(f"smoke test: cannot start the image: {api_error_text(exc)}") from None
    return example_from_info(raw)


def example_from_info(raw: bytes | str) -> Example:
    """The example row from `legion-ci model info --json` output (any engine ran it)."""
    try:
        info = json.loads(raw)
        fields = info.get("input") or []
        return Example(
            columns=[f["name"] for f in fields],
            rows=[[f.get("example") for f in fields]],
            output_columns=[f["name"] for f in info.get("outputs") or []],
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        text = one_line(raw.decode(errors="replace") if isinstance(raw, bytes) else raw, 200)
        raise StageError(f"smoke test: the image's `model info` printed {text}") from None
