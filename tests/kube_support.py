"""A real Kubernetes control plane for the tests, on 127.0.0.1.

The binary is tools/kube-control-plane (built by scripts/setup.d/26-kube-control-plane.sh from
k8s.io/kubernetes v1.37.2): embedded etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, each started here as its own process group on free ports, with:
- certificates made here (one CA; the API server's serving cert; client certs for the admin
  (group system:masters), the controller-manager, the scheduler, and the API server's calls to
  the node agent's log endpoint);
- RBAC authorization and a service-account signing key (TokenRequest works);
- the controllers this project's code relies on (`CONTROLLERS`).
There is no kubelet and no container runtime: tests/kube_node.py registers a Node and plays
its part (see there). Readiness is polled (/readyz, then the default ServiceAccount), never
slept for.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.procs import free_port, service, wait_for

CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
)


def binary() -> Path:
    """The set-up's stable path to the built binary (see its script)."""
    cache = os.environ.get("LEGION_CI_CI_CACHE") or os.path.expanduser("~/.cache/legion-ci-ci")
    return Path(cache) / "kube-control-plane" / "current" / "kube-control-plane"


# -- certificates (the `cryptography` package .venv already has) ------------------------------
@dataclass
class Pki:
    folder: Path
    ca_key: Any = None
    ca_cert: Any = None

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca_key = self._key("ca")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legion-ci-test-ca")])
        self.ca_cert = self._sign(
            x509.CertificateBuilder().subject_name(name).public_key(self.ca_key.public_key()),
            ca=True,
        )
        self._write("ca.crt", self.ca_cert)

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def _key(self, name: str) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        path = self.folder / f"{name}.key"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return key

    def _write(self, name: str, cert: Any) -> None:
        from cryptography.hazmat.primitives import serialization

        (self.folder / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _sign(self, builder: Any, *, ca: bool = False, sans: tuple[str, ...] = ()) -> Any:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legion-ci-test-ca")])
        builder = (
            builder.issuer_name(issuer)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        if sans:
            names: list[Any] = []
            for san in sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    names.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.ca_key, hashes.SHA256())

    def issue(self, name: str, common_name: str, groups: tuple[str, ...] = (), sans=()) -> Path:
        """`name`.crt/.key for `common_name` (a user, or a server with `sans`); the .crt path."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        key = self._key(name)
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        cert = self._sign(
            x509.CertificateBuilder().subject_name(x509.Name(subject)).public_key(key.public_key()),
            sans=tuple(sans),
        )
        self._write(f"{name}.crt", cert)
        return self.folder / f"{name}.crt"

    def service_account_key(self) -> tuple[Path, Path]:
        """The key the API server signs ServiceAccount tokens with, and its public half."""
        from cryptography.hazmat.primitives import serialization

        key = self._key("sa")
        public = self.folder / "sa.pub"
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return self.folder / "sa.key", public


def kubeconfig(path: Path, server: str, ca: Path, users: dict[str, dict[str, str]]) -> Path:
    """One cluster, one context per user (named like the user), plus `nowhere`: a port
    nothing listens on. The first user's context is the current one."""
    import yaml

    clusters = [
        {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}},
        {
            "name": "nowhere",
            "cluster": {
                "server": f"https://127.0.0.1:{free_port()}",
                "certificate-authority": str(ca),
            },
        },
    ]
    contexts = [{"name": u, "context": {"cluster": "test", "user": u}} for u in users]
    first = next(iter(users))
    contexts.append({"name": "nowhere", "context": {"cluster": "nowhere", "user": first}})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": [{"name": u, "user": creds} for u, creds in users.items()],
        "contexts": contexts,
        "current-context": first,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    path.chmod(0o600)
    return path


# -- the control plane -----------------------------------------------------------------------
@dataclass
class ControlPlane:
    folder: Path
    server: str
    pki: Pki
    admin: Path  # the admin kubeconfig (client cert in system:masters)
    kubelet_cert: Path  # the node agent's serving certificate (its key next to it)
    startup_seconds: float = 0.0
    logs: dict[str, Path] = field(default_factory=dict)

    def api_client(self) -> Any:
        """A client with the admin's credentials."""
        return api_client(self.admin)


