"""The redactor: every resolved secret becomes *** before anything is printed or written.

Kept apart from the runner and the spec so both can use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterable


class Redactor:
    """Replaces every known secret value with ***; secrets shorter than 4 chars are ignored
    so that a value like '1' does not blank out every digit of a log."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def __bool__(self) -> bool:
        return bool(self._secrets)
