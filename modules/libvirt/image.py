"""`image`: a base disk image in a storage pool, for VMs to clone.

    - image: {name: debian-12.qcow2, pool: vms, source: images/debian-12.qcow2}
    - image: {name: golden.raw, pool: vms, path: /srv/images/golden.raw, format: raw}

source: a file on the controller. Its sha256 is computed at spec time and
recorded (in the pool's sidecar) when it is uploaded; the image is uploaded
again only when that hash changes, never because of a new run. The upload
goes through libvirt's stream API over the forwarded socket and is checked
with `sha256sum` on the host afterwards.

path: a file already on the host, inside the pool's directory; it is used in
place (never copied) and never deleted.

Changing an image's content replaces the volume, which would corrupt every
VM disk cloned from it: apply refuses while overlays still use it (give the
new content a new image name and move the VMs over).
"""

from __future__ import annotations

import os
import posixpath
import struct
from collections.abc import Sequence
from typing import Any

from modules.libvirt._base import (
    LibvirtModule,
    find_pool,
    forget_pools,
    pool_path,
    remote_sha256,
    sha256_file,
    upload,
)
from modules.libvirt._client import (
    client,
    error_text,
    forget_sidecars,
    libvirt_module,
    read_sidecar,
    write_sidecar,
)
from modules.libvirt._xml import parse_volume, volume_xml
from provisioner.connection.base import Connection
from provisioner.errors import HostError
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource, make_address
from provisioner.spec import schema as s

_hash_cache: dict[tuple[str, int, int], str] = {}


