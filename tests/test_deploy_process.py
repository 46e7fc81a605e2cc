"""The `process` deploy target for real: real `legion-ci serve` processes on 127.0.0.1.

The replacement test runs a client that invokes the model continuously (a fresh connection
per request, bounded in count and time) while a good and then a bad version replace the
running one, and asserts that it saw no failed request.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from legion_ci.cli.deployments import deployments
from legion_ci.errors import StageError
from legion_ci.gppi.archive import write_zip
from legion_ci.integrations.base import DeployContext
from legion_ci.runner.process import StageLog
from legion_ci.targets import pids, state
from legion_ci.targets.arguments import resolve_arguments
from legion_ci.targets.process import ProcessTarget
from tests.server_support import TINY_ENTRYPOINT, TINY_MANIFEST, make_tiny_model


def tiny_zip(tmp: Path, version: str, *, broken: str | None = None) -> Path:
    """The hand-written tiny model as a zip, with its manifest saying `version`.

    broken="init": init() raises (the binary cannot load anywhere);
    broken="server": init() raises only inside the server (passes the info() read first);
    broken="predict": the info() example is the row that makes predict() raise.
    """
    folder = make_tiny_model(tmp / f"tiny-{version}")
    (folder / "legion.project.yaml").write_text(
        TINY_MANIFEST.replace("version: '2.1'", f"version: '{version}'"), encoding="utf-8"
    )
    entry = TINY_ENTRYPOINT
    if broken == "init":
        entry = entry.replace('    return "matrix"', '    raise RuntimeError("weights missing")')
    elif broken == "server":
        entry = entry.replace(
            '    return "matrix"',
            "    import sys\n"
            "    if any(m.startswith('legion_ci.server') for m in sys.modules):\n"
            "        raise RuntimeError('weights missing')\n"
            '    return "matrix"',
        )
    elif broken == "predict":
        entry = entry.replace('"example": 1.0', '"example": 666')
    (folder / "legion_model" / "entrypoint.py").write_text(entry, encoding="utf-8")
    write_zip(folder, tmp / f"tiny-{version}.zip")
    return tmp / f"tiny-{version}.zip"


def context(workspace: Path, artifact: Path, version: str, **arguments: object) -> DeployContext:
    scratch = workspace / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    return DeployContext(
        model_name="tiny",
        model_version=version,
        run_id=f"run-{version}",
        artifact=artifact,
        package_outputs={},
        arguments=resolve_arguments("process", {"name": "tiny", **arguments}),
        connection=None,
        workspace=workspace,
        scratch_dir=scratch,
        log=StageLog(workspace / f"deploy-{version}.log"),
    )


@pytest.fixture
def workspace(tmp_path: Path):
    """A workspace whose deployments are stopped by pid when the test ends, on failure too."""
    folder = tmp_path / "ws"
    folder.mkdir()
    yield folder
    for record in state.list_states(folder):
        pids.stop(record.details.get("pid") or 0, record.details.get("start_time"), grace=10)


def invoke(url: str) -> tuple[int, str]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        body = json.dumps({"columns": ["a", "b"], "data": [[2.0, 3.0]]})
        conn.request("POST", "/api/model/invoke", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        payload = json.loads(raw)
        assert payload.get("prediction") == [[5.0, -1.0]], (resp.status, raw[:200])
        return resp.status, resp.getheader("Model-Version") or ""
    finally:
        conn.close()


class Client(threading.Thread):
    """Invokes continuously, one fresh connection per request, until stopped (at most
    `limit` requests or `seconds`); counts answers per model version and failures."""

    def __init__(self, url: str, limit: int = 40_000, seconds: float = 120.0):
        super().__init__(daemon=True)
        self.url, self.limit, self.seconds = url, limit, seconds
        self.stop = threading.Event()
        self.versions: dict[str, int] = {}
        self.failures: list[str] = []
        self.longest_gap = 0.0

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        last = time.monotonic()
        for _ in range(self.limit):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, version = invoke(self.url)
                if status != 200:
                    self.failures.append(f"HTTP {status}")
                else:
                    self.versions[version] = self.versions.get(version, 0) + 1
                    now = time.monotonic()
                    self.longest_gap = max(self.longest_gap, now - last)
                    last = now
            except Exception as exc:  # every kind of failure counts
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def count(self) -> int:
        return sum(self.versions.values())


def wait_answers(client: Client, more: int, timeout: float = 30) -> None:
    target = client.count() + more
    deadline = time.monotonic() + timeout
    while client.count() < target and time.monotonic() < deadline and client.is_alive():
        time.sleep(0.01)
    assert client.count() >= target, (client.versions, client.failures[:5])


def test_replacement_keeps_the_url_and_drops_no_request(tmp_path: Path, workspace: Path) -> None:
    target = ProcessTarget()
    first = target.deploy(context(workspace, tiny_zip(tmp_path, "1.0"), "1.0")).outputs
    url = first["url"]
    assert url.startswith("http://127.0.0.1:")
    assert invoke(url) == (200, "1.0")

    client = Client(url)
    client.start()
    try:
        wait_answers(client, 50)
        second = target.deploy(context(workspace, tiny_zip(tmp_path, "2.0"), "2.0")).outputs
        assert second["url"] == url and second["replaced"] == "1.0"
        assert not pids.is_running(first["pid"], None), "the old server still runs"
        wait_answers(client, 50)
        seen_before_bad = dict(client.versions)

        bad = context(workspace, tiny_zip(tmp_path, "3.0", broken="server"), "3.0")
        with pytest.raises(StageError) as failed:
            target.deploy(bad)
        wait_answers(client, 50)
        # A binary that cannot even be read fails before any server starts.
        unreadable = context(workspace, tiny_zip(tmp_path, "4.0", broken="init"), "4.0")
        with pytest.raises(StageError) as unread:
            target.deploy(unreadable)
        wait_answers(client, 50)
    finally:
        client.stop.set()
        client.join(60)

    message = str(failed.value)
    assert "tiny 3.0" in message and "exited with code" in message, message
    assert "2.0 keeps serving on " + url in message, message
    assert "weights missing" in message, message  # the new server's log tail
    message = str(unread.value)
    assert "tiny 4.0: " in message and "init() failed: RuntimeError: weights missing" in message
    assert "2.0 keeps serving on " + url in message, message
    print(f"client: {client.versions} failures={len(client.failures)} gap={client.longest_gap:.3f}")
    assert client.failures == [], client.failures[:10]
    assert seen_before_bad.get("1.0") and seen_before_bad.get("2.0"), seen_before_bad
    assert "3.0" not in client.versions and "4.0" not in client.versions
    record = state.load(workspace, "tiny")
    assert record is not None and record.model_version == "2.0"
    assert pids.is_running(record.details["pid"], record.details["start_time"])
    assert invoke(url) == (200, "2.0")


def test_a_failed_smoke_test_leaves_nothing_running(tmp_path: Path, workspace: Path) -> None:
    bad = context(workspace, tiny_zip(tmp_path, "1.0", broken="predict"), "1.0")
    with pytest.raises(StageError) as failed:
        ProcessTarget().deploy(bad)
    message = str(failed.value)
    assert "smoke test: POST /api/model/invoke answered 500" in message, message
    assert "last lines of its log" in message
    assert state.load(workspace, "tiny") is None
    assert not list(state.logs_dir(workspace, "tiny").glob("*.zip"))


def test_readiness_timeout(tmp_path: Path, workspace: Path, monkeypatch) -> None:
    monkeypatch.setenv("TINY_INIT_SLEEP", "30")
    slow = context(workspace, tiny_zip(tmp_path, "1.0"), "1.0", readinessTimeout=1, smokeTest=False)
    began = time.monotonic()
    with pytest.raises(StageError, match=r"not ready within 1 s"):
        ProcessTarget().deploy(slow)
    assert time.monotonic() - began < 20
    assert state.load(workspace, "tiny") is None


def test_deployments_cli_reports_running_stale_and_deletes(tmp_path: Path, workspace: Path) -> None:
    out = ProcessTarget().deploy(context(workspace, tiny_zip(tmp_path, "1.0"), "1.0")).outputs
    runner = CliRunner()
    ws = ["--workspace", str(workspace)]

    listed = runner.invoke(deployments, ["list", *ws, "--output", "json"])
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.output)
    assert entry["status"] == "running" and entry["url"] == out["url"]

    logs = runner.invoke(deployments, ["logs", "tiny", *ws, "-n", "5"])
    assert logs.exit_code == 0 and "ready (pid" in logs.output, logs.output

    # A stale pid: a process that has exited, recorded as if it were the server.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = state.load(workspace, "tiny")
    assert record is not None
    real_pid = record.details["pid"]
    record.details["pid"] = gone.pid
    state.save(workspace, record)
    status = runner.invoke(deployments, ["status", "tiny", *ws])
    assert status.exit_code == 1 and f"stale (pid {gone.pid} is not running)" in status.output
    # A live pid with another start time (a reused pid) is stale too.
    record.details["pid"], record.details["start_time"] = os.getpid(), 1
    state.save(workspace, record)
    assert "stale" in runner.invoke(deployments, ["list", *ws]).output

    record.details["pid"] = real_pid
    record.details["start_time"] = pids.start_time(real_pid)
    state.save(workspace, record)
    deleted = runner.invoke(deployments, ["delete", "tiny", *ws])
    assert deleted.exit_code == 0 and "stopped" in deleted.output, deleted.output
    assert not pids.is_running(real_pid, None)
    assert runner.invoke(deployments, ["list", *ws]).output.strip() == "no deployments"
    missing = runner.invoke(deployments, ["status", "tiny", *ws])
    assert missing.exit_code != 0 and "no deployment named 'tiny'" in str(missing.exception)
