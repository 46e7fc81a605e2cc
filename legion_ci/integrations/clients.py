"""The one place that builds clients for outside systems (the Docker engine, registries,
Kubernetes, S3).

A stage makes one `Clients` and hands it to its integration; nothing else constructs a Docker
client or reads a connection's credentials for a registry. The Docker SDK is imported only
when a client is first asked for, so importing this module (and `legion-ci --help`) stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from legion_ci.connection_types import BUILT_IN, ConnectionType
from legion_ci.errors import InputError, StageError

if TYPE_CHECKING:
    import docker

    from legion_ci.integrations.base import Connection

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# Long enough for a quiet build step (pip installing scipy prints nothing for a while).
DOCKER_API_TIMEOUT_S = 900


def docker_host() -> str:
    """Where the Docker engine is expected: $DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def no_engine_message(host: str, source: str | None = None) -> str:
    where = f"check the {source}'s host" if source else "start one or set DOCKER_HOST"
    return f"no Docker engine at {host}: {where}"


def docker_host_of(connections: Iterable[Connection]) -> tuple[str, str] | None:
    """(host, "docker connection 'name'") of the pipeline's `docker` connections that set
    `host`, or None. A run builds, pushes and deploys on one engine, so two connections naming
    different engines are refused rather than one of them silently ignored."""
    named = [
        (str(c.options["host"]), c.name)
        for c in connections
        if c.type == "docker" and c.options.get("host")
    ]
    hosts = sorted({host for host, _ in named})
    if len(hosts) > 1:
        listing = ", ".join(f"{name!r}: {host}" for host, name in named)
        raise InputError(f"docker connections name different engines ({listing}); use one host")
    if not named:
        return None
    return named[0][0], f"docker connection {named[0][1]!r}"


@dataclass(frozen=True)
class RegistryAuth:
    """A registry address and the credentials a `docker` connection resolved for it."""

    registry: str  # host[:port][/path], no scheme
    username: str | None
    password: str | None
    # An `ecr` connection's: trades its AWS credentials for a short-lived login; called by
    # `fresh()` just before the login is used, so no token lives longer than its push.
    exchange: Callable[[], RegistryAuth] | None = field(default=None, compare=False)

    def fresh(self) -> RegistryAuth:
        """The credentials to use now: these, or a login the exchange just fetched."""
        return self.exchange() if self.exchange is not None else self

    def auth_config(self) -> dict[str, str] | None:
        """What the engine's push and pull take (sent in a header, never logged)."""
        if self.exchange is not None:
            # Never silently anonymous: an ECR login is fetched with fresh() first.
            raise StageError(f"registry {self.registry}: no ECR login fetched before its use")
        if not self.username:
            return None
        return {
            "username": self.username,
            "password": self.password or "",
            "serveraddress": self.registry.split("/", 1)[0],
        }

    def __repr__(self) -> str:  # the password must never reach a log through a repr
        return f"RegistryAuth(registry={self.registry!r}, username={self.username!r})"


def registry_auth(connection: Connection) -> RegistryAuth:
    """The registry of a `docker` connection: `uri` (scheme stripped) plus resolved credentials;
    of an `ecr` connection: `uri` plus the exchange that logs in through AWS when asked."""
    uri = (connection.uri or "").strip()
    for scheme in ("https://", "http://", "docker://"):
        if uri.startswith(scheme):
            uri = uri[len(scheme) :]
    uri = uri.rstrip("/")
    if not uri:
        raise StageError(f"connection {connection.name!r}: uri: the registry address is empty")
    if connection.type == "ecr":
        from legion_ci.integrations import ecr

        return RegistryAuth(
            uri, None, None, exchange=lambda: RegistryAuth(uri, *ecr.login(connection, uri))
        )
    options = connection.options or {}
    username = options.get("username")
    password = options.get("password")
    return RegistryAuth(
        registry=uri,
        username=str(username) if username else None,
        password=str(password) if password is not None else None,
    )


