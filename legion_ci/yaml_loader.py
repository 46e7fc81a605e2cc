"""YAML loading that remembers where every value came from.

PyYAML's composer gives nodes with marks; we build plain Python values from them ourselves so
that (a) every value's line and column can be reported, (b) duplicate keys are errors instead
of silently losing data, and (c) alias expansion is bounded (a "billion laughs" file is refused
after a fixed number of nodes, in bounded memory).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from legion_ci.errors import Problem, SpecError

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
# Deeper than any real pipeline, and far below Python's recursion limit.
MAX_DEPTH = 64
MAX_INT_BITS = 1024

PathT = tuple[str | int, ...]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Tags a collection may carry: anything else (`!!set`, `!!python/object/apply:...`) would be
# silently ignored by our builder, so it is refused instead.
COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
# C0 and C1 controls, DEL and the Unicode line and paragraph separators: any of them in a
# message, a path or a value written to a line-based file would start a new line.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with every control character escaped (`\\n`, `\\x01`), so it prints as one
    line whatever a pipeline held."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def format_path(path: PathT) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{one_line(part)}" if out else one_line(str(part))
    return out


class UnreadableFile(Exception):
    """Why a file was refused unread (or read only up to the cap); `str()` is one line."""


def read_capped(path: Path, limit: int, *, allow_fifo: bool = False) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; UnreadableFile otherwise.

    Opened with O_NONBLOCK, so a FIFO with no writer cannot hang the open, and checked with
    fstat on the opened descriptor, so what is read is what was checked (no swap between a
    stat and the open). At most `limit + 1` bytes are read: /dev/zero, /dev/urandom or a
    file that grows are refused in bounded memory. `allow_fifo` (the pipeline itself, e.g.
    `<(generate-pipeline)`) reads a pipe, blocking, up to the same cap."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile("no such file") from None
    except (OSError, ValueError) as exc:
        raise UnreadableFile(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UnreadableFile("is a directory")
        fifo = allow_fifo and stat.S_ISFIFO(info.st_mode)
        if not stat.S_ISREG(info.st_mode) and not fifo:
            raise UnreadableFile("not a regular file")
        if info.st_size > limit:
            raise UnreadableFile(f"file is {info.st_size} bytes; refusing files over {limit} bytes")
        if fifo:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnreadableFile(f"file is over {limit} bytes; refused")
        return b"".join(chunks)
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


@dataclass
class Located:
    """A loaded document with the position of each value and each mapping key."""

    file: str
    data: Any
    sha256: str = ""  # of the bytes that were parsed, for the run record
    values: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathT, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: PathT, *, key: bool = False) -> tuple[int, int]:
        """Line/column of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while True:
            if key and path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if path in self.keys:
                return self.keys[path]
            if not path:
                return (1, 1)
            path = path[:-1]

    def problem(self, path: PathT, message: str, *, key: bool = False) -> Problem:
        line, col = self.position(path, key=key)
        return Problem(self.file, line, col, format_path(path), one_line(message))


