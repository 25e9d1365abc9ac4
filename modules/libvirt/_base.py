"""What the libvirt kinds share: ownership rules, pool lookups, uploads."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

from modules._fs import sha256sum_digest
from modules.libvirt._client import Client, error_text, libvirt_module
from provisioner.connection.base import Connection
from provisioner.errors import HostError
from provisioner.module import Module
from provisioner.resource import Resource

UNMANAGED_NOTE = ("{kind} {name} exists but carries no provision ownership mark: apply will "
                  "refuse to change it (set adopt: true to take it over)")


class LibvirtModule(Module):
    uses_api = True
    # compared fields are listed explicitly: everything else steers
    compared: frozenset[str] = frozenset()

    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        return [key for key in desired if key in self.compared and desired[key] is not None
                and observed.get(key) != desired[key]]

    def ownership_notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
                        changed: list[str], deleting: bool = False) -> list[str]:
        if observed and not observed.get("managed") and (changed or deleting) \
                and not desired.get("adopt"):
            return [UNMANAGED_NOTE.format(kind=self.kind, name=observed.get("name"))]
        return []

    def check_owned(self, conn: Connection, res: Resource, observed: dict[str, Any] | None) -> None:
        if observed and not observed.get("managed") and not res.fields.get("adopt"):
            raise HostError(conn.host, f"{self.kind} {res.name} exists but was not created by "
                            "provision (no ownership mark): refusing to change it; set adopt: "
                            "true to take it over")


def find_pool(c: Client, name: str) -> Any | None:
    libvirt = libvirt_module()
    pools = c.conn.cache.setdefault("libvirt-pools", {})
    if name in pools:
        return pools[name]
    try:
        pool = c.virt.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return None
    pools[name] = pool
    return pool


def forget_pools(c: Client) -> None:
    c.conn.cache.pop("libvirt-pools", None)


def pool_path(pool: Any) -> str:
    from modules.libvirt._xml import parse_pool

    return parse_pool(pool.XMLDesc(0))["path"] or ""


def find_volume(c: Client, pool_name: str, vol_name: str) -> Any | None:
    libvirt = libvirt_module()
    pool = find_pool(c, pool_name)
    if pool is None:
        return None
    try:
        return pool.storageVolLookupByName(vol_name)
    except libvirt.libvirtError:
        return None


def active_pools(c: Client) -> list[Any]:
    libvirt = libvirt_module()
    return c.virt.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)


def upload(c: Client, vol: Any, *, data: bytes | None = None, path: str | None = None) -> bool:
    """Send bytes (or a controller file) into a volume through the libvirt
    stream API, over the same forwarded socket as every other call.
    False when the driver has no upload (the test driver)."""
    libvirt = libvirt_module()
    if c.test:
        return False
    size = len(data) if data is not None else os.path.getsize(path or "")
    stream = c.virt.newStream(0)
    try:
        vol.upload(stream, 0, size, 0)
        if data is not None:
            view = memoryview(data)
            for off in range(0, len(view), 1 << 20):
                _send_all(stream, view[off:off + (1 << 20)])
        else:
            with open(path or "", "rb") as fh:
                while True:
                    chunk = fh.read(1 << 20)
                    if not chunk:
                        break
                    _send_all(stream, chunk)
        stream.finish()
    except (libvirt.libvirtError, OSError) as exc:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise c.fail(f"upload into {vol.name()} failed: {error_text(exc)}") from None
    return True


def _send_all(stream: Any, chunk: Any) -> None:
    sent = 0
    while sent < len(chunk):
        n = stream.send(bytes(chunk[sent:]))
        if n < 0:
            raise OSError("stream send failed")
        sent += n


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remote_sha256(c: Client, path: str) -> str | None:
    res = c.conn.run(["sha256sum", "--", path])
    if not res.ok:
        return None
    return sha256sum_digest(res.out)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def undefine_quietly(lookup: Callable[[str], Any], name: str) -> None:
    """Stop (if active) and undefine the object lookup(name) finds; nothing
    to do when it does not exist (a network or pool already gone)."""
    libvirt = libvirt_module()
    try:
        obj = lookup(name)
    except libvirt.libvirtError:
        return
    if obj.isActive():
        obj.destroy()
    obj.undefine()
