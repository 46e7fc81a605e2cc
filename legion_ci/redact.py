"""The one redacting layer: every resolved secret becomes *** before anything is printed or
written.

- `ACTIVE` is the process's redactor; loading a pipeline registers its secrets there.
- `install_streams()` (called by the CLI's main) wraps stdout and stderr, so every message,
  report, plan and error the program prints passes it, including ones added later.
- `write_atomic()` (records, reports) and the GitHub outputs pass it too, and structured data
  is redacted before it is rendered (`redact_data`), so JSON and XML escaping cannot hide a
  secret from the redactor.
- A secret is also looked for in the forms it takes on the way: JSON, XML/HTML and shell
  escaping, URL (percent) encoding, base64, GitHub workflow-command escaping.

Kept apart from the runner and the spec so both can use it without importing each other.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shlex
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

MASK = "***"


def _forms(secret: str) -> Iterator[str]:
    yield secret
    yield json.dumps(secret)[1:-1]
    yield json.dumps(secret, ensure_ascii=False)[1:-1]
    yield repr(secret)[1:-1]
    yield html.escape(secret, quote=True)
    yield html.escape(secret, quote=False)
    yield html.escape(secret, quote=True).replace("&#x27;", "&apos;")
    # ElementTree's attribute escaping
    yield (
        secret.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#09;")
    )
    yield urllib.parse.quote(secret, safe="")
    yield urllib.parse.quote(secret)
    yield urllib.parse.quote_plus(secret)
    yield shlex.quote(secret)
    yield base64.b64encode(secret.encode()).decode()
    yield base64.urlsafe_b64encode(secret.encode()).decode()
    # GitHub workflow commands (::error::, annotations)
    yield secret.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class Redactor:
    """Replaces every known secret (in each of its encoded forms) with ***; secrets shorter
    than 4 characters are ignored so that a value like '1' does not blank out every digit of
    a log."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = set()
        self._ordered: list[str] = []
        self._raw: set[str] = set()  # the secrets as given, for the warnings
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if not secret or len(secret) < 4:
            return
        self._raw.add(secret)
        with self._lock:
            for form in _forms(secret):
                if len(form) >= 4:
                    self._secrets.add(form)
            self._ordered = sorted(self._secrets, key=len, reverse=True)
        lines = secret.splitlines()
        if len(lines) > 1:
            # Logs are streamed and redacted a line at a time (a child's output, the echo of
            # a command): no single write holds the whole secret, so each of its lines is a
            # secret too. Lines under 4 characters stay, as for any secret.
            for line in lines:
                for part in {line, line.strip()}:
                    if len(part.strip()) >= 4:
                        self.add(part)

    def add_basic_auth(self, username: str, password: str) -> None:
        """The base64 `user:password` pair an HTTP Authorization header carries."""
        if password and len(password) >= 4:
            self.add(base64.b64encode(f"{username}:{password}".encode()).decode())

    def __call__(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def keeping(self, text: str, identifiers: Iterable[str]) -> str:
        """`text` redacted, except a secret lying wholly inside an occurrence of one of
        `identifiers` (the model's name, the run id, ...): those the tool reads back, and a
        secret that is also an identifier reveals nothing the pipeline file does not show.
        A secret reaching past an identifier is still masked."""
        if not self._ordered:
            return text
        kept = []
        for ident in {i for i in identifiers if i}:
            at = text.find(ident)
            while at != -1:
                kept.append((at, at + len(ident)))
                at = text.find(ident, at + 1)
        if not kept:
            return self(text)
        masks = []
        for secret in self._ordered:
            at = text.find(secret)
            while at != -1:
                end = at + len(secret)
                if not any(a <= at and end <= b for a, b in kept):
                    masks.append((at, end))
                at = text.find(secret, at + 1)
        out, pos = [], 0
        for start, end in sorted(masks):
            if end <= pos:
                continue
            if start >= pos:
                out.append(text[pos:start])
                out.append(MASK)
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def fields(
        self, value: Any, keep: Iterable[tuple[str, ...]], identifiers: Iterable[str]
    ) -> Any:
        """A copy of a record with every string redacted, except in the fields the tool reads
        back (`keep`: paths of keys, `*` any key or list item, `<key>` the keys themselves),
        where only the `identifiers` are kept (see `keeping`). Free text stays redacted."""
        patterns = [tuple(p) for p in keep]
        idents = [i for i in identifiers if i]

        def kept(path: tuple[str, ...]) -> bool:
            return any(
                len(path) >= len(p) and all(a in ("*", b) for a, b in zip(p, path, strict=False))
                for p in patterns
            )

        def walk(item: Any, path: tuple[str, ...]) -> Any:
            if isinstance(item, str):
                return self.keeping(item, idents) if kept(path) else self(item)
            if isinstance(item, dict):
                return {
                    (self.keeping(k, idents) if kept((*path, "<key>")) else self(k)): walk(
                        v, (*path, str(k))
                    )
                    for k, v in item.items()
                }
            if isinstance(item, (list, tuple)):
                return [walk(v, (*path, "*")) for v in item]
            return item

        return walk(value, ())

    def warn_identifiers(self, identifiers: Mapping[str, str]) -> None:
        """One line on stderr for each secret found in the pipeline's own identifiers (kept
        there, masked everywhere else, so `***` stands for the model's name on the console)."""
        for what, value in identifiers.items():
            for secret in sorted(self._raw):
                if value and secret in value and (secret, what) not in self._warned:
                    self._warned.add((secret, what))
                    _warn(
                        f"a secret ({len(secret)} characters) also occurs in the {what}; it is"
                        " kept in run records and deployment state, which legion-ci reads"
                        " back, and shown as *** in logs, reports and the console: use a"
                        " longer, unique secret"
                    )

    def data(self, value: Any) -> Any:
        """A copy of `value` (dicts, lists, strings) with every string redacted."""
        if not self._ordered:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.data(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

    def __bool__(self) -> bool:
        return bool(self._secrets)


ACTIVE = Redactor()


# Shorter secrets mask ordinary words and numbers wherever they occur (a model named like
# the password turns into *** everywhere people read it).
SHORT_SECRET = 8


def _warn(message: str) -> None:
    import sys

    sys.stderr.write(f"legion-ci: warning: {message}\n")
    sys.stderr.flush()


def register(secrets: Iterable[str]) -> Redactor:
    """Add a pipeline's secrets to the process's redactor; returns it. A short secret gets
    one warning line on stderr (under 4 characters it is not redacted at all)."""
    for secret in secrets:
        if secret and len(secret) < SHORT_SECRET and (secret, "short") not in ACTIVE._warned:
            ACTIVE._warned.add((secret, "short"))
            _warn(
                f"a secret is only {len(secret)} characters long: "
                + (
                    "too short to be redacted"
                    if len(secret) < 4
                    else "every occurrence of it in logs and reports becomes ***"
                )
                + f"; use at least {SHORT_SECRET}"
            )
        ACTIVE.add(secret)
    return ACTIVE


# The identifiers of the run being recorded (model name and version, run id, workspace):
# outputs the tool reads back (GITHUB_OUTPUT) keep them, see Redactor.keeping.
IDENTIFIERS: dict[str, str] = {}


def protect_identifiers(identifiers: Mapping[str, str]) -> None:
    """Name the pipeline's identifiers: warn about secrets inside them, keep them in what
    the tool reads back."""
    IDENTIFIERS.update({k: v for k, v in identifiers.items() if v})
    ACTIVE.warn_identifiers(identifiers)


def redact(text: str) -> str:
    return ACTIVE(text)


def redact_data(value: Any) -> Any:
    return ACTIVE.data(value)


class RedactingStream(io.TextIOBase):
    """A text stream that passes everything written through the active redactor."""

    def __init__(self, inner: IO[str]):
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(ACTIVE(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.inner, "errors", None)


def install_streams() -> None:
    """Route sys.stdout and sys.stderr through the redactor (idempotent)."""
    import sys

    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)
