"""Zip read/write for trained model binaries: atomic writes, safe extraction."""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from legion_ci.atomic import atomic_output
from legion_ci.cache import cache_root
from legion_ci.errors import ModelError, storage_error

# What a model binary needs, far below what would hurt the machine: an MLflow model is a
# dozen files; a large scikit-learn ensemble a few hundred MB. Anything bigger is refused before
# it is unpacked (declared sizes), and while it is unpacked (bytes counted as they are written:
# a member's header can lie).
MAX_UNPACKED_BYTES = 512 * 1024**2
MAX_MEMBERS = 10_000
_CHUNK = 1 << 20


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


def _members(zf: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    """The archive's entries, refused when too many, too big (as declared) or escaping."""
    members = zf.infolist()
    if len(members) > MAX_MEMBERS:
        raise ModelError(f"{zip_path}: {len(members)} entries, more than {MAX_MEMBERS}")
    total = 0
    for info in members:
        name = PurePosixPath(info.filename)
        if name.is_absolute() or ".." in name.parts or info.filename.startswith("\\"):
            raise ModelError(f"{zip_path}: entry {info.filename!r} escapes the archive")
        if not name.parts:
            raise ModelError(f"{zip_path}: entry {info.filename!r} has no name")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelError(f"{zip_path}: entry {info.filename!r} is a symbolic link")
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise ModelError(f"{zip_path}: unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    return members


def _unpack(
    zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], into: Path, zip_path: Path
) -> None:
    """Write each entry, counting bytes as they come: never more than an entry declares,
    never more than MAX_UNPACKED_BYTES in all, whatever the headers say."""
    left = MAX_UNPACKED_BYTES
    for info in members:
        target = into.joinpath(*PurePosixPath(info.filename).parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with zf.open(info) as source, open(target, "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                left -= len(chunk)
                if written > info.file_size:
                    raise ModelError(
                        f"{zip_path}: entry {info.filename!r} holds more than the "
                        f"{info.file_size} bytes its header declares"
                    )
                if left < 0:
                    raise ModelError(f"{zip_path}: unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                out.write(chunk)


# What zipfile and its decompressors raise on damaged or unsupported data.
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, ValueError)


def safe_extract(
    zip_path: Path,
    dest: Path,
    check: Callable[[Path], object] | None = None,
    *,
    keep_existing: bool = False,
) -> Path:
    """Extract a model zip into `dest`, refusing path traversal, links and zip bombs.

    The zip is unpacked into a temporary folder beside `dest`, checked with `check` (if given)
    and only then renamed into place: a refused binary leaves nothing behind. An existing
    `dest` is replaced, or with `keep_existing` kept (another process unpacked the same zip).
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (*_CORRUPT, OSError) as exc:
        raise ModelError(f"{zip_path}: not a readable zip: {_one_line(exc)}") from None
    with zf:
        try:
            members = _members(zf, zip_path)
        except _CORRUPT as exc:
            raise ModelError(f"{zip_path}: corrupt archive: {_one_line(exc)}") from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            try:
                _unpack(zf, members, tmp, zip_path)
            except _CORRUPT as exc:
                # e.g. an entry whose data is longer than its header says (a lying zip bomb)
                raise ModelError(f"{zip_path}: corrupt archive: {_one_line(exc)}") from None
            except (lzma.LZMAError, OSError) as exc:
                full = storage_error(exc) if isinstance(exc, OSError) else None
                if full is not None:
                    raise full from None
                raise ModelError(f"{zip_path}: cannot unpack: {_one_line(exc)}") from None
            if check is not None:
                check(tmp)
            if dest.exists() and not keep_existing:
                shutil.rmtree(dest)
            try:
                os.rename(tmp, dest)
            except OSError:
                if not (keep_existing and dest.is_dir()):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # refused, or another copy won the race
    return dest


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _refuse_links_out(folder: Path) -> None:
    """A binary given as a folder must not reach outside itself through symbolic links."""
    root = folder.resolve()
    for entry in folder.rglob("*"):
        if entry.is_symlink() and not entry.resolve().is_relative_to(root):
            raise ModelError(f"{entry}: symbolic link pointing outside the model binary")


def open_artifact(path: Path) -> Path:
    """Return a folder holding the binary: the folder itself, or a cached extraction of a zip.

    A zip's manifest is checked (`check_binary`) before its folder enters the cache, so a
    refused binary leaves nothing unpacked; an entry already in the cache is checked again
    (it may predate a check) and removed when refused.
    """
    from legion_ci.gppi.manifest import check_binary

    path = Path(path)
    if path.is_dir():
        _refuse_links_out(path)
        return path
    if not path.is_file():
        raise ModelError(f"{path}: no such trained model binary (a .zip file or a folder)")
    size = path.stat().st_size
    if size > MAX_UNPACKED_BYTES:
        raise ModelError(f"{path}: {size} bytes, more than a model binary may unpack to")
    dest = cache_root() / "gppi" / sha256_file(path)
    if not dest.is_dir():
        return safe_extract(path, dest, lambda root: check_binary(root, path), keep_existing=True)
    try:
        check_binary(dest, path)
    except ModelError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest
