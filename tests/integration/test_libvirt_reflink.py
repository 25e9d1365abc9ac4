"""VM root disks as reflink clones, against the harness's real libvirtd over SSH.

A loop-mounted XFS (reflink=1) is mounted both on the host and inside libvirtd's
private mount namespace; one storage pool lives on it and another on the harness's
ext4. The first plan, made before either pool exists, must already say which VM disk
will be a reflink clone and which a qcow2 overlay, and why; apply must do exactly that
(checked on the files: extents shared with the image, no backing chain), a guest must
run from its reflinked disk, and the second plan must change nothing. clone: reflink
where the host cannot must be refused at plan time, naming the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

pytest.importorskip("libvirt")

from provisioner.engine.observe import observe  # noqa: E402
from provisioner.errors import HostError  # noqa: E402
from provisioner.plan.model import Action  # noqa: E402
from tests import engine_steps as steps  # noqa: E402
from tests.engine_steps import fleet_connection, localhost_resources  # noqa: E402
from tests.harness.loopfs import LoopFs  # noqa: E402
from tests.harness.util import read_pid  # noqa: E402

pytestmark = pytest.mark.integration

MiB = 1 << 20


def shared_extents(path: Path) -> int:
    """How many of the file's extents the kernel reports as shared (FIEMAP)."""
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return sum(1 for line in out.splitlines() if "shared" in line)


def backing_file(path: Path) -> str | None:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    return info.get("backing-filename")


class Site:
    def __init__(self, libvirtd, boot, fleet, work: Path, xfs: Path) -> None:
        self.libvirtd = libvirtd
        self.boot = boot
        self.work = work
        self.tag = "rl" + uuid.uuid4().hex[:6]
        self.xfs_pool = xfs / f"{self.tag}-pool"  # made by the pool resource
        self.ext4_pool = Path(libvirtd.guest_dir) / f"{self.tag}-pool"
        self.conn = fleet_connection(fleet, provision_libvirt_socket=str(libvirtd.socket_path),
                                     provision_libvirt_domain_type="qemu")
        self.base = work / "base.qcow2"
        shutil.copy(boot.base_image, self.base)
        self.raw = work / "golden.raw"  # 32 MiB raw image, 8 MiB of it data
        with open(self.raw, "wb") as fh:
            fh.truncate(32 * MiB)
            for i in range(4):
                fh.seek(i * 8 * MiB)
                fh.write(os.urandom(2 * MiB))

    def name(self, short: str) -> str:
        return f"{self.tag}-{short}"

    def resources(self, extra: str = ""):
        n = self.name
        boot = {"kernel": str(self.boot.kernel), "initrd": str(self.boot.initrd),
                "cmdline": "console=ttyS0 panic=-1 quiet", "virt_type": "qemu",
                "memory": "128MiB", "shutdown_timeout": 0}
        vms = [
            {"name": n("r1"), "image": "base.qcow2", "disk": "96MiB", **boot},
            {"name": n("r2"), "image": "golden.raw", "disk": "64MiB", "state": "stopped",
             "virt_type": "qemu", "memory": "64MiB"},
            {"name": n("o1"), "image": "base.qcow2", "clone": "overlay", "state": "stopped",
             "virt_type": "qemu", "memory": "64MiB"},
            {"name": n("e1"), "image": "base-e.qcow2", "state": "stopped", "virt_type": "qemu",
             "memory": "64MiB"},
        ]
        text = textwrap.dedent(f"""
        - name: reflink
          hosts: localhost
          resources:
            - pool: {{name: {n('xfs')}, path: {self.xfs_pool}}}
            - pool: {{name: {n('ext4')}, path: {self.ext4_pool}}}
            - image: {{name: base.qcow2, pool: {n('xfs')}, source: {self.base}}}
            - image: {{name: golden.raw, pool: {n('xfs')}, source: {self.raw}}}
            - image: {{name: base-e.qcow2, pool: {n('ext4')}, source: {self.base}}}
        """) + "".join(f"    - vm: {json.dumps(vm)}\n" for vm in vms) + extra
        path = self.work / f"reflink-{self.tag}.yml"
        path.write_text(text)
        return localhost_resources(path)

    def plan(self, resources):
        return {c.name: c for c in steps.plan(self.conn, resources)}

    def apply(self, resources):
        changes, _ = steps.apply(self.conn, resources)
        return {c.name: c for c in changes}

    def cleanup(self) -> None:
        try:
            self.libvirtd.remove(self.tag)
        finally:
            self.conn.close()
        for d in (self.xfs_pool, self.ext4_pool):
            shutil.rmtree(d, ignore_errors=True)
            (d.parent / f".{d.name}.provision.json").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def site(libvirtd, guest_boot_files, ssh_fleet, tmp_path_factory):
    if not shutil.which("mkfs.xfs"):
        pytest.skip("mkfs.xfs not installed")
    libvirtd.start()
    # under guest_dir: QEMU runs as libvirt-qemu and must be able to reach the pool
    fs = LoopFs(Path(libvirtd.guest_dir) / f"xfs-{uuid.uuid4().hex[:6]}", "xfs", "1G")
    try:
        fs.share_with(read_pid(libvirtd.libvirtd_pidfile))
        s = Site(libvirtd, guest_boot_files, ssh_fleet, tmp_path_factory.mktemp("rl"),
                 fs.mountpoint)
        try:
            yield s
        finally:
            s.cleanup()
    finally:
        fs.close()


