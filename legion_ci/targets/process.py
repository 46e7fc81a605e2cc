"""The `process` deploy target: `legion-ci serve` as a background process on this machine.

Deploy: start `legion-ci serve <binary> --host H --port P --reuse-port` detached (own
session, output in a log file under <workspace>/deployments/<name>/), wait until it is ready
(`GET /healthcheck` 200), smoke-test it with the example from the binary's info(), record pid,
start time, port, log and settings in the state store. The URL is the output.

Replace (a deployment of that name is running): the new server is started on the SAME port
beside the old one, proven, and only then is the old one sent SIGTERM, which makes it stop
accepting and finish its in-flight requests (replacement.py, shared with the docker target).
The URL never changes.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from legion_ci import deployment_state as state
from legion_ci import processes
from legion_ci.errors import InputError, StageError
from legion_ci.integrations.base import DeployContext, DeployResult
from legion_ci.targets import replacement, smoke
from legion_ci.targets.arguments import with_defaults
from legion_ci.targets.replacement import READY_MARK, free_port, url_of

TARGET = "process"
KEEP_LOGS = 5  # server logs kept per deployment, the running one included


def serve_argv(artifact: Path, args: dict[str, Any], port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "legion_ci.cli.main",
        "serve",
        str(artifact),
        "--host",
        str(args["host"]),
        "--port",
        str(port),
        "--workers",
        str(args["workers"]),
        "--drain-timeout-s",
        str(args["drainTimeout"]),
        "--log-requests" if args["logRequests"] else "--no-log-requests",
        "--reuse-port",
    ]


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:]) or "    (empty log)"


class ProcessTarget:
    """Deploys the run's trained model binary as a local `legion-ci serve` process."""

    def render(self, ctx: DeployContext) -> str:
        """What `--dry-run` prints: the server command (the port is chosen at deploy time
        when `port` is 0)."""
        import shlex

        args = with_defaults(TARGET, ctx.arguments)
        artifact = ctx.artifact or Path(f"<{ctx.model_name}-{ctx.model_version}.zip>")
        return shlex.join(serve_argv(artifact, args, int(args["port"]))) + "\n"

    def deploy(self, ctx: DeployContext) -> DeployResult:
        args = with_defaults(TARGET, ctx.arguments)
        name = state.check_name(args.get("name") or ctx.model_name)
        if ctx.artifact is None:
            raise StageError(
                "the process target serves the trained model binary, and this run has none: "
                "run the train stage first (or continue a run that trained)"
            )
        with state.locked(ctx.workspace, name):
            return self._deploy_locked(ctx, name, args)

    def _deploy_locked(self, ctx: DeployContext, name: str, args: dict[str, Any]) -> DeployResult:
        workspace = ctx.workspace
        old = state.load(workspace, name)
        old_running = (
            old is not None
            and old.target == TARGET
            and processes.is_running(old.details.get("pid"), old.details.get("start_time"))
        )
        host = str(args["host"])
        port = int(args["port"])
        if not port:
            same_host = old is not None and old.details.get("host") == host
            port = int(old.details["port"]) if old_running and same_host else free_port(host)
        url = url_of(host, port)
        keep_serving = old_running and old.details.get("port") == port  # type: ignore[union-attr]
        if not keep_serving:
            replacement.check_port_free(host, port, lambda: _listening_on(workspace, port))

        # The binary is copied beside the state: the run folder may be cleaned, the server not.
        folder = state.logs_dir(workspace, name)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S-%f")
        artifact = folder / f"{ctx.model_name}-{ctx.model_version}-{stamp}.zip"
        shutil.copyfile(ctx.artifact, artifact)  # type: ignore[arg-type]
        log_path = folder / f"server-{stamp}.log"

        action = "replacing" if keep_serving else "starting"
        ctx.log.line(
            f"deploy: {action} {name} ({ctx.model_name} {ctx.model_version}) on {url}"
            + (
                f", beside the running {old.model_version} (pid {old.details['pid']})"
                if keep_serving
                else ""
            )  # type: ignore[union-attr]
        )
        kept = (
            f"; {old.model_version} keeps serving on {url} (pid {old.details['pid']})"  # type: ignore[union-attr]
            if keep_serving
            else ""
        )
        try:
            example = _example(ctx, artifact) if args["smokeTest"] else None
        except StageError as exc:
            artifact.unlink(missing_ok=True)
            raise StageError(f"{name}: {ctx.model_name} {ctx.model_version}: {exc}{kept}") from None
        new_server = _NewServer(self, artifact, serve_argv(artifact, args, port), log_path, args)
        ready_s = replacement.start_and_prove(
            new_server,
            failed=f"{name}: the new server ({ctx.model_name} {ctx.model_version})",
            url=url,
            args=args,
            example=example,
            replacing=keep_serving,
            kept=kept,
            log=ctx.log,
        )
        proc = new_server.proc

        new = state.DeploymentState.deployed(
            ctx,
            name=name,
            target=TARGET,
            url=url,
            details={
                "pid": proc.pid,
                "start_time": processes.start_time(proc.pid),
                "host": host,
                "port": port,
                "log": str(log_path),
                "artifact": str(artifact),
                "argv": proc.args,
                "settings": {k: args[k] for k in ("workers", "drainTimeout", "logRequests")},
            },
            old=old,
        )
        state.save(workspace, new)
        if old_running:
            assert old is not None
            replacement.drain_old(
                ctx.log,
                "server",
                f"(pid {old.details['pid']})",
                lambda: processes.stop_pid(
                    old.details["pid"],
                    old.details.get("start_time"),
                    grace=float(args["drainTimeout"]) + 5,
                ),
            )
        if old is not None and old.details.get("artifact") not in (None, str(artifact)):
            Path(old.details["artifact"]).unlink(missing_ok=True)
        for stale in sorted(folder.glob("server-*.log"))[:-KEEP_LOGS]:
            stale.unlink(missing_ok=True)  # the latest few stay for `deployments logs`
        return DeployResult(
            outputs={
                "url": url,
                "name": name,
                "target": TARGET,
                "pid": proc.pid,
                "port": port,
                "log": str(log_path),
                "ready_seconds": round(ready_s, 3),
                "replaced": old.model_version if old_running else None,  # type: ignore[union-attr]
            }
        )

    # -- `legion-ci deployments` -----------------------------------------------------------------
    def status(self, record: state.DeploymentState) -> tuple[str, str]:
        """Running only while the recorded pid is alive with its recorded start time, so a
        reused pid reads as stale, never as running."""
        pid = record.details.get("pid")
        if processes.is_running(pid, record.details.get("start_time")):
            return "running", f"pid {pid}"
        return "stale", f"pid {pid} is not running"

    def logs(self, record: state.DeploymentState, lines: int) -> str:
        log = record.details.get("log")
        if not log:
            raise InputError(f"{record.name}: no server log recorded")
        try:
            text = Path(log).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"{record.name}: cannot read {log}: {exc.strerror}") from None
        return "".join(line + "\n" for line in text.splitlines()[-lines:])

    def delete(
        self, record: state.DeploymentState, *, workspace: Path, drain_timeout: float
    ) -> str:
        return stop_deployment(workspace, record, grace=drain_timeout)

    @staticmethod
    def _start(argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(log_path, "ab") as log:
            # Its own session: the server outlives this stage and its Ctrl-C.
            return subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


class _NewServer:
    """The new `legion-ci serve` process, as replacement.start_and_prove drives it."""

    kind = "server"

    def __init__(
        self,
        target: ProcessTarget,
        artifact: Path,
        argv: list[str],
        log_path: Path,
        args: dict[str, Any],
    ) -> None:
        self.target, self.argv, self.log_path = target, argv, log_path
        self.artifact = artifact  # the binary copied for this server alone: it goes with it
        self.workers = int(args["workers"])
        self.proc: subprocess.Popen

    def start(self) -> str:
        # Through the target, so that a test can stand in for the start.
        self.proc = self.target._start(self.argv, self.log_path, self.log_path.parent)
        return f"pid {self.proc.pid}"

    def alive(self) -> str | None:
        code = self.proc.poll()
        return None if code is None else f"it exited with code {code} while starting"

    def ready(self) -> bool:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return text.count(READY_MARK) >= self.workers

    def stop(self) -> None:
        processes.stop_pid(self.proc.pid, None, grace=2)
        _reap(self.proc)
        self.artifact.unlink(missing_ok=True)

    def tail(self) -> str:
        return f"last lines of its log ({self.log_path}):\n{log_tail(self.log_path)}"


def _example(ctx: DeployContext, artifact: Path) -> dict[str, Any]:
    if ctx.example is not None:
        return dict(ctx.example)
    # Called without the runner (which hands it over from the train stage's self-check):
    # read it from the binary, which also proves the binary loads before a server starts.
    return smoke.example_request(artifact)


def _listening_on(workspace: Path, port: int) -> list[str]:
    """The running process deployments recorded on `port`."""
    return [
        s.name
        for s in state.list_states(workspace)
        if s.details.get("port") == port
        and processes.is_running(s.details.get("pid"), s.details.get("start_time"))
    ]


def _reap(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_deployment(workspace: Path, record: state.DeploymentState, grace: float) -> str:
    """Stop a process deployment's server (drain, then kill); returns what happened."""
    details = record.details
    how = processes.stop_pid(details.get("pid") or 0, details.get("start_time"), grace=grace)
    return how
