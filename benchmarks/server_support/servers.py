"""Start, probe, measure and stop the three servers the benchmark compares."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.server_support.models import BenchModel

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LEGION_BENCH_CACHE", Path.home() / ".cache" / "legion-ci-bench"))
MLSERVER_VENV = CACHE / "mlserver-venv"
MLSERVER_PACKAGES = ["mlserver", "mlserver-sklearn", "uvloop<0.22"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


def ensure_mlserver() -> Path:
    """MLServer in its own venv (its pins clash with MLflow's), cached outside the repo."""
    exe = MLSERVER_VENV / "bin" / "mlserver"
    if exe.is_file():
        return exe
    print(f"installing MLServer into {MLSERVER_VENV}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
    import sklearn

    pip = [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q"]
    # The same scikit-learn as the one that trained the models, so the pickles load as-is.
    subprocess.run([*pip, *MLSERVER_PACKAGES, f"scikit-learn=={sklearn.__version__}"], check=True)
    return exe


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):  # the task ended meanwhile
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


@dataclass
class Running:
    kind: str
    proc: subprocess.Popen
    port: int
    path: str  # prediction route
    ready_path: str
    start_to_ready_s: float = 0.0
    log: Path | None = None
    rss_mib: list[float] = field(default_factory=list)

    def body(self, model: BenchModel, rows: int) -> str:
        data = (model.rows * (rows // len(model.rows) + 1))[:rows]
        if self.kind == "legion":
            return json.dumps({"columns": model.columns, "data": data})
        if self.kind == "mlflow":
            return json.dumps({"dataframe_split": {"columns": model.columns, "data": data}})
        return json.dumps(  # MLServer: V2 inference protocol, one FP64 tensor
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [rows, len(model.columns)],
                        "datatype": "FP64",
                        "data": data,
                    }
                ]
            }
        )

    def measure_memory(self) -> None:
        # Workers only: a supervisor process that does not serve is not counted per worker.
        pids = process_tree(self.proc.pid)
        sizes = [rss_kib(p) / 1024 for p in pids]
        self.rss_mib = [round(s, 1) for s in sizes if s > 0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _wait_ready(run: Running, timeout: float = 120) -> None:
    began = time.monotonic()
    url = f"http://127.0.0.1:{run.port}{run.ready_path}"
    while time.monotonic() - began < timeout:
        if run.proc.poll() is not None:
            tail = run.log.read_text()[-3000:] if run.log else ""
            raise RuntimeError(f"{run.kind} exited with {run.proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{run.kind} not ready after {timeout} s")


def start(
    kind: str,
    model: BenchModel,
    workdir: Path,
    *,
    legion_workers: int = 1,
    legion_http: str = "native",
) -> Running:
    port = free_port()
    log = workdir / f"{kind}-{model.key}.log"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    # `mlflow models serve` execs `uvicorn` from PATH: the venv's bin must be on it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if kind == "legion":
        cmd = [
            sys.executable, "-c",
            "import sys; from legion_ci.cli.serve import serve; serve(sys.argv[1:])",
            str(model.gppi_dir), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(legion_workers), "--feedback-db", str(workdir / "feedback.sqlite3"),
            "--log-level", "warning", "--http", legion_http,
        ]  # fmt: skip
        path, ready = "/api/model/invoke", "/healthcheck"
    elif kind == "mlflow":
        cmd = [
            str(Path(sys.executable).with_name("mlflow")), "models", "serve",
            "-m", str(model.mlflow_dir), "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port),
        ]  # fmt: skip
        path, ready = "/invocations", "/ping"
    elif kind == "mlserver":
        folder = workdir / f"mlserver-{model.key}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(model.joblib_file, folder / "model.joblib")
        (folder / "settings.json").write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "http_port": port,
                    "grpc_port": free_port(),
                    "metrics_port": free_port(),
                    "parallel_workers": 0,
                }
            )
        )
        (folder / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": model.key,
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "max_batch_size": 64,
                    "max_batch_time": 0.005,
                    "parameters": {"uri": "./model.joblib"},
                }
            )
        )
        cmd = [str(ensure_mlserver()), "start", str(folder)]
        path, ready = f"/v2/models/{model.key}/infer", f"/v2/models/{model.key}/ready"
    else:
        raise ValueError(kind)
    began = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    run = Running(kind, proc, port, path, ready, log=log)
    try:
        _wait_ready(run)
    except BaseException:
        run.stop()
        raise
    run.start_to_ready_s = time.monotonic() - began
    return run