class _Builder:
    def __init__(self, located: Located, loader: Any):
        self.located = located
        self.loader = loader
        self.count = 0
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, path: PathT) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError(
                [
                    Problem(
                        self.located.file,
                        node.start_mark.line + 1,
                        node.start_mark.column + 1,
                        "",
                        f"document expands to more than {MAX_NODES} values"
                        " (an alias bomb?); refused",
                    )
                ]
            )
        self.located.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if len(path) > MAX_DEPTH and isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            self._problem(node, path, f"nested more than {MAX_DEPTH} levels deep; refused")
            return None
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and (
            node.tag not in COLLECTION_TAGS
        ):
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            self._problem(node, path, f"the tag {tag} is not allowed here; remove it")
            return None
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            self.loader.flatten_mapping(node)
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self._problem(key_node, path, "mapping keys must be plain strings")
                    continue
                key = str(self.scalar(key_node, path))
                child = (*path, key)
                if key in result:
                    first = self.located.keys[child]
                    self._problem(
                        key_node,
                        child,
                        f"duplicate key {key!r} (first at line {first[0]})",
                    )
                    continue
                self.located.keys[child] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: PathT) -> Any:
        """A scalar's value; one that YAML cannot make (`2024-02-30`, `!!int abc`, an integer
        of 5,000 digits) is a located problem, not a crash."""
        try:
            value = self.loader.construct_object(node)
            if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
                # Python refuses to print such a number in decimal, so no message could show it.
                raise OverflowError("integer too large")
            if isinstance(value, float) and math.isnan(value):
                # NaN compares false with everything, so it would pass every bound.
                self._problem(node, path, "NaN is not allowed: it would pass every bound")
                return None
            if isinstance(value, (bytes, datetime.date)):
                # Plans, records and documents are JSON, which cannot hold these.
                raise ValueError("JSON cannot hold it")
            return value
        except yaml.constructor.ConstructorError as exc:
            message = str(exc.problem or "cannot construct this value")
        except (OverflowError, ValueError) as exc:
            message = str(exc)
        except Exception:  # PyYAML's constructors raise IndexError, KeyError, ... on bad input
            message = "cannot read this value"
        value = str(node.value)
        shown = value if len(value) <= 40 else value[:37] + "..."
        tag = one_line(str(node.tag).replace("tag:yaml.org,2002:", "!!"))
        self._problem(node, path, f"not a valid {tag} value: {shown!r} ({message}); quote it")
        return value

    def _problem(self, node: yaml.Node, path: PathT, message: str) -> None:
        self.problems.append(
            Problem(
                self.located.file,
                node.start_mark.line + 1,
                node.start_mark.column + 1,
                format_path(path),
                one_line(message),
            )
        )


def load_located(path: Path | str, display: str | None = None) -> Located:
    """Load one YAML document with positions; every failure is a SpecError (exit 2)."""
    path = Path(path)
    shown = one_line(display or str(path))

    def fail(message: str, line: int = 1, col: int = 1) -> SpecError:
        return SpecError([Problem(shown, line, col, "", one_line(message))])

    try:
        raw = read_capped(path, MAX_FILE_BYTES, allow_fifo=True)
    except UnreadableFile as exc:
        reason = str(exc)
        raise fail(
            reason + (", not a pipeline file" if reason == "is a directory" else "")
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        raise fail("file is empty")
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # the pure-Python reader checks in its constructor
        raise _reader_failure(exc, text, fail) from None
    try:
        node = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        raise _reader_failure(exc, text, fail) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "syntax error"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise fail(f"not valid YAML: {what}", line, col) from None
    except yaml.YAMLError as exc:
        raise fail(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise fail(f"nested more than {MAX_DEPTH} levels deep; refused") from None
    finally:
        loader.dispose()
    if node is None:
        raise fail("file is empty")
    located = Located(shown, None, hashlib.sha256(raw).hexdigest())
    builder = _Builder(located, _Loader(""))
    try:
        located.data = builder.build(node, ())
    except RecursionError:
        raise fail(f"nested more than {MAX_DEPTH} levels deep; refused") from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise fail(f"not valid YAML: {exc.problem}", line, col) from None
    if builder.problems:
        raise SpecError(builder.problems)
    return located


def _reader_failure(exc: yaml.reader.ReaderError, text: str, fail: Any) -> SpecError:
    """A character YAML does not accept (a raw control character), at its line and column
    rather than PyYAML's second line `in "<unicode string>", position N`."""
    position = max(0, min(int(exc.position), len(text)))
    before = text[:position]
    line = before.count("\n") + 1
    col = position - (before.rfind("\n") + 1) + 1
    character = exc.character
    code = f"#x{character:04x}" if isinstance(character, int) else repr(character)
    return fail(f"not valid YAML: character {code} is not allowed in YAML text", line, col)
