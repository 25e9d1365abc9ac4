"""libvirt XML: building what we define, parsing what the daemon reports.

Pure functions (no libvirt import) so they are tested without a daemon.
Parsing normalises what libvirt fills in or rewrites: memory in KiB → bytes,
generated MACs, PCI addresses and aliases ignored, firmware auto-selection
folded into "bios"/"efi".
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from modules.libvirt._client import NS, NS_PREFIX

ET.register_namespace(NS_PREFIX, NS)
_Q = f"{{{NS}}}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def to_string(el: ET.Element) -> str:
    ET.indent(el)
    return ET.tostring(el, encoding="unicode")


# -- ownership metadata ----------------------------------------------------------------


def metadata_element(meta: dict[str, str | None]) -> ET.Element:
    """<provision:resource xmlns:provision=NS><provision:owner>..</provision:owner>...

    One element in our namespace (libvirt keeps one per namespace); its
    children are the facts we need back: owner, image, cloud-init digest."""
    root = ET.Element(f"{_Q}resource")
    for key, value in meta.items():
        if value is not None:
            ET.SubElement(root, f"{_Q}{key}").text = str(value)
    return root


def read_metadata(root: ET.Element) -> dict[str, str] | None:
    """Our metadata in a domain's or network's XML; None when it has none
    (not created by provision)."""
    meta = root.find(f"metadata/{_Q}resource")
    if meta is None:
        return None
    return {child.tag[len(_Q):]: (child.text or "") for child in meta if child.tag.startswith(_Q)}


def set_metadata(root: ET.Element, meta: dict[str, str | None]) -> None:
    holder = root.find("metadata")
    if holder is None:
        holder = ET.Element("metadata")
        # <metadata> goes right after name/uuid/title/description
        index = 0
        for i, child in enumerate(list(root)):
            if child.tag in ("name", "uuid", "title", "description", "genid"):
                index = i + 1
        root.insert(index, holder)
    for old in holder.findall(f"{_Q}resource"):
        holder.remove(old)
    holder.append(metadata_element(meta))


# -- sizes -------------------------------------------------------------------------------

_UNITS = {
    "b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2,
    "mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3, "t": 1024**4, "tib": 1024**4,
    "tb": 1000**4,
}


def size_of(el: ET.Element | None, default_unit: str = "b") -> int | None:
    if el is None or el.text is None:
        return None
    unit = (el.get("unit") or default_unit).lower()
    return int(el.text.strip()) * _UNITS.get(unit, 1)


def kib(n: int) -> int:
    """Bytes → KiB, rounded up (libvirt's unit for memory)."""
    return (int(n) + 1023) // 1024


# -- storage pools ---------------------------------------------------------------------------


def pool_xml(name: str, path: str) -> str:
    root = ET.Element("pool", type="dir")
    _sub(root, "name", name)
    target = _sub(root, "target")
    _sub(target, "path", path)
    return to_string(root)


def parse_pool(xml: str) -> dict[str, Any]:
    root = ET.fromstring(xml)
    return {"name": root.findtext("name"), "type": root.get("type"),
            "path": (root.findtext("target/path") or "").rstrip("/") or None}


# -- volumes ---------------------------------------------------------------------------------


def volume_xml(name: str, capacity: int, fmt: str = "qcow2", *,
               backing: str | None = None, backing_format: str | None = None) -> str:
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(int(capacity)), unit="bytes")
    if fmt == "qcow2":
        _sub(root, "allocation", "0", unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type_=fmt)
    _sub(target, "permissions").append(_el("mode", "0644"))
    if backing:
        store = _sub(root, "backingStore")
        _sub(store, "path", backing)
        _sub(store, "format", type_=backing_format or "qcow2")
    return to_string(root)


def _el(tag: str, text: str) -> ET.Element:
    el = ET.Element(tag)
    el.text = text
    return el


def parse_volume(xml: str) -> dict[str, Any]:
    root = ET.fromstring(xml)
    fmt = root.find("target/format")
    backing = root.findtext("backingStore/path")
    return {"name": root.findtext("name"), "path": root.findtext("target/path"),
            "capacity": size_of(root.find("capacity")),
            "format": fmt.get("type") if fmt is not None else None,
            "backing": backing or None}


# -- networks --------------------------------------------------------------------------------


def network_xml(fields: dict[str, Any], meta: dict[str, str | None]) -> str:
    root = ET.Element("network")
    _sub(root, "name", fields["name"])
    root.append(_wrap_metadata(meta))
    mode = fields.get("forward") or "none"
    if mode != "none":
        _sub(root, "forward", mode=mode)
    if fields.get("bridge"):
        attrs = {"name": fields["bridge"]}
        if mode != "bridge":
            attrs.update(stp="on", delay="0")
        _sub(root, "bridge", **attrs)
    if fields.get("ip") and mode != "bridge":
        _sub(root, "ip", address=fields["ip"], prefix=str(fields.get("prefix") or 24))
    return to_string(root)


