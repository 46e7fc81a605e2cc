"""The tests' node agent: the kubelet's part for the real control plane of tests/kube_support.py.

It registers Node `legion-node` (Ready, with capacity, so the real scheduler binds pods to it)
and polls the pods bound to it, setting their status the way a kubelet would:
- a Job's pod (label `job-name`) runs its container command as a real local process (`python`
  meaning this interpreter: the "image" is this machine's environment) with the pod's env,
  `secretKeyRef`s read from the Secret through the API; Running while it runs, then Succeeded
  or Failed with the container's exit code (the real Job controller turns that into the Job's
  conditions). An image ending in `:never-runs` leaves the pod Pending.
- any other pod becomes Running and Ready, except images ending in `:never-ready` (Running,
  never Ready: the rollout exceeds its progress deadline) and `:pull-fails` (Pending, waiting
  in ErrImagePull, with a Warning event, as a kubelet that cannot pull reports it);
- a pod being deleted has its process stopped and is removed (grace period 0).
It serves the pods' logs over HTTPS on 127.0.0.1 (`/containerLogs/NS/POD/CONTAINER`, the
kubelet's path), so the real `pods/log` subresource works through the API server; a container
that never started gets the kubelet's 400 "is waiting to start".

Not simulated: images, containers, probes, volumes, resource limits, networking.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from legion_ci.processes import terminate_group
from tests.procs import free_port

NODE = "legion-node"
ROOT = Path(__file__).resolve().parents[1]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Logs(http.server.ThreadingHTTPServer):
    daemon_threads = True
    agent: NodeAgent


class _LogHandler(http.server.BaseHTTPRequestHandler):
    server: _Logs

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._send(404, "not found")
            return
        _, namespace, pod, container = parts
        text = self.server.agent.log_of(namespace, pod)
        if text is None:
            self._send(
                400,
                f'container "{container}" in pod "{pod}" is waiting to start: '
                "trying and failing to pull image",
            )
            return
        tail = urllib.parse.parse_qs(url.query).get("tailLines")
        if tail:
            text = "".join(text.splitlines(keepends=True)[-int(tail[0]) :])
        self._send(200, text)

    def _send(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class NodeAgent(threading.Thread):
    """See the module docstring. Bounded: stops when told (`stop`) or after `seconds`;
    failures of its own are kept in `errors` for the test to assert on."""

    def __init__(self, api: Any, workdir: Path, cert: Path, ca: Path, seconds: float = 1800.0):
        super().__init__(daemon=True)
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.workdir, self.seconds = workdir, seconds
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.procs: dict[tuple[str, str], tuple[subprocess.Popen, Path]] = {}
        self.handled: dict[tuple[str, str], str] = {}  # pod -> what it was set to
        self.lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, cert.with_suffix(".key"))
        # Only the API server (a client cert from the cluster's CA) may read logs.
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
        self.port = free_port()
        self.http = _Logs(("127.0.0.1", self.port), _LogHandler)
        self.http.agent = self
        self.http.socket = context.wrap_socket(self.http.socket, server_side=True)
        self.http_thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    # -- the node ---------------------------------------------------------------------------
    def register(self) -> None:
        from kubernetes import client

        try:
            self.core.create_node({"metadata": {"name": NODE, "labels": {"type": "agent"}}})
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        now = _now()
        capacity = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        self.core.patch_node_status(
            NODE,
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "the legion-ci tests' node agent",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                    "nodeInfo": {
                        "kubeletVersion": "v1.37.2",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "containerRuntimeVersion": "legion-ci-node-agent://0",
                        "kernelVersion": os.uname().release,
                        "osImage": "local processes",
                        "kubeProxyVersion": "",
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                    },
                }
            },
        )

        # The API server's TaintNodesByCondition admission gives a new Node the not-ready
        # taint; the node lifecycle controller lifts it once the Node is Ready. That
        # controller is not run (it would also want the kubelet's heartbeats), so the agent
        # lifts it, which is all the controller would do here.
        self.core.patch_node(NODE, {"spec": {"taints": []}})

    def run(self) -> None:
        self.http_thread.start()
        deadline = time.monotonic() + self.seconds
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    self.tick()
                except Exception as exc:  # reported by the test, never silently lost
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.1)
        finally:
            self.http.shutdown()
            self.http.server_close()
            for proc, _log in self.procs.values():
                terminate_group(proc, grace=5)

    def tick(self) -> None:
        listed = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={NODE}", _preload_content=False
        )
        for pod in json.loads(listed.data)["items"]:
            meta = pod["metadata"]
            key = (meta["namespace"], meta["name"])
            if meta.get("deletionTimestamp"):
                self.remove(key)
            elif key in self.procs:
                self.check(pod, key)
            elif key not in self.handled:
                self.start_pod(pod, key)

    # -- pods --------------------------------------------------------------------------------
    def start_pod(self, pod: dict[str, Any], key: tuple[str, str]) -> None:
        container = pod["spec"]["containers"][0]
        image = container["image"]
        if image.endswith(":never-runs"):
            self.handled[key] = "Pending"
            return
        if image.endswith(":pull-fails"):
            self.pull_fails(pod, key)
            return
        if "job-name" in (pod["metadata"].get("labels") or {}):
            self.run_job_pod(pod, key)
            return
        ready = not image.endswith(":never-ready")
        self.set_status(pod, "Running", ready=ready, state={"running": {"startedAt": _now()}})
        self.handled[key] = "Running"

    def pull_fails(self, pod: dict[str, Any], key: tuple[str, str]) -> None:
        image = pod["spec"]["containers"][0]["image"]
        message = f'failed to pull image "{image}": not found'
        state = {"waiting": {"reason": "ErrImagePull", "message": message}}
        self.set_status(pod, "Pending", ready=False, state=state)
        now = _now()
        self.core.create_namespaced_event(
            key[0],
            {
                "metadata": {"generateName": f"{key[1]}.", "namespace": key[0]},
                "involvedObject": {
                    "kind": "Pod",
                    "name": key[1],
                    "namespace": key[0],
                    "uid": pod["metadata"]["uid"],
                    "apiVersion": "v1",
                },
                "reason": "Failed",
                "message": message,
                "type": "Warning",
                "source": {"component": "kubelet", "host": NODE},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )
        self.handled[key] = "Pending"

    def run_job_pod(self, pod: dict[str, Any], key: tuple[str, str]) -> None:
        container = pod["spec"]["containers"][0]
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            env[item["name"]] = self.secret_value(key[0], ref) if ref else item.get("value", "")
        command = list(container.get("command") or []) + list(container.get("args") or [])
        argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
        log_path = self.workdir / f"{key[0]}.{key[1]}.log"
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
        with self.lock:
            self.procs[key] = (proc, log_path)
        self.set_status(pod, "Running", ready=True, state={"running": {"startedAt": _now()}})
        self.handled[key] = "Running"

    def secret_value(self, namespace: str, ref: dict[str, Any]) -> str:
        import base64

        secret = self.core.read_namespaced_secret(ref["name"], namespace)
        return base64.b64decode(secret.data[ref["key"]]).decode()

    def check(self, pod: dict[str, Any], key: tuple[str, str]) -> None:
        proc, _log = self.procs[key]
        code = proc.poll()
        if code is None or self.handled.get(key) != "Running":
            return
        phase = "Succeeded" if code == 0 else "Failed"
        state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "finishedAt": _now(),
            }
        }
        self.set_status(pod, phase, ready=False, state=state)
        self.handled[key] = phase

    def remove(self, key: tuple[str, str]) -> None:
        from kubernetes import client

        with self.lock:
            entry = self.procs.get(key)
        if entry is not None:
            terminate_group(entry[0], grace=5)
        try:
            self.core.delete_namespaced_pod(key[1], key[0], grace_period_seconds=0)
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def set_status(self, pod: dict[str, Any], phase: str, *, ready: bool, state: dict) -> None:
        now = _now()
        container = pod["spec"]["containers"][0]
        flag = "True" if ready else "False"
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ]
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": (pod.get("status") or {}).get("startTime") or now,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": ready,
                    "started": "running" in state,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        self.core.patch_namespaced_pod_status(
            pod["metadata"]["name"], pod["metadata"]["namespace"], {"status": status}
        )

    def log_of(self, namespace: str, pod: str) -> str | None:
        with self.lock:
            entry = self.procs.get((namespace, pod))
        if entry is None:
            if self.handled.get((namespace, pod)) == "Running":
                return ""  # a model server pod: running, nothing to say here
            return None
        return entry[1].read_text(encoding="utf-8", errors="replace")
