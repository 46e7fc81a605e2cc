"""The Kubernetes objects of a model deployment, rendered as plain dicts (and YAML).

A Deployment and a Service, optionally a HorizontalPodAutoscaler and a PodDisruptionBudget:
- the image by digest (`repo@sha256:...`) when the package stage reported one;
- readiness probe on the server's `/readyz`, liveness on `/livez`;
- non-root, read-only root file system, no privilege escalation, every capability dropped,
  RuntimeDefault seccomp; /tmp is an emptyDir and the server's writable paths point there;
- rolling update with maxUnavailable 0, so capacity never drops during a rollout;
- labels with the model name and version, annotations with the run id and the image.
Nothing here talks to a cluster: `render_yaml` is what `--dry-run` prints.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from legion_ci.errors import StageError

LABEL_PREFIX = "legion-ci.epam.com"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_value(value: str) -> str:
    """`value` made a valid label value (63 chars of [A-Za-z0-9-_.], alphanumeric ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")
    return cleaned if _LABEL_VALUE.match(cleaned) else ""


def image_reference(package_outputs: dict[str, Any], arguments: dict[str, Any]) -> str:
    """The image to run: `arguments.image` if set, else the packaged image, by digest."""
    if arguments.get("image"):
        return str(arguments["image"])
    image = package_outputs.get("image")
    if not image:
        raise StageError(
            "the kubernetes target runs the packaged image, and this run has none: run the "
            "package stage first (or set the deploy stage's arguments.image)"
        )
    digest = package_outputs.get("digest")
    if not digest:
        return str(image)
    if "@" in digest:  # already a reference (docker-rest reports `repository@sha256:...`)
        return str(digest)
    if "@" in image:
        image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    repository = image[:colon] if colon > slash else image  # drop the tag, keep a port
    return f"{repository}@{digest}"


def render(
    *,
    name: str,
    namespace: str,
    model_name: str,
    model_version: str,
    run_id: str,
    image: str,
    arguments: dict[str, Any],
) -> list[dict[str, Any]]:
    """The objects to apply, in apply order (Service first: it selects pods by label)."""
    port = int(arguments["containerPort"])
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
    labels = {
        **selector,
        "app.kubernetes.io/managed-by": "legion-ci",
        f"{LABEL_PREFIX}/model-name": label_value(model_name),
        f"{LABEL_PREFIX}/model-version": label_value(model_version),
    }
    annotations = {
        f"{LABEL_PREFIX}/run-id": run_id,
        f"{LABEL_PREFIX}/model-version": model_version,
        f"{LABEL_PREFIX}/image": image,
    }
    meta = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5}
    container: dict[str, Any] = {
        "name": "model",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [
            {"name": "LEGION_SERVE_HOST", "value": "0.0.0.0"},
            {"name": "LEGION_SERVE_PORT", "value": str(port)},
            {"name": "LEGION_SERVE_WORKERS", "value": str(arguments["workers"])},
            {"name": "LEGION_SERVE_DRAIN_TIMEOUT_S", "value": str(arguments["drainTimeout"])},
            # The root file system is read-only: caches and the feedback store go to /tmp.
            {"name": "HOME", "value": "/tmp"},
            {"name": "LEGION_CI_CACHE", "value": "/tmp/legion-ci-cache"},
            {"name": "LEGION_FEEDBACK_DB", "value": "/tmp/feedback.sqlite3"},
        ],
        "readinessProbe": {**probe, "initialDelaySeconds": 2, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 150},
        "resources": arguments["resources"],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": int(arguments["runAsUser"]),
            "runAsGroup": int(arguments["runAsUser"]),
            "fsGroup": int(arguments["runAsUser"]),
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": int(arguments["drainTimeout"]) + 5,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if arguments["imagePullSecrets"]:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in arguments["imagePullSecrets"]]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": int(arguments["replicas"]),
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": int(arguments["progressDeadlineSeconds"]),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": arguments["serviceType"],
            "selector": selector,
            "ports": [
                {
                    "name": "http",
                    "port": int(arguments["servicePort"]),
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }
    objects = [service, deployment]
    hpa = arguments.get("autoscaling")
    if hpa:
        objects.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": meta,
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": int(hpa.get("minReplicas", arguments["replicas"])),
                    "maxReplicas": int(hpa["maxReplicas"]),
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": int(hpa.get("cpuUtilization", 70)),
                                },
                            },
                        }
                    ],
                },
            }
        )
    pdb = arguments.get("disruptionBudget")
    if pdb:
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": meta,
                "spec": {"selector": {"matchLabels": selector}, **pdb},
            }
        )
    return objects


def render_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML that `kubectl apply -f -` accepts."""
    return yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)