def sniff_image(path: str) -> tuple[str, int]:
    """(format, virtual size) of a controller file: qcow2 by its header
    (magic QFI\\xfb, size at byte 24), anything else raw (its length)."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    if len(head) >= 32 and head[:4] == b"QFI\xfb":
        return "qcow2", struct.unpack(">Q", head[24:32])[0]
    return "raw", os.path.getsize(path)


def controller_sha256(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = sha256_file(path)
    return _hash_cache[key]


class ImageModule(LibvirtModule):
    kind = "image"
    uses_kinds = frozenset({"pool"})
    schema = {
        "name": s.string(required=True, empty=False, regex=r"[A-Za-z0-9_.+-]+"),
        "pool": s.string(empty=False, default="default"),
        "source": s.string(empty=False),
        "path": s.string(empty=False),
        "format": s.one_of("qcow2", "raw"),
        "state": s.one_of("present", "absent", default="present"),
        "adopt": s.boolean(default=False),
    }
    compared = frozenset({"sha256", "format", "path"})
    control_fields = frozenset({"adopt", "source", "virtual_size"})
    replace_fields = frozenset({"sha256", "format", "path"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        base = {"name": fields["name"], "pool": fields["pool"], "state": fields["state"],
                "adopt": fields["adopt"]}
        if fields["state"] == "absent":
            return base
        if fields.get("source") and fields.get("path"):
            ctx.fail("path", "give source (a controller file) or path (a host file), not both")
        if fields.get("source"):
            full = ctx.resolve_path(fields["source"])
            if not os.path.isfile(full):
                ctx.fail("source", f"cannot read {fields['source']}: no such file")
            fmt, vsize = sniff_image(full)
            if fields.get("format") and fields["format"] != fmt:
                ctx.fail("format", f"{fields['source']} is a {fmt} image, not {fields['format']}")
            return {**base, "source": full, "sha256": controller_sha256(full), "format": fmt,
                    "virtual_size": vsize}
        if fields.get("path"):
            if not posixpath.isabs(fields["path"]):
                ctx.fail("path", "must be an absolute path on the host")
            return {**base, "path": posixpath.normpath(fields["path"]),
                    "format": fields.get("format") or "qcow2"}
        ctx.fail("source", "an image needs source (a file on the controller) or path "
                           "(a file on the host)")

    def implicit_deps(self, res: Resource, others: Sequence[Resource]) -> list[str]:
        address = make_address(res.host, "pool", res.fields.get("pool", ""))
        return [address] if any(o.address == address for o in others) else []

    # -- reading -------------------------------------------------------------------
    def observe_one(self, c: Any, pool_name: str, name: str) -> dict[str, Any] | None:
        libvirt = libvirt_module()
        pool = find_pool(c, pool_name)
        if pool is None or not pool.isActive():
            return None
        try:
            vol = pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return None
        info = parse_volume(vol.XMLDesc(0))
        directory = pool_path(pool)
        meta = read_sidecar(c, directory)["volumes"].get(name) or {}
        return {"name": name, "pool": pool_name, "format": info["format"],
                "capacity": info["capacity"], "path": info["path"],
                "sha256": meta.get("sha256"), "owner": meta.get("owner"),
                "managed": bool(meta.get("owner"))}

    def read_many(self, conn: Connection, resources: Sequence[Resource]
                  ) -> dict[str, dict[str, Any] | None]:
        c = client(conn)
        forget_sidecars(c)
        forget_pools(c)
        return {r.address: self.observe_one(c, r.fields["pool"], r.name) for r in resources}

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        c = client(conn)
        forget_sidecars(c)
        out: dict[str, dict[str, Any]] = {}
        for pool in c.virt.listAllStoragePools(0):
            if not pool.isActive():
                continue
            volumes = read_sidecar(c, pool_path(pool))["volumes"]
            for name, meta in volumes.items():
                if meta.get("owner") == owner and meta.get("kind", "image") == "image":
                    observed = self.observe_one(c, pool.name(), name)
                    if observed:
                        out[name] = observed
        return out

    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        changed = super().compare(desired, observed)
        # a host file used in place: only its existence and format matter
        return [f for f in changed if not (f == "path" and desired.get("source"))]

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        notes = self.ownership_notes(desired, observed, changed,
                                     deleting=self.wants_absent(desired))
        if observed and "sha256" in changed:
            notes.append("new content: the volume is uploaded again; refused while VM disks "
                         "are cloned from it")
        return notes

    # -- acting ----------------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        libvirt = libvirt_module()
        c = client(conn)
        desired = res.fields
        try:
            if change.action is not Action.CREATE:
                if desired.get("path") and change.action is not Action.REPLACE:
                    pass  # a host file we never created: nothing to own
                else:
                    self.check_owned(conn, res, change.before)
            if change.action in (Action.DELETE, Action.REPLACE):
                self._remove(c, res, change.before or {})
                if change.action is Action.DELETE:
                    return
            pool = find_pool(c, desired["pool"])
            if pool is None or not pool.isActive():
                raise HostError(conn.host, f"image {res.name}: pool {desired['pool']} does not "
                                "exist or is not active (declare it with `pool:`)")
            if desired.get("path"):
                self._use_in_place(c, res, pool)
            else:
                self._upload(c, res, pool)
        except libvirt.libvirtError as exc:
            raise HostError(conn.host, f"image {res.name}: {error_text(exc)}") from None

    def _use_in_place(self, c: Any, res: Resource, pool: Any) -> None:
        libvirt = libvirt_module()
        directory = pool_path(pool)
        path = res.fields["path"]
        if posixpath.dirname(path) != directory or posixpath.basename(path) != res.name:
            raise HostError(c.conn.host, f"image {res.name}: path {path} must be "
                            f"{posixpath.join(directory, res.name)} (a file in pool "
                            f"{res.fields['pool']}'s directory, named like the image)")
        pool.refresh(0)
        try:
            pool.storageVolLookupByName(res.name)
        except libvirt.libvirtError:
            raise HostError(c.conn.host, f"image {res.name}: {path} does not exist on the "
                            "host") from None

    def _upload(self, c: Any, res: Resource, pool: Any) -> None:
        libvirt = libvirt_module()
        desired = res.fields
        source = desired["source"]
        directory = pool_path(pool)
        try:
            found = pool.storageVolLookupByName(res.name)
        except libvirt.libvirtError:
            found = None
        if found is not None:
            # there already (a file left in the directory, or the pool appeared
            # with it): content-addressed, so the same bytes are simply recorded
            if c.test or remote_sha256(c, found.path()) == desired["sha256"]:
                self._record(c, res, directory)
                return
            raise HostError(c.conn.host, f"image {res.name}: {found.path()} exists with other "
                            "content; remove it or give the image another name")
        xml = volume_xml(res.name, desired["virtual_size"], desired["format"])
        vol = pool.createXML(xml, 0)
        try:
            if upload(c, vol, path=source):
                got = remote_sha256(c, vol.path())
                if got != desired["sha256"]:
                    raise HostError(c.conn.host, f"image {res.name}: uploaded content does not "
                                    f"match {source} (sha256 {got} != {desired['sha256']})")
        except BaseException:
            try:
                vol.delete(0)
            except Exception:
                pass
            raise
        self._record(c, res, directory)

    def _record(self, c: Any, res: Resource, directory: str) -> None:
        meta = read_sidecar(c, directory)
        meta["volumes"][res.name] = {"kind": "image", "owner": res.owner,
                                     "sha256": res.fields["sha256"],
                                     "format": res.fields["format"]}
        write_sidecar(c, directory, meta)

    def _remove(self, c: Any, res: Resource, before: dict[str, Any]) -> None:
        libvirt = libvirt_module()
        pool = find_pool(c, res.fields["pool"])
        if pool is None:
            return
        try:
            vol = pool.storageVolLookupByName(res.name)
        except libvirt.libvirtError:
            return
        users = overlays_of(c, vol.path())
        if users:
            raise HostError(c.conn.host, f"image {res.name} is the backing file of "
                            f"{', '.join(users[:5])}: remove or replace those VMs first, or give "
                            "the new content a new image name")
        if res.fields.get("path") and res.fields.get("state") != "absent":
            return  # a host file used in place is never deleted
        vol.delete(0)
        directory = pool_path(pool)
        meta = read_sidecar(c, directory)
        if meta["volumes"].pop(res.name, None) is not None:
            write_sidecar(c, directory, meta)


def overlays_of(c: Any, path: str) -> list[str]:
    """Volumes (in any active pool) whose backing file is path."""
    from modules.libvirt._base import active_pools

    users = []
    for pool in active_pools(c):
        for vol in pool.listAllVolumes(0):
            if parse_volume(vol.XMLDesc(0)).get("backing") == path:
                users.append(vol.name())
    return users
