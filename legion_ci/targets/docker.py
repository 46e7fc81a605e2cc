"""The `docker` deploy target: the package stage's image as a container on the Docker engine.

Deploy: run the docker-rest image (by digest when the package stage pushed it) on the host
network with `LEGION_SERVE_HOST=127.0.0.1` and `LEGION_SERVE_PORT=<port>`, a read-only root
file system with a tmpfs at /tmp (the image keeps its home, cache and feedback store there),
the restart policy and memory/CPU limits from the arguments, and labels naming the deployment,
model, version and run. Wait until it is ready, smoke-test it with the example from the
binary's info(), record the container in the state store. The URL is the output.

Replace (a container of that deployment is running): the new container starts on the SAME
port beside the old one, is proven, and only then is the old one stopped (SIGTERM: it leaves
the port, finishes its in-flight requests and exits) and removed (replacement.py, shared with
the process target). Both are in the host's network namespace and both servers set
SO_REUSEPORT, which the kernel allows only for the same user id: the image fixes it at 10001.
The URL never changes.

The container operations it shares with `legion-ci deployments` are in containers.py; what
that command asks of a docker deployment (status, logs, delete) is in docker_deployments.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from legion_ci import deployment_state as state
from legion_ci.errors import StageError
from legion_ci.integrations.base import DeployContext, DeployResult
from legion_ci.integrations.docker_engine import api_error_text, engine_ulimits
from legion_ci.targets import replacement, smoke
from legion_ci.targets.arguments import with_defaults
from legion_ci.targets.containers import log_tail, remove, remove_named, stop_container
from legion_ci.targets.docker_deployments import (
    container_logs,
    container_status,
    delete_deployment,
)
from legion_ci.targets.replacement import READY_MARK, free_port, url_of

TARGET = "docker"
HOST = "127.0.0.1"  # the container shares the host's network: it binds loopback only
LABEL = "legion-ci.epam.com"  # label prefix, as on the Kubernetes objects


def container_environment(port: int, args: dict[str, Any]) -> dict[str, str]:
    env = {
        "LEGION_SERVE_HOST": HOST,
        "LEGION_SERVE_PORT": str(port),
        "LEGION_SERVE_REUSE_PORT": "true",
        "LEGION_SERVE_DRAIN_TIMEOUT_S": str(args["drainTimeout"]),
    }
    if args.get("workers"):
        env["LEGION_SERVE_WORKERS"] = str(args["workers"])
    return env


def restart_policy(name: str) -> dict[str, Any]:
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": 0}


def image_reference(ctx: DeployContext, args: dict[str, Any]) -> str:
    """What to run: `arguments.image`, else the package stage's digest (pushed), else its tag."""
    if args.get("image"):
        return str(args["image"])
    if ctx.image:
        return ctx.image
    outputs = ctx.package_outputs or {}
    if not outputs:
        raise StageError(
            "the docker target runs the package stage's image, and this run has none: run the "
            "package stage first (docker-rest), or name an image in stages.deploy.arguments.image"
        )
    if not outputs.get("image"):
        reason = outputs.get("reason") or "no Docker engine at packaging time"
        raise StageError(
            f"the package stage built no image ({reason}), so there is nothing for the docker "
            "target to run: package where a Docker engine answers"
        )
    return str(outputs.get("digest") or outputs["image"])


def _workers_of(image: Any, args: dict[str, Any]) -> int:
    if args.get("workers"):
        return int(args["workers"])
    for item in (image.attrs.get("Config") or {}).get("Env") or []:
        key, _, value = item.partition("=")
        if key == "LEGION_SERVE_WORKERS" and value.isdigit():
            return max(1, int(value))  # the server refuses 0; at least one must say it is ready
    return 1


def _clients(ctx: DeployContext) -> Any:
    if ctx.clients is not None:
        return ctx.clients
    from legion_ci.integrations.clients import Clients

    return Clients()


