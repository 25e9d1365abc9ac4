"""`docker_volume`: a named Docker volume.

    - docker_volume: {name: app-data}
    - docker_volume: {name: scratch, driver: local, driver_opts: {type: tmpfs, device: tmpfs}}
    - docker_volume: {name: old-data, state: absent}

Volumes cannot change in place: a different driver, options or labels mean
remove and create again, which loses the data. apply refuses that unless the
spec says `recreate: true`. Deleting (state: absent) removes only volumes
provision created (dev.provision.owner label) unless `adopt: true`; Docker
itself refuses to remove a volume a container still uses.

Reading: one volume listing per host for all declared volumes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from modules.docker import _normalize as n
from modules.docker._client import OWNER_LABEL, client, refuse_unowned, unowned_note
from provisioner.connection.base import Connection
from provisioner.errors import HostError
from provisioner.module import Module
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.spec import schema as s


class DockerVolumeModule(Module):
    kind = "docker_volume"
    uses_api = True
    schema = {
        "name": s.string(required=True, empty=False, regex=n.NAME_RE),
        "driver": s.string(empty=False, default="local"),
        "driver_opts": {"type": "dict", "nullable": True},
        "labels": {"type": "dict", "nullable": True},
        "state": s.one_of("present", "absent", default="present"),
        "recreate": s.boolean(default=False),
        "adopt": s.boolean(default=False),
    }
    control_fields = frozenset({"state", "recreate", "adopt"})
    replace_fields = frozenset({"driver", "driver_opts", "labels"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        try:
            labels = n.parse_labels(fields.get("labels"))
        except ValueError as exc:
            ctx.fail("labels", str(exc))
        return {"name": fields["name"], "state": fields["state"], "driver": fields["driver"],
                "driver_opts": n.str_dict(fields.get("driver_opts")), "labels": labels,
                "recreate": fields["recreate"], "adopt": fields["adopt"]}

    def read_many(self, conn: Connection, resources: Sequence[Resource]
                  ) -> dict[str, dict[str, Any] | None]:
        dk = client(conn)
        listing = dk.get("/volumes", doing="list volumes") or {}
        found = {v["Name"]: v for v in listing.get("Volumes") or []}
        return {r.address: _observed(found[r.name], r.fields) if r.name in found else None
                for r in resources}

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        dk = client(conn)
        listing = dk.get("/volumes", {"filters": json.dumps(
            {"label": [f"{OWNER_LABEL}={owner}"]})}, doing="list volumes") or {}
        return {v["Name"]: _observed(v, {}) for v in listing.get("Volumes") or []}

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        out = []
        if observed and changed and not desired.get("recreate"):
            out.append("a volume cannot change in place and recreating it loses its data: "
                       "apply refuses unless recreate: true")
        return out + unowned_note("volume", desired, observed, changed,
                                  self.wants_absent(desired))

    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        dk = client(conn)
        d = res.fields
        before = change.before or {}
        if change.action is not Action.CREATE:
            refuse_unowned(conn, "volume", res.name, d, before)
            if change.action is not Action.DELETE and not d.get("recreate"):
                raise HostError(conn.host, f"volume {res.name} differs in "
                                f"{', '.join(change.changed_fields)}, which needs recreating it "
                                "and loses its data; set recreate: true to allow that")
            with dk.errors(f"remove volume {res.name}"):
                dk.api.remove_volume(res.name)
            if change.action is Action.DELETE:
                return
        with dk.errors(f"create volume {res.name}"):
            dk.api.create_volume(res.name, driver=d["driver"], driver_opts=d["driver_opts"] or None,
                                 labels={**d["labels"], OWNER_LABEL: res.owner or "provision"})


def _observed(v: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    labels = v.get("Labels") or {}
    return {"name": v["Name"], "state": "present", "driver": v.get("Driver"),
            "driver_opts": n.str_dict(v.get("Options")),
            "labels": n.labels_from_inspect(labels, {}, desired.get("labels") or {}),
            "owner": n.owner_of(labels), "mountpoint": v.get("Mountpoint")}
