"""Secret values: carried through the pipeline, never rendered.

A Secret behaves as an opaque box. str()/repr()/JSON show "(sensitive)"; only
`reveal()` gives the value, and only modules call it, at the moment of acting.
"""

from __future__ import annotations

import hashlib
from typing import Any

REDACTED = "(sensitive)"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def digest(self) -> str:
        """A salted-free hash is fine for comparison but would leak low-entropy
        secrets by brute force, so plans never carry it; only observed-state
        comparison in memory uses it."""
        return hashlib.sha256(self._value.encode()).hexdigest()

    def __str__(self) -> str:
        return REDACTED

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("secret", self._value))


def reveal(value: Any) -> Any:
    """Recursively replace Secrets with their values (for acting on a host)."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def redact(value: Any) -> Any:
    """Recursively replace Secrets with the redaction marker (for showing)."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def contains_secret(value: Any) -> bool:
    if isinstance(value, Secret):
        return True
    if isinstance(value, dict):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secret(v) for v in value)
    return False


class SecretRegistry:
    """Every secret value seen in a run, so logs and error messages can be
    scrubbed of them even when a value leaks through a command's stderr."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        if len(value) >= 4:  # scrubbing "a" out of every message helps no one
            self._values.add(value)

    def scrub(self, text: str) -> str:
        for v in sorted(self._values, key=len, reverse=True):
            text = text.replace(v, REDACTED)
        return text


REGISTRY = SecretRegistry()