def _readyz(server: str, pki: Pki) -> bool:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(pki.folder / "admin.crt", pki.folder / "admin.key")
    try:
        with urllib.request.urlopen(f"{server}/readyz", timeout=2, context=context) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def control_plane(folder: Path) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler until the block ends
    (each stopped by its process group, in reverse order)."""
    exe = str(binary())
    began = time.monotonic()
    pki = Pki(folder / "pki")
    api_port = free_port()
    server = f"https://127.0.0.1:{api_port}"
    serving = pki.issue(
        "apiserver", "kube-apiserver", sans=("127.0.0.1", "localhost", "10.96.0.1", "kubernetes")
    )
    pki.issue("admin", "legion-ci-admin", ("system:masters",))
    to_kubelet = pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
    kubelet_cert = pki.issue("kubelet", "system:node:legion-node", sans=("127.0.0.1",))
    sa_key, sa_pub = pki.service_account_key()
    admin = kubeconfig(
        folder / "admin.kubeconfig",
        server,
        pki.ca,
        {
            "admin": {
                "client-certificate": str(pki.folder / "admin.crt"),
                "client-key": str(pki.folder / "admin.key"),
            }
        },
    )
    component_configs = {}
    for who in ("kube-controller-manager", "kube-scheduler"):
        cert = pki.issue(who, f"system:{who}")
        component_configs[who] = kubeconfig(
            folder / f"{who}.kubeconfig",
            server,
            pki.ca,
            {who: {"client-certificate": str(cert), "client-key": str(cert.with_suffix(".key"))}},
        )

    etcd_port, peer_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    logs = {name: folder / f"{name}.log" for name in ("etcd", "apiserver", "cm", "scheduler")}
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            service(
                [
                    exe,
                    "etcd",
                    "--data-dir",
                    str(folder / "etcd"),
                    "--client-url",
                    etcd_url,
                    "--peer-url",
                    f"http://127.0.0.1:{peer_port}",
                ],
                logs["etcd"],
                ready=lambda: _etcd_ready(etcd_url),
                timeout=60,
                name="etcd",
            )
        )
        apiserver = [
            exe,
            "apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # Endpoints may not hold a loopback address: no `kubernetes` Service endpoints.
            "--endpoint-reconciler-type=none",
            f"--secure-port={api_port}",
            f"--cert-dir={folder / 'apiserver-certs'}",
            f"--tls-cert-file={serving}",
            f"--tls-private-key-file={serving.with_suffix('.key')}",
            f"--client-ca-file={pki.ca}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/24",
            f"--kubelet-client-certificate={to_kubelet}",
            f"--kubelet-client-key={to_kubelet.with_suffix('.key')}",
            f"--kubelet-certificate-authority={pki.ca}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            "--v=1",
        ]
        stack.enter_context(
            service(
                apiserver,
                logs["apiserver"],
                ready=lambda: _readyz(server, pki),
                timeout=180,
                name="kube-apiserver",
            )
        )
        # The API server calls the node agent's log endpoint as this user: let it.
        _grant_kubelet_api(admin)
        stack.enter_context(
            service(
                [
                    exe,
                    "controller-manager",
                    f"--kubeconfig={component_configs['kube-controller-manager']}",
                    f"--authentication-kubeconfig={component_configs['kube-controller-manager']}",
                    f"--authorization-kubeconfig={component_configs['kube-controller-manager']}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--leader-elect=false",
                    "--use-service-account-credentials=true",
                    f"--controllers={','.join(CONTROLLERS)}",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={pki.ca}",
                    "--profiling=false",
                    "--v=1",
                ],
                logs["cm"],
                name="kube-controller-manager",
            )
        )
        stack.enter_context(
            service(
                [
                    exe,
                    "scheduler",
                    f"--kubeconfig={component_configs['kube-scheduler']}",
                    f"--authentication-kubeconfig={component_configs['kube-scheduler']}",
                    f"--authorization-kubeconfig={component_configs['kube-scheduler']}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--leader-elect=false",
                    "--profiling=false",
                    "--v=1",
                ],
                logs["scheduler"],
                name="kube-scheduler",
            )
        )
        plane = ControlPlane(folder, server, pki, admin, kubelet_cert, logs=logs)
        # The controllers are up once the serviceaccount controller made `default` its SA.
        wait_for(
            lambda: _has_default_service_account(plane),
            120,
            "kube-controller-manager (the default ServiceAccount)",
        )
        plane.startup_seconds = time.monotonic() - began
        yield plane


def _etcd_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return b'"true"' in response.read()
    except (OSError, ValueError):
        return False


def _grant_kubelet_api(admin: Path) -> None:
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(api_client(admin))
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "legion-ci-apiserver-kubelet"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "kube-apiserver-kubelet-client",
                }
            ],
        }
    )


def _has_default_service_account(plane: ControlPlane) -> bool:
    from kubernetes import client

    try:
        client.CoreV1Api(plane.api_client()).read_namespaced_service_account("default", "default")
    except client.ApiException:
        return False
    return True


def create_namespace(api: Any, name: str) -> None:
    """A namespace whose `default` ServiceAccount exists (pods cannot be created before it)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})

    def ready() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except client.ApiException:
            return False
        return True

    wait_for(ready, 60, f"the default ServiceAccount of namespace {name}")


def limited_token(api: Any, namespace: str, name: str, rules: list[dict[str, Any]]) -> str:
    """A ServiceAccount allowed only `rules` in `namespace`, and a short-lived token for it
    from the TokenRequest API (what a CI system's scoped credentials look like)."""
    from kubernetes import client

    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    request = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    return request.status.token


def api_client(kubeconfig_path: Path, context: str | None = None) -> Any:
    """A Kubernetes client for `kubeconfig_path` (the test side's own, not legion-ci's)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(kubeconfig_path), context=context, client_configuration=configuration
    )
    return client.ApiClient(configuration)
