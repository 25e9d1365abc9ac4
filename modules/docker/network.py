"""`docker_network`: a Docker network.

    - docker_network: {name: backend, internal: true}
    - docker_network: {name: lan, driver: bridge, subnet: 172.30.0.0/24, gateway: 172.30.0.1}
    - docker_network: {name: old, state: absent}

Containers join with `network_mode: <name>`. Networks cannot change in
place: any difference means remove and create again (Docker refuses while
containers are attached, and says which). subnet and gateway are compared
only when declared (the daemon picks them otherwise). Deleting removes only
networks provision created unless `adopt: true`.

Reading: one network listing per host for all declared networks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from modules.docker import _normalize as n
from modules.docker._client import OWNER_LABEL, client, refuse_unowned, unowned_note
from provisioner.connection.base import Connection
from provisioner.module import Module
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.spec import schema as s

BUILTIN = {"bridge", "host", "none", "default"}


class DockerNetworkModule(Module):
    kind = "docker_network"
    uses_api = True
    schema = {
        "name": s.string(required=True, empty=False, regex=n.NAME_RE),
        "driver": s.string(empty=False, default="bridge"),
        "internal": s.boolean(default=False),
        "attachable": s.boolean(default=False),
        "subnet": s.string(nullable=True),
        "gateway": s.string(nullable=True),
        "options": {"type": "dict", "nullable": True},
        "labels": {"type": "dict", "nullable": True},
        "state": s.one_of("present", "absent", default="present"),
        "adopt": s.boolean(default=False),
    }
    control_fields = frozenset({"state", "adopt"})
    replace_fields = frozenset({"driver", "internal", "attachable", "subnet", "gateway",
                                "options", "labels"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        if fields["name"] in BUILTIN:
            ctx.fail("name", f"{fields['name']} is one of Docker's own networks")
        if fields.get("gateway") and not fields.get("subnet"):
            ctx.fail("gateway", "a gateway needs a subnet")
        try:
            labels = n.parse_labels(fields.get("labels"))
        except ValueError as exc:
            ctx.fail("labels", str(exc))
        return {"name": fields["name"], "state": fields["state"], "driver": fields["driver"],
                "internal": fields["internal"], "attachable": fields["attachable"],
                "subnet": fields.get("subnet"), "gateway": fields.get("gateway"),
                "options": n.str_dict(fields.get("options")), "labels": labels,
                "adopt": fields["adopt"]}

    def read_many(self, conn: Connection, resources: Sequence[Resource]
                  ) -> dict[str, dict[str, Any] | None]:
        dk = client(conn)
        listing = dk.get("/networks", {"filters": json.dumps(
            {"name": [r.name for r in resources]})}, doing="list networks") or []
        # the names filter matches substrings: keep exact names only
        found = {net["Name"]: net for net in listing}
        return {r.address: _observed(found[r.name], r.fields) if r.name in found else None
                for r in resources}

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        dk = client(conn)
        listing = dk.get("/networks", {"filters": json.dumps(
            {"label": [f"{OWNER_LABEL}={owner}"]})}, doing="list networks") or []
        return {net["Name"]: _observed(net, {}) for net in listing}

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        return unowned_note("network", desired, observed, changed, self.wants_absent(desired))

    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        dk = client(conn)
        d = res.fields
        before = change.before or {}
        if change.action is not Action.CREATE:
            refuse_unowned(conn, "network", res.name, d, before)
            with dk.errors(f"remove network {res.name}"):
                dk.api.remove_network(before.get("id") or res.name)
            if change.action is Action.DELETE:
                return
        ipam = None
        if d.get("subnet"):
            types = __import__("docker").types
            ipam = types.IPAMConfig(pool_configs=[types.IPAMPool(subnet=d["subnet"],
                                                                 gateway=d.get("gateway"))])
        with dk.errors(f"create network {res.name}"):
            dk.api.create_network(res.name, driver=d["driver"], options=d["options"] or None,
                                  ipam=ipam, internal=d["internal"], attachable=d["attachable"],
                                  labels={**d["labels"], OWNER_LABEL: res.owner or "provision"},
                                  check_duplicate=True)


def _observed(net: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    labels = net.get("Labels") or {}
    pools = (net.get("IPAM") or {}).get("Config") or [{}]
    want_options = desired.get("options") or {}
    options = n.str_dict(net.get("Options"))
    # drivers add options of their own; only the declared ones are ours to compare
    options = {k: v for k, v in options.items() if k in want_options} if desired else options
    observed = {"name": net["Name"], "id": net.get("Id"), "state": "present",
                "driver": net.get("Driver"), "internal": bool(net.get("Internal")),
                "attachable": bool(net.get("Attachable")),
                "options": options,
                "labels": n.labels_from_inspect(labels, {}, desired.get("labels") or {}),
                "owner": n.owner_of(labels)}
    if desired.get("subnet"):
        observed["subnet"] = pools[0].get("Subnet")
    if desired.get("gateway"):
        observed["gateway"] = pools[0].get("Gateway")
    return observed