class Clients:
    """Clients made once per stage; `docker()` raises a one-line StageError without an engine."""

    def __init__(self, docker_host_url: str | None = None, *, source: str | None = None):
        self.docker_host = docker_host_url or docker_host()
        # What chose the engine ("docker connection 'x'"), so an error says where to look.
        self.source = source if docker_host_url else None
        self._docker: docker.DockerClient | None = None
        # The connection type table whose factories `connection()` calls: the pipeline's
        # registry's (with plugin types) once the pipeline hands it over, else the built-ins.
        self.connection_types: dict[str, ConnectionType] = BUILT_IN
        self._by_connection: dict[str, Any] = {}

    def connection(self, connection: Connection) -> Any:
        """The client of `connection`, made once by its type's factory (the table in
        legion_ci.connection_types); StageError when its type has none."""
        if connection.name not in self._by_connection:
            factory = self.connection_types[connection.type].client
            if factory is None:
                raise StageError(
                    f"connection {connection.name!r}: a {connection.type} connection has no client"
                )
            import importlib

            module, _, attr = factory.partition(":")
            target: Any = importlib.import_module(module)
            for part in attr.split("."):
                target = getattr(target, part)
            self._by_connection[connection.name] = target(connection)
        return self._by_connection[connection.name]

    @classmethod
    def for_connections(cls, connections: Iterable[Connection]) -> Clients:
        """Clients on the engine a `docker` connection's `host` names, else $DOCKER_HOST."""
        chosen = docker_host_of(connections)
        if chosen is None:
            return cls()
        return cls(chosen[0], source=chosen[1])

    def docker(self) -> docker.DockerClient:
        if self._docker is None:
            from docker.errors import DockerException

            try:
                # A short timeout to find out whether anything answers, a long one for work.
                probe = self._connect(timeout=10, version="auto")
                probe.ping()
                version = probe.api.api_version
                probe.close()
            except (DockerException, OSError) as exc:
                raise StageError(no_engine_message(self.docker_host, self.source)) from exc
            self._docker = self._connect(timeout=DOCKER_API_TIMEOUT_S, version=version)
        return self._docker

    def _connect(self, *, timeout: int, version: str) -> docker.DockerClient:
        import docker

        if self.docker_host == docker_host():
            # The environment's engine: honour DOCKER_TLS_VERIFY / DOCKER_CERT_PATH as well.
            return docker.from_env(timeout=timeout, version=version)
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout, version=version)

    def docker_or_reason(self) -> tuple[Any, str | None]:
        """(client, None) when an engine answers, else (None, why not) for a context-only run."""
        try:
            return self.docker(), None
        except StageError as exc:
            return None, str(exc)

    def registry_login(self, auth: RegistryAuth, log: Any) -> None:
        """Log the engine in to `auth`'s registry, so a wrong password fails before any build.

        One-line StageErrors: refused credentials, or a registry that does not answer."""
        from docker.errors import APIError

        config = auth.auth_config()
        if config is None:
            log.line(f"registry {auth.registry}: no credentials, pushing anonymously")
            return
        server = config["serveraddress"]
        try:
            self.docker().login(
                username=config["username"],
                password=config["password"],
                registry=server,
                reauth=True,
            )
        except APIError as exc:
            text = " ".join(str(getattr(exc, "explanation", None) or exc).split())
            lowered = text.lower()
            if "401" in lowered or "unauthorized" in lowered or "incorrect" in lowered:
                raise StageError(
                    f"registry {server}: login as {config['username']!r} refused: wrong "
                    "username or password (check the docker connection's credentials)"
                ) from None
            raise StageError(f"registry {server} unreachable: {text}") from None
        log.line(f"registry {server}: logged in as {config['username']}")

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None


def docker_clients(connection: Connection) -> Clients:
    """The `docker` connection type's client factory: Clients on the engine its `host` names."""
    return Clients.for_connections([connection])