def _wrap_metadata(meta: dict[str, str | None]) -> ET.Element:
    holder = ET.Element("metadata")
    holder.append(metadata_element(meta))
    return holder


def parse_network(xml: str) -> dict[str, Any]:
    root = ET.fromstring(xml)
    forward = root.find("forward")
    mode = forward.get("mode", "nat") if forward is not None else "none"
    ip = root.find("ip")
    return {
        "name": root.findtext("name"),
        "forward": mode,
        "bridge": root.find("bridge").get("name") if root.find("bridge") is not None else None,
        "ip": ip.get("address") if ip is not None else None,
        "prefix": _prefix(ip) if ip is not None else None,
        "meta": read_metadata(root),
    }


def _prefix(ip: ET.Element) -> int | None:
    if ip.get("prefix"):
        return int(ip.get("prefix", "0"))
    mask = ip.get("netmask")
    if mask:
        return sum(bin(int(part)).count("1") for part in mask.split("."))
    return None


# -- domains ---------------------------------------------------------------------------------

ROOT_DEV = "vda"
SEED_DEV = "sda"
_EXTRA_DEVS = [f"vd{chr(c)}" for c in range(ord("b"), ord("z") + 1)]


def domain_xml(spec: dict[str, Any], meta: dict[str, str | None]) -> str:
    """A new domain from the vm's desired fields (defaults filled by the caller):
    name, virt_type, vcpus, memory (bytes), root {pool, volume, format} or None,
    seed {pool, volume} or None, extra [{pool, volume, format}], network/bridge,
    kernel/initrd/cmdline, firmware, slice, console_log, arch, machine."""
    root = ET.Element("domain", type=spec.get("virt_type") or "kvm")
    _sub(root, "name", spec["name"])
    root.append(_wrap_metadata(meta))
    _sub(root, "memory", str(kib(spec["memory"])), unit="KiB")
    _sub(root, "vcpu", str(spec["vcpus"]), placement="static")
    if spec.get("slice"):
        res = _sub(root, "resource")
        _sub(res, "partition", slice_partition(spec["slice"]))
    os_el = _sub(root, "os")
    if spec.get("firmware") == "efi":
        os_el.set("firmware", "efi")
    type_attrs = {"arch": spec.get("arch") or "x86_64"}
    if spec.get("machine"):
        type_attrs["machine"] = spec["machine"]
    _sub(os_el, "type", "hvm", **type_attrs)
    for key in ("kernel", "initrd", "cmdline"):
        if spec.get(key):
            _sub(os_el, key, spec[key])
    if not spec.get("kernel"):
        _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")  # ACPI shutdown needs it
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    if spec.get("root"):
        _disk(devices, spec["root"], ROOT_DEV)
    for disk, dev in zip(spec.get("extra") or [], _EXTRA_DEVS, strict=False):
        _disk(devices, disk, dev)
    if spec.get("seed"):
        seed = _sub(devices, "disk", type_="volume", device="cdrom")
        _sub(seed, "driver", name="qemu", type_="raw")
        _sub(seed, "source", pool=spec["seed"]["pool"], volume=spec["seed"]["volume"])
        _sub(seed, "target", dev=SEED_DEV, bus="sata")
        _sub(seed, "readonly")
    if spec.get("network"):
        iface = _sub(devices, "interface", type_="network")
        _sub(iface, "source", network=spec["network"])
        _sub(iface, "model", type_="virtio")
    elif spec.get("bridge"):
        iface = _sub(devices, "interface", type_="bridge")
        _sub(iface, "source", bridge=spec["bridge"])
        _sub(iface, "model", type_="virtio")
    if spec.get("console_log"):
        serial = _sub(devices, "serial", type_="file")
        _sub(serial, "source", path=spec["console_log"])
        _sub(serial, "target", port="0")
    else:
        serial = _sub(devices, "serial", type_="pty")
        _sub(serial, "target", port="0")
    _sub(devices, "controller", type_="usb", model="none")
    return to_string(root)


def _disk(devices: ET.Element, disk: dict[str, Any], dev: str) -> None:
    el = _sub(devices, "disk", type_="volume", device="disk")
    _sub(el, "driver", name="qemu", type_=disk.get("format") or "qcow2")
    _sub(el, "source", pool=disk["pool"], volume=disk["volume"])
    _sub(el, "target", dev=dev, bus="virtio")


def slice_partition(name: str) -> str:
    """A slice name → libvirt's <resource><partition>: /machine/NAME (a path
    given in full is kept)."""
    if name.startswith("/"):
        return name.rstrip("/")
    return "/machine/" + name.removesuffix(".slice")