class DockerTarget:
    """Deploys the packaged model image as a container on the local Docker engine."""

    # `legion-ci deployments`: a docker deployment runs only while the engine says so.
    def status(self, record: state.DeploymentState) -> tuple[str, str]:
        return container_status(record)

    def logs(self, record: state.DeploymentState, lines: int) -> str:
        return container_logs(record, lines)

    def delete(
        self, record: state.DeploymentState, *, workspace: Path, drain_timeout: float
    ) -> str:
        return delete_deployment(record, drain_timeout)

    def render(self, ctx: DeployContext) -> str:
        """What `--dry-run` prints: the equivalent `docker run` (the port is chosen at deploy
        time when `port` is 0)."""
        import shlex

        args = with_defaults(TARGET, ctx.arguments)
        name = args.get("name") or ctx.model_name
        try:
            image = image_reference(ctx, args)
        except StageError:
            image = f"<the package stage's image of {ctx.model_name} {ctx.model_version}>"
        argv = ["docker", "run", "--detach", "--network", "host", "--read-only"]
        argv += ["--tmpfs", "/tmp", "--restart", str(args["restartPolicy"])]
        if args.get("memory"):
            argv += ["--memory", str(args["memory"])]
        if args.get("cpus"):
            argv += ["--cpus", str(args["cpus"])]
        for key, value in container_environment(int(args["port"]), args).items():
            argv += ["--env", f"{key}={value}"]
        for key, value in self._labels(ctx, name).items():
            argv += ["--label", f"{key}={value}"]
        return shlex.join([*argv, image]) + "\n"

    @staticmethod
    def _labels(ctx: DeployContext, name: str) -> dict[str, str]:
        return {
            f"{LABEL}/deployment": name,
            f"{LABEL}/model-name": ctx.model_name,
            f"{LABEL}/model-version": ctx.model_version,
            f"{LABEL}/run-id": ctx.run_id,
        }

    def deploy(self, ctx: DeployContext) -> DeployResult:
        args = with_defaults(TARGET, ctx.arguments)
        name = state.check_name(args.get("name") or ctx.model_name)
        reference = image_reference(ctx, args)
        clients = _clients(ctx)
        try:
            client = clients.docker()
            with state.locked(ctx.workspace, name):
                return self._deploy_locked(ctx, client, clients.docker_host, name, reference, args)
        finally:
            if clients is not ctx.clients:  # the stage's own clients are the stage's to close
                clients.close()

    def _deploy_locked(
        self,
        ctx: DeployContext,
        client: Any,
        docker_host: str,
        name: str,
        reference: str,
        args: dict[str, Any],
    ) -> DeployResult:
        workspace = ctx.workspace
        old = state.load(workspace, name)
        if old is not None and old.target != TARGET:
            raise StageError(
                f"deployment {name!r} is a {old.target} deployment: delete it first "
                f"(legion-ci deployments delete {name}) or choose another arguments.name"
            )
        leftover = _container(client, old) if old is not None else None
        old_container = leftover if leftover is not None and leftover.status == "running" else None
        port = int(args["port"])
        if not port:
            port = int(old.details["port"]) if old_container is not None else free_port(HOST)  # type: ignore[union-attr]
        url = url_of(HOST, port)
        keep_serving = old_container is not None and old.details.get("port") == port  # type: ignore[union-attr]
        if not keep_serving:
            replacement.check_port_free(HOST, port)
        image = self._image(ctx, client, reference)

        kept = (
            f"; {old.model_version} keeps serving on {url} "  # type: ignore[union-attr]
            f"(container {old_container.name})"  # type: ignore[union-attr]
            if keep_serving
            else ""
        )
        ctx.log.line(
            f"deploy: {'replacing' if keep_serving else 'starting'} {name} "
            f"({ctx.model_name} {ctx.model_version}, {reference}) on {url}"
            + (f", beside the running {old.model_version}" if keep_serving else "")  # type: ignore[union-attr]
        )
        try:
            example = self._example(ctx, client, image.id) if args["smokeTest"] else None
        except StageError as exc:
            raise StageError(f"{name}: {ctx.model_name} {ctx.model_version}: {exc}{kept}") from None

        container_name = f"legion-ci-{name}-{uuid.uuid4().hex[:8]}"
        new_container = _NewContainer(
            lambda: self._run(ctx, client, reference, container_name, name, port, args),
            container_name,
            workers=_workers_of(image, args),
            memory=args.get("memory"),
        )
        ready_s = replacement.start_and_prove(
            new_container,
            failed=f"{name}: the new container ({ctx.model_name} {ctx.model_version})",
            url=url,
            args=args,
            example=example,
            replacing=keep_serving,
            kept=kept,
            log=ctx.log,
        )
        container = new_container.container

        new = state.DeploymentState.deployed(
            ctx,
            name=name,
            target=TARGET,
            url=url,
            details={
                "container": container_name,
                "container_id": container.id,
                "image": reference,
                "image_id": image.id,
                "docker_host": docker_host,
                "host": HOST,
                "port": port,
                "settings": {
                    k: args.get(k)
                    for k in ("restartPolicy", "memory", "cpus", "workers", "drainTimeout")
                },
            },
            old=old,
        )
        state.save(workspace, new)
        if old_container is not None:
            replacement.drain_old(
                ctx.log,
                "container",
                old_container.name,
                lambda: stop_container(old_container, float(args["drainTimeout"])),
            )
        elif leftover is not None:  # exited or restarting: it serves nothing, it only lingers
            remove(leftover)
            ctx.log.line(f"deploy: removed the old {leftover.status} container {leftover.name}")
        return DeployResult(
            outputs={
                "url": url,
                "name": name,
                "target": TARGET,
                "container": container_name,
                "container_id": container.id,
                "image": reference,
                "port": port,
                "ready_seconds": round(ready_s, 3),
                "replaced": old.model_version if old_container is not None else None,  # type: ignore[union-attr]
            }
        )

    @staticmethod
    def _image(ctx: DeployContext, client: Any, reference: str) -> Any:
        """The image on the engine, pulled (with the deploy connection's registry credentials,
        if any) when the engine does not have it."""
        from docker.errors import APIError, ImageNotFound

        try:
            return client.images.get(reference)
        except ImageNotFound:
            pass
        except APIError as exc:
            raise StageError(f"image {reference}: {api_error_text(exc)}") from None
        auth = None
        if ctx.connection is not None and ctx.connection.type == "docker":
            from legion_ci.integrations.clients import registry_auth

            auth = registry_auth(ctx.connection).auth_config()
        ctx.log.line(f"deploy: pulling {reference}")
        try:
            return client.images.pull(reference, auth_config=auth)
        except APIError as exc:
            raise StageError(
                f"image {reference} is not on the Docker engine and cannot be pulled: "
                f"{api_error_text(exc)}"
            ) from None

    @staticmethod
    def _example(ctx: DeployContext, client: Any, image_id: str) -> dict[str, Any]:
        if ctx.example is not None:
            return dict(ctx.example)
        if ctx.artifact is not None:  # called without the runner, which reads it once
            return smoke.example_request(ctx.artifact)
        # No binary in this run (the image came from elsewhere): ask the image itself.
        from legion_ci.integrations.docker_engine import model_example

        try:
            found = model_example(client, image_id)
        except StageError as exc:
            raise StageError(str(exc).removesuffix("; the image is not pushed")) from None
        return {"columns": found.columns, "data": found.rows}

    def _run(
        self,
        ctx: DeployContext,
        client: Any,
        reference: str,
        container_name: str,
        name: str,
        port: int,
        args: dict[str, Any],
    ) -> Any:
        from docker.errors import APIError

        limits: dict[str, Any] = {}
        if args.get("memory"):
            limits["mem_limit"] = str(args["memory"])
        if args.get("cpus"):
            limits["nano_cpus"] = int(float(args["cpus"]) * 1e9)
        try:
            return client.containers.run(
                reference,
                detach=True,
                name=container_name,
                network_mode="host",
                read_only=True,
                tmpfs={"/tmp": "rw"},
                environment=container_environment(port, args),
                restart_policy=restart_policy(str(args["restartPolicy"])),
                labels=self._labels(ctx, name),
                ulimits=engine_ulimits(client) or None,  # None: dockerd as before
                **limits,
            )
        except APIError as exc:
            # A container that was created but could not start must not stay behind.
            remove_named(client, container_name)
            raise StageError(f"{name}: cannot start {reference}: {api_error_text(exc)}") from None


