"""`pool`: a libvirt directory storage pool, defined, started and autostarted.

    - pool: {name: vms, path: /var/lib/provision/vms}
    - pool: {name: scratch, path: /srv/scratch, state: inactive, autostart: false}
    - pool: {name: old, state: absent}

Removing a pool (state: absent) stops and undefines it; its directory and the
volumes in it are left alone. Pools carry no libvirt metadata, so the
ownership mark lives in a sidecar file beside the directory
(<parent>/.<dir>.provision.json, shared with `image`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from modules.libvirt._base import LibvirtModule, forget_pools, undefine_quietly
from modules.libvirt._client import (
    client,
    error_text,
    forget_sidecars,
    libvirt_module,
    read_sidecar,
    write_sidecar,
)
from modules.libvirt._xml import parse_pool, pool_xml
from provisioner.connection.base import Connection
from provisioner.errors import HostError
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.spec import schema as s


class PoolModule(LibvirtModule):
    kind = "pool"
    schema = {
        "name": s.string(required=True, empty=False, regex=r"[A-Za-z0-9_.+-]+"),
        "path": s.string(empty=False),
        "state": s.one_of("active", "inactive", "absent", default="active"),
        "autostart": s.boolean(default=True),
        "adopt": s.boolean(default=False),
    }
    compared = frozenset({"path", "state", "autostart"})
    control_fields = frozenset({"adopt"})
    replace_fields = frozenset({"path"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        if fields["state"] == "absent":
            return {"name": fields["name"], "state": "absent", "adopt": fields["adopt"]}
        path = fields.get("path")
        if path is not None:
            if not posixpath.isabs(path):
                ctx.fail("path", f"must be an absolute path on the host, not {path!r}")
            path = posixpath.normpath(path)
        return {"name": fields["name"], "path": path, "state": fields["state"],
                "autostart": fields["autostart"], "adopt": fields["adopt"]}

    # -- reading -------------------------------------------------------------------
    def _observe(self, c: Any, pool: Any) -> dict[str, Any]:
        info = parse_pool(pool.XMLDesc(0))
        observed: dict[str, Any] = {
            "name": info["name"], "path": info["path"], "type": info["type"],
            "state": "active" if pool.isActive() else "inactive",
            "autostart": bool(pool.autostart()),
        }
        meta = read_sidecar(c, info["path"]) if info["path"] else {}
        observed["owner"] = meta.get("owner")
        observed["managed"] = bool(meta.get("owner"))
        return observed

    def read_many(self, conn: Connection, resources: Sequence[Resource]
                  ) -> dict[str, dict[str, Any] | None]:
        c = client(conn)
        forget_sidecars(c)
        forget_pools(c)
        pools = {p.name(): p for p in c.virt.listAllStoragePools(0)}
        return {res.address: (self._observe(c, pools[res.name]) if res.name in pools else None)
                for res in resources}

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        c = client(conn)
        forget_sidecars(c)
        out = {}
        for pool in c.virt.listAllStoragePools(0):
            observed = self._observe(c, pool)
            if observed["owner"] == owner:
                out[pool.name()] = observed
        return out

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        notes = self.ownership_notes(desired, observed, changed,
                                     deleting=self.wants_absent(desired))
        if observed and self.wants_absent(desired):
            notes.append(f"the directory {observed.get('path')} and its volumes are kept")
        return notes

    # -- acting ----------------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        libvirt = libvirt_module()
        c = client(conn)
        desired = res.fields
        try:
            if change.action in (Action.DELETE, Action.REPLACE, Action.UPDATE):
                self.check_owned(conn, res, change.before)
            if change.action in (Action.DELETE, Action.REPLACE):
                self._remove(c, res.name)
                forget_pools(c)
                if change.action is Action.DELETE:
                    return
            if change.action in (Action.CREATE, Action.REPLACE):
                if not desired.get("path"):
                    raise HostError(conn.host, f"pool {res.name} does not exist: give its path "
                                    "to create it")
                pool = c.virt.storagePoolDefineXML(pool_xml(res.name, desired["path"]), 0)
                pool.build(0)  # mkdir -p for a dir pool; an existing directory is fine
            else:
                pool = c.virt.storagePoolLookupByName(res.name)
            if desired["state"] == "active" and not pool.isActive():
                pool.create(0)
            elif desired["state"] == "inactive" and pool.isActive():
                pool.destroy()
            if bool(pool.autostart()) != desired["autostart"]:
                pool.setAutostart(1 if desired["autostart"] else 0)
            path = parse_pool(pool.XMLDesc(0))["path"]
            meta = read_sidecar(c, path)
            if meta.get("owner") != res.owner:
                meta["owner"] = res.owner
                write_sidecar(c, path, meta)
        except libvirt.libvirtError as exc:
            raise HostError(conn.host, f"pool {res.name}: {error_text(exc)}") from None

    def _remove(self, c: Any, name: str) -> None:
        undefine_quietly(c.virt.storagePoolLookupByName, name)
