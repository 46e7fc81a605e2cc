"""The docker-rest Dockerfile cut in two for buildah (legion_ci/packaging/buildah_split.py):
where it is cut, when it is not, and that the runtime part's key follows what it is made of
(a changed wheel or base rebuilds the runtime; a changed model does not)."""

from __future__ import annotations

from pathlib import Path

from legion_ci.packaging import buildah_split
from legion_ci.packaging.dockerfile import ImageSpec, render

BASE = "example/debian-python:bookworm"


def _dockerfile(model: str = "m") -> str:
    spec = ImageSpec(
        model_name=model,
        model_version="1.0",
        image=f"{model}:1.0",
        base_image=BASE,
        legion_ci_wheel="legion_ci-0.1.0-py3-none-any.whl",
        labels={"legion.run_id": "r1"},
    )
    return render(spec)


def test_the_packagers_dockerfile_is_cut_before_the_model():
    parts = buildah_split.split(_dockerfile())
    assert parts is not None
    assert "COPY --from=dependencies /opt/legion/venv" in parts.runtime
    assert "RUN python3 -m venv" in parts.runtime and "USER 10001:10001" in parts.runtime
    assert "COPY model" not in parts.runtime and "LABEL" not in parts.runtime
    rest = buildah_split.rest_dockerfile(parts, "legion-ci-runtime:k")
    assert rest.startswith("FROM legion-ci-runtime:k\n")
    assert "COPY model /model" in rest and "CMD [" in rest and "--from" not in rest
    assert sorted(parts.sources) == ["requirements.txt", "wheels"]
    assert parts.images == [BASE]


def test_not_cut_where_the_second_part_would_differ():
    # An ARG of the last stage would not reach the second part; no COPY from the context in
    # the last stage leaves nothing to cut; a wildcard source is not followed into the key.
    arg = "FROM b AS d\nRUN x\nFROM b\nARG V\nCOPY --from=d /a /a\nCOPY model /model\n"
    assert buildah_split.split(arg) is None
    assert buildah_split.split('FROM b\nCOPY --from=x /a /a\nCMD ["a"]\n') is None
    assert buildah_split.split("FROM b AS d\nCOPY w*.whl /w/\nFROM b\nCOPY m /m\n") is None
    found = buildah_split.split("FROM b AS d\nCOPY req \\\n  /r\nFROM b\nCOPY m /m\n")
    assert found is not None and found.sources == ["req"] and found.rest == ["COPY m /m"]


def _context(root: Path) -> Path:
    (root / "wheels").mkdir(parents=True)
    (root / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"wheel a")
    (root / "requirements.txt").write_text("a==1.0\n")
    (root / "model").mkdir()
    (root / "model" / "model.pkl").write_bytes(b"model 1")
    return root


def test_the_runtime_key_follows_its_inputs_not_the_model(tmp_path):
    parts = buildah_split.split(_dockerfile())
    context = _context(tmp_path / "c")

    def ids(image: str) -> str:
        return "sha256:base-1"

    first = buildah_split.runtime_key(parts, context, 1700000000, ids)
    (context / "model" / "model.pkl").write_bytes(b"model 2 (retrained)")
    assert buildah_split.runtime_key(parts, context, 1700000000, ids) == first
    # Another model's Dockerfile names it in its comments: the same runtime.
    other = buildah_split.split(_dockerfile("another"))
    assert other.runtime != parts.runtime
    assert buildah_split.runtime_key(other, context, 1700000000, ids) == first
    assert buildah_split.runtime_key(parts, context, 1700000001, ids) != first
    assert buildah_split.runtime_key(parts, context, 1700000000, lambda i: "sha256:b2") != first
    (context / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"wheel a, rebuilt")
    assert buildah_split.runtime_key(parts, context, 1700000000, ids) != first
