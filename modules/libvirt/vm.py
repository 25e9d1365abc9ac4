"""`vm`: a libvirt domain whose disk is a copy-on-write clone of an `image`.

    - vm:
        name: web1
        image: debian-12.qcow2        # an `image` declared for this host, or POOL/VOLUME on it
        vcpus: 2
        memory: 1GiB
        disk: 20GiB                   # the clone is grown to this; never smaller than the image
        network: lab                  # or bridge: br0
        autostart: true
        state: running                # running | stopped | absent
        cloud_init: {user_data: "#cloud-config\\n...", meta_data: "..."}
        extra_disks: [{name: data, size: 10GiB}]

The root disk is a reflink clone of the image (clone: auto, the default, when
the image's and the pool's directories share a filesystem that can reflink:
XFS, btrfs) or else a qcow2 overlay whose backing file is the image (~25 ms, a
few hundred KiB). Never a full copy. The plan says which and why (disk_clone),
and apply does what the plan said; modules/libvirt/_clone.py explains.

In place: vcpus, memory, kernel/initrd/cmdline, network/bridge,
cloud-init, new or grown disks (the persistent definition; a running guest
picks most of them up at its next boot, which the plan notes), autostart and
running state. slice: the running guest's QEMU process joins the slice's
cgroup at once (modules/libvirt/_cgroup.py), no restart. Replaced: image,
firmware, virt_type, a smaller disk; the running VM is shut down through
ACPI first (shutdown_timeout, default 60 s, then forced off) and its root
disk recreated. Extra disks are kept on replace, and on state: absent unless
delete_disks: true.

A VM that exists without provision's ownership mark is never changed unless
the spec says adopt: true (the plan says so).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from modules.libvirt._base import (
    LibvirtModule,
    active_pools,
    find_pool,
    forget_pools,
    upload,
    wait_until,
)
from modules.libvirt._cgroup import attach as attach_to_slice
from modules.libvirt._cgroup import forget as forget_cgroups
from modules.libvirt._cgroup import read_membership
from modules.libvirt._client import client, error_text, libvirt_module
from modules.libvirt._clone import decide, disk_facts, reflink_obstacle
from modules.libvirt._xml import (
    domain_xml,
    kib,
    parse_domain,
    parse_volume,
    update_domain,
    volume_xml,
)
from modules.libvirt.cloudinit import build_iso, seed_digest, seed_files
from provisioner.connection.base import Connection
from provisioner.errors import HostError, SpecError
from provisioner.module import Absent
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource, make_address
from provisioner.spec import schema as s
from provisioner.spec.units import format_size

DEFAULT_MEMORY = 512 * 1024 * 1024
DEFAULT_SHUTDOWN_TIMEOUT = 60.0
# what needs the guest to boot again to see it (the persistent definition changes at once)
RESTART_FIELDS = ("vcpus", "memory", "kernel", "initrd", "cmdline", "network", "bridge",
                  "console_log", "cloud_init_sha", "extra_disks")


def root_volume(name: str, fmt: str = "qcow2") -> str:
    return f"{name}.{'img' if fmt == 'raw' else 'qcow2'}"


def seed_volume(name: str) -> str:
    return f"{name}-cidata.iso"


def extra_volume(name: str, disk: str) -> str:
    return f"{name}-{disk}.qcow2"


def _round512(n: int) -> int:
    return (int(n) + 511) // 512 * 512


class VmModule(LibvirtModule):
    kind = "vm"
    uses_kinds = frozenset({"pool", "image", "network", "slice"})
    schema = {
        "name": s.string(required=True, empty=False, regex=r"[A-Za-z0-9_.+-]+"),
        "image": s.string(empty=False, nullable=True),
        "pool": s.string(empty=False),
        "vcpus": s.integer(min=1),
        "memory": s.size(min=1024 * 1024),
        "disk": s.size(min=1024 * 1024),
        "network": s.string(empty=False),
        "bridge": s.string(empty=False),
        "autostart": s.boolean(),
        "state": s.one_of("running", "stopped", "absent", default="running"),
        "cloud_init": {"type": "dict", "schema": {
            "user_data": s.text(), "meta_data": s.text(), "network_config": s.text()}},
        "kernel": s.string(empty=False),
        "initrd": s.string(empty=False),
        "cmdline": s.string(),
        "extra_disks": {"type": "list", "schema": {"type": "dict", "schema": {
            "name": s.string(required=True, regex=r"[A-Za-z0-9_.+-]+"),
            "size": s.size(required=True, min=1024 * 1024)}}},
        "delete_disks": s.boolean(default=False),
        "slice": s.string(empty=False),
        "firmware": s.one_of("bios", "efi"),
        "virt_type": s.one_of("kvm", "qemu", "test"),
        "machine": s.string(empty=False),
        "arch": s.string(empty=False),
        "console_log": s.string(empty=False),
        "shutdown_timeout": s.number(min=0),
        "clone": s.one_of("auto", "overlay", "reflink", default="auto"),
        "adopt": s.boolean(default=False),
    }
    compared = frozenset({"image", "vcpus", "memory", "disk", "network", "bridge", "autostart",
                          "state", "cloud_init_sha", "kernel", "initrd", "cmdline",
                          "extra_disks", "slice", "firmware", "virt_type", "console_log"})
    control_fields = frozenset({"delete_disks", "shutdown_timeout", "clone", "adopt", "pool",
                                "cloud_init", "machine", "arch", "layout"})
    replace_fields = frozenset({"image", "firmware", "virt_type"})
    # layout: derived from the spec; disk_clone_why: the "root disk:" note says it
    unshown_fields = frozenset({"layout", "disk_clone_why"})

    # -- spec time ---------------------------------------------------------------------
    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        name = fields["name"]
        if fields["state"] == "absent":
            return {"name": name, "state": "absent", "delete_disks": fields["delete_disks"],
                    "shutdown_timeout": fields.get("shutdown_timeout"),
                    "pool": fields.get("pool"), "adopt": fields["adopt"]}
        if fields.get("network") and fields.get("bridge"):
            ctx.fail("bridge", "give network (a libvirt network) or bridge (a host bridge), "
                               "not both")
        for key in ("kernel", "initrd", "console_log"):
            if fields.get(key) and not posixpath.isabs(fields[key]):
                ctx.fail(key, f"must be an absolute path on the host, not {fields[key]!r}")
        if fields.get("initrd") and not fields.get("kernel"):
            ctx.fail("initrd", "an initrd needs a kernel")
        disks = fields.get("extra_disks") or []
        names = [d["name"] for d in disks]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            ctx.fail("extra_disks", f"disk {dup!r} is listed twice")
        out = dict(fields)
        if out.get("memory") is not None:
            out["memory"] = kib(out["memory"]) * 1024
        if out.get("disk") is not None:
            out["disk"] = _round512(out["disk"])
        out["extra_disks"] = sorted(({"name": d["name"], "size": _round512(d["size"])}
                                     for d in disks), key=lambda d: d["name"]) or None
        ci = fields.get("cloud_init")
        out["cloud_init"] = ci or None
        out["cloud_init_sha"] = seed_digest(ci, name) if ci else None
        return out

    def link(self, res: Resource, others: Sequence[Resource]) -> dict[str, Any]:
        """Where the root disk will come from and go, as declared: the image's
        format and pool, and the pools' directories, so the plan can tell a
        reflink clone from an overlay before the pool or image exists."""
        image = res.fields.get("image")
        if self.wants_absent(res.fields) or not image:
            return {}
        layout: dict[str, Any] = {}
        if "/" in image:
            layout["image_pool"] = image.split("/", 1)[0]
        else:
            decl = next((o for o in others if o.kind == "image" and o.host == res.host
                         and o.name == image), None)
            if decl is not None:
                layout.update(image_pool=decl.fields.get("pool"),
                              image_format=decl.fields.get("format"),
                              image_path=decl.fields.get("path"))
        layout["pool"] = res.fields.get("pool") or layout.get("image_pool")
        paths = {o.name: o.fields.get("path") for o in others
                 if o.kind == "pool" and o.host == res.host}
        layout["image_pool_path"] = paths.get(layout.get("image_pool"))
        layout["pool_path"] = paths.get(layout["pool"])
        return {"layout": layout}

    def implicit_deps(self, res: Resource, others: Sequence[Resource]) -> list[str]:
        deps = []
        image = res.fields.get("image")
        if image and "/" not in image:
            address = make_address(res.host, "image", image)
            match = next((o for o in others if o.address == address), None)
            if match is None:
                raise SpecError(f"vm {res.name}: unknown image {image!r}: declare it with "
                                f"`image: {{name: {image}, ...}}` for {res.host}, or name a "
                                "volume already on the host as POOL/VOLUME",
                                file=res.origin.file, line=res.origin.line, field="image")
            deps.append(address)
            vsize = match.fields.get("virtual_size")
            disk = res.fields.get("disk")
            if vsize and disk and disk < vsize:
                raise SpecError(f"vm {res.name}: disk {format_size(disk)} is smaller than image "
                                f"{image} ({format_size(vsize)})", file=res.origin.file,
                                line=res.origin.line, field="disk")
        elif image:
            pool_name = image.split("/", 1)[0]
            deps.append(make_address(res.host, "pool", pool_name))
        for kind, key in (("pool", "pool"), ("network", "network"), ("slice", "slice")):
            if res.fields.get(key):
                deps.append(make_address(res.host, kind, res.fields[key]))
        addresses = {o.address for o in others}
        return [d for d in deps if d in addresses]

    # -- reading -------------------------------------------------------------------------
    def read_many(self, conn: Connection, resources: Sequence[Resource]
                  ) -> dict[str, dict[str, Any] | None]:
        libvirt = libvirt_module()
        c = client(conn)
        forget_pools(c)
        wanted = {r.name for r in resources}
        try:
            listing = self._list(c, wanted)
            out = {r.address: listing.get(r.name) for r in resources}
            self._read_slices(c, resources, out)
            capacities: dict[str, int | None] = {}
            probes: dict[tuple[str, str], Any] = {}
            for res in resources:
                self._plan_checks(c, res, out[res.address], capacities)
                self._read_disk_facts(c, res, out, probes)
        except libvirt.libvirtError as exc:
            raise HostError(conn.host, f"reading VMs: {error_text(exc)}") from None
        return out

    def _read_disk_facts(self, c: Any, res: Resource, out: dict[str, dict[str, Any] | None],
                         probes: dict[tuple[str, str], Any]) -> None:
        """For a VM whose root disk will be made (created, or replaced): what
        the host says about cloning its image, kept in the observed state
        (an Absent for a VM that does not exist) for `planned` to decide."""
        desired = res.fields
        observed = out[res.address]
        if self.wants_absent(desired) or not desired.get("image"):
            return
        if observed is not None and not self.forces_replace(
                desired, observed, self.compare(desired, observed)):
            return
        facts = self._disk_facts(c, res, creating=observed is None, probes=probes)
        if desired.get("clone") == "reflink":
            obstacle = reflink_obstacle(facts)
            if obstacle:
                raise c.fail(f"vm {res.name}: clone: reflink is not possible: {obstacle}")
        if observed is None:
            out[res.address] = Absent(disk_facts=facts)
        else:
            observed["disk_facts"] = facts

    def _disk_facts(self, c: Any, res: Resource, *, creating: bool,
                    probes: dict[tuple[str, str], Any]) -> dict[str, Any]:
        desired = res.fields
        layout = desired.get("layout") or {}
        image = desired["image"]
        vol = image_volume(c, desired)
        image_pool = layout.get("image_pool")
        if vol is not None:
            info = parse_volume(vol.XMLDesc(0))
            image_path = info["path"]
            image_pool = vol.storagePoolLookupByVolume().name()
        else:  # declared in this spec, made by this apply
            image_path = layout.get("image_path")
        src_dir = posixpath.dirname(image_path) if image_path else self._pool_dir_of(
            c, image_pool, layout.get("image_pool_path"))
        dst_pool = desired.get("pool") or image_pool
        dst_dir = self._pool_dir_of(
            c, dst_pool, layout.get("pool_path") if dst_pool == layout.get("pool")
            else layout.get("image_pool_path"))
        existing = None
        if creating and dst_pool:
            pool = find_pool(c, dst_pool)
            existing = next((v for v in (root_volume(res.name), root_volume(res.name, "raw"))
                             if pool is not None and pool.isActive() and _exists(pool, v)), None)
        if c.test or desired.get("clone") == "overlay" or not (src_dir and dst_dir):
            reason = ("the test driver has no host filesystem" if c.test else
                      "clone: overlay" if desired.get("clone") == "overlay" else
                      "the image's or the pool's directory is not known")
            facts = {"image": image, "unchecked": reason}
            if existing:
                facts["existing"] = existing
            return facts
        return disk_facts(c.conn, image=image, image_path=image_path, src_dir=src_dir,
                          dst_dir=dst_dir, existing=existing, cache=probes)

    def _pool_dir_of(self, c: Any, name: str | None, declared: str | None) -> str | None:
        pool = find_pool(c, name) if name else None
        return (_pool_dir(pool) or declared) if pool is not None else declared

    def planned(self, desired: dict[str, Any], observed: dict[str, Any] | None
                ) -> dict[str, Any]:
        if self.wants_absent(desired) or not desired.get("image"):
            return {}
        method, why = decide(desired.get("clone") or "auto", (observed or {}).get("disk_facts"))
        return {"disk_clone": method, "disk_clone_why": why}

    def _list(self, c: Any, wanted: set[str] | None) -> dict[str, dict[str, Any]]:
        """One pass: every domain listed once, XML read for the ones asked for."""
        libvirt = libvirt_module()
        virt = c.virt
        domains = virt.listAllDomains(0)
        running = {d.name() for d in virt.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING)}
        paused = {d.name() for d in virt.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)}
        auto = {d.name() for d in virt.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)}
        out = {}
        for dom in domains:
            name = dom.name()
            if wanted is not None and name not in wanted:
                continue
            info = parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            state = "running" if name in running else "paused" if name in paused else "stopped"
            out[name] = self._observed(c, info, state, name in auto)
        return out

    def _read_slices(self, c: Any, resources: Sequence[Resource],
                     out: dict[str, dict[str, Any] | None]) -> None:
        """Which slice each running VM's QEMU process is in (one round trip),
        for the VMs that declare a slice. A stopped VM has no process: its
        observed slice is the one recorded when provision last set it, and it
        joins on start."""
        if c.test:
            return
        running = {r.name: out[r.address] for r in resources
                   if r.fields.get("slice") and out.get(r.address)
                   and out[r.address]["state"] in ("running", "paused")}
        for name, member in read_membership(c.conn, sorted(running)).items():
            running[name].update(slice=member["slice"], qemu_pid=member["pid"],
                                 slice_detail=member["detail"])

    def _observed(self, c: Any, info: dict[str, Any], state: str, autostart: bool
                  ) -> dict[str, Any]:
        meta = info["meta"]
        name = info["name"]
        observed: dict[str, Any] = {
            key: info[key] for key in ("name", "vcpus", "memory", "kernel", "initrd",
                                       "cmdline", "firmware", "slice", "network", "bridge",
                                       "virt_type", "console_log")
        }
        # the slice provision recorded (<resource><partition> is not used: see _cgroup)
        observed["slice"] = (meta or {}).get("slice") or None
        observed["slice_meta"] = observed["slice"]
        observed.update(state=state, autostart=autostart, managed=meta is not None,
                        owner=(meta or {}).get("owner"), image=(meta or {}).get("image") or None,
                        cloud_init_sha=(meta or {}).get("cloud-init") or None,
                        disk_clone=(meta or {}).get("disk-clone") or None)
        root = info["disks"].get("vda")
        observed["disk"] = self._capacity(c, root) if root else None
        observed["root"] = root
        extra = []
        prefix = f"{name}-"
        for dev, disk in sorted(info["disks"].items()):
            vol = disk.get("volume") or ""
            if dev != "vda" and vol.startswith(prefix) and vol.endswith(".qcow2"):
                extra.append({"name": vol[len(prefix):-len(".qcow2")],
                              "size": self._capacity(c, disk)})
        observed["extra_disks"] = sorted(extra, key=lambda d: d["name"]) or None
        observed["seed"] = info["seed"]
        return observed

    def _capacity(self, c: Any, disk: dict[str, Any]) -> int | None:
        vol = self._volume_of(c, disk)
        if vol is None:
            return None
        return int(vol.info()[1])

    def _volume_of(self, c: Any, disk: dict[str, Any]) -> Any | None:
        libvirt = libvirt_module()
        try:
            if disk.get("pool") and disk.get("volume"):
                pool = find_pool(c, disk["pool"])
                return pool.storageVolLookupByName(disk["volume"]) if pool else None
            if disk.get("file"):
                return c.virt.storageVolLookupByPath(disk["file"])
        except libvirt.libvirtError:
            return None
        return None

    def _plan_checks(self, c: Any, res: Resource, observed: dict[str, Any] | None,
                     capacities: dict[str, int | None]) -> None:
        """Bad inputs the host must answer, refused before anything changes."""
        desired = res.fields
        if self.wants_absent(desired):
            return
        memory = desired.get("memory")
        if memory and memory > c.host_memory:
            raise c.fail(f"vm {res.name}: memory {format_size(memory)} is more than the host "
                         f"has ({format_size(c.host_memory)})")
        image = desired.get("image")
        if image and "/" in image and (observed is None or "image" in
                                        self.compare(desired, observed)):
            pool_name, vol_name = image.split("/", 1)
            vol = find_image(c, vol_name, pool_name)
            if vol is None:
                raise c.fail(f"vm {res.name}: image {image} does not exist on the host")
        if image and desired.get("disk"):
            key = f"{(desired.get('layout') or {}).get('image_pool')}/{image}"
            if key not in capacities:  # one lookup per image, not per VM
                vol = image_volume(c, desired)
                capacities[key] = int(vol.info()[1]) if vol is not None else None
            cap = capacities[key]
            if cap is not None and desired["disk"] < cap:
                raise c.fail(f"vm {res.name}: disk {format_size(desired['disk'])} is smaller "
                             f"than image {image} ({format_size(cap)})")

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        c = client(conn)
        forget_pools(c)
        return {name: obs for name, obs in self._list(c, None).items()
                if obs.get("owner") == owner}

    # -- deciding ----------------------------------------------------------------------
    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        changed = []
        for key in sorted(self.compared):
            want = desired.get(key)
            if want is None:
                continue
            have = observed.get(key)
            if key == "extra_disks":
                have_by = {d["name"]: d["size"] for d in have or []}
                if any(have_by.get(d["name"]) != d["size"] for d in want):
                    changed.append(key)
            elif have != want:
                changed.append(key)
        return changed

    def forces_replace(self, desired: dict[str, Any], observed: dict[str, Any],
                       changed: list[str]) -> list[str]:
        forcing = [f for f in changed if f in self.replace_fields]
        if "disk" in changed and observed.get("disk") and desired["disk"] < observed["disk"]:
            forcing.append("disk")  # a disk cannot shrink
        return forcing

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        absent = self.wants_absent(desired)
        notes = self.ownership_notes(desired, observed, changed, deleting=absent)
        if desired.get("disk_clone_why"):  # a root disk is made: how (see `planned`)
            notes.append(f"root disk: {desired['disk_clone_why']}")
        if observed is None:
            return notes
        if absent:
            if desired.get("delete_disks"):
                notes.append("its disks are deleted (delete_disks: true)")
            else:
                notes.append("its disks are kept (set delete_disks: true to delete them)")
            return notes
        forcing = self.forces_replace(desired, observed, changed)
        running = observed.get("state") in ("running", "paused")
        if forcing:
            if running:
                notes.append("the running VM is shut down first (ACPI, then forced off after "
                             f"{desired.get('shutdown_timeout') or DEFAULT_SHUTDOWN_TIMEOUT:g}s)")
            notes.append("its root disk is recreated; extra disks are kept")
            return notes
        if running and desired.get("state") != "stopped":
            later = [f.removesuffix("_sha") for f in changed if f in RESTART_FIELDS]
            if later:
                notes.append(f"{', '.join(later)} takes effect after restart (the persistent "
                             "definition changes now; the running guest is not restarted)")
        if "slice" in changed and running:
            where = observed.get("slice_detail") or (f"in slice {observed['slice']}"
                                                     if observed.get("slice") else "")
            pid = observed.get("qemu_pid")
            notes.append(f"the running QEMU process{f' (pid {pid})' if pid else ''}"
                         f"{f', now {where},' if where else ''} joins slice {desired['slice']} "
                         "at once; the guest is not restarted")
        if "disk" in changed and observed.get("disk"):
            notes.append(f"the root disk grows from {format_size(observed['disk'])} to "
                         f"{format_size(desired['disk'])} (the guest grows its partition)")
        return notes

    # -- acting ---------------------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        libvirt = libvirt_module()
        c = client(conn)
        forget_pools(c)
        try:
            with c.lock:
                if change.action is not Action.CREATE:
                    self.check_owned(conn, res, change.before)
                if change.action is Action.DELETE:
                    self._delete(c, res, change.before or {})
                elif change.action is Action.REPLACE:
                    self._delete(c, res, change.before or {}, replacing=True)
                    self._create(c, res, (change.after or {}).get("disk_clone"))
                elif change.action is Action.CREATE:
                    self._create(c, res, (change.after or {}).get("disk_clone"))
                else:
                    self._update(c, res, change)
        except libvirt.libvirtError as exc:
            raise HostError(conn.host, f"vm {res.name}: {error_text(exc)}") from None

    # creation
    def _create(self, c: Any, res: Resource, method: str | None) -> None:
        """method: how the plan said the root disk is made (None: an overlay)."""
        desired = res.fields
        name = res.name
        image_vol = None
        if desired.get("image"):
            image = desired["image"]
            image_vol = image_volume(c, desired)
            if image_vol is None:
                raise c.fail(f"vm {name}: image {image} not found in any active pool")
        pool_name = desired.get("pool") or (image_vol.storagePoolLookupByVolume().name()
                                            if image_vol is not None else "default")
        pool = find_pool(c, pool_name)
        if pool is None or not pool.isActive():
            raise c.fail(f"vm {name}: pool {pool_name} does not exist or is not active")
        spec: dict[str, Any] = {
            "name": name, "vcpus": desired.get("vcpus") or 1,
            "memory": desired.get("memory") or DEFAULT_MEMORY,
            "virt_type": desired.get("virt_type") or default_virt_type(c),
            **{k: desired.get(k) for k in ("network", "bridge", "kernel", "initrd", "cmdline",
                                           "firmware", "console_log", "machine", "arch")},
        }
        if c.test and not spec.get("arch"):
            spec["arch"] = "i686"
        root = self._root_disk(c, res, pool, image_vol, method or "overlay")
        if root:
            spec["root"] = root
        spec["extra"] = [self._extra_disk(c, res, pool, d) for d in desired.get("extra_disks")
                         or []]
        if desired.get("cloud_init"):
            spec["seed"] = self._write_seed(c, res, pool)
        meta = {"owner": res.owner, "image": desired.get("image"),
                "cloud-init": desired.get("cloud_init_sha"), "slice": desired.get("slice"),
                "disk-clone": root.get("clone") if root else None}
        dom = c.virt.defineXML(domain_xml(spec, meta))
        if desired.get("autostart"):
            dom.setAutostart(1)
        if desired.get("state", "running") == "running":
            dom.create()
            self._join_slice(c, res)

    def _join_slice(self, c: Any, res: Resource) -> None:
        """The just-started (or running) guest's QEMU process into its slice."""
        if res.fields.get("slice") and not c.test:
            attach_to_slice(c.conn, res.name, res.fields["slice"])

    def _root_disk(self, c: Any, res: Resource, pool: Any, image_vol: Any | None,
                   method: str) -> dict[str, Any] | None:
        libvirt = libvirt_module()
        desired = res.fields
        size = desired.get("disk")
        if image_vol is None:
            if not size:
                return None  # a diskless VM (kernel + initrd)
            vol_name = root_volume(res.name)
            if not _exists(pool, vol_name):
                pool.createXML(volume_xml(vol_name, size, "qcow2"), 0)
            return {"pool": pool.name(), "volume": vol_name, "format": "qcow2"}
        image = parse_volume(image_vol.XMLDesc(0))
        capacity = max(size or 0, image["capacity"] or 0)
        fmt = image["format"] or "qcow2"
        for vol_name in (root_volume(res.name), root_volume(res.name, "raw")):
            try:
                existing = pool.storageVolLookupByName(vol_name)
            except libvirt.libvirtError:
                continue
            # kept from before (state: absent without delete_disks): used again as it is
            return {"pool": pool.name(), "volume": vol_name, "clone": "kept",
                    "format": parse_volume(existing.XMLDesc(0))["format"] or "qcow2"}
        if method == "reflink":
            return self._reflink(c, res, pool, image, capacity)
        vol_name = root_volume(res.name)
        pool.createXML(volume_xml(vol_name, capacity, "qcow2", backing=image["path"],
                                  backing_format=fmt), 0)
        return {"pool": pool.name(), "volume": vol_name, "format": "qcow2", "clone": "overlay"}

    def _reflink(self, c: Any, res: Resource, pool: Any, image: dict[str, Any],
                 capacity: int) -> dict[str, Any]:
        """The root disk as a reflink clone of the image file (raw or qcow2)
        through provision-helper, or `cp --reflink=always` without it: the
        plan said the host can, so failing here is an error, never a quiet
        fallback to something else."""
        from provisioner.helper import ensure_helper, plain_clone

        fmt = image["format"] or "qcow2"
        vol_name = root_volume(res.name, fmt)
        dst = posixpath.join(_pool_dir(pool), vol_name)
        # a raw file grows by truncation; qcow2 keeps its virtual size in its
        # header, so it is grown through libvirt (qemu-img resize) after
        size = capacity if fmt == "raw" else None
        helper = ensure_helper(c.conn)
        if helper is not None:
            helper.clone(image["path"], dst, size, method="reflink")
        else:
            plain_clone(c.conn, image["path"], dst, size, reflink_only=True)
        pool.refresh(0)
        if fmt != "raw":
            vol = pool.storageVolLookupByName(vol_name)
            if int(vol.info()[1]) < capacity:
                vol.resize(capacity, 0)
        return {"pool": pool.name(), "volume": vol_name, "format": fmt, "clone": "reflink"}

    def _extra_disk(self, c: Any, res: Resource, pool: Any, disk: dict[str, Any]
                    ) -> dict[str, Any]:
        vol_name = extra_volume(res.name, disk["name"])
        if not _exists(pool, vol_name):
            pool.createXML(volume_xml(vol_name, disk["size"], "qcow2"), 0)
        return {"pool": pool.name(), "volume": vol_name, "format": "qcow2"}

    def _write_seed(self, c: Any, res: Resource, pool: Any) -> dict[str, Any]:
        libvirt = libvirt_module()
        iso = build_iso(seed_files(res.fields["cloud_init"], res.name))
        vol_name = seed_volume(res.name)
        try:
            pool.storageVolLookupByName(vol_name).delete(0)
        except libvirt.libvirtError:
            pass
        vol = pool.createXML(volume_xml(vol_name, len(iso), "raw"), 0)
        upload(c, vol, data=iso)
        return {"pool": pool.name(), "volume": vol_name}

    # changing in place
    def _update(self, c: Any, res: Resource, change: Change) -> None:
        libvirt = libvirt_module()
        desired = res.fields
        before = change.before or {}
        changed = set(change.changed_fields)
        dom = c.virt.lookupByName(res.name)
        live = dom.isActive()
        xml_changes: dict[str, Any] = {}
        for key in ("vcpus", "memory", "kernel", "initrd", "cmdline"):
            if key in changed:
                xml_changes[key] = desired[key]
        if "network" in changed or "bridge" in changed:
            xml_changes["network"] = desired.get("network")
            xml_changes["bridge"] = desired.get("bridge")
        if "console_log" in changed:
            raise c.fail(f"vm {res.name}: console_log cannot change in place")
        pool = None
        if "extra_disks" in changed or "cloud_init_sha" in changed:
            pool = self._disk_pool(c, res, before)
        if "extra_disks" in changed:
            have = {d["name"]: d["size"] for d in before.get("extra_disks") or []}
            new = []
            for disk in desired["extra_disks"]:
                if disk["name"] not in have:
                    new.append(self._extra_disk(c, res, pool, disk))
                elif have[disk["name"]] != disk["size"]:
                    if disk["size"] < (have[disk["name"]] or 0):
                        raise c.fail(f"vm {res.name}: disk {disk['name']} cannot shrink")
                    vol = pool.storageVolLookupByName(extra_volume(res.name, disk["name"]))
                    self._grow(dom, live, vol, disk["size"])
            if new:
                xml_changes["extra"] = new
        meta = {"owner": res.owner, "image": before.get("image") if desired.get("image") is None
                else desired["image"], "cloud-init": before.get("cloud_init_sha"),
                "slice": desired.get("slice") or before.get("slice_meta"),
                "disk-clone": before.get("disk_clone")}
        if "slice" in changed and desired.get("slice") != before.get("slice_meta"):
            xml_changes["meta"] = meta
        if "cloud_init_sha" in changed:
            seed = self._write_seed(c, res, pool)
            meta["cloud-init"] = desired["cloud_init_sha"]
            if not before.get("seed"):
                xml_changes["seed"] = seed
        if xml_changes or not before.get("managed") or before.get("owner") != res.owner \
                or "cloud_init_sha" in changed:
            xml_changes["meta"] = meta
            inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            c.virt.defineXML(update_domain(inactive, xml_changes))
        if live:
            self._live_changes(dom, changed, desired)
        if "disk" in changed and before.get("root"):
            vol = self._volume_of(c, before["root"])
            if vol is not None:
                self._grow(dom, live, vol, desired["disk"])
        if "autostart" in changed:
            dom.setAutostart(1 if desired["autostart"] else 0)
        if "state" in changed:
            self._set_state(c, dom, desired)
        if desired.get("slice") and dom.isActive() and (
                "slice" in changed or ("state" in changed and not live)):
            self._join_slice(c, res)

    def _live_changes(self, dom: Any, changed: set[str], desired: dict[str, Any]) -> None:
        """Best effort on the running guest; what it refuses waits for a restart."""
        libvirt = libvirt_module()
        if "memory" in changed:
            try:
                dom.setMemoryFlags(kib(desired["memory"]), libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError:
                pass
        if "vcpus" in changed:
            try:
                dom.setVcpusFlags(desired["vcpus"], libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError:
                pass

    def _grow(self, dom: Any, live: bool, vol: Any, size: int) -> None:
        libvirt = libvirt_module()
        if live:
            path = vol.path()
            try:
                dom.blockResize(path, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                return
            except libvirt.libvirtError:
                pass
        vol.resize(size, 0)

    def _set_state(self, c: Any, dom: Any, desired: dict[str, Any]) -> None:
        libvirt = libvirt_module()
        state = dom.state()[0]
        if desired["state"] == "running":
            if state == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            elif not dom.isActive():
                dom.create()
        elif desired["state"] == "stopped" and dom.isActive():
            self._shutdown(c, dom, desired)

    def _shutdown(self, c: Any, dom: Any, desired: dict[str, Any]) -> None:
        """ACPI shutdown, wait up to shutdown_timeout, then force it off."""
        libvirt = libvirt_module()
        timeout = desired.get("shutdown_timeout")
        timeout = DEFAULT_SHUTDOWN_TIMEOUT if timeout is None else float(timeout)
        if timeout > 0:
            try:
                dom.shutdown()
            except libvirt.libvirtError:
                pass
            if wait_until(lambda: not dom.isActive(), timeout):
                return
        try:
            dom.destroy()
        except libvirt.libvirtError:
            if dom.isActive():
                raise

    # removal
    def _delete(self, c: Any, res: Resource, before: dict[str, Any], *,
                replacing: bool = False) -> None:
        libvirt = libvirt_module()
        try:
            dom = c.virt.lookupByName(res.name)
        except libvirt.libvirtError:
            return
        inactive = parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if dom.isActive():
            self._shutdown(c, dom, res.fields)
        if not c.test:
            forget_cgroups(c.conn, res.name)
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                 | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        try:
            dom.undefineFlags(flags)
        except libvirt.libvirtError:
            dom.undefine()
        delete_all = bool(res.fields.get("delete_disks")) and not replacing
        for dev, disk in inactive["disks"].items():
            derived = dev == "vda" and disk.get("volume") in (root_volume(res.name),
                                                               root_volume(res.name, "raw"))
            if delete_all or (replacing and derived):
                self._delete_volume(c, disk)
        if inactive.get("seed") and (delete_all or replacing):
            self._delete_volume(c, inactive["seed"])
        if delete_all and not inactive["disks"].get("vda"):
            return

    def _delete_volume(self, c: Any, disk: dict[str, Any]) -> None:
        vol = self._volume_of(c, disk)
        if vol is not None:
            vol.delete(0)

    def _disk_pool(self, c: Any, res: Resource, before: dict[str, Any]) -> Any:
        name = res.fields.get("pool") or ((before.get("root") or {}).get("pool")) or "default"
        pool = find_pool(c, name)
        if pool is None:
            raise c.fail(f"vm {res.name}: pool {name} does not exist")
        return pool


def default_virt_type(c: Any) -> str:
    return str(c.conn.vars.get("provision_libvirt_domain_type") or ("test" if c.test else "kvm"))


def image_volume(c: Any, desired: dict[str, Any]) -> Any | None:
    """The VM's image volume: POOL/VOLUME as given; an image declared in the
    spec in its declared pool (another pool may hold a volume of that name);
    else the first active pool holding it."""
    image = desired["image"]
    if "/" in image:
        pool_name, vol_name = image.split("/", 1)
        return find_image(c, vol_name, pool_name)
    return find_image(c, image, (desired.get("layout") or {}).get("image_pool"))


def find_image(c: Any, vol_name: str, pool_name: str | None = None) -> Any | None:
    """An image volume by name: in pool_name, or the first active pool holding it."""
    libvirt = libvirt_module()
    pools = [find_pool(c, pool_name)] if pool_name else active_pools(c)
    for pool in pools:
        if pool is None:
            continue
        try:
            return pool.storageVolLookupByName(vol_name)
        except libvirt.libvirtError:
            continue
    return None


def _exists(pool: Any, vol_name: str) -> bool:
    libvirt = libvirt_module()
    try:
        pool.storageVolLookupByName(vol_name)
        return True
    except libvirt.libvirtError:
        return False


def _pool_dir(pool: Any) -> str:
    from modules.libvirt._base import pool_path

    return pool_path(pool)
