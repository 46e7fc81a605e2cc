"""Hostile trained model binaries are refused with a clear error before any of their code
runs: entries escaping the archive, symbolic links, a zip bomb (huge declared size, or data
longer than its header says), a manifest whose workDir or entrypoint leaves the model folder,
a folder binary with a link to the outside. Run alone with `-m hostile`."""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from conftest import run_cli
from server_support import TINY_ENTRYPOINT, TINY_MANIFEST

pytestmark = pytest.mark.hostile

CANARY = "import pathlib; pathlib.Path('{marker}').write_text('model code ran')\n"


def good_entries(marker: Path) -> dict[str, str]:
    return {
        "legion.project.yaml": TINY_MANIFEST,
        "legion_model/entrypoint.py": CANARY.format(marker=marker) + TINY_ENTRYPOINT,
    }


def make_zip(path: Path, entries: dict[str, str], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in entries.items():
            zf.writestr(name, text)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def patch_central_sizes(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size the central directory declares for `member`."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + name_len]) == name:
            struct.pack_into("<I", data, at + 24, size)
            path.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{member} not in the central directory")


def refused(artifact: Path, marker: Path, message: str, tmp_path: Path) -> None:
    from conftest import Figures

    Figures().add("hostile artifacts refused")
    for verb in (("model", "info"), ("model", "self-check")):
        outcome = run_cli(*verb, str(artifact), cwd=tmp_path).assert_failed(1)
        assert message in outcome.err, outcome.err
    assert not marker.exists(), "the hostile model's code ran"
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/legion-evil.txt").exists()
    unpacked = Path(os.environ["LEGION_CI_CACHE"]) / "gppi"
    left = list(unpacked.iterdir()) if unpacked.is_dir() else []
    assert not left, f"the refused binary stays unpacked: {left}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"../evil.txt": "x"}, "escapes the archive"),
        ({"legion_model/../../evil.txt": "x"}, "escapes the archive"),
        ({"/tmp/legion-evil.txt": "x"}, "escapes the archive"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute"],
)
def test_entries_escaping_the_archive(tmp_path: Path, extra: dict, message: str) -> None:
    marker = tmp_path / "ran"
    artifact = make_zip(tmp_path / "m.zip", {**good_entries(marker), **extra})
    refused(artifact, marker, message, tmp_path)


def test_symbolic_link_entry(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    artifact = make_zip(
        tmp_path / "m.zip", good_entries(marker), links={"legion_model/data": "/etc"}
    )
    refused(artifact, marker, "is a symbolic link", tmp_path)


def test_zip_bomb_declaring_a_huge_size(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    artifact = make_zip(tmp_path / "m.zip", {**good_entries(marker), "legion_model/w.bin": "0"})
    patch_central_sizes(artifact, "legion_model/w.bin", 0xFFFFFFF0)
    big = make_zip(
        tmp_path / "many.zip",
        {**good_entries(marker), **{f"legion_model/p{i}.bin": "" for i in range(3)}},
    )
    for i in range(3):
        patch_central_sizes(big, f"legion_model/p{i}.bin", 0x7FFFFFFF)
    refused(artifact, marker, "unpacks to more than", tmp_path)
    refused(big, marker, "unpacks to more than", tmp_path)


def test_zip_bomb_whose_data_outgrows_its_header(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    artifact = make_zip(
        tmp_path / "m.zip", {**good_entries(marker), "legion_model/w.bin": "0" * 1_000_000}
    )
    patch_central_sizes(artifact, "legion_model/w.bin", 10)
    refused(artifact, marker, "corrupt archive", tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("workDir", "../..", "must stay inside the binary"),
        ("workDir", "/usr/lib/python3", "must stay inside the binary"),
        ("entrypoint", "../../evil", "not a module name"),
        ("entrypoint", "os.path", "not a module name"),
    ],
)
def test_manifest_pointing_outside(tmp_path: Path, field: str, value: str, message: str) -> None:
    marker = tmp_path / "ran"
    entries = good_entries(marker)
    default = {"workDir": "legion_model", "entrypoint": "entrypoint"}[field]
    entries["legion.project.yaml"] = TINY_MANIFEST.replace(
        f"{field}: {default}", f"{field}: '{value}'"
    )
    assert value in entries["legion.project.yaml"]
    artifact = make_zip(tmp_path / "m.zip", entries)
    refused(artifact, marker, message, tmp_path)


def test_folder_binary_with_a_link_outside(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = tmp_path / "model"
    for name, text in good_entries(marker).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "legion_model" / "secrets").symlink_to("/etc")
    refused(folder, marker, "symbolic link pointing outside", tmp_path)
