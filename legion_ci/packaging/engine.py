"""What the packager asks of a Docker engine: build, smoke-test, log in, push, prove the digest.

Every call goes through the Docker SDK client made by legion_ci.integrations.clients; the
helpers the docker deploy target needs too live in legion_ci.integrations.docker_engine. The
engine's JSON streams are read to their end and every `error` / `errorDetail` in them fails the
stage: a push that reports an error is never taken for a success.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.clients import RegistryAuth
from legion_ci.integrations.docker_engine import (
    Example,
    api_error_text,
    connection_errors,
    free_port,
    lost_engine_text,
    one_line,
)
from legion_ci.packaging.dockerfile import SERVE_HOST_ENV, SERVE_PORT_ENV
from legion_ci.runner.process import StageLog

_STEP = re.compile(r"^Step \d+/\d+ : ")


def _error_of(chunk: dict[str, Any]) -> str | None:
    detail = chunk.get("errorDetail")
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"]).strip()
    if chunk.get("error"):
        return str(chunk["error"]).strip()
    return None


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
            error = _error_of(chunk)
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


# -- smoke test --------------------------------------------------------------------------------
def _http(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def smoke_test(
    client: Any, image_id: str, example: Example, log: StageLog, *, timeout: float, name: str
) -> dict[str, Any]:
    """Run the image on a free 127.0.0.1 port (host network, read-only root), wait until it is
    ready, invoke it with the binary's example and check the answer; always remove it."""
    from docker.errors import APIError, NotFound

    with contextlib.suppress(NotFound):  # left behind by a run that was killed mid-test
        client.containers.get(name).remove(force=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log.line(f"smoke test: running {image_id[:19]} on {base} (read-only root file system)")
    try:
        container = client.containers.run(
            image_id,
            detach=True,
            name=name,
            network_mode="host",
            environment={SERVE_HOST_ENV: "127.0.0.1", SERVE_PORT_ENV: str(port)},
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m"},
            labels={"legion-ci.smoke-test": "true"},
        )
    except APIError as exc:
        raise StageError(f"smoke test: cannot start the image: {api_error_text(exc)}") from None
    started = time.monotonic()
    try:
        deadline = started + timeout
        while True:
            try:
                status, _ = _http("GET", f"{base}/readyz", timeout=2)
            except OSError:
                status = 0
            if status == 200:
                break
            container.reload()
            if container.status in ("exited", "dead"):
                _log_container(container, log)
                code = container.attrs.get("State", {}).get("ExitCode")
                raise StageError(
                    f"smoke test: the image's server exited with {code} before it was ready; "
                    "the image is not pushed"
                )
            if time.monotonic() > deadline:
                _log_container(container, log)
                raise StageError(
                    f"smoke test: the image's server was not ready within {timeout:g} s; "
                    "the image is not pushed"
                )
            time.sleep(0.1)
        ready_s = time.monotonic() - started
        log.line(f"smoke test: ready after {ready_s:.2f} s")
        body = {"columns": example.columns, "data": example.rows}
        try:
            status, raw = _http("POST", f"{base}/api/model/invoke", body, timeout=30)
        except OSError as exc:
            raise StageError(f"smoke test: invoke failed: {exc}; the image is not pushed") from None
        problem = _check_answer(status, raw, example)
        if problem:
            _log_container(container, log)
            raise StageError(f"smoke test: {problem}; the image is not pushed")
        log.line(f"smoke test: invoke answered {one_line(raw.decode(errors='replace'), 200)}")
        return {"ready_s": round(ready_s, 3), "port": port}
    finally:
        try:
            container.remove(force=True)
        except APIError as exc:
            log.line(f"smoke test: could not remove container {name}: {api_error_text(exc)}")


def _check_answer(status: int, raw: bytes, example: Example) -> str | None:
    text = one_line(raw.decode(errors="replace"), 200)
    if status != 200:
        return f"invoke with the binary's example answered HTTP {status}: {text}"
    try:
        answer = json.loads(raw)
    except ValueError:
        return f"invoke answered something that is not JSON: {text}"
    prediction = answer.get("prediction") if isinstance(answer, dict) else None
    if not isinstance(prediction, list) or len(prediction) != len(example.rows):
        return f"invoke answered {text}, not one prediction row per example row"
    if example.output_columns and answer.get("columns") != example.output_columns:
        return (
            f"invoke answered columns {answer.get('columns')}, "
            f"the binary's info() says {example.output_columns}"
        )
    return None


def _log_container(container: Any, log: StageLog, lines: int = 30) -> None:
    try:
        tail = container.logs(tail=lines).decode(errors="replace")
    except Exception:  # the container may be gone already; the stage error says enough
        return
    log.line("smoke test: the container's last log lines:")
    for line in tail.splitlines():
        log.line(f"  | {line}")


# -- registry ----------------------------------------------------------------------------------
def _split_reference(reference: str) -> tuple[str, str]:
    """`host:5000/name:tag` -> (`host:5000/name`, `tag`)."""
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, "latest"


def push(client: Any, reference: str, auth: RegistryAuth, log: StageLog) -> str:
    """Push `reference`, read the stream to its end, return the digest the registry gave."""
    from docker.errors import APIError

    repository, tag = _split_reference(reference)
    log.line(f"$ docker push {reference}")
    digest = None
    seen: set[tuple[str, str]] = set()
    try:
        stream: Iterable[dict[str, Any]] = client.api.push(
            repository, tag=tag, stream=True, decode=True, auth_config=auth.auth_config()
        )
        for chunk in stream:
            error = _error_of(chunk)
            if error:
                raise StageError(f"push of {reference} failed: {one_line(error)}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
            status = str(chunk.get("status", ""))
            key = (str(chunk.get("id", "")), status)
            if status and key not in seen and not chunk.get("progressDetail", {}).get("total"):
                seen.add(key)
                log.line(f"{key[0]}: {status}" if key[0] else status)
    except APIError as exc:
        raise StageError(f"push of {reference} failed: {api_error_text(exc)}") from None
    except connection_errors() as exc:
        raise StageError(f"push of {reference} failed: {lost_engine_text(exc)}") from None
    except OSError as exc:
        raise StageError(f"push of {reference} failed: {exc}") from None
    if not digest:
        raise StageError(f"push of {reference}: the registry returned no digest")
    return digest


def verify_digest(
    client: Any, repository: str, digest: str, auth: RegistryAuth, image_id: str, log: StageLog
) -> str:
    """Pull `repository@digest` back through the engine (which checks the manifest against
    the digest) and check it is the image that was built."""
    from docker.errors import APIError

    reference = f"{repository}@{digest}"
    try:
        pulled = client.images.pull(reference, auth_config=auth.auth_config())
    except APIError as exc:
        raise StageError(f"pull of {reference} failed: {api_error_text(exc)}") from None
    if pulled.id != image_id:
        raise StageError(f"{reference} is image {pulled.id}, not the image just built ({image_id})")
    log.line(f"verified: {reference} pulls back as {image_id}")
    return reference
