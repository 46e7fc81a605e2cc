"""What the packager asks of a Docker engine to make the image: the base image, and the build.

Every call goes through the Docker SDK client made by legion_ci.integrations.clients. The
build's JSON stream is read to its end and every `error` / `errorDetail` in it fails the
stage. The smoke test of the built image is in image_smoke.py, the push in push.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.docker_engine import (
    api_error_text,
    connection_errors,
    lost_engine_text,
    one_line,
    stream_error,
)
from legion_ci.processes import StageLog

_STEP = re.compile(r"^Step \d+/\d+ : ")


# -- base image --------------------------------------------------------------------------------
def ensure_base_image(
    client: Any, base_image: str, log: StageLog, auth_config: dict[str, str] | None = None
) -> None:
    """The base must be on the engine, or pullable (with a docker-pull target's credentials);
    otherwise say how to fix it."""
    from docker.errors import APIError, ImageNotFound

    try:
        client.images.get(base_image)
        return
    except ImageNotFound:
        pass
    log.line(f"base image {base_image} is not on the engine: pulling it")
    try:
        client.images.pull(base_image, auth_config=auth_config)
    except APIError as exc:
        raise StageError(
            f"base image {base_image!r} is not on the Docker engine and cannot be pulled "
            f"({api_error_text(exc)}): load it (docker load / docker import) or set "
            "arguments.baseImage"
        ) from None


def base_digest(client: Any, base_image: str) -> str | None:
    """The manifest digest the base was pulled by, when it came from a registry (an imported
    or locally built base has none)."""
    found = client.images.get(base_image).attrs.get("RepoDigests") or []
    digests = sorted(str(d).split("@", 1)[1] for d in found if "@" in str(d))
    return digests[0] if digests else None


# -- build -------------------------------------------------------------------------------------
@dataclass
class BuildResult:
    image_id: str
    steps: int  # Dockerfile steps the builder ran or took from its cache
    cached_steps: int  # of those, taken from the cache


class _LineSplitter:
    """The build stream cuts lines anywhere; the stage log gets whole lines as they complete."""

    def __init__(self, log: StageLog):
        self.log = log
        self.pending = ""

    def feed(self, text: str) -> Iterator[str]:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            line = line.rstrip("\r")
            if line.strip():
                self.log.line(line)
                yield line

    def flush(self) -> Iterator[str]:
        if self.pending.strip():
            self.log.line(self.pending)
            yield self.pending
        self.pending = ""


def build(client: Any, context_dir: str, tag: str, log: StageLog) -> BuildResult:
    """Build with the legacy builder (no BuildKit) on the host network, streaming the log."""
    from docker.errors import APIError

    log.line(f"$ docker build --network host -t {tag} {context_dir}")
    image_id = None
    steps = cached = 0
    last_lines: list[str] = []
    splitter = _LineSplitter(log)
    try:
        stream = client.api.build(
            path=str(context_dir),
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode="host",
            decode=True,
        )
        for chunk in stream:
            error = stream_error(chunk)
            if error:
                list(splitter.flush())
                log.line(f"ERROR: {error}")
                raise StageError(f"docker build failed: {one_line(error)}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
            for line in splitter.feed(str(chunk.get("stream", ""))):
                last_lines = [*last_lines[-19:], line]
                if _STEP.match(line):
                    steps += 1
                elif line.strip() == "---> Using cache":
                    cached += 1
        list(splitter.flush())
    except APIError as exc:
        raise StageError(f"docker build failed: {api_error_text(exc)}") from None
    except connection_errors() as exc:
        raise StageError(f"docker build failed: {lost_engine_text(exc)}") from None
    if image_id is None:
        built = [ln for ln in last_lines if ln.startswith("Successfully built ")]
        if not built:
            raise StageError("docker build ended without an image id; see the stage log")
        image_id = built[-1].split()[-1]
    return BuildResult(image_id=image_id, steps=steps, cached_steps=cached)
