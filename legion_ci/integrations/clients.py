"""The one place where clients of outside systems (a Docker engine, a Kubernetes cluster) are
built from the pipeline's resolved connections. Integrations get them from their context and
never read credentials themselves. Heavy client libraries are imported only when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.base import Connection


class Clients:
    def __init__(self, connections: Mapping[str, Connection]):
        self.connections = dict(connections)
        self._docker: Any = None

    def docker_host(self, connection: Connection | None = None) -> str:
        if connection is not None and connection.options.get("host"):
            return str(connection.options["host"])
        return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def docker(self, connection: Connection | None = None, timeout: int = 120) -> Any:
        """A Docker SDK client for DOCKER_HOST (or the default socket), checked to answer."""
        if self._docker is not None:
            return self._docker
        import docker
        from docker.errors import DockerException

        host = self.docker_host(connection)
        try:
            client = docker.DockerClient(base_url=host, timeout=timeout)
            client.ping()
        except DockerException as exc:
            raise StageError(
                f"no Docker engine at {host}: start one or set DOCKER_HOST ({exc})"
            ) from None
        self._docker = client
        return client

    @staticmethod
    def registry_auth(connection: Connection) -> dict[str, str] | None:
        """Docker SDK auth_config for a `docker` connection, when it has credentials."""
        username = connection.options.get("username")
        password = connection.options.get("password") or connection.options.get("token")
        if not username or not password:
            return None
        return {"username": str(username), "password": str(password)}

    def kubernetes(self, connection: Connection | None) -> Any:
        """A Kubernetes ApiClient from the connection's kubeconfig/context/token, else the
        default kubeconfig, else the in-cluster service account."""
        from kubernetes import client, config

        options = dict(connection.options) if connection else {}
        if connection is not None and connection.uri and options.get("token"):
            configuration = client.Configuration()
            configuration.host = connection.uri
            configuration.api_key = {"authorization": f"Bearer {options['token']}"}
            if options.get("insecure"):
                configuration.verify_ssl = False
            return client.ApiClient(configuration)
        try:
            return config.new_client_from_config(
                config_file=options.get("kubeconfig"), context=options.get("context")
            )
        except config.ConfigException as exc:
            if options.get("kubeconfig") or options.get("context"):
                raise StageError(f"kubernetes connection: {exc}") from None
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise StageError(
                "kubernetes: no kubeconfig (set KUBECONFIG or the connection's kubeconfig) and"
                " not running inside a cluster"
            ) from None
        return client.ApiClient()
