"""The built image's smoke test: run it, wait until ready, invoke the binary's example.

An image that fails it is never pushed. The container runs on a free 127.0.0.1 port on the
host network with a read-only root file system, as the docker deploy target runs it.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.docker_engine import Example, api_error_text, free_port, one_line
from legion_ci.packaging.dockerfile import SERVE_HOST_ENV, SERVE_PORT_ENV
from legion_ci.processes import StageLog


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
    handle = _DockerContainer(container, name, log)
    try:
        return wait_and_invoke(handle, base, port, example, log, timeout=timeout)
    finally:
        handle.remove()


class _DockerContainer:
    """A container run by the Docker engine, as wait_and_invoke sees one (podman has its own,
    in packaging/buildah.py)."""

    def __init__(self, container: Any, name: str, log: StageLog) -> None:
        self.container, self.name, self.log = container, name, log

    def exit_code(self) -> int | None:
        self.container.reload()
        if self.container.status in ("exited", "dead"):
            return self.container.attrs.get("State", {}).get("ExitCode")
        return None

    def logs(self, lines: int) -> str:
        return self.container.logs(tail=lines).decode(errors="replace")

    def remove(self) -> None:
        from docker.errors import APIError

        try:
            self.container.remove(force=True)
        except APIError as exc:
            self.log.line(
                f"smoke test: could not remove container {self.name}: {api_error_text(exc)}"
            )


def wait_and_invoke(
    container: Any, base: str, port: int, example: Example, log: StageLog, *, timeout: float
) -> dict[str, Any]:
    """Wait until the server at `base` is ready (failing early if `container` exits), invoke it
    with the binary's example and check the answer; the caller removes the container."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        try:
            status, _ = _http("GET", f"{base}/readyz", timeout=2)
        except OSError:
            status = 0
        if status == 200:
            break
        code = container.exit_code()
        if code is not None:
            _log_container(container, log)
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
        tail = container.logs(lines)
    except Exception:  # the container may be gone already; the stage error says enough
        return
    log.line("smoke test: the container's last log lines:")
    for line in tail.splitlines():
        log.line(f"  | {line}")