def test_first_plan_says_reflink_or_overlay_and_why(site):
    """Before any pool or image exists: the declared layout and the kernel's answer."""
    plan = site.plan(site.resources())
    vm = {short: plan[site.name(short)] for short in ("r1", "r2", "o1", "e1")}
    assert all(c.action is Action.CREATE for c in vm.values())
    assert vm["r1"].after["disk_clone"] == "reflink"
    assert vm["r2"].after["disk_clone"] == "reflink"
    assert vm["o1"].after["disk_clone"] == "overlay"
    assert vm["e1"].after["disk_clone"] == "overlay"
    notes = {short: " | ".join(c.notes) for short, c in vm.items()}
    assert "root disk: reflink clone of base.qcow2 on xfs" in notes["r1"], notes["r1"]
    assert "(clone: overlay)" in notes["o1"], notes["o1"]
    # ext4 cannot: the plan names it, from the helper's probe of the real filesystem
    assert "ext4" in notes["e1"] and "reflink" in notes["e1"], notes["e1"]


def test_apply_does_what_the_plan_said(site):
    import libvirt

    resources = site.resources()
    changes = site.apply(resources)
    assert {c.action for c in changes.values()} == {Action.CREATE}
    xfs, ext4 = site.xfs_pool, site.ext4_pool
    r1, r2 = xfs / f"{site.name('r1')}.qcow2", xfs / f"{site.name('r2')}.img"
    # reflink clones: the image's extents shared, no backing chain, grown to the disk size
    for disk in (r1, r2):
        assert shared_extents(disk) > 0, disk
        assert backing_file(disk) is None, disk
    assert shared_extents(xfs / "golden.raw") > 0
    assert r2.stat().st_size == 64 * MiB
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(r1)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["virtual-size"] == 96 * MiB and info["format"] == "qcow2"
    # overlays where the plan said overlay
    assert backing_file(xfs / f"{site.name('o1')}.qcow2") == str(xfs / "base.qcow2")
    assert backing_file(ext4 / f"{site.name('e1')}.qcow2") == str(ext4 / "base-e.qcow2")
    virt = site.libvirtd.open()
    try:
        dom = virt.lookupByName(site.name("r1"))
        assert dom.isActive()  # QEMU opened its reflinked disk
        assert f"volume='{r1.name}'" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    finally:
        virt.close()
    # what was made is what is observed
    observed = observe(site.conn, resources)
    got = {short: observed[f"localhost/vm/{site.name(short)}"]["disk_clone"]
           for short in ("r1", "r2", "o1", "e1")}
    assert got == {"r1": "reflink", "r2": "reflink", "o1": "overlay", "e1": "overlay"}


def test_second_plan_is_a_noop(site):
    plan = site.plan(site.resources())
    assert all(c.action is Action.NOOP for c in plan.values()), \
        [(c.address, c.action, c.changed_fields) for c in plan.values() if c.action.changes]


def test_clone_reflink_where_the_host_cannot_is_refused_at_plan_time(site):
    extra = (f"    - vm: {{name: {site.name('bad')}, image: base-e.qcow2, clone: reflink, "
             "state: stopped, virt_type: qemu}\n")
    resources = site.resources(extra)
    with pytest.raises(HostError) as err:
        observe(site.conn, resources)
    message = str(err.value)
    assert "\n" not in message
    assert f"vm {site.name('bad')}: clone: reflink is not possible" in message
    assert "ext4" in message
    virt = site.libvirtd.open()
    try:
        assert site.name("bad") not in {d.name() for d in virt.listAllDomains(0)}
    finally:
        virt.close()


