"""cloud-init NoCloud seeds, built on the controller in pure Python.

A NoCloud seed is any filesystem labelled `cidata` holding `user-data` and
`meta-data` (and optionally `network-config`). We write a minimal ISO 9660
image ourselves: one primary volume descriptor, one root directory, the
files. No genisoimage/xorriso/cloud-localds is needed on the controller or the
host, and the image is byte-for-byte deterministic (fixed timestamps), so its
sha256 is a stable fingerprint of the seed.

File names are written as ISO level-2 identifiers (`USER-DATA;1`); Linux'
isofs driver (what cloud-init mounts it with) maps them to `user-data`.
There is no Rock Ridge or Joliet: guests that read seeds with other ISO
readers may want those (see docs/vms.md).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

SECTOR = 2048
LABEL = "cidata"

_FILES = (("user_data", "user-data"), ("meta_data", "meta-data"),
          ("network_config", "network-config"))


def _text(value: Any) -> bytes:
    if value is None:
        return b""
    reveal = getattr(value, "reveal", None)
    if reveal is not None:
        value = reveal()
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def seed_files(cloud_init: dict[str, Any], vm_name: str) -> dict[str, bytes]:
    """name -> content; meta-data defaults to an instance-id and hostname.

    The default instance-id is derived from the user-data, so cloud-init sees
    a new instance (and runs again) when the user-data changes."""
    files: dict[str, bytes] = {}
    for key, fname in _FILES:
        if cloud_init.get(key) is not None:
            files[fname] = _text(cloud_init[key])
    files.setdefault("user-data", b"#cloud-config\n{}\n")
    if "meta-data" not in files:
        iid = hashlib.sha256(files["user-data"]).hexdigest()[:12]
        files["meta-data"] = f"instance-id: {vm_name}-{iid}\nlocal-hostname: {vm_name}\n".encode()
    return files


def seed_digest(cloud_init: dict[str, Any], vm_name: str) -> str:
    """What goes in the domain's metadata: changes exactly when the seed does."""
    h = hashlib.sha256()
    for name, content in sorted(seed_files(cloud_init, vm_name).items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest()[:32]


# -- ISO 9660 --------------------------------------------------------------------------


def _both16(n: int) -> bytes:
    return struct.pack("<H", n) + struct.pack(">H", n)


def _both32(n: int) -> bytes:
    return struct.pack("<I", n) + struct.pack(">I", n)


def _pad(s: str, n: int) -> bytes:
    return s.encode("ascii")[:n].ljust(n, b" ")


_DATE7 = bytes([100, 1, 1, 0, 0, 0, 0])  # 2000-01-01 00:00:00 UTC: deterministic
_DATE17 = b"2000010100000000" + b"\x00"


def _record(ident: bytes, extent: int, size: int, is_dir: bool) -> bytes:
    length = 33 + len(ident)
    if length % 2:
        length += 1
    rec = bytes([length, 0]) + _both32(extent) + _both32(size) + _DATE7
    rec += bytes([2 if is_dir else 0, 0, 0]) + _both16(1) + bytes([len(ident)]) + ident
    return rec.ljust(length, b"\0")


def _sectors(n: int) -> int:
    return max(1, (n + SECTOR - 1) // SECTOR)


def build_iso(files: dict[str, bytes], label: str = LABEL) -> bytes:
    """A minimal ISO 9660 image holding `files` in its root directory."""
    names = sorted(files, key=lambda n: n.upper())
    idents = {n: (n.upper() + ";1").encode("ascii") for n in names}
    root_lba, path_l, path_m = 20, 18, 19
    # the root directory: ".", "..", then the files (sorted, as ISO requires)
    entries_len = 34 + 34 + sum(len(_record(idents[n], 0, 0, False)) for n in names)
    root_size = _sectors(entries_len) * SECTOR
    lba = root_lba + root_size // SECTOR
    layout: dict[str, int] = {}
    for n in names:
        layout[n] = lba
        lba += _sectors(len(files[n]))
    total = lba
    root_dir = _record(b"\0", root_lba, root_size, True) + _record(b"\1", root_lba, root_size, True)
    for n in names:
        root_dir += _record(idents[n], layout[n], len(files[n]), False)
    root_dir = root_dir.ljust(root_size, b"\0")

    path_table_size = 10
    pvd = bytearray(SECTOR)
    pvd[0:8] = b"\x01CD001\x01\x00"
    pvd[8:40] = _pad("LINUX", 32)
    pvd[40:72] = _pad(label, 32)
    pvd[80:88] = _both32(total)
    pvd[120:124] = _both16(1)
    pvd[124:128] = _both16(1)
    pvd[128:132] = _both16(SECTOR)
    pvd[132:140] = _both32(path_table_size)
    pvd[140:144] = struct.pack("<I", path_l)
    pvd[148:152] = struct.pack(">I", path_m)
    pvd[156:190] = _record(b"\0", root_lba, root_size, True)
    pvd[190:318] = _pad("", 128)
    pvd[318:446] = _pad("", 128)
    pvd[446:574] = _pad("", 128)
    pvd[574:702] = _pad("PROVISION", 128)
    pvd[702:813] = _pad("", 111)
    for off in (813, 830, 847, 864):
        pvd[off:off + 17] = _DATE17
    pvd[881] = 1
    terminator = bytearray(SECTOR)
    terminator[0:7] = b"\xffCD001\x01"
    lpath = (bytes([1, 0]) + struct.pack("<I", root_lba) + struct.pack("<H", 1) + b"\0\0")
    mpath = (bytes([1, 0]) + struct.pack(">I", root_lba) + struct.pack(">H", 1) + b"\0\0")

    out = bytearray(16 * SECTOR)
    out += pvd + terminator
    out += lpath.ljust(SECTOR, b"\0") + mpath.ljust(SECTOR, b"\0")
    out += root_dir
    for n in names:
        out += files[n].ljust(_sectors(len(files[n])) * SECTOR, b"\0")
    assert len(out) == total * SECTOR
    return bytes(out)


def read_iso(data: bytes) -> tuple[str, dict[str, bytes]]:
    """(label, {name: content}) of an image build_iso wrote (for tests and
    for checking a seed on a host)."""
    pvd = data[16 * SECTOR:17 * SECTOR]
    if pvd[1:6] != b"CD001":
        raise ValueError("not an ISO 9660 image")
    label = pvd[40:72].decode("ascii").rstrip()
    root_rec = pvd[156:190]
    extent = struct.unpack("<I", root_rec[2:6])[0]
    size = struct.unpack("<I", root_rec[10:14])[0]
    directory = data[extent * SECTOR:extent * SECTOR + size]
    files: dict[str, bytes] = {}
    pos = 0
    while pos < len(directory):
        length = directory[pos]
        if length == 0:
            pos = (pos // SECTOR + 1) * SECTOR
            continue
        rec = directory[pos:pos + length]
        ident = rec[33:33 + rec[32]]
        if ident not in (b"\0", b"\1"):
            name = ident.decode("ascii").split(";")[0].lower()
            lba = struct.unpack("<I", rec[2:6])[0]
            n = struct.unpack("<I", rec[10:14])[0]
            files[name] = data[lba * SECTOR:lba * SECTOR + n]
        pos += length
    return label, files
