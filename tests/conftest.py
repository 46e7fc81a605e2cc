"""Shared test helpers: drive the real CLI, in a subprocess or in-process, on real files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEGION_CI = [sys.executable, "-m", "legion_ci.cli.main"]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def assert_success(self) -> Outcome:
        assert self.code == 0, f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        return self

    def assert_failed(self, code: int) -> Outcome:
        assert self.code == code, (
            f"expected exit {code}, got {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        )
        assert "Traceback" not in self.err, self.err
        return self


@pytest.fixture(autouse=True)
def _default_sigint():
    """Every test starts with Python's own Ctrl-C handling. A test that ran server code in
    this process could leave SIGINT ignored, and an ignored SIGINT is inherited by every
    child: a `legion-ci` started later would not stop on Ctrl-C (seen in CI rehearsals)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    left = signal.getsignal(signal.SIGINT)
    if left is not signal.default_int_handler:
        warnings.warn(f"the test left SIGINT set to {left!r}", stacklevel=1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LEGION_CI_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("JENKINS_URL", raising=False)
    monkeypatch.delenv("GITLAB_CI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LEGION_CI_INTEGRATIONS", raising=False)


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    input_text: str | None = None,
) -> Outcome:
    """Run `legion-ci ARGS` in a real subprocess (`input_text` on its stdin)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [*LEGION_CI, *args],
        cwd=cwd,
        env=full_env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def copy_wine_project(root: Path, *, git: bool = False) -> Path:
    """pipelines/ and examples/wine/ copied into `root` (their relative layout kept), as a
    git repository with one commit when `git`; returns root/pipelines/wine.yaml."""
    shutil.copytree(
        REPO / "pipelines", root / "pipelines", ignore=shutil.ignore_patterns(".legion")
    )
    shutil.copytree(
        REPO / "examples" / "wine",
        root / "examples" / "wine",
        ignore=shutil.ignore_patterns("mlruns", "__pycache__"),
    )
    if git:
        cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        subprocess.run([*cmd, "add", "-A"], check=True)
        subprocess.run([*cmd, "commit", "-qm", "init"], check=True)
    return root / "pipelines" / "wine.yaml"


@pytest.fixture
def sh_project(tmp_path: Path) -> Path:
    """A project folder with the shell trainer registered beside its pipeline."""
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / "sh-trainer", project / "integrations")
    shutil.copytree(FIXTURES / "sh-packager", project / "packagers")
    (project / "src").mkdir()
    return project


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


SH_PIPELINE = """
apiVersion: legion-ci/v1
kind: Pipeline
integrations: [integrations/registration.yaml]
model:
  name: linear
  version: "1.0"
stages:
  train:
    toolchain: sh-trainer
    workDir: src
    hyperParameters: {alpha: 1}
"""


@pytest.fixture
def sh_pipeline(sh_project: Path) -> Path:
    return write(sh_project / "pipeline.yaml", SH_PIPELINE)


# -- figures: what the hardening tests injected and saw, printed as one table at the end -----

FIGURES: dict[str, int] = {}
FIGURE_ORDER = (
    "faults injected",
    "faults survived",
    "hostile artifacts refused",
    "requests sent",
    "requests failed",
    "secrets found",
)


class Figures:
    def add(self, name: str, count: int = 1) -> None:
        FIGURES[name] = FIGURES.get(name, 0) + count


@pytest.fixture
def figures() -> Figures:
    return Figures()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not FIGURES:
        return
    names = [n for n in FIGURE_ORDER if n in FIGURES] + sorted(set(FIGURES) - set(FIGURE_ORDER))
    terminalreporter.section("hardening figures")
    for name in names:
        terminalreporter.write_line(f"{name:<28} {FIGURES[name]:>10,}")


# -- Docker: each module that uses these gets its own engine and registry ----------------------
@pytest.fixture(scope="module")
def engine():
    """A private dockerd (tests/docker_support.py) with the base image imported."""
    from docker_support import dockerd, import_base_image

    root = Path(tempfile.mkdtemp(prefix="lcd-", dir="/tmp"))  # a socket path under 108 bytes
    with dockerd(root) as daemon:
        import_base_image(daemon.host)
        yield daemon
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory):
    """Debian's registry with htpasswd auth on 127.0.0.1."""
    from docker_support import registry

    with registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("legion-cache")


@pytest.fixture
def engine_env(engine, wheel_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`legion-ci` and Clients() without an argument find the module's engine, and the module
    shares one wheelhouse cache (the suite isolates LEGION_CI_CACHE per test)."""
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    monkeypatch.setenv("LEGION_CI_CACHE", str(wheel_cache))


# -- Kubernetes: a real control plane (tests/kube_support.py) and node agent per module -------
# Per module rather than per session: it starts in seconds, and does not sit polling beside
# the unrelated modules that run between the two that use it.
@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory):
    """The control plane with namespace `ml` and the node agent (tests/kube_node.py) running;
    yields (ControlPlane, NodeAgent). The agent's `workdir` is where Job pods run: a test
    points it at its project."""
    from kube_node import NodeAgent
    from kube_support import binary, control_plane, create_namespace

    if not binary().exists():
        pytest.fail(f"{binary()} is missing: run scripts/setup.d/26-kube-control-plane.sh")
    folder = Path(tempfile.mkdtemp(prefix="lck-", dir="/tmp"))
    with control_plane(folder) as plane:
        api = plane.api_client()
        agent = NodeAgent(api, folder, plane.kubelet_cert, plane.pki.ca)
        agent.register()
        agent.start()
        try:
            create_namespace(api, "ml")
            print(f"\nkube control plane ready in {plane.startup_seconds:.1f} s", flush=True)
            yield plane, agent
        finally:
            agent.stop.set()
            agent.join(30)
    subprocess.run(["rm", "-rf", str(folder)], check=False)
    assert agent.errors == [], agent.errors[:5]