def test_a_saved_plan_carries_the_choice_to_apply(site, ssh_fleet, tmp_path, monkeypatch):
    """plan -o → plan.json says reflink → apply plan.json (re-read, same facts) makes it."""
    import yaml
    from click.testing import CliRunner

    from provisioner.cli import main

    monkeypatch.setenv("PROVISION_STATE_DIR", str(tmp_path / "state"))
    doc = yaml.safe_load(Path(ssh_fleet.inventory).read_text())
    doc["all"]["hosts"] = {"h1": dict(doc["all"]["hosts"]["h1"],
                                      provision_libvirt_socket=str(site.libvirtd.socket_path),
                                      provision_libvirt_domain_type="qemu")}
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump(doc))
    pool, vm = site.name("saved"), site.name("r3")
    pool_dir = site.xfs_pool.parent / pool
    pb = tmp_path / "saved.yml"
    pb.write_text(yaml.safe_dump([{"name": "saved", "hosts": "h1", "resources": [
        {"pool": {"name": pool, "path": str(pool_dir)}},
        {"image": {"name": "golden.raw", "pool": pool, "source": str(site.raw)}},
        {"vm": {"name": vm, "image": "golden.raw", "state": "stopped", "virt_type": "qemu",
                "memory": "64MiB"}},
    ]}]))
    plan_file = tmp_path / "plan.json"
    r = CliRunner().invoke(main, ["plan", str(pb), "-i", str(inv), "-o", str(plan_file)])
    assert r.exit_code == 0, r.output
    assert "root disk: reflink clone of golden.raw on xfs" in r.output
    saved = json.loads(plan_file.read_text())
    change = next(c for c in saved["hosts"]["h1"]["changes"] if c["name"] == vm)
    assert change["after"]["disk_clone"] == "reflink"
    r = CliRunner().invoke(main, ["apply", str(plan_file)])
    assert r.exit_code == 0, r.output
    disk = pool_dir / f"{vm}.img"
    assert disk.exists(), (r.output, sorted(p.name for p in pool_dir.iterdir()))
    assert shared_extents(disk) > 0 and backing_file(disk) is None
    r = CliRunner().invoke(main, ["plan", str(pb), "-i", str(inv), "--detailed-exitcode"])
    assert r.exit_code == 0, r.output



def test_without_the_helper_cp_reflinks_and_the_plan_says_so(site, monkeypatch, tmp_path):
    """No provision-helper to be had on the host (here: no sources to build it from):
    the check and the clone fall back to cp --reflink=always, and the plan says so."""
    from provisioner import helper as helper_mod

    monkeypatch.setattr(helper_mod, "NATIVE_DIR", tmp_path / "no-native")
    helper_mod.forget(site.conn)
    try:
        extra = (f"    - vm: {{name: {site.name('p1')}, image: golden.raw, state: stopped, "
                 "virt_type: qemu, memory: 64MiB}\n")
        resources = site.resources(extra)
        plan = site.plan(resources)
        p1 = plan[site.name("p1")]
        assert p1.after["disk_clone"] == "reflink"
        note = " | ".join(p1.notes)
        assert "by cp --reflink=always (provision-helper unavailable: no helper sources" in note
        site.apply(resources)
        disk = site.xfs_pool / f"{site.name('p1')}.img"
        assert shared_extents(disk) > 0 and backing_file(disk) is None
        assert all(c.action is Action.NOOP for c in site.plan(resources).values())
    finally:
        monkeypatch.undo()
        helper_mod.forget(site.conn)

def test_new_content_for_a_reflinked_image_leaves_its_vms_alone(site):
    """No backing chain: golden.raw can be replaced under r2, whose disk keeps its
    bytes; base.qcow2, the backing file of o1's overlay, still may not."""
    r2 = site.xfs_pool / f"{site.name('r2')}.img"
    before = hashlib.sha256(r2.read_bytes()).hexdigest()
    with open(site.raw, "r+b") as fh:  # new content, same size
        fh.write(os.urandom(MiB))
    resources = site.resources()
    plan = site.plan(resources)
    assert plan["golden.raw"].action is Action.REPLACE
    assert plan[site.name("r2")].action is Action.NOOP
    changes = site.apply(resources)
    assert changes["golden.raw"].action is Action.REPLACE
    assert hashlib.sha256(r2.read_bytes()).hexdigest() == before
    assert hashlib.sha256((site.xfs_pool / "golden.raw").read_bytes()).hexdigest() == \
        hashlib.sha256(site.raw.read_bytes()).hexdigest()
    assert all(c.action is Action.NOOP for c in site.plan(resources).values())


def test_new_content_for_an_overlays_backing_image_is_refused(site):
    with open(site.base, "ab") as fh:  # different bytes, same virtual size
        fh.write(b"\0" * 512)
    resources = site.resources()
    _, report = steps.apply(site.conn, resources, check=False)
    failed = {o.address: o.message for o in report.outcomes if o.status == "failed"}
    message = failed.get("localhost/image/base.qcow2", "")
    assert "is the backing file of" in message and site.name("o1") in message, failed
    assert backing_file(site.xfs_pool / f"{site.name('o1')}.qcow2") == \
        str(site.xfs_pool / "base.qcow2")
