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
from collections.abc import Iterable, Iterator
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
        self._lock = threading.Lock()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if not secret or len(secret) < 4:
            return
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


def register(secrets: Iterable[str]) -> Redactor:
    """Add a pipeline's secrets to the process's redactor; returns it."""
    for secret in secrets:
        ACTIVE.add(secret)
    return ACTIVE


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
