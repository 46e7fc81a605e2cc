"""Shared helpers for the model server tests: a hand-written GPPI model and a real server
process on 127.0.0.1 (port picked by the kernel and read back from the server's log)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

TINY_MANIFEST = """\
binaries: {type: python, dependencies: pip}
legionVersion: '1.0'
model: {name: tiny, version: '2.1', workDir: legion_model, entrypoint: entrypoint}
toolchain: {name: handmade, version: '0'}
output: {}
"""

# a + b and a - b; a == 666 raises (a model bug), a == -1 is slow (a long request).
# TINY_CALL_DELAY makes every call slow, so concurrent requests pile up into batches;
# TINY_INIT_SLEEP makes loading slow, so readiness can be seen turning true.
TINY_ENTRYPOINT = """\
import os
import time

def init():
    time.sleep(float(os.environ.get("TINY_INIT_SLEEP", "0")))
    return "matrix"

def info():
    return (
        [
            {"name": "a", "type": "number", "required": True, "example": 1.0},
            {"name": "b", "type": "number", "required": True, "example": 2.0},
            {"name": "note", "type": "string", "required": False, "example": "x"},
        ],
        [
            {"name": "sum", "type": "number", "required": True, "example": 3.0},
            {"name": "diff", "type": "number", "required": True, "example": -1.0},
        ],
    )

def predict_on_matrix(matrix, provided_columns_names=None):
    cols = list(provided_columns_names or ["a", "b", "note"])
    ia, ib = cols.index("a"), cols.index("b")
    out = []
    for row in matrix:
        a, b = row[ia], row[ib]
        if a == 666:
            raise ValueError("secret internal detail: the model cannot handle 666")
        if a == -1:
            if os.environ.get("TINY_STARTED_FILE"):
                open(os.environ["TINY_STARTED_FILE"], "w").close()
            time.sleep(float(os.environ.get("TINY_SLOW_S", "1.5")))
        out.append([a + b, a - b])
    delay = float(os.environ.get("TINY_CALL_DELAY", "0"))
    if delay:
        time.sleep(delay)
    return out, ["sum", "diff"]
"""


def make_tiny_model(path: Path, version: str = "2.1") -> Path:
    (path / "legion_model").mkdir(parents=True, exist_ok=True)
    manifest = TINY_MANIFEST.replace("version: '2.1'", f"version: '{version}'")
    (path / "legion.project.yaml").write_text(manifest, encoding="utf-8")
    (path / "legion_model" / "entrypoint.py").write_text(TINY_ENTRYPOINT, encoding="utf-8")
    return path


class Server:
    """`legion-ci serve` in a subprocess, stopped by pid when the test ends."""

    def __init__(
        self,
        artifact: Path,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        port: int = 0,
        max_fds: int | None = None,
        prelude: str = "",
    ):
        full_env = dict(os.environ)
        full_env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        full_env.update(env or {})
        cmd = [
            sys.executable,
            "-c",
            # max_fds: a low RLIMIT_NOFILE, to see the server run out of file descriptors.
            (
                "import resource; resource.setrlimit(resource.RLIMIT_NOFILE,"
                f" ({max_fds}, {max_fds}));"
                if max_fds
                else ""
            )
            # prelude: Python run first in the server process (a test's patch).
            + (prelude + "\n" if prelude else "")
            + "import sys; from legion_ci.cli.serve import serve; serve(sys.argv[1:])",
            str(artifact),
            "--port",
            str(port),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=cwd or ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.front = "uvicorn" if "uvicorn" in args else "native"
        self.log_lines: list[str] = []
        self._port_found = threading.Event()
        self.port = 0
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._port_found.wait(60):
            self.stop()
            raise RuntimeError("server did not start listening:\n" + self.log)

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.log_lines.append(line)
            found = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if found and not self.port:
                self.port = int(found.group(1))
                self._port_found.set()

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def wait_log(self, text: str, timeout: float = 10) -> None:
        """Until `text` is in the log (it is read from the server's stderr by a thread)."""
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the server log:\n{self.log}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log}")
            try:
                if self.request("GET", "/healthcheck")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready in time:\n" + self.log)

    def conn(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        conn = self.conn()
        try:
            hdrs = dict(headers or {})
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        try:
            parsed: Any = json.loads(payload) if payload.strip() else payload
        except ValueError:
            parsed = payload.decode("utf-8", "replace")
        return resp.status, resp_headers, parsed

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def train_mlflow_model(tmp: Path) -> Path:
    """A real RandomForestRegressor on sklearn's bundled diabetes data, logged with MLflow into
    a sqlite store, downloaded and converted to a GPPI binary. Returns the GPPI folder."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    from legion_ci.gppi.mlflow_convert import convert_mlflow_model

    data = load_diabetes(as_frame=True)
    x, y = data.data, data.target
    model = RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0).fit(x, y)
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = mlflow.create_experiment("server-tests", artifact_location=(tmp / "art").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            input_example=x.head(2),
            serialization_format="cloudpickle",
        )
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp / "dl")))
    out = tmp / "gppi"
    convert_mlflow_model(
        local,
        out,
        name="diabetes",
        version="1.0",
        toolchain_version=mlflow.__version__,
        output={"run_id": run.info.run_id},
    )
    return out
