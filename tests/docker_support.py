"""Real Docker parts for the tests: a private dockerd, the debootstrap base image, and Debian's
registry with htpasswd, all on 127.0.0.1 and all stopped by pid when the session ends.

scripts/setup.d/20-docker.sh installs the tools and builds the base image's root file system
tarball (cached outside the clone); here it is only `docker import`ed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import copy_wine_project
from procs import free_port, http_ok, service, wait_for

CACHE = Path(
    os.environ.get("LEGION_CI_CI_CACHE") or Path.home() / ".cache" / "legion-ci-ci"
).expanduser()
BASE_IMAGE = "legion-ci-test/debian-python:bookworm"
# The engine's data root lives in a tmpfs of this size (the tests use about 2 GB).
TMPFS_SIZE = "8g"
REGISTRY_USER = "ci"
REGISTRY_PASSWORD = "s3cret-registry-pw"


def _sbin(tool: str) -> str:
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin")
    if not found:
        raise RuntimeError(f"{tool} is not installed: run scripts/setup.d/20-docker.sh")
    return found


def storage_driver(data_root: Path) -> str:
    """overlay2 where the data root's file system can carry it, else vfs (slow but works)."""
    probe = Path(tempfile.mkdtemp(dir=data_root, prefix="overlay-probe-"))
    try:
        for sub in ("lower", "upper", "work", "merged"):
            (probe / sub).mkdir()
        options = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(probe / "merged")],
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:
            return "vfs"
        subprocess.run(["umount", str(probe / "merged")], check=False)
        return "overlay2"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@dataclass
class Dockerd:
    host: str  # unix://... for DOCKER_HOST
    root: Path
    storage: str


def _mount_tmpfs(root: Path) -> bool:
    """Put the engine's state in memory: deleting a data root of image layers from a busy
    disk took minutes here, unmounting a tmpfs takes no time. False where it cannot mount."""
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0711", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


