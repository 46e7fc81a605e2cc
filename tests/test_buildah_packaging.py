"""The docker-rest packager with no Docker engine: buildah builds, podman smoke-tests, skopeo
pushes to Debian's registry (htpasswd, 127.0.0.1) and reads the manifest back; then the real
dockerd pulls the same image and serves a prediction (one image, both engines)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_support import (
    BASE_IMAGE,
    assert_refused_in_one_line,
    buildah_store_with_base,
    manifest_digest,
    package_ctx,
    push_target,
    tiny_binary,
    unmount_store,
)

from legion_ci.errors import StageError
from legion_ci.integrations.clients import Clients
from legion_ci.integrations.docker_engine import model_example
from legion_ci.packaging import buildah, image_smoke
from legion_ci.packaging.docker_rest import DockerRestPackager
from legion_ci.processes import StageLog
from legion_ci.redact import Redactor

pytestmark = [pytest.mark.slow]

ARGS = {"baseImage": BASE_IMAGE}


def test_the_runroot_follows_the_storage_not_tmpdir(tmp_path, monkeypatch) -> None:
    # podman's database records the runroot: the test process and the CLI it starts (with
    # another $TMPDIR) must name the same one for the same storage, and it stays short.
    deep = tmp_path / "a-ci-workspace" / "tmp"
    deep.mkdir(parents=True)
    short = Path(tempfile.mkdtemp(dir="/tmp", prefix="t"))  # a runroot under it fits in 50
    storage = buildah.Storage(root=tmp_path / "buildah", driver="overlay")
    monkeypatch.delenv("TMPDIR", raising=False)
    plain = storage.runroot
    for tmpdir in (deep, short):
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        monkeypatch.setattr("tempfile.tempdir", None)
        assert storage.runroot == plain
    assert len(str(plain)) <= 50
    other = buildah.Storage(root=tmp_path / "other", driver="overlay")
    assert other.runroot != plain
    short.rmdir()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[buildah.Storage]:
    found = buildah_store_with_base(tmp_path_factory.mktemp("buildah"))
    yield found
    unmount_store(found)


@pytest.fixture
def no_engine(store, wheel_cache, tmp_path, monkeypatch) -> None:
    """DOCKER_HOST at a socket that does not exist, and proof that nothing answers there."""
    import docker

    host = f"unix://{tmp_path}/no-dockerd.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    monkeypatch.setenv(buildah.ROOT_ENV, str(store.root))
    monkeypatch.setenv("LEGION_CI_CACHE", str(wheel_cache))
    with pytest.raises(docker.errors.DockerException):
        docker.DockerClient(base_url=host).ping()
    assert Clients().docker_or_reason()[0] is None


def test_auto_builds_with_buildah_and_the_image_runs_on_dockerd_too(
    no_engine, reg, tmp_path, request
):
    ctx = package_ctx(
        tiny_binary(tmp_path, "tinybh"),
        tmp_path / "w",
        targets=[push_target(reg.address, reg.user, reg.password)],
        arguments=ARGS,
    )
    out = DockerRestPackager().pack(ctx).outputs
    assert out["builder"] == "buildah"
    assert out["image"].startswith(f"{reg.address}/tinybh:1.0-")
    assert re.fullmatch(rf"{re.escape(reg.address)}/tinybh@sha256:[0-9a-f]{{64}}", out["digest"])
    assert out["image_id"].startswith("sha256:") and out["size"] > 0
    # The digest the registry serves for the tag is the one the stage reported.
    tag = out["image"].rsplit(":", 1)[1]
    assert manifest_digest(reg.address, "tinybh", tag) == out["digest"].split("@")[1]
    log = (tmp_path / "w" / "package.log").read_text()
    assert "buildah" in log and "smoke test: ready after" in log and "verified:" in log
    secret = reg.password.encode()
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaked == [] and reg.password not in str(out)

    # The same image, pulled by digest on a real dockerd, answers a prediction.
    engine = request.getfixturevalue("engine")
    client = Clients(engine.host).docker()
    pulled = client.images.pull(
        out["digest"], auth_config={"username": reg.user, "password": reg.password}
    )
    smoke = image_smoke.smoke_test(
        client,
        pulled.id,
        model_example(client, pulled.id),
        StageLog(tmp_path / "dockerd.log", Redactor(())),
        timeout=60,
        name="legion-bh-on-dockerd",
    )
    assert smoke["ready_s"] > 0
    assert "invoke answered" in (tmp_path / "dockerd.log").read_text()


def test_wrong_password_is_one_line_pushes_nothing_leaves_no_auth_file(
    no_engine, reg, tmp_path, monkeypatch
):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", None)
    ctx = package_ctx(
        tiny_binary(tmp_path, "badbh"),
        tmp_path / "w",
        targets=[push_target(reg.address, reg.user, "not-the-password")],
        arguments={**ARGS, "builder": "buildah"},
        secrets=("not-the-password",),
    )
    with pytest.raises(StageError) as info:
        DockerRestPackager().pack(ctx)
    assert_refused_in_one_line(info, reg, "badbh", "not-the-password")
    assert list(temp.iterdir()) == []


def test_auth_file_is_owner_only_and_removed_even_on_failure(tmp_path):
    from legion_ci.integrations.clients import RegistryAuth

    auth = RegistryAuth("127.0.0.1:5000", "u", "s3cret")
    with pytest.raises(RuntimeError), buildah.auth_file(auth) as argv:
        path = Path(argv[1])
        assert argv[0] == "--authfile" and oct(path.stat().st_mode & 0o777) == "0o600"
        assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
        raise RuntimeError("the push failed")
    assert not path.exists() and not path.parent.exists()


def test_missing_podman_is_one_line_naming_it(no_engine, tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("buildah", "skopeo"):
        os.symlink(subprocess.check_output(["which", tool], text=True).strip(), tools / tool)
    monkeypatch.setenv("PATH", str(tools))
    ctx = package_ctx(tiny_binary(tmp_path, "nopodman"), tmp_path / "w", arguments=ARGS)
    with pytest.raises(StageError) as info:
        DockerRestPackager().pack(ctx)
    message = str(info.value)
    assert "'podman' is not installed" in message and "\n" not in message


def _committed_pipeline(origin: Path) -> str:
    """A checkout with one committed pipeline file, committed at a fixed time; its sha."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    env |= {"GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000"}
    origin.mkdir()
    (origin / "legion-ci.yaml").write_text("model: {name: repro, version: '1.0'}\n")
    for argv in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "p"]):
        subprocess.run(["git", "-C", str(origin), *argv], env=env, check=True)
    return subprocess.check_output(["git", "-C", str(origin), "rev-parse", "HEAD"], text=True)