def parse_domain(xml: str) -> dict[str, Any]:
    """The declared-comparable facts of a domain's (inactive) XML."""
    root = ET.fromstring(xml)
    meta = read_metadata(root)
    os_el = root.find("os")
    firmware = "bios"
    if os_el is not None and (os_el.get("firmware") == "efi" or os_el.find("loader") is not None
                              and "OVMF" in (os_el.findtext("loader") or "").upper()
                              or os_el.find("nvram") is not None):
        firmware = "efi"
    disks: dict[str, dict[str, Any]] = {}
    seed = None
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        dev = target.get("dev") if target is not None else None
        info = {"dev": dev, "device": disk.get("device", "disk"),
                "pool": source.get("pool") if source is not None else None,
                "volume": source.get("volume") if source is not None else None,
                "file": (source.get("file") or source.get("dev")) if source is not None else None}
        if info["device"] == "cdrom" and dev == SEED_DEV:
            seed = info
        elif dev:
            disks[dev] = info
    network = bridge = None
    iface = root.find("devices/interface")
    if iface is not None:
        src = iface.find("source")
        if src is not None:
            network = src.get("network")
            bridge = src.get("bridge")
    serial = root.find("devices/serial[@type='file']/source")
    partition = root.findtext("resource/partition")
    slice_name = None
    if partition and partition != "/machine":
        slice_name = partition.removeprefix("/machine/")
    memory = size_of(root.find("memory"), "kib")
    return {
        "name": root.findtext("name"),
        "uuid": root.findtext("uuid"),
        "virt_type": root.get("type"),
        "vcpus": int(root.findtext("vcpu") or 1),
        "memory": memory,
        "kernel": (os_el.findtext("kernel") if os_el is not None else None) or None,
        "initrd": (os_el.findtext("initrd") if os_el is not None else None) or None,
        "cmdline": (os_el.findtext("cmdline") if os_el is not None else None) or None,
        "firmware": firmware,
        "slice": slice_name,
        "network": network,
        "bridge": bridge,
        "console_log": serial.get("path") if serial is not None else None,
        "disks": disks,
        "seed": seed,
        "meta": meta,
    }


def update_domain(xml: str, changes: dict[str, Any]) -> str:
    """The inactive XML with some settings changed in place, everything else
    (UUID, MACs, addresses, devices libvirt added) kept."""
    root = ET.fromstring(xml)
    if "memory" in changes:
        mem = root.find("memory")
        assert mem is not None
        mem.set("unit", "KiB")
        mem.text = str(kib(changes["memory"]))
        cur = root.find("currentMemory")
        if cur is not None:
            cur.set("unit", "KiB")
            cur.text = mem.text
    if "vcpus" in changes:
        vcpu = root.find("vcpu")
        assert vcpu is not None
        vcpu.text = str(changes["vcpus"])
        vcpu.attrib.pop("current", None)
        for extra in ("vcpus", "cputune"):
            for el in root.findall(extra):
                root.remove(el)
    os_el = root.find("os")
    for key in ("kernel", "initrd", "cmdline"):
        if key in changes and os_el is not None:
            el = os_el.find(key)
            if changes[key]:
                if el is None:
                    el = ET.SubElement(os_el, key)
                el.text = changes[key]
            elif el is not None:
                os_el.remove(el)
    if "slice" in changes:
        res = root.find("resource")
        if changes["slice"]:
            if res is None:
                res = ET.SubElement(root, "resource")
            part = res.find("partition")
            if part is None:
                part = ET.SubElement(res, "partition")
            part.text = slice_partition(changes["slice"])
        elif res is not None:
            root.remove(res)
    devices = root.find("devices")
    assert devices is not None
    if "network" in changes or "bridge" in changes:
        iface = devices.find("interface")
        kind, value = ("network", changes.get("network")) if changes.get("network") else \
            ("bridge", changes.get("bridge"))
        if value:
            if iface is None:
                iface = ET.SubElement(devices, "interface")
                ET.SubElement(iface, "model", type="virtio")
            iface.set("type", kind)
            src = iface.find("source")
            if src is None:
                src = ET.SubElement(iface, "source")
            src.attrib.clear()
            src.set(kind, value)
            target = iface.find("target")
            if target is not None:
                iface.remove(target)
    if "extra" in changes:
        for disk in changes["extra"]:
            taken = {t.get("dev") for t in devices.findall("disk/target")}
            dev = next(d for d in _EXTRA_DEVS if d not in taken)
            _disk(devices, disk, dev)
    if "seed" in changes and changes["seed"]:
        present = any(d.get("device") == "cdrom" and d.find("target") is not None
                      and d.find("target").get("dev") == SEED_DEV
                      for d in devices.findall("disk"))
        if not present:
            seed = ET.SubElement(devices, "disk", type="volume", device="cdrom")
            ET.SubElement(seed, "driver", name="qemu", type="raw")
            ET.SubElement(seed, "source", pool=changes["seed"]["pool"],
                          volume=changes["seed"]["volume"])
            ET.SubElement(seed, "target", dev=SEED_DEV, bus="sata")
            ET.SubElement(seed, "readonly")
    if "meta" in changes:
        set_metadata(root, changes["meta"])
    return to_string(root)