class _NewContainer:
    """The new container, as replacement.start_and_prove drives it."""

    kind = "container"

    def __init__(
        self, run: Callable[[], Any], name: str, *, workers: int, memory: str | None
    ) -> None:
        self.run, self.name, self.workers, self.memory = run, name, workers, memory
        self.container: Any = None
        self.last_lines = "    (no log)"

    def start(self) -> str:
        self.container = self.run()
        return f"container {self.name}"

    def alive(self) -> str | None:
        self.container.reload()
        attrs = self.container.attrs.get("State") or {}
        restarts = self.container.attrs.get("RestartCount") or 0
        if attrs.get("Status") in ("exited", "dead") or attrs.get("Restarting") or restarts:
            if attrs.get("OOMKilled"):
                return f"it was killed for using more than its memory limit ({self.memory})"
            return f"it exited with code {attrs.get('ExitCode')} while starting"
        return None

    def ready(self) -> bool:
        text = self.container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        return text.count(READY_MARK) >= self.workers

    def stop(self) -> None:
        self.last_lines = log_tail(self.container)  # removing the container removes its log
        remove(self.container)

    def tail(self) -> str:
        return f"last lines of its log (container {self.name}, removed):\n{self.last_lines}"


def _container(client: Any, record: state.DeploymentState) -> Any:
    """The deployment's container (in whatever state), or None when it no longer exists."""
    from docker.errors import NotFound

    if record.target != TARGET or not record.details.get("container_id"):
        return None
    try:
        return client.containers.get(record.details["container_id"])
    except NotFound:
        return None
