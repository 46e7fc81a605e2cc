"""Building, smoke-testing and pushing the docker-rest image without a Docker engine.

buildah builds the same build context and Dockerfile; podman runs the smoke test with the
checks of packaging/image_smoke.py; skopeo pushes and reads the manifest back. All three share
one containers storage (`--root`, `--runroot`, `--storage-driver`) so that the image podman
runs and skopeo pushes is the one buildah built. Credentials only ever go through an
owner-only auth file in a private temporary folder, removed after use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.clients import RegistryAuth
from legion_ci.integrations.docker_engine import example_from_info, one_line
from legion_ci.packaging import buildah_split
from legion_ci.processes import StageLog, run_logged

ROOT_ENV = "LEGION_CI_BUILDAH_ROOT"


def installed() -> bool:
    return shutil.which("buildah") is not None


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StageError(
            f"builder buildah: {tool!r} is not installed (on PATH); install Debian's {tool}"
        )
    return path


@dataclass(frozen=True)
class Storage:
    """One containers storage for buildah, podman and skopeo."""

    root: Path
    driver: str

    @property
    def runroot(self) -> Path:
        # podman refuses a runroot over 50 characters; it holds only transient state (locks,
        # mount records), so a short folder named after the storage root does. A function of
        # the root alone, never of $TMPDIR: podman's database records the runroot and refuses
        # the storage to a process that names another ("database configuration mismatch").
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path("/tmp") / f"lcb-{key}"

    @property
    def options(self) -> list[str]:
        return [
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            self.driver,
        ]

    def skopeo_ref(self, image: str) -> str:
        where = f"{self.driver}@{self.root / 'storage'}+{self.runroot}"
        return f"containers-storage:[{where}]localhost/{image}"


def storage(root: Path | None = None) -> Storage:
    """The storage under `root` (default $LEGION_CI_BUILDAH_ROOT, else the cache), with overlay
    when this kernel mounts it there (as root), else vfs (slower, works everywhere)."""
    base = root or Path(
        os.environ.get(ROOT_ENV) or Path.home() / ".cache" / "legion-ci" / "buildah"
    )
    base.mkdir(parents=True, exist_ok=True)
    chosen = base / "driver"
    if chosen.is_file():
        return Storage(base, chosen.read_text().strip())
    # A storage keeps the driver it was made with; probe overlay once by mounting a scratch
    # container, which fails where overlay cannot stack (overlay on overlay, no privilege).
    probe = Storage(base, "overlay")
    buildah = _need("buildah")
    made = subprocess.run(
        [buildah, *probe.options, "from", "scratch"], capture_output=True, text=True
    )
    driver = "vfs"
    if made.returncode == 0:
        name = made.stdout.strip()
        mounted = subprocess.run(
            [buildah, *probe.options, "mount", name], capture_output=True, text=True
        )
        subprocess.run([buildah, *probe.options, "rm", name], capture_output=True)
        if mounted.returncode == 0:
            driver = "overlay"
    if driver == "vfs":
        shutil.rmtree(base / "storage", ignore_errors=True)
        shutil.rmtree(probe.runroot, ignore_errors=True)
    chosen.write_text(driver)
    return Storage(base, driver)


def has_image(image: str) -> bool:
    """True when `image` is in the storage: builds run with --pull=never, so `auto` picks
    buildah only where a build can start."""
    return installed() and _image_id(storage(), image) is not None


def _ulimits() -> list[str]:
    # runc here may not raise limits above the agent's own (no CAP_SYS_RESOURCE in a pod), and
    # podman's defaults are higher: ask for the agent's open-files limit and a process cap a
    # model server never reaches.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ["--ulimit", f"nofile={soft}:{hard}", "--ulimit", "nproc=4096:4096"]


def _reproducible(epoch: int | None) -> list[str]:
    """With SOURCE_DATE_EPOCH (set, or the commit's time): every file, layer and the config
    stamped with it, and pip told too (hash-based .pyc), so the same inputs give the same
    image digest."""
    if epoch is None:
        return []
    return ["--timestamp", str(epoch), "--build-arg", f"SOURCE_DATE_EPOCH={epoch}"]


def version() -> str:
    """`buildah --version`'s number (for the provenance's builder)."""
    done = subprocess.run([_need("buildah"), "--version"], capture_output=True, text=True)
    words = done.stdout.split()
    return (
        words[2] if len(words) > 2 and words[:2] == ["buildah", "version"] else done.stdout.strip()
    )


def base_digest(image: str) -> str | None:
    """The manifest digest the base was pulled by from a registry; None for an imported or
    local one (podman names those localhost/..., with a digest of this storage's own)."""
    store = storage()
    done = subprocess.run(
        [
            _need("podman"),
            *store.options,
            "image",
            "inspect",
            image,
            "--format",
            "{{json .RepoDigests}}",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return None
    found = json.loads(done.stdout or "null") or []
    digests = sorted(
        d.split("@", 1)[1] for d in found if "@" in d and not d.startswith("localhost/")
    )
    return digests[0] if digests else None


def build(
    store: Storage, folder: str, name: str, log: StageLog, epoch: int | None = None
) -> dict[str, Any]:
    """`buildah bud` the context; the image's id and size. In two parts where the Dockerfile
    cuts (buildah_split: the runtime, built only when its key is new, then the model on it)."""
    buildah = _need("buildah")
    _need("podman")  # the smoke test needs it: fail before the slow build, not after
    parts = buildah_split.split((Path(folder) / "Dockerfile").read_text(encoding="utf-8"))
    if parts is None:
        _bud(store, folder, name, log, epoch)
    else:
        buildah_split.build_in_parts(
            parts,
            Path(folder),
            epoch,
            log,
            image_id=lambda image: _image_id(store, image),
            bud=lambda dockerfile, tag: _bud(store, folder, name, log, epoch, dockerfile, tag),
        )
    inspect = _json([buildah, *store.options, "inspect", "--type", "image", name], "buildah")
    image_id = "sha256:" + str(inspect["FromImageID"])
    size = _json(
        [_need("podman"), *store.options, "image", "inspect", name, "--format", "{{json .Size}}"],
        "podman image inspect",
    )
    return {"image_id": image_id, "size": int(size)}


def _image_id(store: Storage, image: str) -> str | None:
    done = subprocess.run(
        [_need("buildah"), *store.options, "inspect", "--type", "image", image],
        capture_output=True,
        text=True,
    )
    return str(json.loads(done.stdout)["FromImageID"]) if done.returncode == 0 else None


def _bud(
    store: Storage,
    folder: str,
    name: str,
    log: StageLog,
    epoch: int | None,
    dockerfile: Path | None = None,
    tag: str | None = None,
) -> None:
    """One `buildah bud` of `folder` tagged `tag` (default `name`, what errors name). chroot
    isolation: no nested runtime, which an unprivileged agent pod does not have."""
    code = run_logged(
        [
            _need("buildah"),
            *store.options,
            "bud",
            *["--isolation", "chroot", "--network", "host", "--pull=never", "--layers"],
            # OCI: buildah's Docker-format config carries a random container id and hostname,
            # which would make every build's digest differ; Docker engines pull OCI images.
            *["--format", "oci", *_reproducible(epoch)],
            *(["-f", str(dockerfile)] if dockerfile else []),
            *["-t", tag or name, folder],
        ],
        log,
        what="buildah bud",
        check=False,
    )
    if code != 0:
        # One line: the full output is in the stage log already.
        raise StageError(f"buildah bud of {name} {_exit_text(code)}: {_last_error(log)}")


def _json(argv: list[str], what: str) -> Any:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise StageError(f"{what}: {one_line(done.stderr or done.stdout)}")
    return json.loads(done.stdout)


class PodmanContainer:
    """What image_smoke.wait_and_invoke needs of a running container, through podman."""

    def __init__(self, store: Storage, name: str) -> None:
        self.store, self.name = store, name
        self.podman = _need("podman")

    def _podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.podman, *self.store.options, *args], capture_output=True, text=True
        )

    def exit_code(self) -> int | None:
        done = self._podman(
            "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name
        )
        status, _, code = done.stdout.strip().partition(" ")
        return int(code or -1) if status in ("exited", "stopped", "dead") else None

    def logs(self, lines: int) -> str:
        done = self._podman("logs", "--tail", str(lines), self.name)
        return done.stdout + done.stderr

    def remove(self) -> None:
        self._podman("rm", "--force", "--time", "0", self.name)


def model_example(store: Storage, image: str) -> Any:
    done = subprocess.run(
        [
            *[_need("podman"), *store.options, "run", "--rm", "--network", "none"],
            *["--read-only", "--tmpfs", "/tmp:rw,size=64m", *_ulimits()],
            *[image, "legion-ci", "model", "info", "/model", "--json"],
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise StageError(
            f"smoke test: the image cannot read the model's info(): {one_line(reason)}; "
            "the image is not pushed"
        )
    return example_from_info(done.stdout)


def run_server(store: Storage, image: str, name: str, env: dict[str, str]) -> PodmanContainer:
    """Start the image detached on the host network, read-only root, tmpfs /tmp."""
    container = PodmanContainer(store, name)
    container.remove()  # left behind by a run that was killed mid-test
    argv = ["run", "--detach", "--name", name, "--network", "host", "--read-only"]
    argv += ["--tmpfs", "/tmp:rw,size=64m", *_ulimits(), "--label", "legion-ci.smoke-test=true"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    done = container._podman(*argv, image)
    if done.returncode != 0:
        raise StageError(f"smoke test: podman cannot start the image: {one_line(done.stderr)}")
    return container


@contextmanager
def auth_file(auth: RegistryAuth) -> Iterator[list[str]]:
    """`--authfile PATH` for `auth` (none without credentials): an owner-only file in a private
    folder, removed on the way out whatever happened."""
    config = auth.auth_config()
    if config is None:
        yield []
        return
    folder = tempfile.mkdtemp(prefix="legion-auth-")  # 0700
    try:
        path = Path(folder) / "auth.json"
        token = base64.b64encode(f"{config['username']}:{config['password']}".encode()).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"auths": {config["serveraddress"]: {"auth": token}}}, handle)
        yield ["--authfile", str(path)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tls(registry: str) -> list[str]:
    # Plain HTTP only for a registry on this machine, as the Docker engine allows it.
    host = registry.split("/", 1)[0].rsplit(":", 1)[0]
    return ["--dest-tls-verify=false"] if host in ("127.0.0.1", "localhost") else []


def push(store: Storage, name: str, auth: RegistryAuth, log: StageLog) -> tuple[str, str]:
    """skopeo-copy the image to `auth`'s registry (read to its end), then read the manifest
    back with the same credentials: (reference, repository@digest)."""
    skopeo = _need("skopeo")
    reference = f"{auth.registry}/{name}"
    repository = reference.rsplit(":", 1)[0]
    with tempfile.TemporaryDirectory(prefix="legion-push-") as work, auth_file(auth) as creds:
        digest_file = Path(work) / "digest"
        code = run_logged(
            [
                skopeo,
                "copy",
                *[f"--dest-{c[2:]}" if c.startswith("--") else c for c in creds],
                *_tls(auth.registry),
                "--digestfile",
                str(digest_file),
                store.skopeo_ref(name),
                f"docker://{reference}",
            ],
            log,
            what=f"push of {reference}",
            check=False,
        )
        if code != 0:
            raise StageError(f"push of {reference} failed: {_last_error(log)}")
        digest = digest_file.read_text().strip()
        tls = ["--tls-verify=false"] if _tls(auth.registry) else []
        inspected = subprocess.run(
            [
                skopeo,
                "inspect",
                *creds,
                *tls,
                "--format",
                "{{.Digest}}",
                f"docker://{repository}@{digest}",
            ],
            capture_output=True,
            text=True,
        )
    if inspected.returncode != 0 or inspected.stdout.strip() != digest:
        raise StageError(
            f"{repository}@{digest}: the registry does not serve that manifest back: "
            f"{one_line(inspected.stderr or inspected.stdout)}"
        )
    log.line(f"verified: {repository}@{digest} read back from the registry")
    return reference, f"{repository}@{digest}"


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed (signal {-code})"
    return f"exited with code {code}"


# skopeo's and buildah's logrus lines: time="..." level=fatal msg="what went wrong"
_LOGRUS = re.compile(r'\blevel=\w+ msg="((?:[^"\\]|\\.)*)"')


def _last_error(log: StageLog) -> str:
    lines = [line for line in log.tail(20) if line.strip()]
    last = lines[-1] if lines else "no output"
    found = _LOGRUS.search(last)
    if found:
        last = found.group(1).replace('\\"', '"')
    return one_line(last, 300)


def smoke_test(
    store: Storage, image: str, log: StageLog, *, timeout: float, name: str
) -> dict[str, Any]:
    """The Docker smoke test's checks (image_smoke.wait_and_invoke) on a podman container."""
    from legion_ci.integrations.docker_engine import free_port
    from legion_ci.packaging.dockerfile import SERVE_HOST_ENV, SERVE_PORT_ENV
    from legion_ci.packaging.image_smoke import wait_and_invoke

    example = model_example(store, image)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log.line(f"smoke test: podman runs {image} on {base} (read-only root file system)")
    env = {SERVE_HOST_ENV: "127.0.0.1", SERVE_PORT_ENV: str(port)}
    container = run_server(store, image, name, env)
    try:
        return wait_and_invoke(container, base, port, example, log, timeout=timeout)
    finally:
        container.remove()


def check_login(auth: RegistryAuth) -> None:
    """Ask the registry's /v2/ with the credentials, so a wrong password fails before any build
    (the Docker path's engine login does the same)."""
    import urllib.error
    import urllib.request

    config = auth.auth_config()
    if config is None:
        return
    server = config["serveraddress"]
    scheme = "http" if _tls(server) else "https"
    request = urllib.request.Request(f"{scheme}://{server}/v2/")
    token = base64.b64encode(f"{config['username']}:{config['password']}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise StageError(
                f"registry {server}: wrong username or password for {config['username']!r}"
            ) from None
        raise StageError(f"registry {server}: /v2/ answered HTTP {exc.code}") from None
    except OSError as exc:
        raise StageError(f"registry {server} does not answer: {exc}") from None
