"""`directory`: a directory with mode and ownership (parents created).

    - directory: {path: /srv/app, mode: "0755", owner: app}
    - directory: {path: /srv/old, state: absent}     # removes it only if empty
    - directory: {path: /srv/old, state: absent, recurse: true}  # and its contents
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modules._fs import (
    OWNERSHIP_SCHEMA,
    normalize_path,
    parent_dependencies,
    parse_stat,
    run_ok,
    set_ownership,
    stat_probe,
)
from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError
from provisioner.module import Module, Probe
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.spec import schema as s


class DirectoryModule(Module):
    kind = "directory"
    name_field = "path"
    schema = {
        "path": s.string(required=True, empty=False),
        "state": s.one_of("present", "absent", default="present"),
        "recurse": s.boolean(default=False),
        **OWNERSHIP_SCHEMA,
    }
    control_fields = frozenset({"state", "recurse"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        fields["path"] = normalize_path(fields["path"], ctx)
        if fields["path"] == "/" and fields["state"] == "absent":
            ctx.fail("path", "refusing to remove /")
        return fields

    def implicit_deps(self, res: Resource, others: Sequence[Resource]) -> list[str]:
        return parent_dependencies(res, others)

    def probes(self, res: Resource) -> list[Probe]:
        return [stat_probe(res.fields["path"])]

    def parse(self, res: Resource, results: list[Result]) -> dict[str, Any] | None:
        st = parse_stat(results[0])
        if st is None:
            return None
        return {"path": res.fields["path"], "type": st["type"], "mode": st["mode"],
                "owner": st["owner"], "group": st["group"]}

    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        changed = [] if observed.get("type") == "directory" else ["type"]
        return changed + [k for k in ("mode", "owner", "group")
                          if desired.get(k) is not None and observed.get(k) != desired[k]]

    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        path = res.fields["path"]
        if change.action is Action.DELETE:
            if res.fields.get("recurse"):
                run_ok(conn, ["rm", "-rf", "--", path])
            else:
                run_ok(conn, ["rmdir", "--", path])
            return
        observed = change.before
        if observed and observed.get("type") != "directory":
            raise HostError(conn.host, f"{path} exists and is a {observed.get('type')}, "
                                       "not a directory; remove it first")
        if change.action is Action.CREATE:
            mode = res.fields.get("mode")
            # -m sets the mode of the last directory in the same command
            argv = ["mkdir", "-p"] + (["-m", format(mode, "o")] if mode is not None else [])
            run_ok(conn, argv + ["--", path])
            set_ownership(conn, path, {**res.fields, "mode": None}, None)
        else:
            set_ownership(conn, path, res.fields, observed)
