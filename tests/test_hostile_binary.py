"""Hostile trained model binaries, part 2 (issue 21): manifests that are YAML bombs (aliases,
depth, encoding), zip bombs (a 1 GiB entry, 100,000 members) and manifests whose dependency
files point outside the binary. Each is refused in one line, quickly, with exit 1 (never 3),
before any of the binary's code runs, and leaves nothing unpacked in the cache.
Run alone with `-m hostile`."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
from conftest import Figures, run_cli
from server_support import TINY_ENTRYPOINT, TINY_MANIFEST
from test_hostile_artifacts import good_entries, make_zip

from legion_ci.errors import ModelError
from legion_ci.gppi import archive
from legion_ci.gppi.manifest import read_manifest

pytestmark = pytest.mark.hostile

# Nine levels of anchors, nine aliases each: 9**9 (387 million) values once expanded.
ALIAS_BOMB = (
    'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "binaries: {type: python, dependencies: pip}\n"
    + "model: {name: *i, version: '1', workDir: legion_model, entrypoint: entrypoint}\n"
)
DEEP = "model:\n  name: " + "[" * 20_000 + "]" * 20_000 + "\n"


def cache_left() -> list[str]:
    """What is unpacked in this test's $LEGION_CI_CACHE/gppi (the suite isolates it)."""
    folder = Path(os.environ["LEGION_CI_CACHE"]) / "gppi"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def refused_quickly(artifact: Path, message: str, tmp_path: Path, *verbs: tuple[str, ...]) -> None:
    marker = tmp_path / "ran"
    for verb in verbs or (("model", "info"), ("model", "self-check")):
        started = time.monotonic()
        # Before the fix the alias bomb took 45-51 s and 3 GB; the timeout fails such a run.
        outcome = run_cli(*verb, str(artifact), cwd=tmp_path, timeout=60).assert_failed(1)
        elapsed = time.monotonic() - started
        assert message in outcome.err, outcome.err
        error_lines = [line for line in outcome.err.splitlines() if "error" in line]
        assert len(error_lines) == 1, outcome.err
        assert str(artifact) in error_lines[0], outcome.err
        assert elapsed < 20, f"{verb}: refused after {elapsed:.1f} s"
        Figures().add("hostile artifacts refused")
    assert not marker.exists(), "the hostile model's code ran"
    assert cache_left() == [], f"refused binary left unpacked: {cache_left()}"


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (ALIAS_BOMB.encode(), "(an alias bomb?); refused"),
        (DEEP.encode(), "nest"),
        ("model: {name: café}\n".encode("latin-1"), "not UTF-8 text"),
        (b"model: {name: x}\n" + b"#" * (1024 * 1024 + 10), "refusing files over"),
    ],
    ids=["alias-bomb", "20000-deep", "latin-1", "over-1MiB"],
)
def test_manifest_bombs_are_refused_at_once(tmp_path: Path, manifest: bytes, message: str) -> None:
    entries = good_entries(tmp_path / "ran")
    artifact = tmp_path / "m.zip"
    with zipfile.ZipFile(artifact, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("legion.project.yaml", manifest)
        zf.writestr("legion_model/entrypoint.py", entries["legion_model/entrypoint.py"])
    refused_quickly(artifact, message, tmp_path)
    outcome = run_cli("model", "info", str(artifact), cwd=tmp_path, timeout=60)
    assert f"{artifact}: legion.project.yaml:" in outcome.err, outcome.err


def test_alias_bomb_is_refused_by_serve(tmp_path: Path) -> None:
    entries = good_entries(tmp_path / "ran")
    entries["legion.project.yaml"] = ALIAS_BOMB
    artifact = make_zip(tmp_path / "m.zip", entries)
    refused_quickly(artifact, "alias bomb", tmp_path, ("serve", "--port", "0"))


def test_manifest_bomb_in_a_folder_binary(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "legion_model").mkdir(parents=True)
    (folder / "legion_model" / "entrypoint.py").write_text(TINY_ENTRYPOINT)
    (folder / "legion.project.yaml").write_text(ALIAS_BOMB)
    with pytest.raises(ModelError, match=r"legion\.project\.yaml:\d+:\d+: .*alias bomb"):
        read_manifest(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", "must be a mapping, not a list"),
        ("model: [1, 2]\n", "model: must be a mapping"),
        ("model: {name: {a: 1}, version: '1'}\n", "model.name: must be a string"),
        ("model: {version: '1'}\n", "model.name: missing"),
        ("model: {name: x, version: '1'}\nbinaries: 3\n", "binaries: must be a mapping"),
        ('model: {name: "a\\nb", version: "1"}\n', "control characters"),
        ("model: {name: x, version: '1'}\noutput: [1]\n", "output: must be a mapping"),
    ],
)
def test_malformed_manifest_fields(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "legion.project.yaml").write_text(text)
    with pytest.raises(ModelError, match=rf"legion\.project\.yaml:\d+:\d+: .*{message}"):
        read_manifest(tmp_path)


