"""Readiness and smoke tests of a served model over HTTP, shared by the targets.

The smoke test sends the example row from the binary's `info()` to `POST /api/model/invoke`
and expects `{"prediction": [[...]], "columns": [...]}` with one row back.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError


def example_request(artifact: Path) -> dict[str, Any]:
    """`{"columns": [...], "data": [[...]]}` from the binary's info(), read in a fresh
    interpreter (`legion-ci model info --json`) so the model's imports stay out of the stage."""
    proc = subprocess.run(
        [sys.executable, "-m", "legion_ci.cli.main", "model", "info", str(artifact), "--json"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise StageError(f"{artifact}: cannot read the model's example from info(): {last}")
    info = json.loads(proc.stdout)
    fields = info["input"]
    return {"columns": [f["name"] for f in fields], "data": [[f["example"] for f in fields]]}


def _split(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def request(
    url: str, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; raises OSError when nothing answers."""
    host, port = _split(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_ready(
    url: str,
    timeout: float,
    *,
    alive: Callable[[], str | None] = lambda: None,
    ready: Callable[[], bool] = lambda: True,
) -> float:
    """Poll `GET /healthcheck` until 200 (and `ready()`); returns the seconds it took.

    `alive()` returns why the server is gone (it exited), which fails at once instead of
    waiting out the timeout.
    """
    began = time.monotonic()
    while True:
        gone = alive()
        if gone:
            raise StageError(gone)
        if ready():
            try:
                if request(url, "GET", "/healthcheck", timeout=5)[0] == 200:
                    return time.monotonic() - began
            except OSError:
                pass
        if time.monotonic() - began > timeout:
            raise StageError(f"not ready within {timeout:g} s (GET {url}/healthcheck)")
        time.sleep(0.05)


def smoke_test(url: str, payload: dict[str, Any], *, times: int = 1) -> dict[str, Any]:
    """Invoke the model `times` times on fresh connections; every answer must be a prediction
    with one row per input row. Returns the last answer. Raises StageError naming what was
    wrong."""
    answer: dict[str, Any] = {}
    for _ in range(times):
        try:
            status, _headers, body = request(url, "POST", "/api/model/invoke", payload, timeout=30)
        except OSError as exc:
            raise StageError(f"smoke test: POST {url}/api/model/invoke failed: {exc}") from None
        text = body.decode("utf-8", "replace")
        if status != 200:
            raise StageError(f"smoke test: POST /api/model/invoke answered {status}: {text[:300]}")
        try:
            answer = json.loads(text)
            rows = answer["prediction"]
        except (ValueError, KeyError, TypeError):
            raise StageError(f"smoke test: not a prediction: {text[:300]}") from None
        if not isinstance(rows, list) or len(rows) != len(payload["data"]):
            raise StageError(
                f"smoke test: {len(payload['data'])} row(s) sent, answer has "
                f"{len(rows) if isinstance(rows, list) else 'no'} prediction rows"
            )
    return answer


def prove_new_server(
    url: str,
    args: dict[str, Any],
    example: dict[str, Any] | None,
    *,
    alive: Callable[[], str | None],
    loaded: Callable[[], bool],
    shared: bool,
) -> None:
    """Wait until the new server is ready (`readinessTimeout`), smoke-test it, and check it is
    still alive. `shared`: an old server answers on the same port, so each fresh connection
    reaches either one: `smokeRequests` requests, so that the new one answers some of them
    (each misses it with p = 1/2); `loaded()` (the new server's own log) says when it is
    ready, since /healthcheck may be answered by the old one."""
    wait_ready(url, float(args["readinessTimeout"]), alive=alive, ready=loaded)
    if example is not None:
        smoke_test(url, example, times=int(args["smokeRequests"]) if shared else 1)
    gone = alive()
    if gone:
        raise StageError(gone)
