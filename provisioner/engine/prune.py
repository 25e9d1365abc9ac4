"""Deleting what left the spec (`prune: true`) and everything (`destroy`).

Only resources carrying this spec's ownership mark are candidates: a
container or VM the tool did not create is never touched unless named.
"""

from __future__ import annotations

from collections.abc import Sequence

from modules import get_module
from provisioner.connection.base import Connection
from provisioner.errors import ProvisionError
from provisioner.plan.diff import diff
from provisioner.plan.model import Action, Change
from provisioner.resource import Origin, Resource, make_address
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import ValidationFailure, validate

PRUNE_REASON = "no longer declared"


def absent_resource(host: str, kind: str, name: str, owner: str) -> Resource:
    """A stand-in resource saying "kind/name must not exist" on host."""
    module = get_module(kind)
    fields: dict = {module.name_field: name, "state": "absent"}
    # through the schema and normalize, so the module sees its defaults
    # (a stop timeout, a delete_disks: false) as for a declared resource
    try:
        full = validate(dict(fields), module.schema)
        full.pop("depends_on", None)
        ctx = SpecContext(file="(no longer declared)", line=None, field_prefix=kind,
                          field_lines={}, variables={}, host=host)
        fields = module.normalize(full, ctx)
    except (ValidationFailure, ProvisionError):
        pass  # a kind that needs more than a name to say "absent": the bare form
    return Resource(host=host, kind=kind, name=name, fields=fields,
                    origin=Origin("(no longer declared)"), owner=owner)


def prune_changes(conn: Connection, host: str, targets: Sequence[tuple[str, str]],
                  declared: set[str]) -> list[Change]:
    changes = []
    for kind, owner in targets:
        module = get_module(kind)
        for name, observed in sorted(module.list_owned(conn, owner).items()):
            if make_address(host, kind, name) in declared:
                continue
            change = diff(module, absent_resource(host, kind, name, owner), observed)
            if change.action is Action.DELETE:
                change.reason = PRUNE_REASON
                changes.append(change)
    # The executor runs deletes in reverse: list what others live in first,
    # so a dropped container leaves before the slice or network it was in.
    return sorted(changes, key=lambda c: _depth(c.kind))


def _depth(kind: str, seen: frozenset[str] = frozenset()) -> int:
    """0 for a kind that uses no other, else one more than the deepest it uses."""
    uses = get_module(kind).uses_kinds - seen - {kind}
    return 1 + max((_depth(k, seen | {kind}) for k in uses), default=-1)


def can_destroy(kind: str) -> bool:
    schema = get_module(kind).schema.get("state", {})
    return "absent" in schema.get("allowed", [])


def destroy_view(resources: Sequence[Resource]) -> list[Resource]:
    """The same resources, each declared absent (kinds without an absent
    state, such as command, are left out)."""
    out = []
    for res in resources:
        if not can_destroy(res.kind):
            continue
        fields = dict(res.fields, state="absent")
        out.append(Resource(host=res.host, kind=res.kind, name=res.name, fields=fields,
                            origin=res.origin, depends_on=res.depends_on, play=res.play,
                            owner=res.owner))
    return out
