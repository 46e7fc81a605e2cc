"""The docker-rest packager without a Docker engine (the README's main job on a fresh machine),
and the parts that need none: the rendered Dockerfile, the requirements, the image name, the
registration and the example pipeline."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from docker_support import package_ctx, push_target, tiny_binary

from legion_ci.errors import StageError
from legion_ci.gppi.manifest import Manifest
from legion_ci.packaging import requirements, wheelhouse
from legion_ci.packaging.docker_rest import DockerRestPackager, image_name


@pytest.fixture
def no_engine(tmp_path, monkeypatch) -> str:
    """No Docker engine and no buildah: builder auto writes only the build context (this
    machine has buildah, tests/test_buildah_packaging.py covers auto choosing it)."""
    host = f"unix://{tmp_path}/nothing-listens.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    monkeypatch.setattr("legion_ci.packaging.buildah.installed", lambda: False)
    return host


def test_without_an_engine_the_context_is_written_and_no_image_claimed(no_engine, tmp_path):
    ctx = package_ctx(tiny_binary(tmp_path, "tiny"), tmp_path / "w", git_commit="c0ffee" * 6)
    out = DockerRestPackager().pack(ctx).outputs
    assert out["image"] is None
    assert out["reason"] == f"no Docker engine at {no_engine}: start one or set DOCKER_HOST"
    log = (tmp_path / "w" / "package.log").read_text()
    assert f"no image built: no Docker engine at {no_engine}" in log
    assert json.loads((ctx.artifact_dir / "result.json").read_text())["image"] is None

    context = Path(out["context"])
    assert context == tmp_path / "w" / "artifacts" / "docker-context"
    wheels = {p.name for p in (context / "wheels").glob("*.whl")}
    assert any(n.startswith("uvloop-") for n in wheels)
    assert "legion_ci-0.1.0-py3-none-any.whl" in wheels
    assert (context / "model" / "legion_model" / "entrypoint.py").is_file()
    assert not (context / "model" / "result.json").exists()
    pins = (context / "requirements.txt").read_text().split()
    assert all(re.fullmatch(r"[a-z0-9-]+==[\w.]+", pin) for pin in pins), pins
    assert {p.split("==")[0] for p in pins} == {
        "click",
        "httptools",
        "orjson",
        "pyyaml",
        "uvicorn",
        "uvloop",
    }

    dockerfile = (context / "Dockerfile").read_text()
    lines = [
        ln.split()[0] + " " + ln.split()[1] for ln in dockerfile.splitlines() if ln[:1].isupper()
    ]
    # Layer order: dependencies (offline), then the environment without the wheels, then the
    # model, then what changes every run.
    order = [
        "COPY requirements.txt",
        "COPY wheels",
        "RUN python3",
        "COPY --from=dependencies",
        "USER 10001:10001",
        "COPY model",
        "COPY attestations",
        f'LABEL legion.git_commit="{"c0ffee" * 6}"',
        'CMD ["legion-ci",',
    ]
    positions = [lines.index(item) for item in order]
    assert positions == sorted(positions), lines
    assert (
        "--no-index" in dockerfile and "RUN curl" not in dockerfile and "apt-get" not in dockerfile
    )
    assert "EXPOSE 5000" in dockerfile and "STOPSIGNAL SIGTERM" in dockerfile
    assert re.search(
        r"HEALTHCHECK .*\n\s+CMD \[\"/opt/legion/venv/bin/python\", \"-c\"", dockerfile
    )
    assert 'LEGION_SERVE_HOST="0.0.0.0"' in dockerfile
    for label in ("org.opencontainers.image.version", "legion.run_id", "legion.model.name"):
        assert f"{label}=" in dockerfile

    # The SBOM and provenance: in the context (for the image) and in the run's artifacts, both
    # about the context, since no image was built.
    inside = json.loads((context / "attestations" / "provenance.intoto.json").read_text())
    statement = json.loads(Path(out["provenance"]).read_text())
    assert statement == inside and inside["subject"][0]["name"] == "build-context"
    assert statement["predicate"]["runDetails"]["builder"]["id"] == "urn:legion-ci:builder:none"
    sbom = json.loads(Path(out["sbom"]).read_text())
    assert sbom == json.loads((context / "attestations" / "sbom.cdx.json").read_text())
    listed = {c["name"] for c in sbom["components"] if c.get("purl")}
    assert listed >= {"legion-ci", "uvloop", "click"}


def test_without_an_engine_a_push_target_fails_before_any_work(no_engine, tmp_path):
    ctx = package_ctx(
        tiny_binary(tmp_path, "tiny"),
        tmp_path / "w",
        targets=[push_target("127.0.0.1:5000", "ci", "some-password")],
    )
    with pytest.raises(StageError) as info:
        DockerRestPackager().pack(ctx)
    assert str(info.value) == (
        f"no Docker engine at {no_engine}: start one or set DOCKER_HOST "
        "(needed to push to 127.0.0.1:5000)"
    )
    assert not (tmp_path / "w" / "artifacts").exists()


def test_air_gapped_wheelhouse_missing_a_wheel_fails_naming_it(no_engine, tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    ctx = package_ctx(
        tiny_binary(tmp_path, "tiny"), tmp_path / "w", arguments={"wheelhouse": str(empty)}
    )
    with pytest.raises(StageError, match=r"from the wheelhouse .*: .*(click|httptools|orjson)"):
        DockerRestPackager().pack(ctx)


def test_legion_ci_wheel_is_byte_identical_for_the_same_sources(tmp_path):
    first = wheelhouse.legion_ci_wheel(tmp_path / "a").read_bytes()
    second = wheelhouse.legion_ci_wheel(tmp_path / "b")
    assert second.read_bytes() == first
    with zipfile.ZipFile(second) as archive:
        names = archive.namelist()
        assert (
            "legion_ci/cli/main.py" in names
            and "legion_ci/packaging/templates/Dockerfile.in" in names
        )
        assert not [n for n in names if "__pycache__" in n]
        assert (
            "legion-ci = legion_ci.cli.main:main"
            in archive.read("legion_ci-0.1.0.dist-info/entry_points.txt").decode()
        )


def _mlflow_binary(root: Path, loader_module: str, fmt: str = "cloudpickle") -> Manifest:
    work = root / "legion_model"
    (work / "model").mkdir(parents=True)
    flavors = {"python_function": {"loader_module": loader_module}}
    if loader_module == "mlflow.sklearn":
        flavors["sklearn"] = {"serialization_format": fmt}
    (work / "MLmodel.json").write_text(json.dumps({"flavors": flavors}))
    (work / "model" / "requirements.txt").write_text(
        "mlflow==3.1.0\ncloudpickle==3.1.1\nnumpy==2.1.0 # trained with\nscikit-learn==1.5.2\n"
    )
    return Manifest(
        "m", "1", "mlflow", "3", requirements_path="legion_model/model/requirements.txt"
    )


def test_mlflow_is_left_out_only_where_the_model_loads_without_it(tmp_path):
    sk = _mlflow_binary(tmp_path / "sk", "mlflow.sklearn")
    assert requirements.model_requirements(tmp_path / "sk", sk) == [
        "cloudpickle==3.1.1",
        "numpy==2.1.0",
        "scikit-learn==1.5.2",
    ]
    pyfunc = _mlflow_binary(tmp_path / "py", "mlflow.pyfunc.model")
    assert "mlflow==3.1.0" in requirements.model_requirements(tmp_path / "py", pyfunc)
    # The model's pins win over the server's.
    merged = requirements.merge(["numpy==2.4.0", "click==8.1.0"], ["NumPy==2.1.0"])
    assert merged == ["click==8.1.0", "NumPy==2.1.0"]


def test_the_image_keeps_only_what_a_scikit_learn_model_needs(tmp_path):
    # MLflow lists what the training process had imported: a model trained under pytest
    # names pytest and rich, which the entrypoint never imports to load or call it.
    from legion_ci.processes import StageLog

    pins = "numpy==2.4.6\npandas==3.1.1\npytest==9.2.0\nrich==15.0.0\nscikit-learn==1.9.1\n"
    pins += "scipy==1.17.1\nskops==0.16.0\n"
    sk = _mlflow_binary(tmp_path / "sk", "mlflow.sklearn", fmt="skops")
    (tmp_path / "sk" / "legion_model" / "model" / "requirements.txt").write_text(pins)
    log = StageLog(tmp_path / "package.log")
    kept = requirements.model_requirements(tmp_path / "sk", sk, log)
    log.close()
    # scipy stays: scikit-learn and skops require it.
    assert kept == [
        "numpy==2.4.6",
        "pandas==3.1.1",
        "scikit-learn==1.9.1",
        "scipy==1.17.1",
        "skops==0.16.0",
    ]
    said = (tmp_path / "package.log").read_text()
    assert "left out pytest==9.2.0, rich==15.0.0" in said
    # A model MLflow loads (any other flavor) keeps every line: its needs are not known here.
    py = _mlflow_binary(tmp_path / "py", "mlflow.pyfunc.model")
    (tmp_path / "py" / "legion_model" / "model" / "requirements.txt").write_text(pins)
    assert "pytest==9.2.0" in requirements.model_requirements(tmp_path / "py", py)


def _conda_binary(root: Path, text: str) -> Manifest:
    (root / "legion_model").mkdir(parents=True)
    (root / "legion_model" / "conda.yaml").write_text(text)
    return Manifest("m", "1", "mlflow", "3", conda_path="legion_model/conda.yaml")


def test_conda_environment_of_a_binary_is_read_with_limits(tmp_path):
    good = _conda_binary(tmp_path / "ok", "dependencies: [python=3.11, {pip: [numpy==2.1.0]}]\n")
    assert requirements.model_requirements(tmp_path / "ok", good) == ["numpy==2.1.0"]
    # A hostile binary's conda.yaml: an alias bomb, a non-mapping, a deep nesting. Each is one
    # line naming the file, never a crash of the package stage.
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    for name, text in {
        "bomb": bomb + "dependencies: [*i]\n",
        "list": "- just\n- a list\n",
        "deep": "dependencies: " + "[" * 20000 + "]" * 20000 + "\n",
    }.items():
        manifest = _conda_binary(tmp_path / name, text)
        with pytest.raises(StageError) as caught:
            requirements.model_requirements(tmp_path / name, manifest)
        assert "conda" in str(caught.value) and "\n" not in str(caught.value), name


def test_image_name_template(tmp_path):
    ctx = package_ctx(tiny_binary(tmp_path, "tiny"), tmp_path / "w", git_commit="ab" * 20)
    assert image_name("{name}:{version}-{short_run_id}", ctx) == "tiny:1.0-abc123"
    assert image_name("team/{name}:{git_sha}", ctx) == "team/tiny:abababababab"
    assert image_name("{name}", ctx) == "tiny:latest"
    with pytest.raises(StageError, match=r"bad field 'sha'; known: \{name\}"):
        image_name("{name}:{sha}", ctx)
    with pytest.raises(StageError, match="not a Docker image name"):
        image_name("Tiny Model:{version}", ctx)


def test_example_pipeline_validates_and_bad_arguments_are_located(tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_USER", "ci")
    monkeypatch.setenv("REGISTRY_PASSWORD", "pw-from-env")
    run_cli("validate", str(REPO / "pipelines" / "wine-docker.yaml")).assert_success()
    text = (REPO / "pipelines" / "wine-docker.yaml").read_text()
    bad = tmp_path / "pipelines" / "bad.yaml"
    bad.parent.mkdir()
    (tmp_path / "examples").symlink_to(REPO / "examples")
    bad.write_text(text.replace("baseImage: python:3.11-slim", "port: web"))
    outcome = run_cli("validate", str(bad)).assert_failed(2)
    assert re.search(
        r"bad\.yaml:\d+:\d+: stages\.package\.arguments\.port", outcome.err + outcome.out
    )


def test_registration_loads_the_packager_and_its_defaults():
    from legion_ci.integrations.base import Packager
    from legion_ci.integrations.registry import load_registry
    from legion_ci.packaging.docker_rest import argument_defaults

    registration = load_registry().get("PackagingIntegration", "docker-rest")
    assert isinstance(registration.instantiate(), Packager)
    defaults = argument_defaults()
    assert defaults["baseImage"] == "python:3.11-slim"
    assert defaults["imageName"] == "{name}:{version}-{short_run_id}"
    assert defaults["port"] == 5000 and defaults["smokeTest"] is True


def test_an_unknown_target_is_named(no_engine, tmp_path):
    target = push_target("127.0.0.1:5000", "ci", "some-password")
    target.name = "docker-pusj"
    ctx = package_ctx(tiny_binary(tmp_path, "tiny"), tmp_path / "w", targets=[target])
    with pytest.raises(StageError, match="unknown target 'docker-pusj' for docker-rest; known: "):
        DockerRestPackager().pack(ctx)


def test_the_image_sets_only_variables_legion_ci_serve_reads():
    from legion_ci.cli.serve import serve
    from legion_ci.packaging.dockerfile import ImageSpec, serve_env

    read = set()
    for param in serve.params:
        envvar = param.envvar
        read.update([envvar] if isinstance(envvar, str) else envvar or [])
    spec = ImageSpec("m", "1", "m:1", "base", "legion_ci.whl")
    assert set(serve_env(spec)) <= read, sorted(set(serve_env(spec)) - read)


def test_the_models_python_files_are_precompiled_into_the_context(no_engine, tmp_path):
    # The image never writes bytecode (PYTHONDONTWRITEBYTECODE, read-only root): without these
    # the server compiles the entrypoint at every container start. Checked-hash, so the .pyc
    # is valid for exactly this source whatever the file times the build gives it.
    import importlib.util
    import sys

    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    args = {"pythonVersion": py}
    out = DockerRestPackager().pack(
        package_ctx(tiny_binary(tmp_path, "pyc"), tmp_path / "w", arguments=args)
    )
    source = Path(out.outputs["context"]) / "model" / "legion_model" / "entrypoint.py"
    compiled = Path(importlib.util.cache_from_source(str(source)))
    data = compiled.read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[4:8], "little") == 0b11  # hash-based, checked against the source
    assert data[8:16] == importlib.util.source_hash(source.read_bytes())
    assert oct(compiled.stat().st_mode & 0o777) == "0o644"
    # Named by its path in the image, not in this context folder: the same model compiled in
    # two folders gives the same bytes (the same layer).
    import marshal

    from legion_ci.packaging.context import IMAGE_MODEL_DIR

    assert marshal.loads(data[16:]).co_filename == "/model/legion_model/entrypoint.py"
    dockerfile = (Path(out.outputs["context"]) / "Dockerfile").read_text()
    assert f"COPY model {IMAGE_MODEL_DIR}\n" in dockerfile
    # For another Python the .pyc would be ignored: none is written, and the log says why.
    other = {"pythonVersion": "3.10" if py != "3.10" else "3.12"}
    ctx = package_ctx(tiny_binary(tmp_path, "pyc2"), tmp_path / "w2", arguments=other)
    context = Path(DockerRestPackager().pack(ctx).outputs["context"])
    assert not list((context / "model").rglob("*.pyc"))
    assert f"the image's {other['pythonVersion']}" in (tmp_path / "w2" / "package.log").read_text()