# -- zip bombs -----------------------------------------------------------------------------


def test_a_one_gib_entry_is_refused(tmp_path: Path) -> None:
    artifact = tmp_path / "bomb.zip"
    with zipfile.ZipFile(artifact, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, text in good_entries(tmp_path / "ran").items():
            zf.writestr(name, text)
        with zf.open("legion_model/weights.bin", "w", force_zip64=True) as out:
            block = b"\0" * (1 << 24)
            for _ in range(64):
                out.write(block)
    assert artifact.stat().st_size < 8 * 1024**2
    refused_quickly(artifact, "unpacks to more than", tmp_path)


def test_a_zip_of_100000_members_is_refused(tmp_path: Path) -> None:
    artifact = tmp_path / "many.zip"
    with zipfile.ZipFile(artifact, "w", zipfile.ZIP_STORED) as zf:
        for name, text in good_entries(tmp_path / "ran").items():
            zf.writestr(name, text)
        for i in range(100_000):
            zf.writestr(f"legion_model/p/{i}", b"")
    refused_quickly(artifact, "100002 entries, more than", tmp_path)


def test_limits_are_what_a_model_binary_needs() -> None:
    assert archive.MAX_UNPACKED_BYTES <= 512 * 1024**2
    assert archive.MAX_MEMBERS <= 10_000


def test_a_refused_manifest_leaves_nothing_unpacked(tmp_path: Path) -> None:
    entries = good_entries(tmp_path / "ran")
    entries["legion.project.yaml"] = TINY_MANIFEST.replace("workDir: legion_model", "workDir: x")
    refused_quickly(make_zip(tmp_path / "m.zip", entries), "entrypoint x/entrypoint.py", tmp_path)


def test_a_good_binary_is_unpacked_once_and_reused(tmp_path: Path) -> None:
    artifact = make_zip(tmp_path / "m.zip", good_entries(tmp_path / "ran"))
    first = archive.open_artifact(artifact)
    assert cache_left() == [archive.sha256_file(artifact)]
    assert archive.open_artifact(artifact) == first
    assert cache_left() == [archive.sha256_file(artifact)]


def test_a_refused_binary_already_in_the_cache_is_removed(tmp_path: Path) -> None:
    """An extraction left by an older legion-ci that did not check the manifest first."""
    entries = good_entries(tmp_path / "ran")
    entries["legion.project.yaml"] = ALIAS_BOMB
    artifact = make_zip(tmp_path / "m.zip", entries)
    stale = Path(os.environ["LEGION_CI_CACHE"]) / "gppi" / archive.sha256_file(artifact)
    archive.safe_extract(artifact, stale)
    assert cache_left() == [stale.name]
    with pytest.raises(ModelError, match="alias bomb"):
        archive.open_artifact(artifact)
    assert cache_left() == []


# -- manifest paths leaving the binary -----------------------------------------------------


@pytest.mark.parametrize("field", ["requirements_path", "conda_path"])
@pytest.mark.parametrize("value", ["/etc/passwd", "/tmp/legion-requirements.txt", "../../x.txt"])
def test_dependency_paths_outside_the_binary(tmp_path: Path, field: str, value: str) -> None:
    entries = good_entries(tmp_path / "ran")
    entries["legion.project.yaml"] = TINY_MANIFEST.replace(
        "dependencies: pip}", f"dependencies: pip, {field}: '{value}'}}"
    )
    assert value in entries["legion.project.yaml"]
    artifact = make_zip(tmp_path / "m.zip", entries)
    refused_quickly(artifact, f"binaries.{field}: must stay inside the binary", tmp_path)


def test_dependency_path_through_a_link_outside(tmp_path: Path) -> None:
    """A folder binary whose requirements file is a link leading out (resolved, then refused):
    the package stage would otherwise read it into `pip download` and every report."""
    folder = tmp_path / "model"
    for name, text in good_entries(tmp_path / "ran").items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "legion.project.yaml").write_text(
        TINY_MANIFEST.replace(
            "dependencies: pip}", "dependencies: pip, requirements_path: legion_model/req.txt}"
        )
    )
    outside = tmp_path / "outside.txt"
    outside.write_text("secret-looking-requirement==1\n")
    (folder / "legion_model" / "req.txt").symlink_to(outside)
    with pytest.raises(ModelError, match=r"binaries\.requirements_path: must stay inside"):
        read_manifest(folder)
    (folder / "legion_model" / "req.txt").unlink()
    (folder / "legion_model" / "req.txt").write_text("numpy\n")
    assert read_manifest(folder).requirements_path == "legion_model/req.txt"