@contextlib.contextmanager
def dockerd(root: Path, *, mount: bool = True) -> Iterator[Dockerd]:
    """A Docker engine of the tests' own: its own socket, data root, exec root and pid file.

    `mount=False` keeps whatever `root` holds (a restart on the same data root)."""
    # Short paths: a unix socket path must stay under 108 bytes.
    root.mkdir(parents=True, exist_ok=True)
    in_memory = _mount_tmpfs(root) if mount else False
    data_root, exec_root = root / "data", root / "exec"
    data_root.mkdir(exist_ok=True)
    sock = root / "docker.sock"
    driver = storage_driver(data_root)
    if driver != "overlay2":
        print(f"docker tests: {data_root} cannot carry overlay2; using vfs (slower)")
    argv = [
        _sbin("dockerd"),
        "--host",
        f"unix://{sock}",
        "--data-root",
        str(data_root),
        "--exec-root",
        str(exec_root),
        "--pidfile",
        str(root / "docker.pid"),
        f"--storage-driver={driver}",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
    ]

    def unmount() -> None:
        netns = exec_root / "netns" / "default"
        if os.path.ismount(netns):
            subprocess.run(["umount", str(netns)], check=False)
        if in_memory:
            # Lazily: a layer mount dockerd left behind must not keep the memory pinned.
            subprocess.run(["umount", "--lazy", str(root)], check=False)

    def ready() -> bool:
        return (
            sock.exists()
            and subprocess.run(
                ["docker", "--host", f"unix://{sock}", "version"],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    try:
        with service(
            argv,
            root / "dockerd.log",
            ready=ready,
            timeout=120,
            unset=("DOCKER_HOST",),
            name="dockerd",
            grace=30,
            on_stop=unmount,
        ):
            yield Dockerd(host=f"unix://{sock}", root=root, storage=driver)
    finally:
        if in_memory and os.path.ismount(root):
            unmount()


def base_tarball() -> Path:
    pointer = CACHE / "docker-base" / "current"
    if not pointer.is_file():
        raise RuntimeError("no base image tarball: run scripts/setup.d/20-docker.sh")
    return Path(pointer.read_text().strip())


def import_base_image(host: str) -> str:
    tarball = base_tarball()
    with open(tarball, "rb") as handle:
        subprocess.run(
            ["docker", "--host", host, "import", "-", BASE_IMAGE],
            stdin=handle,
            check=True,
            capture_output=True,
        )
    return BASE_IMAGE


@dataclass
class Registry:
    address: str  # 127.0.0.1:port
    user: str
    password: str
    pid: int = 0  # the registry process's

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"


REGISTRY_CONFIG = """\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: legion-ci-tests
auth:
  htpasswd:
    realm: legion-ci-tests
    path: {htpasswd}
"""


@contextlib.contextmanager
def registry(
    root: Path, port: int | None = None, *, more_users: dict[str, str] | None = None
) -> Iterator[Registry]:
    """Debian's docker-registry (CNCF distribution) with htpasswd auth on 127.0.0.1; a given
    `port` and the same `root` restart a stopped one with what it stored. `more_users` (name:
    password) beside the tests' own user."""
    root.mkdir(parents=True, exist_ok=True)
    users = {REGISTRY_USER: REGISTRY_PASSWORD, **(more_users or {})}
    htpasswd = "".join(
        subprocess.run(
            [_sbin("htpasswd"), "-Bbn", user, password],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        + "\n"
        for user, password in users.items()
    )
    (root / "htpasswd").write_text(htpasswd, encoding="utf-8")
    port = port or free_port()
    config = root / "config.yml"
    config.write_text(
        REGISTRY_CONFIG.format(root=root / "storage", port=port, htpasswd=root / "htpasswd"),
        encoding="utf-8",
    )
    with service(
        [_sbin("docker-registry"), "serve", str(config)],
        root / "registry.log",
        ready=http_ok(f"http://127.0.0.1:{port}/v2/", statuses=(401,)),
        timeout=60,
        name="docker-registry",
    ) as svc:
        yield Registry(f"127.0.0.1:{port}", REGISTRY_USER, REGISTRY_PASSWORD, svc.pid)


def registry_get(address: str, path: str, accept: str | None = None) -> tuple[int, dict, bytes]:
    """GET a registry API path as the tests' user: (status, headers, body), errors included."""
    request = urllib.request.Request(f"http://{address}{path}")
    token = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def manifest_digest(address: str, repository: str, tag: str) -> str | None:
    """The digest the registry serves `repository:tag`'s manifest under; None when it has none."""
    status, headers, _ = registry_get(
        address,
        f"/v2/{repository}/manifests/{tag}",
        "application/vnd.docker.distribution.manifest.v2+json,"
        "application/vnd.oci.image.manifest.v1+json",
    )
    return (
        {k.lower(): v for k, v in headers.items()}["docker-content-digest"]
        if status == 200
        else None
    )


def registry_tags(address: str, repository: str) -> list[str]:
    """The tags the registry holds for `repository` ([] when it has none)."""
    status, _, body = registry_get(address, f"/v2/{repository}/tags/list")
    if status == 404:
        return []
    assert status == 200, body
    return json.loads(body).get("tags") or []


def assert_refused_in_one_line(info, reg, repository: str, password: str) -> None:
    """A wrong password's StageError: one line, saying so, without the password; and the
    registry holds nothing of `repository`."""
    message = str(info.value)
    assert "wrong username or password" in message and "\n" not in message
    assert password not in message
    assert registry_tags(reg.address, repository) == []


# -- trained binaries and package contexts ------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Trained:
    artifact: Path  # the GPPI zip
    run_id: str
    git_commit: str | None
    outputs: dict


def train_wine(root: Path, alpha: float = 0.5) -> Trained:
    """`legion-ci stage train` of the README's wine pipeline in a fresh git repo under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    pipeline = copy_wine_project(root)
    pipeline.write_text(
        pipeline.read_text(encoding="utf-8").replace("alpha: 0.5", f"alpha: {alpha}"),
        encoding="utf-8",
    )
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "legion_ci.cli.main", "stage", "train", str(pipeline), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    outputs = record["stages"]["train"]["outputs"]
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Trained(Path(outputs["artifact"]), record["run_id"], commit, outputs)


TINY_MANIFEST = """\
binaries: {type: python, dependencies: pip, requirements_path: legion_model/requirements.txt}
legionVersion: '1.0'
model: {name: %(name)s, version: '1.0', workDir: legion_model, entrypoint: entrypoint}
toolchain: {name: handmade, version: '0'}
output: {}
"""

TINY_ENTRYPOINT = """\
def init():
    return "matrix"

def info():
    return (
        [{"name": "a", "type": "number", "required": True, "example": 1.0}],
        [{"name": "double", "type": "number", "required": True, "example": 2.0}],
    )

def predict_on_matrix(matrix, provided_columns_names=None):
    if %(broken)s:
        raise RuntimeError("this model cannot predict anything")
    return [[row[0] * 2] for row in matrix], ["double"]
"""


def tiny_binary(root: Path, name: str, *, broken: bool = False, requirements: str = "") -> Path:
    """A hand-written GPPI binary with no dependencies; `broken` ones fail every prediction."""
    from legion_ci.gppi.archive import write_zip

    folder = root / f"{name}-src"
    (folder / "legion_model").mkdir(parents=True)
    (folder / "legion.project.yaml").write_text(TINY_MANIFEST % {"name": name})
    (folder / "legion_model" / "entrypoint.py").write_text(TINY_ENTRYPOINT % {"broken": broken})
    (folder / "legion_model" / "requirements.txt").write_text(requirements)
    artifact = root / f"{name}-1.0.zip"
    write_zip(folder, artifact)
    return artifact


def package_ctx(
    artifact: Path,
    work: Path,
    *,
    run_id: str = "20261126-010203-abc123",
    git_commit: str | None = None,
    train_outputs: dict | None = None,
    targets: list | None = None,
    arguments: dict | None = None,
    secrets: tuple[str, ...] = (REGISTRY_PASSWORD,),
):
    """The PackageContext the package stage hands a packager, built by hand."""
    from legion_ci.gppi.archive import safe_extract
    from legion_ci.gppi.manifest import read_manifest
    from legion_ci.integrations.base import PackageContext
    from legion_ci.processes import StageLog
    from legion_ci.redact import Redactor

    work.mkdir(parents=True, exist_ok=True)
    artifact_dir = safe_extract(artifact, work / "artifact")
    manifest = read_manifest(artifact_dir)
    return PackageContext(
        model_name=manifest.model_name,
        model_version=manifest.model_version,
        run_id=run_id,
        git_commit=git_commit,
        artifact=artifact,
        artifact_dir=artifact_dir,
        arguments=dict(arguments or {}),
        targets=list(targets or []),
        output_dir=work / "artifacts",
        scratch_dir=work / "scratch",
        train_outputs=dict(train_outputs or {}),
        log=StageLog(work / "package.log", Redactor(secrets)),
    )


def push_target(address: str, user: str, password: str):
    from legion_ci.integrations.base import Connection, PackageTarget

    connection = Connection(
        name="registry",
        type="docker",
        uri=address,
        options={"username": user, "password": password},
    )
    return PackageTarget(name="docker-push", connection=connection)


# -- restartable parts, for the fault tests ----------------------------------------------------
def _shims_of(root: Path) -> set[int]:
    """containerd shims started for the engine under `root` (their command line names it)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and any(str(root).encode() in a for a in argv):
            found.add(int(entry.name))
    return found


def _processes_under(roots: set[int]) -> list[int]:
    """`roots` and all their descendants, parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    ordered, todo = [], sorted(roots)
    while todo:
        pid = todo.pop(0)
        ordered.append(pid)
        todo.extend(children.get(pid, []))
    return ordered


def _reaped(pid: int) -> bool:
    """Gone, or a zombie nobody of ours will reap (its parent was killed with it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


class RestartableDockerd:
    """A dockerd on a tmpfs root that a test SIGKILLs and starts again on the same data root
    and socket. Use as a context manager; `kill()` then `start()` is a restart."""

    def __init__(self, root: Path):
        self.root = root
        self.in_memory = False
        self.daemon: Dockerd | None = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> RestartableDockerd:
        self.root.mkdir(parents=True, exist_ok=True)
        self.in_memory = _mount_tmpfs(self.root)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.in_memory and os.path.ismount(self.root):
            subprocess.run(["umount", "--lazy", str(self.root)], check=False)

    @property
    def host(self) -> str:
        assert self.daemon is not None, "dockerd is not running"
        return self.daemon.host

    @property
    def pid(self) -> int:
        return int((self.root / "docker.pid").read_text().strip())

    def start(self) -> None:
        self._stack = contextlib.ExitStack()
        self.daemon = self._stack.enter_context(dockerd(self.root, mount=False))

    def kill(self) -> int:
        """SIGKILL dockerd alone (by its pid), as a crash would; returns the pid."""
        pid = self.pid
        os.kill(pid, 9)
        return pid

    def stop(self) -> None:
        """Stop what is left: dockerd, or after kill() its orphaned containerd and shims."""
        if self._stack is None:
            return
        pgid = self.pid
        self._stack.close()  # SIGTERM to the group when dockerd still runs; netns unmounted
        self._stack, self.daemon = None, None
        if not _gone(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, 15)
            wait_for(lambda: _gone(pgid), 60, "dockerd's leftover processes")
        # The shims of the containers that were running (a build's RUN step) live in sessions
        # of their own and outlive containerd; a new containerd on the same state would try to
        # reconnect to them while they are orphaned, and under load dockerd timed out waiting
        # for it. A crashed machine loses them too: kill them and what runs under them.
        leftovers = _processes_under(_shims_of(self.root))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        wait_for(lambda: all(_reaped(pid) for pid in leftovers), 60, "the orphaned shims")
        # The exec root is the engine's /run: a crash takes it along. Left in place, the new
        # containerd first restores the dead tasks recorded there, and under load dockerd gave
        # up waiting for it ("timeout waiting for containerd to start", seen in CI runs).
        shutil.rmtree(self.root / "exec", ignore_errors=True)


class RestartableRegistry:
    """The htpasswd registry, stopped and started again on the same port and storage."""

    def __init__(self, root: Path, *, more_users: dict[str, str] | None = None):
        self.root = root
        self.more_users = more_users
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._stack: contextlib.ExitStack | None = None
        self.running: Registry | None = None

    def __enter__(self) -> RestartableRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._stack = contextlib.ExitStack()
        self.running = self._stack.enter_context(
            registry(self.root, self.port, more_users=self.more_users)
        )

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self.running = None, None

    def kill(self) -> None:
        """SIGKILL the registry by pid (mid-request, as a crash would), then reap it."""
        assert self.running is not None
        os.kill(self.running.pid, 9)
        self.stop()

    @property
    def storage(self) -> Path:
        return self.root / "storage"


# -- buildah/podman: the containers storage the packager builds into, and podman's API ---------
def buildah_store_with_base(root: Path):
    """A private containers storage (legion_ci.packaging.buildah) with the debootstrap base
    image imported, as the Docker tests `docker import` it."""
    from legion_ci.packaging import buildah

    found = buildah.storage(root)
    done = subprocess.run(
        ["podman", *found.options, "import", str(base_tarball()), BASE_IMAGE],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return found


def unmount_store(store) -> None:
    # The overlay driver bind-mounts its own folder and each layer a build ran on (a killed
    # build's working container too); left mounted, the tmp folder cannot go. Innermost first.
    subprocess.run(["buildah", *store.options, "rm", "--all"], capture_output=True)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{store.root}/")), reverse=True):
        subprocess.run(["umount", point], capture_output=True)
    shutil.rmtree(store.runroot, ignore_errors=True)  # under /tmp, outside the test's folder


@contextlib.contextmanager
def podman_service(
    storage_options: list[str], root: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`podman system service` (the Docker-compatible API) on a socket under `root`, over the
    storage `storage_options` name (the packager's: the image buildah built is the one the API
    serves). Yields the host URL; every container it started is removed when the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "podman.sock"  # `root` is short: a socket path stays under 108 bytes
    host = f"unix://{sock}"

    def ready() -> bool:
        import docker

        if not sock.exists():
            return False
        try:
            return docker.DockerClient(base_url=host, timeout=5).ping()
        except (docker.errors.DockerException, OSError):  # requests' errors are OSErrors
            return False

    def remove_containers() -> None:
        subprocess.run(
            ["podman", *storage_options, "rm", "--all", "--force", "--time", "0"],
            capture_output=True,
            check=False,
        )

    with service(
        ["podman", *storage_options, "system", "service", "--time=0", host],
        root / "podman-service.log",
        ready=ready,
        timeout=60,
        env=env,
        unset=("DOCKER_HOST",),
        name="podman system service",
        on_stop=remove_containers,
    ):
        yield host
