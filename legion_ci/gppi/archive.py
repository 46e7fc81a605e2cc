"""Zip read/write for trained model binaries: atomic writes, safe extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from legion_ci.atomic import atomic_output
from legion_ci.cache import cache_root
from legion_ci.errors import ModelError

MAX_UNPACKED_BYTES = 4 * 1024**3
MAX_MEMBERS = 200_000


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_zip(src_dir: Path, dest: Path) -> str:
    """Zip `src_dir` into `dest` atomically; returns the zip's sha256.

    A reader never sees a half-written zip: it is built beside `dest` and renamed into place.
    """
    src_dir, dest = Path(src_dir), Path(dest)
    with (
        atomic_output(dest, binary=True) as raw,
        zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf,
    ):
        for path in sorted(src_dir.rglob("*")):
            if path.is_symlink():
                raise ModelError(f"{path}: symbolic links are not allowed in a model binary")
            if "__pycache__" in path.parts or path.is_dir():
                continue
            zf.write(path, path.relative_to(src_dir).as_posix())
    return sha256_file(dest)


def safe_extract(zip_path: Path, dest: Path) -> Path:
    """Extract a model zip into `dest`, refusing path traversal, links and zip bombs."""
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{zip_path}: not a readable zip: {exc}") from None
    with zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise ModelError(f"{zip_path}: {len(members)} entries, more than {MAX_MEMBERS}")
        total = 0
        for info in members:
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts or info.filename.startswith("\\"):
                raise ModelError(f"{zip_path}: entry {info.filename!r} escapes the archive")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ModelError(f"{zip_path}: entry {info.filename!r} is a symbolic link")
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise ModelError(f"{zip_path}: unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            zf.extractall(tmp)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            # e.g. an entry whose data is longer than its header says (a lying zip bomb)
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"{zip_path}: corrupt archive: {exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _refuse_links_out(folder: Path) -> None:
    """A binary given as a folder must not reach outside itself through symbolic links."""
    root = folder.resolve()
    for entry in folder.rglob("*"):
        if entry.is_symlink() and not entry.resolve().is_relative_to(root):
            raise ModelError(f"{entry}: symbolic link pointing outside the model binary")


def open_artifact(path: Path) -> Path:
    """Return a folder holding the binary: the folder itself, or a cached extraction of a zip."""
    path = Path(path)
    if path.is_dir():
        _refuse_links_out(path)
        return path
    if not path.is_file():
        raise ModelError(f"{path}: no such trained model binary (a .zip file or a folder)")
    digest = sha256_file(path)
    dest = cache_root() / "gppi" / digest
    if not dest.is_dir():
        safe_extract(path, dest)
    return dest
