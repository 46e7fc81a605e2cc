"""The image's dependencies as wheels, fetched on the agent so the build needs no network.

`pip download` runs on the agent for the image's Python and platform (not the agent's own),
into a cache keyed by the pinned requirements, outside any clone. An air-gapped agent points
`wheelhouse` at a folder of wheels instead of an index: the same command resolves from it with
`--no-index`, so a missing wheel fails here, on the agent, with pip's message, not in the
middle of a build. legion-ci itself goes in as a wheel written here, byte for byte the same for
the same sources, so an unchanged legion-ci never invalidates the image's dependency layer.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import shutil
import sys
import time
import zipfile
from pathlib import Path

from legion_ci.cache import cache_root
from legion_ci.errors import StageError
from legion_ci.processes import StageLog, run_logged

# manylinux tags up to the glibc of Debian bookworm (2.36), which python:3.11-slim and the
# debootstrap base both are. pip does not expand manylinux_2_X to lower X itself.
_GLIBC_MAX_MINOR = 36
_DONE = ".complete"


def platform_tags(machine: str | None = None) -> list[str]:
    arch = machine or platform.machine() or "x86_64"
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(_GLIBC_MAX_MINOR, 4, -1)]
    tags += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    return [*tags, f"linux_{arch}"]


def pip_download_argv(
    requirements_file: Path, dest: Path, python_version: str, find_links: Path | None
) -> list[str]:
    abi = "cp" + python_version.replace(".", "")
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    for tag in platform_tags():
        argv += ["--platform", tag]
    if find_links is not None:
        argv += ["--no-index", "--find-links", str(find_links)]
    return [*argv, "-r", str(requirements_file)]


def wheelhouse_key(requirements: list[str], python_version: str, source: Path | None) -> str:
    text = "\n".join([python_version, *platform_tags(), str(source or "index"), *requirements])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def download(
    requirements: list[str], *, python_version: str, log: StageLog, source: Path | None = None
) -> Path:
    """A folder holding a wheel for every requirement and its dependencies (cached)."""
    key = wheelhouse_key(requirements, python_version, source)
    folder = cache_root() / "wheelhouses" / key
    if (folder / _DONE).is_file():
        log.line(f"wheelhouse: {folder} (cached for these requirements)")
        return folder
    if source is not None and not source.is_dir():
        raise StageError(f"wheelhouse {source}: no such folder")
    partial = folder.with_name(f"{key}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    req_file = partial / "requirements.txt"
    req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    where = f"the wheelhouse {source}" if source else "the package index"
    log.line(f"wheelhouse: downloading {len(requirements)} requirements from {where}")
    # pip's own output (about 100 lines, one command with 35 --platform flags) goes to the
    # stage log file only: a second StageLog on the same file, with the same redactor and no
    # echo. The console gets the one-line summary below.
    pip_log = StageLog(log.path, log.redact)
    offset = log.path.stat().st_size
    started = time.monotonic()
    try:
        code = run_logged(
            pip_download_argv(req_file, partial, python_version, source),
            pip_log,
            what="pip download",
            check=False,
        )
    finally:
        pip_log.close()
    with open(log.path, encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        pip_lines = handle.read().splitlines()
    if code != 0:
        shutil.rmtree(partial, ignore_errors=True)
        errors = [ln for ln in pip_lines if ln.startswith("ERROR:")]
        reason = errors[-1].removeprefix("ERROR: ") if errors else f"pip exited with {code}"
        raise StageError(
            f"cannot get the image's requirements from {where}: {reason} "
            f"(wheels for CPython {python_version} on linux)"
        )
    log.line(summary(requirements, partial, pip_lines, time.monotonic() - started, source))
    log.line(f"wheelhouse: pip's full output is in {log.path}")
    req_file.unlink()
    (partial / _DONE).write_text("\n".join(requirements) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def summary(
    requirements: list[str],
    folder: Path,
    pip_lines: list[str],
    seconds: float,
    source: Path | None = None,
) -> str:
    """One console line for a download: requirements, wheels, their size, the time, and how
    many pip downloaded or took from its cache."""
    wheels = sorted(folder.glob("*.whl"))
    size_mb = sum(wheel.stat().st_size for wheel in wheels) / 1e6
    if source is not None:
        return (
            f"wheelhouse: {len(requirements)} requirements -> {len(wheels)} wheels from {source},"
            f" {size_mb:.1f} MB in {seconds:.1f} s"
        )
    # As pip reports them: its HTTP cache can also serve a file it calls "Downloading".
    said = [line.strip() for line in pip_lines]
    downloaded = sum(1 for line in said if line.startswith("Downloading "))
    cached = sum(1 for line in said if line.startswith("Using cached "))
    return (
        f"wheelhouse: {len(requirements)} requirements -> {len(wheels)} wheels,"
        f" {size_mb:.1f} MB in {seconds:.1f} s (pip: {downloaded} downloaded,"
        f" {cached} from its cache)"
    )


def link_wheels(wheelhouse: Path, dest: Path) -> list[str]:
    """Hard-link (or copy) the wheelhouse's wheels into `dest`; return their names."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        target = dest / wheel.name
        if not target.exists():
            try:
                os.link(wheel, target)
            except OSError:
                shutil.copy2(wheel, target)
        names.append(wheel.name)
    return names


# A fixed timestamp and mode for every entry: the same sources give the same wheel bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _zip_write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def legion_ci_wheel(dest: Path) -> Path:
    """Write legion-ci's own wheel (the installed package's files, no dependencies declared:
    the image installs it with --no-deps beside serve-requirements.txt)."""
    from legion_ci import version as version_module

    package = Path(version_module.__file__).resolve().parent
    version = version_module.__version__
    dist_info = f"legion_ci-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        if path.is_dir() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo"):
            continue
        files.append((f"legion_ci/{rel.as_posix()}", path.read_bytes()))
    files += [
        (
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: legion-ci\nVersion: {version}\n".encode(),
        ),
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: legion-ci\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (
            f"{dist_info}/entry_points.txt",
            b"[console_scripts]\nlegion-ci = legion_ci.cli.main:main\n",
        ),
    ]
    record = [_record_line(name, data) for name, data in files] + [f"{dist_info}/RECORD,,"]
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"legion_ci-{version}-py3-none-any.whl"
    partial = wheel.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name, data in files:
            _zip_write(archive, name, data)
        _zip_write(archive, f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode())
    partial.replace(wheel)
    return wheel
