"""`network`: a libvirt virtual network.

    - network: {name: lab, bridge: virbr-lab, ip: 10.10.0.1/24}     # isolated
    - network: {name: lan, forward: bridge, bridge: br0}            # an existing host bridge
    - network: {name: out, forward: nat, ip: 192.168.150.1/24}      # needs dnsmasq on the host

forward: none (isolated, the default), nat, route, bridge. Forward mode,
bridge and address cannot change in place: they replace the network (VMs on
it lose their link until restarted). The network's <metadata> carries the
ownership mark.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from modules.libvirt._base import LibvirtModule, undefine_quietly
from modules.libvirt._client import client, error_text, libvirt_module
from modules.libvirt._xml import network_xml, parse_network
from provisioner.connection.base import Connection
from provisioner.errors import HostError
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.spec import schema as s


class NetworkModule(LibvirtModule):
    kind = "network"
    schema = {
        "name": s.string(required=True, empty=False),
        "bridge": s.string(empty=False),
        "forward": s.one_of("none", "nat", "route", "bridge"),
        "ip": s.string(empty=False),
        "state": s.one_of("active", "inactive", "absent", default="active"),
        "autostart": s.boolean(default=True),
        "adopt": s.boolean(default=False),
    }
    compared = frozenset({"bridge", "forward", "ip", "prefix", "state", "autostart"})
    control_fields = frozenset({"adopt"})
    replace_fields = frozenset({"bridge", "forward", "ip", "prefix"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        if fields["state"] == "absent":
            return {"name": fields["name"], "state": "absent", "adopt": fields["adopt"]}
        out: dict[str, Any] = {"name": fields["name"], "forward": fields.get("forward"),
                               "bridge": fields.get("bridge"), "ip": None, "prefix": None,
                               "state": fields["state"], "autostart": fields["autostart"],
                               "adopt": fields["adopt"]}
        if out["forward"] == "bridge":
            if not out["bridge"]:
                ctx.fail("bridge", "forward: bridge needs the name of an existing host bridge")
            if fields.get("ip"):
                ctx.fail("ip", "a bridged network has no address of its own (the host bridge does)")
        if fields.get("ip"):
            try:
                iface = ipaddress.ip_interface(fields["ip"])
            except ValueError:
                ctx.fail("ip", f"{fields['ip']!r} is not an address like 10.0.0.1/24")
            out["ip"] = str(iface.ip)
            out["prefix"] = iface.network.prefixlen if "/" in fields["ip"] else 24
        return out

    def _observe(self, net: Any) -> dict[str, Any]:
        info = parse_network(net.XMLDesc(0))
        meta = info.pop("meta")
        info["state"] = "active" if net.isActive() else "inactive"
        info["autostart"] = bool(net.autostart())
        info["owner"] = (meta or {}).get("owner")
        info["managed"] = meta is not None
        return info

    def read_many(self, conn: Connection, resources: Sequence[Resource]
                  ) -> dict[str, dict[str, Any] | None]:
        c = client(conn)
        nets = {n.name(): n for n in c.virt.listAllNetworks(0)}
        return {r.address: (self._observe(nets[r.name]) if r.name in nets else None)
                for r in resources}

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        c = client(conn)
        out = {}
        for net in c.virt.listAllNetworks(0):
            observed = self._observe(net)
            if observed["owner"] == owner:
                out[net.name()] = observed
        return out

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        notes = self.ownership_notes(desired, observed, changed,
                                     deleting=self.wants_absent(desired))
        if desired.get("forward") == "nat" and desired.get("state") == "active":
            notes.append("a NAT network needs dnsmasq on the host to start")
        return notes

    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        libvirt = libvirt_module()
        c = client(conn)
        desired = res.fields
        try:
            if change.action is not Action.CREATE:
                self.check_owned(conn, res, change.before)
            if change.action in (Action.DELETE, Action.REPLACE):
                self._remove(c, res.name)
                if change.action is Action.DELETE:
                    return
            if change.action in (Action.CREATE, Action.REPLACE):
                net = c.virt.networkDefineXML(network_xml(desired, {"owner": res.owner}))
            else:
                net = c.virt.networkLookupByName(res.name)
                if change.before and not change.before.get("managed"):
                    self._mark(c, net, res.owner)
            if desired["state"] == "active" and not net.isActive():
                net.create()
            elif desired["state"] == "inactive" and net.isActive():
                net.destroy()
            if bool(net.autostart()) != desired["autostart"]:
                net.setAutostart(1 if desired["autostart"] else 0)
        except libvirt.libvirtError as exc:
            raise HostError(conn.host, f"network {res.name}: {error_text(exc)}") from None

    def _mark(self, c: Any, net: Any, owner: str) -> None:
        from modules.libvirt._xml import ET, set_metadata, to_string

        root = ET.fromstring(net.XMLDesc(2))  # VIR_NETWORK_XML_INACTIVE
        set_metadata(root, {"owner": owner})
        c.virt.networkDefineXML(to_string(root))

    def _remove(self, c: Any, name: str) -> None:
        undefine_quietly(c.virt.networkLookupByName, name)
