"""The `legion-ci` child process behind every operator, with no Airflow in it.

The operators run `legion-ci run|stage ... --output json` as a child process in its own
process group: a crash or a heavy import (MLflow, scikit-learn) stays in the child, and a
cancel can stop the child and everything it started. Stderr (the stage log, which legion-ci
echoes there) is followed line by line; stdout holds only the JSON document, read for the
outputs and the error alike.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from legion_ci.processes import terminate_group

EXECUTABLE_ENV = "LEGION_CI_EXECUTABLE"
# Airflow's own settings and secrets (its database URL, connections, variables) are of no use
# to legion-ci; the child never sees them.
AIRFLOW_ENV_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")


class LegionCIError(Exception):
    """legion-ci could not be started, or its run failed; `str()` is one line."""


def find_executable(explicit: str | None = None) -> str:
    """The `legion-ci` to run: `explicit`, `$LEGION_CI_EXECUTABLE`, the one beside this
    interpreter, or the first on PATH."""
    for candidate in (explicit, os.environ.get(EXECUTABLE_ENV)):
        if candidate:
            return candidate
    beside = Path(sys.executable).parent / "legion-ci"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("legion-ci")
    if found:
        return found
    raise LegionCIError(
        f"legion-ci not found beside {sys.executable} or on PATH;"
        f" pass executable= or set {EXECUTABLE_ENV}"
    )


def build_argv(
    executable: str, pipeline: str, stage: str | None = None, run_id: str | None = None
) -> list[str]:
    """`legion-ci run FILE` or `legion-ci stage NAME FILE [--run-id ID]`, JSON on stdout."""
    if stage is None:
        if run_id:
            raise LegionCIError("run_id continues a run stage by stage; it needs a stage")
        return [executable, "run", pipeline, "--output", "json"]
    argv = [executable, "stage", stage, pipeline, "--output", "json"]
    if run_id:
        argv += ["--run-id", run_id]
    return argv


def child_environment(base: Mapping[str, str], *layers: Mapping[str, str] | None) -> dict[str, str]:
    """The worker's environment less Airflow's own settings, then each layer on top."""
    env = {k: v for k, v in base.items() if not k.startswith(AIRFLOW_ENV_PREFIXES)}
    for layer in layers:
        for key, value in (layer or {}).items():
            if not isinstance(value, str):
                raise LegionCIError(f"environment variable {key}: value must be a string")
            env[key] = value
    return env


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The JSON document legion-ci printed (it prints one on every exit code), or None when
    it printed none (a broken install that never reached legion-ci's own code)."""
    text = stdout.strip()
    if not text:
        return None
    try:
        result = json.loads(text)
    except ValueError:
        return None
    return result if isinstance(result, dict) and "run_id" in result else None


def xcom_values(result: dict[str, Any]) -> dict[str, Any]:
    """What a task hands on: the document's outputs (named in legion-ci's stage table:
    run_id, status, artifact, artifact_sha256, image, digest, url, metrics, ...), each under
    its name with `-` made `_` as Airflow keys go, and the record's path."""
    values: dict[str, Any] = {
        key.replace("-", "_"): value for key, value in result.get("outputs", {}).items()
    }
    values["record"] = result.get("record")
    values.setdefault("metrics", {})
    return values


def failure_message(
    code: int, result: dict[str, Any] | None, stderr_tail: list[str], what: str
) -> str:
    """One line saying why `what` failed, from the document's `error` (never from stderr);
    the last stderr line only when legion-ci printed no document at all (it never started)."""
    error = (result or {}).get("error")
    if error:
        message = error["message"]
        run_id = (result or {}).get("run_id")
        for name, stage in ((result or {}).get("stages") or {}).items():
            if stage.get("status") in ("failed", "cancelled"):
                detail = (stage.get("error") or stage["status"]).strip().splitlines()[0]
                return f"legion-ci run {run_id}: stage {name} {stage['status']}: {detail}"
        if run_id:
            return f"legion-ci run {run_id}: {error['kind']}: {message}"
        return f"{what} exited with code {code}: {error['kind']}: {message}"
    lines = [line.strip() for line in stderr_tail if line.strip()]
    # Not legion-ci's own words (a Python traceback from a broken install, a signal): its
    # last line says the most.
    return f"{what} exited with code {code}: {lines[-1] if lines else 'no output'}"


class LegionProcess:
    """One running `legion-ci` in its own process group, its stderr handed line by line to
    `on_line` and its stdout kept.

    Both go to files, not pipes: when Airflow SIGKILLs the task process a few seconds after
    on_kill(), legion-ci goes on recording the cancellation without a broken pipe under it,
    and a process a stage leaves running (a local model server) cannot hold us up by
    keeping a pipe open.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
        on_line: Callable[[str], None] = print,
    ) -> None:
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115
        fd, path = tempfile.mkstemp(prefix="legion-ci-stderr-")
        self._stderr = open(path, "rb")  # noqa: SIM115  (read while the child appends)
        os.unlink(path)
        self.tail: deque[str] = deque(maxlen=40)
        try:
            with os.fdopen(fd, "wb") as stderr:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=self._stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
        except OSError as exc:
            self._close()
            raise LegionCIError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        self._reader = threading.Thread(target=self._follow, args=(on_line,), daemon=True)
        self._reader.start()

    def _follow(self, on_line: Callable[[str], None]) -> None:
        pending = b""
        while True:
            ended = self.proc.poll() is not None  # before reading: nothing is missed
            chunk = self._stderr.read(65536)
            if chunk:
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._emit(line, on_line)
            elif ended:
                break
            else:
                time.sleep(0.1)
        if pending:
            self._emit(pending, on_line)

    def _emit(self, raw: bytes, on_line: Callable[[str], None]) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.append(line)
        on_line(line)

    def _close(self) -> None:
        self._stdout.close()
        self._stderr.close()

    def wait(self) -> tuple[int, str]:
        """Exit code and stdout, once the process has ended and its stderr is all read.

        Polls rather than blocking in Popen.wait(): Airflow calls on_kill() from a SIGTERM
        handler on this same thread, and Popen.wait() holds a lock stop() would then need.
        """
        while self.proc.poll() is None or self._reader.is_alive():
            self._reader.join(timeout=0.2)
        self._stdout.seek(0)
        out = self._stdout.read().decode("utf-8", errors="replace")
        self._close()
        return self.proc.returncode, out

    def stop(self, grace: float) -> None:
        """SIGTERM the process group (legion-ci records the stage as cancelled and exits
        130), wait up to `grace` seconds, then SIGKILL the group."""
        terminate_group(self.proc, grace)
