"""A Kubernetes API for the tests: the `kmock` emulator on 127.0.0.1, and a stand-in controller.

No API server can be installed on these machines. `python tests/k8s_support.py --port P`
(run with the kmock side environment that scripts/setup.d/25-kubernetes.sh makes) serves
kmock's KubernetesEmulator with its bundled resource list, plus what a real API server does
that kmock leaves out and the target relies on:
- `metadata.generation` starts at 1 and grows when a Deployment's spec changes;
- `--forbid NS` answers every request in namespace NS with 403, as RBAC would;
- only the `--namespace NS` namespaces exist: a request in another one gets 404
  `namespaces "x" not found`;
- a pod's `log` is the text the stand-in kubelet keeps in its annotation, else 400 "waiting
  to start" (kmock would return the Pod object).
The test process drives the cluster side with `Controller`, which moves the Deployments'
status the way the deployment controller would, and `Kubelet`, which runs a Job's container
command as a real local process (see their docstrings).

The emulator side imports only the standard library and kmock; the test side imports the
Kubernetes client lazily.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOG_ANNOTATION = "emulator.legion-ci/log"  # where the stand-in kubelet keeps a pod's log


def kmock_python() -> str:
    """The side environment's interpreter (kmock's pytest plugin stays out of .venv)."""
    cache = os.environ.get("LEGION_CI_CI_CACHE") or os.path.expanduser("~/.cache/legion-ci-ci")
    return str(Path(cache) / "kmock-venv" / "bin" / "python")


# -- the emulator (runs in the kmock environment) ------------------------------------------------
def _emulator_class() -> type:
    import kmock
    from kmock._internal import enums

    class Cluster(kmock.KubernetesEmulator):
        forbidden: frozenset[str] = frozenset()
        namespaces: frozenset[str] = frozenset()

        async def _handle(self, request: Any) -> Any:
            # kmock 0.8 mis-parses the cluster-scoped /api/v1/namespaces paths, so namespaces
            # are given on the command line, and a request in any other one gets the real API
            # server's answer.
            if request.namespace and request.namespace not in self.namespaces | self.forbidden:
                raise kmock.KubernetesError(
                    status=404,
                    reason="NotFound",
                    message=f'namespaces "{request.namespace}" not found',
                    details={"name": request.namespace, "kind": "namespaces"},
                )
            if request.namespace in self.forbidden:
                what = request.resource.plural if request.resource is not None else "resources"
                raise kmock.KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=f'{what} is forbidden: User "ci" cannot '
                    f'{str(request.action).lower()} resource "{what}" in the namespace '
                    f'"{request.namespace}"',
                )
            if request.subresource == "log":
                # The stand-in kubelet keeps a pod's log in an annotation; a container that
                # never started has none, and the API server says why.
                key = (kmock.resource("", "v1", "pods"), request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    annotations = self.objects[key].raw["metadata"].get("annotations") or {}
                    if LOG_ANNOTATION in annotations:
                        import aiohttp.web

                        return aiohttp.web.Response(text=annotations[LOG_ANNOTATION])
                raise kmock.KubernetesError(
                    status=400,
                    reason="BadRequest",
                    message=f'container "model" in pod "{request.name}" is waiting to start: '
                    "trying and failing to pull image",
                )
            spec_write = (
                request.resource is not None
                and request.resource.plural == "deployments"
                and request.action in (enums.action.CREATE, enums.action.UPDATE)
                and not request.subresource
            )
            key = before = None
            if spec_write:
                data = request.data if isinstance(request.data, dict) else {}
                meta = data.get("metadata", {})
                key = (
                    request.resource,
                    request.namespace or meta.get("namespace"),
                    request.name or meta.get("name"),
                )
                if key in self.objects and not self.objects[key].deleted:
                    before = copy.deepcopy(self.objects[key].raw)
            response = await super()._handle(request)
            if spec_write and key in self.objects and not self.objects[key].deleted:
                obj = self.objects[key]
                generation = int((before or {}).get("metadata", {}).get("generation") or 0)
                if before is None or before.get("spec") != obj.raw.get("spec"):
                    obj.patch({"metadata": {"generation": generation + 1}})
            return response

    return Cluster


async def _serve(port: int, forbidden: list[str], namespaces: list[str]) -> None:
    import kmock

    cluster = _emulator_class()()
    cluster.forbidden = frozenset(forbidden)
    cluster.resources.load_bundled()
    cluster.namespaces = frozenset(namespaces)
    async with cluster, kmock.Server(cluster, host="127.0.0.1", port=port):
        print(f"kmock emulator on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()


# -- the test side -------------------------------------------------------------------------------
def write_kubeconfig(path: Path, port: int, *, token: str = "emulator-token-0123456789") -> Path:
    """Two contexts: `emulator` (the kmock server) and `nowhere` (a port nothing listens on)."""
    import yaml

    from tests.procs import free_port

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "emulator", "cluster": {"server": f"http://127.0.0.1:{port}"}},
            {"name": "nowhere", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}},
        ],
        "users": [{"name": "ci", "user": {"token": token}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "ci"}},
            {"name": "nowhere", "context": {"cluster": "nowhere", "user": "ci"}},
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class Controller(threading.Thread):
    """Moves each Deployment's status the way the deployment controller would, polling the
    emulator through the Kubernetes client (bounded: stops when told or after `seconds`).

    Per image of the pod template (its tag):
    - any ordinary tag: every replica updated and available, `Progressing` with reason
      NewReplicaSetAvailable;
    - `:pull-fails`: one new pod stuck in ErrImagePull (a Pod object and an Event);
    - `:never-ready`: `Progressing` False with reason ProgressDeadlineExceeded.
    """

    def __init__(self, api_client: Any, seconds: float = 120.0):
        super().__init__(daemon=True)
        from kubernetes import client

        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.seconds = seconds
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self.tick()
            except Exception as exc:  # reported by the test, never silently lost
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)

    def tick(self) -> None:
        listed = self.apps.list_deployment_for_all_namespaces(_preload_content=False)
        for dep in json.loads(listed.data)["items"]:
            meta, spec = dep["metadata"], dep["spec"]
            generation = meta.get("generation", 1)
            if (dep.get("status") or {}).get("observedGeneration") == generation:
                continue
            self.react(meta, spec, generation)

    def react(self, meta: dict[str, Any], spec: dict[str, Any], generation: int) -> None:
        name, namespace = meta["name"], meta["namespace"]
        replicas = spec.get("replicas", 1)
        image = spec["template"]["spec"]["containers"][0]["image"]
        status: dict[str, Any] = {"observedGeneration": generation, "replicas": replicas}
        if image.endswith(":pull-fails"):
            pod = f"{name}-{generation}-x1"
            labels = spec["selector"]["matchLabels"]
            waiting = {
                "reason": "ErrImagePull",
                "message": f'failed to pull image "{image}": not found',
            }
            self.core.create_namespaced_pod(
                namespace,
                {
                    "metadata": {"name": pod, "namespace": namespace, "labels": labels},
                    "spec": spec["template"]["spec"],
                    "status": {
                        "phase": "Pending",
                        "containerStatuses": [
                            {
                                "name": "model",
                                "image": image,
                                "imageID": "",
                                "ready": False,
                                "restartCount": 0,
                                "state": {"waiting": waiting},
                            }
                        ],
                    },
                },
            )
            self.core.create_namespaced_event(
                namespace,
                {
                    "metadata": {"name": f"{pod}.1", "namespace": namespace},
                    "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
                    "reason": "Failed",
                    "message": waiting["message"],
                    "type": "Warning",
                },
            )
            status.update(replicas=replicas + 1, updatedReplicas=1, unavailableReplicas=1)
            status["availableReplicas"] = replicas
        elif image.endswith(":never-ready"):
            status.update(updatedReplicas=1, availableReplicas=replicas, unavailableReplicas=1)
            status["conditions"] = [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet "{name}-{generation}" has timed out progressing.',
                }
            ]
        else:
            status.update(updatedReplicas=replicas, readyReplicas=replicas)
            status["availableReplicas"] = replicas
            status["conditions"] = [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ]
        self.apps.patch_namespaced_deployment_status(name, namespace, {"status": status})


@contextlib.contextmanager
def emulator(folder: Path, namespaces: tuple[str, ...] = ("ml",), forbidden=("locked",)):
    """The emulator on a free port (stopped by pid at the end); yields (kubeconfig, port)."""
    from tests.procs import free_port, http_ok, service

    port = free_port()
    argv = [kmock_python(), str(ROOT / "tests" / "k8s_support.py"), "--port", str(port)]
    for name in namespaces:
        argv += ["--namespace", name]
    for name in forbidden:
        argv += ["--forbid", name]
    with service(
        argv,
        folder / "kmock.log",
        ready=http_ok(f"http://127.0.0.1:{port}/version"),
        timeout=60,
        name="kmock",
    ):
        yield write_kubeconfig(folder / "kubeconfig", port), port


def api_client(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


class Kubelet(threading.Thread):
    """Runs each new Job's container as a real local process, the way a node would run its
    pod: the command with `python` meaning this interpreter (the "image" is this machine's
    environment), in `workdir`, with the Job's env (`secretKeyRef`s resolved from `secrets`).
    It creates the Job's Pod, keeps the process's output in the Pod's log annotation, and sets
    the Job's status to Complete or Failed when the process exits. Jobs whose image ends in
    `:never-runs` are left pending. Bounded: stops when told or after `seconds`."""

    def __init__(self, api: Any, workdir: Path, secrets: dict[str, dict[str, str]], seconds=300.0):
        super().__init__(daemon=True)
        from kubernetes import client

        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.workdir, self.secrets, self.seconds = workdir, secrets, seconds
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.running: dict[tuple[str, str], tuple[Any, Path]] = {}
        self.done: set[tuple[str, str]] = set()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    self.tick()
                except Exception as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.2)
        finally:
            for proc, _log in self.running.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def tick(self) -> None:
        listed = self.batch.list_job_for_all_namespaces(_preload_content=False)
        for job in json.loads(listed.data)["items"]:
            key = (job["metadata"]["namespace"], job["metadata"]["name"])
            status = job.get("status") or {}
            if key in self.done or status.get("succeeded") or status.get("failed"):
                continue  # finished, perhaps under an earlier kubelet
            if key not in self.running:
                self.launch(job, key)
            else:
                self.check(key)

    def launch(self, job: dict[str, Any], key: tuple[str, str]) -> None:
        import subprocess

        container = job["spec"]["template"]["spec"]["containers"][0]
        if container["image"].endswith(":never-runs"):
            self.done.add(key)
            return
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            env[item["name"]] = self.secrets[ref["name"]][ref["key"]] if ref else item["value"]
        argv = [sys.executable if container["command"][0] == "python" else container["command"][0]]
        argv += container["command"][1:]
        log_path = self.workdir / f"{key[1]}.pod.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        labels = {**job["spec"]["template"]["metadata"].get("labels", {}), "job-name": key[1]}
        self.core.create_namespaced_pod(
            key[0],
            {
                "metadata": {"name": f"{key[1]}-pod", "namespace": key[0], "labels": labels},
                "spec": job["spec"]["template"]["spec"],
                "status": {"phase": "Running"},
            },
        )
        self.running[key] = (proc, log_path)

    def check(self, key: tuple[str, str]) -> None:
        proc, log_path = self.running[key]
        code = proc.poll()
        text = log_path.read_text(encoding="utf-8", errors="replace")
        self.core.patch_namespaced_pod(
            f"{key[1]}-pod", key[0], {"metadata": {"annotations": {LOG_ANNOTATION: text}}}
        )
        if code is None:
            return
        if code == 0:
            status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        else:
            status = {
                "failed": 1,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    }
                ],
            }
        self.batch.patch_namespaced_job_status(key[1], key[0], {"status": status})
        self.done.add(key)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--forbid", action="append", default=[], metavar="NAMESPACE")
    parser.add_argument("--namespace", action="append", default=[], metavar="NAMESPACE")
    options = parser.parse_args(argv)
    asyncio.run(_serve(options.port, options.forbid, options.namespace))


if __name__ == "__main__":
    main(sys.argv[1:])
