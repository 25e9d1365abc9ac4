"""A plan is data: changes with address, action, before/after and reasons."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Action(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def changes(self) -> bool:
        return self is not Action.NOOP


@dataclass
class Change:
    address: str
    host: str
    kind: str
    name: str
    action: Action
    before: dict[str, Any] | None  # observed (may hold Secrets until rendered)
    after: dict[str, Any] | None  # desired
    changed_fields: list[str] = field(default_factory=list)
    replace_fields: list[str] = field(default_factory=list)
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""  # of the observed state this change was computed from
    depends_on: list[str] = field(default_factory=list)


@dataclass
class HostPlan:
    host: str
    changes: list[Change]
    error: str | None = None  # unreachable / facts failed: nothing planned
    unreachable: bool = False  # the error was reaching the host, not reading it

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.action.value] = out.get(c.action.value, 0) + 1
        return out


@dataclass
class Plan:
    hosts: dict[str, HostPlan]
    spec_path: str = ""
    spec_digest: str = ""
    inventory: list[str] = field(default_factory=list)
    extra_vars: dict[str, Any] = field(default_factory=dict)
    limit: str | None = None
    created: str = ""

    @property
    def changes(self) -> list[Change]:
        return [c for hp in self.hosts.values() for c in hp.changes]

    def has_changes(self) -> bool:
        return any(c.action.changes for c in self.changes)

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Action}
        for c in self.changes:
            out[c.action.value] += 1
        return out

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, hp in self.hosts.items() if hp.error]