def test_two_clean_builds_of_the_same_inputs_give_the_same_digest(no_engine, tmp_path, monkeypatch):
    # Two clean clones of one commit, two storages (no shared layer cache) and two output
    # folders; the same binary and run. SOURCE_DATE_EPOCH unset: it comes from the commit.
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    commit = _committed_pipeline(tmp_path / "origin").strip()
    artifact = tiny_binary(tmp_path, "repro")
    ids, documents = [], []
    for side in ("a", "b"):
        clone = tmp_path / f"clone-{side}"
        subprocess.run(["git", "clone", "-q", str(tmp_path / "origin"), str(clone)], check=True)
        store = buildah_store_with_base(tmp_path / f"store-{side}")
        monkeypatch.setenv(buildah.ROOT_ENV, str(store.root))
        ctx = package_ctx(
            artifact,
            tmp_path / side,
            git_commit=commit,
            arguments={**ARGS, "smokeTest": False},
        )
        ctx.pipeline_file = clone / "legion-ci.yaml"
        try:
            out = DockerRestPackager().pack(ctx).outputs
            ids.append(out["image_id"])
            # The SBOM and provenance are in the image (and so in its digest).
            run = [
                "podman",
                *store.options,
                "run",
                "--rm",
                "--network",
                "none",
                *buildah._ulimits(),
            ]
            listed = subprocess.run(
                [*run, out["image"], "ls", "/opt/legion/attestations"],
                capture_output=True,
                text=True,
            )
            assert listed.stdout.split() == ["provenance.intoto.json", "sbom.cdx.json"]
            documents.append([Path(out[key]).read_bytes() for key in ("sbom", "provenance")])
        finally:
            unmount_store(store)
    assert ids[0] == ids[1]
    assert documents[0] == documents[1]
    assert (
        "SOURCE_DATE_EPOCH=1700000000 (commit time of HEAD"
        in (tmp_path / "b/package.log").read_text()
    )


def test_a_model_only_rebuild_reuses_the_runtime_and_serves_the_new_model(no_engine, tmp_path):
    # buildah's own cache would copy and digest the whole environment again (COPY --from):
    # the second build starts from the runtime image the first left, and the smoke test proves
    # the image made in two parts serves.
    logs = []
    for side in ("a", "b"):
        ctx = package_ctx(
            tiny_binary(tmp_path / side, f"split{side}"),
            tmp_path / side / "w",
            arguments={**ARGS, "builder": "buildah"},
        )
        out = DockerRestPackager().pack(ctx).outputs
        logs.append((tmp_path / side / "w" / "package.log").read_text())
    assert "smoke test: ready after" in logs[1] and out["image"].startswith("splitb:")
    assert "runtime image legion-ci-runtime:" in logs[1] and " reused" in logs[1]
    assert "COPY --from=dependencies" not in logs[1] and "COPY model /model" in logs[1]
