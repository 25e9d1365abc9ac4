"""`group`: a local group.

    - group: {name: app}
    - group: {name: deploy, gid: 2000}
    - group: {name: metrics, system: true}
    - group: {name: old, state: absent}

`system` only matters when the group is created (a gid from the system
range); it is not compared afterwards.
"""

from __future__ import annotations

from typing import Any

from modules._fs import run_ok
from provisioner.connection.base import Connection, Result
from provisioner.module import Module, Probe
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.spec import schema as s

# What shadow-utils accepts by default (and Debian's stricter NAME_REGEX
# rejects nothing of it that matters): lowercase, digits, _ and -, not
# starting with a digit or '-', an optional trailing $ (machine accounts),
# at most 32 characters (33 with the $). \Z, not $: `$` would let a trailing newline through.
ACCOUNT_NAME_RE = r"^[a-z_][a-z0-9_-]{0,31}\$?\Z"


def parse_group_entry(result: Result, name: str) -> dict[str, Any] | None:
    """`getent group NAME` → {name, gid, members}; None when there is none."""
    if not result.ok:
        return None
    for row in result.out.splitlines():
        parts = row.split(":")
        if len(parts) >= 4 and parts[0] == name:
            members = sorted(m for m in parts[3].split(",") if m)
            return {"name": name, "gid": int(parts[2]), "members": members}
    return None


class GroupModule(Module):
    kind = "group"
    schema = {
        "name": s.string(required=True, regex=ACCOUNT_NAME_RE),
        "gid": s.integer(min=0, max=4294967294, nullable=True),
        "system": s.boolean(default=False),
        "state": s.one_of("present", "absent", default="present"),
    }
    control_fields = frozenset({"state", "system", "name"})

    def probes(self, res: Resource) -> list[Probe]:
        return [Probe(("getent", "group", "--", res.fields["name"]))]

    def parse(self, res: Resource, results: list[Result]) -> dict[str, Any] | None:
        return parse_group_entry(results[0], res.fields["name"])

    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        run_ok(conn, self.command(res.fields, change))

    @staticmethod
    def command(desired: dict[str, Any], change: Change) -> list[str]:
        name, gid = desired["name"], desired.get("gid")
        if change.action is Action.DELETE:
            return ["groupdel", "--", name]
        if change.action is Action.CREATE:
            argv = ["groupadd"]
            if gid is not None:
                argv += ["-g", str(gid)]
            if desired.get("system"):
                argv.append("-r")
            return argv + ["--", name]
        return ["groupmod", "-g", str(gid), "--", name]
