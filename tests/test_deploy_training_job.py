"""Training as a Kubernetes Job (legion_ci/training/job.py) on a real control plane
(tests/kube_support.py): the real Job controller makes the pod, the real scheduler binds it to
the tests' node agent (tests/kube_node.py), which runs its command as a real local process with
the real `legion-ci` training code, reading the credentials from the Secret through the API;
the log comes back through the API server's `pods/log`; the result travels through the moto S3
emulator (not AWS) on 127.0.0.1. The Job manifest is also checked against the 1.33 schemas.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import kubernetes_validate
import pytest
from conftest import run_cli
from data_support import moto_server

from legion_ci.errors import StageError
from legion_ci.integrations.base import Connection
from legion_ci.integrations.clients import KubernetesCluster as Cluster
from legion_ci.processes import StageLog
from legion_ci.redact import Redactor
from legion_ci.training.job import TrainingJob, render_job, run_training_job
from tests.kube_support import api_client

KEY_ID, SECRET = "AKIATESTKEY0001", "test-secret-value-0123456789"


@pytest.fixture(scope="module")
def cluster_and_storage(kube, tmp_path_factory: pytest.TempPathFactory):
    """The module's control plane with the pods' S3 credentials in Secret `training-s3`, and
    moto; yields (admin kubeconfig, S3 endpoint, node agent)."""
    from kubernetes import client

    plane, agent = kube
    folder = tmp_path_factory.mktemp("storage")
    client.CoreV1Api(plane.api_client()).create_namespaced_secret(
        "ml",
        {
            "metadata": {"name": "training-s3"},
            "stringData": {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET},
        },
    )
    with moto_server(folder / "moto.log") as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="models")
        yield plane.admin, endpoint, agent


@pytest.fixture
def image(sh_pipeline: Path) -> Path:
    """What the toolchain image would hold: a project whose pipeline trains with the POSIX
    shell trainer (the MLflow wine training is proven elsewhere; here it would only cost time)."""
    return sh_pipeline.parent


def job(endpoint: str, name: str, pipeline: str, image: str = "toolchain:1") -> TrainingJob:
    return TrainingJob(
        name=name,
        namespace="ml",
        image=image,
        pipeline=pipeline,
        upload=f"s3://models/runs/{name}",
        storage=Connection(
            "store",
            "s3",
            "s3://models",
            {"endpoint": endpoint, "keyID": KEY_ID, "keySecret": SECRET},
        ),
        credentials_secret="training-s3",
        model_name="wine",
        model_version="1.0",
        run_id="run-1",
        resources={"requests": {"cpu": "1", "memory": "1Gi"}},
    )


def run(cluster_and_storage, folder: Path, spec: TrainingJob, timeout: float = 240):
    kubeconfig, _endpoint, agent = cluster_and_storage
    agent.workdir = folder  # the node's "image": the project, run in place
    log = StageLog(folder / "train.log", Redactor([SECRET]))
    cluster = Cluster(Connection("c", "kubernetes", options={"kubeconfig": str(kubeconfig)}))
    try:
        return run_training_job(
            cluster, spec, folder / "fetched", log, timeout=timeout, poll_interval=0.2
        ), (folder / "train.log")
    finally:
        assert agent.errors == [], agent.errors[:5]


def test_the_job_manifest_passes_the_schemas_and_holds_no_secret() -> None:
    manifest = render_job(job("http://127.0.0.1:9", "wine-train-1", "pipelines/wine.yaml"))
    kubernetes_validate.validate(manifest, "1.33", strict=True)
    text = json.dumps(manifest)
    assert SECRET not in text and KEY_ID not in text
    env = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs["AWS_SECRET_ACCESS_KEY"] == {"name": "training-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert manifest["spec"]["backoffLimit"] == 0


def test_training_runs_as_a_job_and_the_binary_comes_back(
    tmp_path: Path, image: Path, cluster_and_storage
) -> None:
    _kubeconfig, endpoint, _agent = cluster_and_storage
    result, log = run(cluster_and_storage, image, job(endpoint, "linear-train-ok", "pipeline.yaml"))
    artifact = Path(result["artifact"])
    assert artifact.name == "linear-1.0.zip" and artifact.is_file()
    assert result["outputs"]["artifact_sha256"] == result["sha256"]
    info = json.loads(run_cli("model", "info", str(artifact), "--json").assert_success().out)
    assert info["model"] == {"name": "linear", "version": "1.0"}
    text = log.read_text()
    assert "[pod] sh-trainer: training from" in text, text
    assert "[pod] uploaded runs/linear-train-ok/linear-1.0.zip" in text, text
    assert SECRET not in text


def test_a_failed_job_fails_the_stage_with_its_log(
    tmp_path: Path, image: Path, cluster_and_storage
) -> None:
    _kubeconfig, endpoint, _agent = cluster_and_storage
    with pytest.raises(StageError) as failed:
        run(cluster_and_storage, image, job(endpoint, "linear-train-bad", "missing.yaml"))
    message = str(failed.value)
    assert "training Job ml/linear-train-bad failed: BackoffLimitExceeded" in message, message
    assert "missing.yaml" in message, message  # the pod's own error, from its log


def test_a_job_that_never_finishes_times_out_and_is_deleted(
    tmp_path: Path, image: Path, cluster_and_storage
) -> None:
    kubeconfig, endpoint, _agent = cluster_and_storage
    spec = job(endpoint, "linear-train-stuck", "pipeline.yaml", image="toolchain:never-runs")
    with pytest.raises(StageError, match=r"did not finish within 1 s; it was deleted"):
        run(cluster_and_storage, image, spec, timeout=1)
    from kubernetes import client

    batch = client.BatchV1Api(api_client(kubeconfig))
    with pytest.raises(client.ApiException) as gone:
        batch.read_namespaced_job("linear-train-stuck", "ml")
    assert gone.value.status == 404


def test_the_train_stage_runs_on_the_cluster_from_the_pipeline_file(
    sh_project: Path, cluster_and_storage
) -> None:
    """`train: {cluster: ...}` in the pipeline: `legion-ci stage train` submits the Job, the
    node agent runs the same pipeline's train stage in the pod, and the binary, its
    sha256 and metrics come back into this run's record, ready for package and deploy."""
    from conftest import SH_PIPELINE, write

    kubeconfig, endpoint, agent = cluster_and_storage
    text = SH_PIPELINE + (
        "    cluster:\n"
        "      connection: cluster\n"
        "      storage: store\n"
        "      image: toolchain:1\n"
        "      credentialsSecret: training-s3\n"
        "      namespace: ml\n"
        "      pipeline: pipeline.yaml\n"
        "      timeout: 240\n"
        "connections:\n"
        f"  cluster: {{type: kubernetes, kubeconfig: '{kubeconfig}'}}\n"
        f"  store: {{type: s3, uri: 's3://models', endpoint: '{endpoint}',"
        " keyID: '${env:AWS_ACCESS_KEY_ID}', keySecret: '${env:AWS_SECRET_ACCESS_KEY}'}\n"
    )
    pipeline = write(sh_project / "pipeline.yaml", text)
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    agent.workdir = sh_project
    outcome = run_cli("stage", "train", str(pipeline), "-o", "json", env=env, timeout=400)
    outcome.assert_success()
    assert agent.errors == [], agent.errors[:5]
    train = json.loads(outcome.out)["stages"]["train"]
    artifact = Path(train["outputs"]["artifact"])
    assert artifact.is_file() and artifact.name == "linear-1.0.zip"
    assert train["outputs"]["trained_on"].startswith("kubernetes Job ml/linear-train-")
    assert train["metrics"] == {"rmse": 0.5, "r2": 0.9}
    assert "[pod] sh-trainer: training from" in outcome.err
    assert SECRET not in outcome.out + outcome.err
    info = json.loads(run_cli("model", "info", str(artifact), "-o", "json").out)
    assert info["model"] == {"name": "linear", "version": "1.0"}
