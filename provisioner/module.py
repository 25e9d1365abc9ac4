"""The contract every resource kind implements (see modules/).

A module *describes* a kind: its schema, which fields force a replace, how to
read what exists, and how to act on a change. It never decides whether to act:
the planner compares desired and observed and hands the module a Change.

Two ways to read state:
- shell modules return `probes()`: argv lists whose output a pure `parse()`
  turns into the observed dict. The engine batches the probes of every
  resource of a host into one remote script: one round trip per host.
- API modules (libvirt, Docker) implement `read_many()` and read every
  resource of their kind on a host in one listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from provisioner.connection.base import Connection, Result
from provisioner.resource import Resource

if TYPE_CHECKING:
    from provisioner.plan.model import Change
    from provisioner.spec.context import SpecContext


class Absent(dict):  # type: ignore[type-arg]
    """A read result meaning "does not exist", carrying what the host said
    that bears on creating it (which filesystem a VM disk would land on and
    whether it can reflink there). The planner treats it exactly like None;
    its content goes into the change's fingerprint, so a saved plan goes
    stale when it changes, and to `Module.planned`."""


@dataclass(frozen=True)
class Probe:
    argv: tuple[str, ...]
    sudo: bool | None = None


class Module:
    kind: ClassVar[str]
    # cerberus schema of the fields (besides the common depends_on/when)
    schema: ClassVar[dict[str, Any]] = {}
    # which field names the resource (file: path, others: name)
    name_field: ClassVar[str] = "name"
    # fields whose change cannot be applied in place
    replace_fields: ClassVar[frozenset[str]] = frozenset()
    # fields that steer the module but are not compared with observed state
    control_fields: ClassVar[frozenset[str]] = frozenset({"state"})
    # desired `state` values meaning "must not exist"
    absent_states: ClassVar[frozenset[str]] = frozenset({"absent"})
    # fields whose values are secret by nature (password hashes, tokens)
    sensitive_fields: ClassVar[frozenset[str]] = frozenset()
    # API modules set this; the engine then calls read_many instead of probes
    uses_api: ClassVar[bool] = False
    # kinds whose resources one of this kind may live in or use (a container
    # in a docker_network or slice): deletes without declared edges (prune)
    # remove this kind first
    uses_kinds: ClassVar[frozenset[str]] = frozenset()
    # fields a plan carries but does not list for a create: derived
    # bookkeeping, or what a note already says
    unshown_fields: ClassVar[frozenset[str]] = frozenset()

    # -- spec time (pure) ---------------------------------------------------
    def normalize(self, fields: dict[str, Any], ctx: "SpecContext") -> dict[str, Any]:
        """Turn validated fields into the desired state (read source files,
        render templates, fill defaults). Raise ctx.fail(field, msg) on error."""
        return fields

    def link(self, res: Resource, others: Sequence[Resource]) -> dict[str, Any]:
        """Fields derived from the other resources declared for the host (a
        VM learns its image's format and pool directory from their
        declarations, before either exists). Merged into res.fields."""
        return {}

    def implicit_deps(self, res: Resource, others: Sequence[Resource]) -> list[str]:
        """Addresses this resource depends on without saying so."""
        return []

    # -- reading -------------------------------------------------------------
    def probes(self, res: Resource) -> list[Probe]:
        return []

    def parse(self, res: Resource, results: list[Result]) -> dict[str, Any] | None:
        """Observed state from the probes' results; None when it does not exist."""
        raise NotImplementedError

    def read_many(
        self, conn: Connection, resources: Sequence[Resource]
    ) -> dict[str, dict[str, Any] | None]:
        """API modules: observed state of each resource, keyed by address."""
        raise NotImplementedError

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        """Resources of this kind on the host carrying `owner`'s ownership mark,
        name -> observed state. Used by prune/destroy; kinds without
        ownership marks return {} and are never pruned."""
        return {}

    # -- deciding (pure) -----------------------------------------------------
    def wants_absent(self, desired: dict[str, Any]) -> bool:
        return desired.get("state") in self.absent_states

    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        """Names of the declared fields whose observed value differs.

        Only fields the spec sets are compared, so defaults a daemon fills in
        never show up as changes."""
        return [
            key
            for key, want in desired.items()
            if key not in self.control_fields and want is not None
            and observed.get(key) != want
        ]

    def forces_replace(self, desired: dict[str, Any], observed: dict[str, Any],
                       changed: list[str]) -> list[str]:
        return [f for f in changed if f in self.replace_fields]

    def create_reason(self, desired: dict[str, Any]) -> str:
        """Why a create is planned (a command "will run", a file "does not exist")."""
        return "does not exist"

    def planned(self, desired: dict[str, Any], observed: dict[str, Any] | None
                ) -> dict[str, Any]:
        """Choices made at plan time from what was read, for a create or a
        replace (observed is then the Absent facts, or the state being
        replaced): they join the change's `after`, so the plan shows them and
        apply follows them instead of deciding again."""
        return {}

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        """Extra lines for the plan (e.g. "needs a restart to take effect").
        For a create or replace, desired includes what `planned` chose."""
        return []

    def converges(self, desired: dict[str, Any]) -> bool:
        """False for resources whose effect cannot be re-read (unguarded
        commands): the post-apply check skips them."""
        return True

    # -- acting --------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: "Change") -> None:
        raise NotImplementedError
