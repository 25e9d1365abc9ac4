"""The resource model: what the spec says should exist on one host."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def make_address(host: str, kind: str, name: str) -> str:
    """Addresses are `host/kind/name`; the name may itself contain slashes
    (file paths), so parse with `split("/", 2)`."""
    return f"{host}/{kind}/{name}"


def split_address(address: str) -> tuple[str, str, str]:
    parts = address.split("/", 2)
    if len(parts) != 3:
        raise ValueError(f"not a resource address (host/kind/name): {address!r}")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class Origin:
    """Where in the spec a resource (or field) was declared."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass
class Resource:
    host: str
    kind: str
    name: str
    fields: dict[str, Any]  # validated, normalised, templated; may hold Secrets
    origin: Origin
    depends_on: list[str] = field(default_factory=list)  # addresses
    play: str = ""
    # who owns what this resource creates: labels/metadata carry it so prune
    # can find what left the spec (var provision_owner, default: playbook stem)
    owner: str = ""

    @property
    def address(self) -> str:
        return make_address(self.host, self.kind, self.name)
