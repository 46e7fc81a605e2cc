"""The docker-rest Dockerfile cut in two for buildah: the runtime, then the model on it.

buildah's layer cache (`--layers`) checks a `COPY --from=<stage>` step by copying the stage's
files and digesting them: for the image's virtual environment (~400 MB) that was 3.6 s of a
5 s model-only rebuild on 2 cores, with nothing in it changed. So the Dockerfile is built in
two parts: the runtime (every stage, and the last stage up to its first COPY from the context:
the environment, settings, user), tagged in the storage with a key of all it is made from and
built only when no image has that tag; then the rest (model, attestations, labels, command)
FROM it. Both are stamped like one build (--timestamp): the same inputs, the same digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legion_ci.processes import StageLog

# The runtime image's repository in the storage; the tag is the key.
RUNTIME_REPOSITORY = "legion-ci-runtime"
_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)\b")


@dataclass(frozen=True)
class Split:
    runtime: str  # the Dockerfile of the first part
    rest: list[str]  # the last stage's lines from its first COPY from the context on
    sources: list[str]  # context paths the first part copies
    images: list[str]  # images the first part's FROM lines name


def _instructions(text: str) -> list[tuple[int, int, str]]:
    """(first line, line after, joined text) per instruction; comments and blanks skipped."""
    lines = text.splitlines()
    found, at = [], 0
    while at < len(lines):
        stripped = lines[at].strip()
        if not stripped or stripped.startswith("#"):
            at += 1
            continue
        start, parts = at, []
        while True:
            line = lines[at].rstrip()
            at += 1
            if not line.lstrip().startswith("#"):
                parts.append(line[:-1] if line.endswith("\\") else line)
            if not line.endswith("\\") or at >= len(lines):
                break
        found.append((start, at, " ".join(parts).strip()))
    return found


def _copy_sources(instruction: str) -> list[str] | None:
    """A COPY/ADD's context sources; None for a form not followed here (JSON, wildcards)."""
    words = shlex.split(instruction)[1:]
    args = [w for w in words if not w.startswith("--")]
    if instruction.split(None, 1)[1].lstrip().startswith("[") or len(args) < 2:
        return None
    sources = args[:-1]
    return None if any(ch in s for s in sources for ch in "*?[") else sources


def split(text: str) -> Split | None:
    """The Dockerfile `text` in two parts, or None where it cannot be cut safely (no COPY from
    the context in the last stage, an ARG there, a COPY form not followed)."""
    lines = text.splitlines()
    steps = [
        (start, end, text, (_INSTRUCTION.match(text) or ["", ""])[1].upper())
        for start, end, text in _instructions(text)
    ]
    last_from = max((n for n, step in enumerate(steps) if step[3] == "FROM"), default=None)
    if last_from is None:
        return None
    stages, images, sources = set(), [], []
    cut = None
    for n, (start, _end, instruction, word) in enumerate(steps):
        words = instruction.split()
        if word == "FROM":
            image = words[1]
            if image not in stages and image not in images:
                images.append(image)
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3])
        elif word in ("COPY", "ADD") and "--from=" not in instruction:
            found = _copy_sources(instruction)
            if found is None:
                return None
            if n > last_from:
                cut = start
                break
            sources.extend(found)
        elif word == "ARG" and n > last_from:
            return None  # an ARG of the last stage would not reach the second part
    if cut is None:
        return None
    return Split("\n".join(lines[:cut]) + "\n", lines[cut:], sources, images)


def rest_dockerfile(parts: Split, runtime_image: str) -> str:
    return f"FROM {runtime_image}\n" + "\n".join(parts.rest) + "\n"


def _hash_tree(digest: Any, root: Path, relative: str) -> None:
    path = root / relative
    if path.is_symlink() or path.is_file():
        entries = [path]
    else:
        entries = sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
    for entry in entries:
        digest.update(f"\0{entry.relative_to(root)}\0{entry.lstat().st_mode:o}\0".encode())
        if entry.is_symlink():
            digest.update(os.readlink(entry).encode())
        else:
            with open(entry, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())


def runtime_key(
    parts: Split, context: Path, epoch: int | None, image_id: Callable[[str], str | None]
) -> str:
    """sha256 of all the first part is made from: its Dockerfile, the context files it copies
    (names, modes, contents), the ids of the images it starts from, the timestamp. Its
    instructions only: the comments name the model and image, which must not count."""
    steps = "\n".join(step for _start, _end, step in _instructions(parts.runtime))
    digest = hashlib.sha256(steps.encode())
    digest.update(f"\0epoch={epoch}".encode())
    for image in parts.images:
        digest.update(f"\0{image}={image_id(image)}".encode())
    ignore = context / ".dockerignore"
    if ignore.is_file():
        digest.update(ignore.read_bytes())
    for source in sorted(set(parts.sources)):
        _hash_tree(digest, context, source.strip("/") or ".")
    return digest.hexdigest()


def build_in_parts(
    parts: Split,
    context: Path,
    epoch: int | None,
    log: StageLog,
    *,
    image_id: Callable[[str], str | None],
    bud: Callable[[Path, str | None], None],
) -> None:
    """The runtime part built unless its key's image is in the storage, then the rest on it.
    `bud(dockerfile, tag)` builds the context with that Dockerfile (tag None: the image's)."""
    runtime = f"{RUNTIME_REPOSITORY}:{runtime_key(parts, context, epoch, image_id)}"
    with tempfile.TemporaryDirectory(prefix="legion-bud-") as work:
        if image_id(runtime) is None:
            (Path(work) / "runtime").write_text(parts.runtime, encoding="utf-8")
            bud(Path(work) / "runtime", runtime)
        else:
            log.line(f"runtime image {runtime} reused: environment and settings unchanged")
        rest = Path(work) / "model"
        rest.write_text(rest_dockerfile(parts, runtime), encoding="utf-8")
        bud(rest, None)
