"""VMs against the harness's real libvirtd, reached the way a real run reaches it:
an SshConnection to an ssh_fleet host, libvirtd's socket forwarded over that one
SSH transport. Driven through the engine (observe → plan_changes → apply_host).

One scenario, in order (the steps share the VMs: booting a TCG guest costs 7-17 s,
so it is done once): an image uploaded, two VMs cloned from it as overlays, one
booted to its init; a second run changes nothing; memory changed in place; an
image change replaces the running VM after an ACPI shutdown attempt; a VM
removed keeps its disk unless asked. Everything made here is removed at the end.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("libvirt")

from provisioner.plan.model import Action  # noqa: E402
from tests import engine_steps as steps  # noqa: E402
from tests.engine_steps import fleet_connection, localhost_resources  # noqa: E402

pytestmark = pytest.mark.integration

SHUTDOWN_TIMEOUT = 2  # the busybox init ignores ACPI: the replace must fall back to destroy


class Scenario:
    def __init__(self, libvirtd, boot, fleet, work: Path) -> None:
        self.libvirtd = libvirtd
        self.boot = boot
        self.work = work
        self.tag = "it" + uuid.uuid4().hex[:6]
        self.pool_dir = Path(libvirtd.guest_dir) / f"{self.tag}-pool"
        self.console = Path(libvirtd.guest_dir) / f"{self.tag}-g1.console"
        self.conn = fleet_connection(fleet, provision_libvirt_socket=str(libvirtd.socket_path),
                                     provision_libvirt_domain_type="qemu")
        # controller-side image files (the "source" of the image resources)
        self.base = work / "base.qcow2"
        shutil.copy(boot.base_image, self.base)
        self.base2 = work / "base2.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(self.base2), "64M"],
                       check=True)
        with open(self.base2, "ab") as fh:  # different bytes, same virtual size
            fh.write(b"\0" * 512)
        self.n = 0

    def name(self, short: str) -> str:
        return f"{self.tag}-{short}"

    def resources(self, *, g1: dict | None = None, g2: dict | None = None):
        g1_fields = {"name": self.name("g1"), "image": "base.qcow2", "memory": "128MiB",
                     "kernel": str(self.boot.kernel), "initrd": str(self.boot.initrd),
                     "cmdline": "console=ttyS0 panic=-1 quiet", "console_log": str(self.console),
                     "shutdown_timeout": SHUTDOWN_TIMEOUT, "virt_type": "qemu"}
        g2_fields = {"name": self.name("g2"), "image": "base.qcow2", "memory": "128MiB",
                     "disk": "256MiB", "state": "stopped", "virt_type": "qemu",
                     "cloud_init": {"user_data": "#cloud-config\nhostname: g2\n"}}
        g1_fields.update(g1 or {})
        g2_fields.update(g2 or {})
        import json

        text = textwrap.dedent(f"""
        - name: vms
          hosts: localhost
          resources:
            - pool: {{name: {self.name('pool')}, path: {self.pool_dir}}}
            - image: {{name: base.qcow2, pool: {self.name('pool')}, source: {self.base}}}
            - image: {{name: base2.qcow2, pool: {self.name('pool')}, source: {self.base2}}}
            - vm: {json.dumps({k: v for k, v in g1_fields.items() if v is not None})}
            - vm: {json.dumps({k: v for k, v in g2_fields.items() if v is not None})}
        """)
        self.n += 1
        path = self.work / f"vms-{self.tag}.yml"  # one file name: one owner
        path.write_text(text)
        return localhost_resources(path)

    def plan(self, resources):
        return {c.name: c for c in steps.plan(self.conn, resources)}

    def apply(self, resources):
        changes, report = steps.apply(self.conn, resources)
        return {c.name: c for c in changes}, report

    def virt(self):
        return self.libvirtd.open()

    def cleanup(self) -> None:
        try:
            self.libvirtd.remove(self.tag, volumes=True)
        finally:
            self.conn.close()
        shutil.rmtree(self.pool_dir, ignore_errors=True)
        sidecar = self.pool_dir.parent / f".{self.pool_dir.name}.provision.json"
        sidecar.unlink(missing_ok=True)
        self.console.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def scenario(libvirtd, guest_boot_files, ssh_fleet, tmp_path_factory):
    s = Scenario(libvirtd, guest_boot_files, ssh_fleet, tmp_path_factory.mktemp("vms"))
    yield s
    s.cleanup()


def _vol_xml(virt, pool: str, name: str) -> str:
    return virt.storagePoolLookupByName(pool).storageVolLookupByName(name).XMLDesc(0)


def test_first_apply_uploads_clones_and_boots(scenario):
    s = scenario
    resources = s.resources()
    changes, report = s.apply(resources)
    assert {c.action for c in changes.values()} == {Action.CREATE}
    virt = s.virt()
    try:
        pool = s.name("pool")
        base = virt.storagePoolLookupByName(pool).storageVolLookupByName("base.qcow2")
        # uploaded once, byte for byte
        assert hashlib.sha256(Path(base.path()).read_bytes()).hexdigest() == \
            hashlib.sha256(s.base.read_bytes()).hexdigest()
        for vm in ("g1", "g2"):  # copy-on-write clones, not copies
            xml = _vol_xml(virt, pool, f"{s.name(vm)}.qcow2")
            assert "<backingStore>" in xml and base.path() in xml
            assert Path(s.pool_dir / f"{s.name(vm)}.qcow2").stat().st_size < 1 << 20
        assert virt.lookupByName(s.name("g1")).isActive()
        assert not virt.lookupByName(s.name("g2")).isActive()
        assert "provision.dev/xmlns/1" in virt.lookupByName(s.name("g2")).XMLDesc(0)
        assert f"{s.name('g2')}-cidata.iso" in {
            v.name() for v in virt.storagePoolLookupByName(pool).listAllVolumes(0)}
    finally:
        virt.close()
    # the guest really boots: its init writes the marker on the serial console
    deadline = time.monotonic() + 150
    text = ""
    while time.monotonic() < deadline:
        text = s.console.read_text(errors="replace") if s.console.exists() else ""
        if s.boot.marker in text:
            break
        time.sleep(0.5)
    assert s.boot.marker in text, text[-1500:]


def test_second_run_changes_nothing(scenario):
    s = scenario
    resources = s.resources()
    t0 = time.monotonic()
    changes = s.plan(resources)
    elapsed = time.monotonic() - t0
    assert all(c.action is Action.NOOP for c in changes.values()), \
        [(c.address, c.changed_fields) for c in changes.values() if c.action.changes]
    assert elapsed < 5, elapsed  # a handful of libvirt calls and two sidecar reads


def test_memory_changes_in_place(scenario):
    s = scenario
    virt = s.virt()
    try:
        before = virt.lookupByName(s.name("g1"))
        uuid_before, id_before = before.UUIDString(), before.ID()
    finally:
        virt.close()
    resources = s.resources(g1={"memory": "160MiB"})
    changes, _ = s.apply(resources)
    g1 = changes[s.name("g1")]
    assert g1.action is Action.UPDATE and g1.changed_fields == ["memory"]
    assert any("takes effect after restart" in n for n in g1.notes)
    virt = s.virt()
    try:
        dom = virt.lookupByName(s.name("g1"))
        assert dom.UUIDString() == uuid_before and dom.ID() == id_before  # not restarted
        import libvirt

        assert "<memory unit='KiB'>163840</memory>" in dom.XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        virt.close()
    assert all(c.action is Action.NOOP for c in s.plan(resources).values())


def test_image_change_replaces_after_a_graceful_shutdown(scenario):
    s = scenario
    virt = s.virt()
    try:
        uuid_before = virt.lookupByName(s.name("g1")).UUIDString()
    finally:
        virt.close()
    resources = s.resources(g1={"memory": "160MiB", "image": "base2.qcow2"})
    plan = s.plan(resources)
    g1 = plan[s.name("g1")]
    assert g1.action is Action.REPLACE and g1.replace_fields == ["image"]
    assert any("shut down first" in n for n in g1.notes)
    t0 = time.monotonic()
    s.apply(resources)
    # the ACPI shutdown was given its time before the forced stop
    assert time.monotonic() - t0 >= SHUTDOWN_TIMEOUT
    virt = s.virt()
    try:
        dom = virt.lookupByName(s.name("g1"))
        assert dom.UUIDString() != uuid_before and dom.isActive()
        assert "base2.qcow2" in _vol_xml(virt, s.name("pool"), f"{s.name('g1')}.qcow2")
    finally:
        virt.close()
    assert all(c.action is Action.NOOP for c in s.plan(resources).values())


def test_removed_vm_keeps_its_disk_unless_asked(scenario):
    s = scenario
    keep = s.resources(g1={"memory": "160MiB", "image": "base2.qcow2"},
                       g2={"state": "absent", "image": None, "memory": None, "disk": None,
                           "virt_type": None, "cloud_init": None})
    changes, _ = s.apply(keep)
    assert changes[s.name("g2")].action is Action.DELETE
    virt = s.virt()
    try:
        names = {d.name() for d in virt.listAllDomains(0)}
        assert s.name("g2") not in names
        vols = {v.name() for v in virt.storagePoolLookupByName(s.name("pool")).listAllVolumes(0)}
        assert f"{s.name('g2')}.qcow2" in vols
    finally:
        virt.close()
    purge = s.resources(g1={"state": "absent", "delete_disks": True, "image": None,
                            "memory": None, "kernel": None, "initrd": None, "cmdline": None,
                            "console_log": None, "virt_type": None},
                        g2={"state": "absent", "image": None, "memory": None, "disk": None,
                            "virt_type": None, "cloud_init": None})
    changes, _ = s.apply(purge)
    assert changes[s.name("g1")].action is Action.DELETE
    virt = s.virt()
    try:
        vols = {v.name() for v in virt.storagePoolLookupByName(s.name("pool")).listAllVolumes(0)}
        assert f"{s.name('g1')}.qcow2" not in vols and f"{s.name('g2')}.qcow2" in vols
    finally:
        virt.close()
    assert all(c.action is Action.NOOP for c in s.plan(purge).values())
