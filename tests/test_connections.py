"""Connections work as documented: a `kubernetes` connection's `caFile` is accepted, resolved
against the pipeline file and verifies the API server; a `docker` connection's `host` is the
engine the Docker clients talk to."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SH_PIPELINE, run_cli, write

from legion_ci.errors import InputError, StageError
from legion_ci.integrations.base import Connection
from legion_ci.integrations.clients import Clients, kubernetes_configuration

TOKEN = "api-token-0123456789"


def pipeline_with(project: Path, connections: str) -> Path:
    return write(project / "pipeline.yaml", SH_PIPELINE + "connections:\n" + connections)


def test_a_kubernetes_connections_ca_file_is_accepted_and_resolved_against_the_pipeline(
    sh_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from legion_ci import validate_pipeline

    path = pipeline_with(
        sh_project,
        "  cluster:\n"
        "    type: kubernetes\n"
        "    uri: https://127.0.0.1:6443\n"
        "    token: ${env:KUBE_TOKEN}\n"
        "    caFile: certs/ca.pem\n"
        "    kubeconfig: kube/config\n",
    )
    outcome = run_cli("validate", str(path), env={"KUBE_TOKEN": TOKEN})
    outcome.assert_success()
    monkeypatch.setenv("KUBE_TOKEN", TOKEN)
    options = validate_pipeline(path).connections["cluster"].options
    assert options["caFile"] == str(sh_project / "certs" / "ca.pem")
    assert options["kubeconfig"] == str(sh_project / "kube" / "config")


@pytest.fixture
def tls_api_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate answering /version as an
    API server would; yields (url, the certificate file)."""
    cert, key = tmp_path / "ca.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            version = {k: "" for k in ("buildDate", "compiler", "gitCommit", "gitTreeState")}
            version |= {"goVersion": "go1.24", "platform": "linux/amd64", "major": "1"}
            body = json.dumps({**version, "minor": "33", "gitVersion": "v1.33.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_kubernetes_client_verifies_the_api_server_with_the_ca_file(tls_api_server) -> None:
    from kubernetes import client
    from urllib3.exceptions import MaxRetryError, SSLError

    url, cert = tls_api_server

    def version(options: dict[str, str]) -> str:
        configuration = kubernetes_configuration(
            Connection("cluster", "kubernetes", uri=url, options={"token": TOKEN, **options})
        )
        configuration.retries = 0
        with client.ApiClient(configuration) as api:
            return client.VersionApi(api).get_code().git_version

    assert version({"caFile": str(cert)}) == "v1.33.0"
    # Without it the same self-signed server is refused: the CA file is what made it trusted.
    with pytest.raises((MaxRetryError, SSLError)):
        version({})


def test_a_docker_connections_host_is_the_engine_the_clients_talk_to(tmp_path: Path) -> None:
    socket = tmp_path / "nothing-listens.sock"
    clients = Clients.for_connections(
        [
            Connection("registry", "docker", uri="127.0.0.1:5000"),
            Connection(
                "engine", "docker", uri="127.0.0.1:5000", options={"host": f"unix://{socket}"}
            ),
        ]
    )
    assert clients.docker_host == f"unix://{socket}"
    with pytest.raises(StageError) as caught:
        clients.docker()
    message = str(caught.value)
    assert message == (
        f"no Docker engine at unix://{socket}: check the docker connection 'engine''s host"
    )
    assert "\n" not in message


def test_a_docker_connection_host_reaches_the_package_stage(
    sh_project: Path, tmp_path: Path
) -> None:
    """Through the pipeline: the clients a stage gets are built on the connection's host."""
    from legion_ci import validate_pipeline

    socket = tmp_path / "nothing-listens.sock"
    path = pipeline_with(
        sh_project,
        f"  registry: {{type: docker, uri: '127.0.0.1:5000', host: 'unix://{socket}'}}\n",
    )
    assert validate_pipeline(path).clients().docker_host == f"unix://{socket}"


def test_two_docker_connections_naming_different_engines_are_refused() -> None:
    with pytest.raises(InputError, match="docker connections name different engines"):
        Clients.for_connections(
            [
                Connection("a", "docker", options={"host": "unix:///a.sock"}),
                Connection("b", "docker", options={"host": "unix:///b.sock"}),
            ]
        )


# --- one S3 client factory (integrations/clients.py) for every caller ----------------------


def s3_connection(**options: str) -> Connection:
    return Connection("store", "s3", "s3://models", {"endpoint": "http://127.0.0.1:9", **options})


def test_the_s3_factory_honours_region_session_token_and_goes_unsigned_without_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore import UNSIGNED

    from legion_ci.integrations.clients import s3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "machine-key")  # must not be picked up
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "machine-secret")
    anonymous = s3_client(s3_connection(region="eu-west-3"))
    assert anonymous.meta.region_name == "eu-west-3"
    assert anonymous.meta.config.signature_version is UNSIGNED
    signed = s3_client(s3_connection(keyID="k", keySecret="s", sessionToken="t"))
    credentials = signed._request_signer._credentials
    assert (credentials.access_key, credentials.token) == ("k", "t")
    assert signed.meta.config.signature_version is not UNSIGNED
    with pytest.raises(StageError, match="set both keyID and keySecret, or neither"):
        s3_client(s3_connection(keyID="k"))
    # No connection (the training pod): boto3's own chain, the Job's AWS_* variables.
    pod = s3_client(endpoint="http://127.0.0.1:9")
    assert pod._request_signer._credentials.access_key == "machine-key"


def test_the_training_jobs_result_is_fetched_with_the_same_s3_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the Job's fetch built its own client, ignoring region and sessionToken."""
    import boto3

    from legion_ci.training.job import TrainingJob, fetch_result

    seen: dict[str, object] = {}

    def client(self: object, service: str, **kwargs: object) -> object:
        seen.update(kwargs)
        raise StageError("stop here: the client's arguments are what this test reads")

    monkeypatch.setattr(boto3.session.Session, "client", client)
    storage = s3_connection(keyID="k", keySecret="s", sessionToken="t", region="eu-west-3")
    job = TrainingJob(
        name="wine-train",
        namespace="ml",
        image="toolchain:1",
        pipeline="pipeline.yaml",
        upload="s3://models/runs/wine-train",
        storage=storage,
        credentials_secret="training-s3",
        model_name="wine",
        model_version="1.0",
        run_id="run-1",
        resources={},
    )
    with pytest.raises(StageError, match="stop here"):
        fetch_result(job, tmp_path)
    assert seen["region_name"] == "eu-west-3"
    assert seen["aws_session_token"] == "t"
    assert seen["endpoint_url"] == "http://127.0.0.1:9"


def test_a_docker_connections_host_reaches_a_real_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real dockerd of the tests' own answers through the connection's host, while
    $DOCKER_HOST points where nothing listens: the host, not the environment, was used."""
    import tempfile

    from docker_support import dockerd

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    root = Path(tempfile.mkdtemp(prefix="lcc-", dir="/tmp"))  # a socket path under 108 bytes
    try:
        with dockerd(root) as daemon:
            clients = Clients.for_connections(
                [Connection("engine", "docker", "127.0.0.1:5000", {"host": daemon.host})]
            )
            try:
                assert clients.docker().ping() is True
                assert clients.docker_host == daemon.host
            finally:
                clients.close()
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