def kubernetes_configuration(connection: Connection | None) -> Any:
    """A Kubernetes client Configuration from a `kubernetes` connection: uri and token, else
    its kubeconfig (and context), else $KUBECONFIG or ~/.kube/config, else in-cluster."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    options = dict(connection.options) if connection else {}
    configuration = client.Configuration()
    token = options.get("token")
    if connection and connection.uri and token:
        configuration.host = connection.uri
        configuration.api_key = {"authorization": f"Bearer {token}"}
        if options.get("caFile"):
            configuration.ssl_ca_cert = str(options["caFile"])
        return configuration
    kubeconfig = options.get("kubeconfig") or os.environ.get("KUBECONFIG")
    default = os.path.expanduser("~/.kube/config")
    if not kubeconfig and not os.path.exists(default) and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
        return configuration
    path = os.path.expanduser(str(kubeconfig or default))
    if not os.path.exists(path):
        raise StageError(
            f"no Kubernetes credentials: {path} does not exist; give the kubernetes connection "
            "a kubeconfig (and context), or a uri and token"
        )
    context = options.get("context")
    try:
        contexts, _active = config.list_kube_config_contexts(config_file=path)
        known = [c["name"] for c in contexts or []]
        if context and context not in known:
            raise StageError(
                f"kubeconfig {path} has no context {context!r}; known: {', '.join(known) or 'none'}"
            )
        config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration
        )
    except ConfigException as exc:
        raise StageError(f"kubeconfig {path}: {str(exc).splitlines()[0]}") from None
    return configuration


class KubernetesCluster:
    """The Kubernetes API through the official client; every failure becomes one line."""

    def __init__(self, connection: Connection | None, poll_interval: float = 1.0):
        from kubernetes import client

        self.configuration = kubernetes_configuration(connection)
        self.host = self.configuration.host
        api = client.ApiClient(self.configuration)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.policy = client.PolicyV1Api(api)
        self.poll_interval = poll_interval

    def call(
        self, what: str, fn: Callable[..., Any], *args: Any, text: bool = False, **kwargs: Any
    ) -> Any:
        """`fn(*args)` as parsed JSON (or `text`); None for 404 (unless it is a missing
        namespace)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = fn(*args, _preload_content=False, _request_timeout=(5, 30), **kwargs)
        except ApiException as exc:
            status = _status_of(exc)
            details = status.get("details") or {}
            if exc.status == 404 and details.get("kind") == "namespaces":
                raise StageError(
                    f"namespace {details.get('name')!r} does not exist on {self.host}: create it "
                    f"(kubectl create namespace {details.get('name')}) or set the namespace"
                ) from None
            if exc.status == 404:
                return None
            message = status.get("message") or exc.reason or ""
            if exc.status == 403:
                raise StageError(
                    f"forbidden by the cluster's RBAC ({what}): {message}; grant the "
                    "credentials that permission or use others"
                ) from None
            if exc.status == 401:
                raise StageError(
                    f"the Kubernetes API at {self.host} rejected the credentials (401) while "
                    f"trying to {what}: check the connection's token or kubeconfig user"
                ) from None
            raise StageError(
                f"{what}: the Kubernetes API answered {exc.status}: {message}"
            ) from None
        except (HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StageError(
                f"cannot reach the Kubernetes API at {self.host}: {_short(reason)}"
            ) from None
        body = response.data
        if text:
            return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return json.loads(body) if body else {}


def _short(reason: object) -> str:
    text = str(reason)
    for known in ("Connection refused", "timed out", "Name or service not known"):
        if known.lower() in text.lower():
            return known.lower()
    return text.splitlines()[0][:200]


def _status_of(exc: Any) -> dict[str, Any]:
    try:
        data = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# Bounded, so a stalled store fails the stage instead of hanging CI; one retry for a blip.
S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 60
S3_TOTAL_ATTEMPTS = 2


def s3_client(connection: Connection | None = None, *, endpoint: str | None = None) -> Any:
    """The one S3 client factory (data bindings, the training Job's result, the pod's upload).

    With an `s3` connection: its `endpoint`, `region`, `keyID` / `keySecret` and
    `sessionToken`; without keys the requests go unsigned (a public bucket) rather than
    picking up whatever AWS credentials the machine happens to have. Without a connection
    (inside a training pod, whose Secret sets AWS_*): boto3's own credential chain, `endpoint`
    as given, region from $AWS_DEFAULT_REGION. One-line StageError when only one key is set."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    options = dict(connection.options) if connection else {}
    endpoint = str(options.get("endpoint") or endpoint or "") or None
    key_id, secret = options.get("keyID"), options.get("keySecret")
    if connection is not None and bool(key_id) != bool(secret):
        raise StageError(
            f"connection {connection.name!r}: set both keyID and keySecret, or neither"
        )
    unsigned = connection is not None and not key_id
    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": S3_TOTAL_ATTEMPTS},
        signature_version=UNSIGNED if unsigned else None,
        s3={"addressing_style": "path"} if endpoint else None,
    )
    region = options.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=str(region),
        aws_access_key_id=str(key_id) if key_id else None,
        aws_secret_access_key=str(secret) if secret else None,
        aws_session_token=str(options["sessionToken"]) if options.get("sessionToken") else None,
        config=config,
    )
