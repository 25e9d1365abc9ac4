"""A slice with members of both kinds, on the real cgroupfs (v1 here): two
containers (Docker's cgroup parent /provision/<slice>) and a booted VM (its
QEMU process moved into provision/<slice>/vm-<name> by the vm kind).

Reached the way a real run reaches a host: an SshConnection to an ssh_fleet
host, with dockerd's and libvirtd's sockets forwarded over it; driven through
the engine (observe → plan_changes → apply_host).

One scenario (a TCG guest boots in 10-90 s, so it boots once): create all →
members under the slice, limits as declared → no-op → memory and pids changed
in place (not replace), members stay, containers not recreated, QEMU not
restarted → no-op → the slice cannot be removed while it has members, and the
plan says so. Everything is removed at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import textwrap
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("libvirt")
pytest.importorskip("docker")

from provisioner.plan.model import Action  # noqa: E402
from tests import engine_steps as steps  # noqa: E402
from tests.engine_steps import fleet_connection, localhost_resources  # noqa: E402

pytestmark = pytest.mark.integration

CG = Path("/sys/fs/cgroup")
if not (CG / "memory" / "cgroup.procs").exists() or (CG / "cgroup.controllers").exists():
    pytest.skip("these checks read a cgroup v1 cgroupfs (memory, cpu, pids)",
                allow_module_level=True)

MiB = 1024 * 1024
BOOT_TIMEOUT = float(os.environ.get("PROVISION_TEST_BOOT_TIMEOUT", "150"))


def _cgroups(pid: int) -> dict[str, str]:
    """controller -> cgroup path, from /proc/PID/cgroup."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(","):
            out[c] = path
    return out


def _read(path: Path) -> str:
    return path.read_text().strip()


class Scenario:
    def __init__(self, fleet, dockerd, images, libvirtd, boot, work: Path) -> None:
        self.tag = "sm" + uuid.uuid4().hex[:6]
        self.slice = f"tenant-a-{self.tag}"
        self.dockerd, self.images, self.libvirtd, self.boot = dockerd, images, libvirtd, boot
        self.work = work
        self.pool_dir = Path(libvirtd.guest_dir) / f"{self.tag}-pool"
        self.console = Path(libvirtd.guest_dir) / f"{self.tag}-vm.console"
        self.vm = f"{self.tag}-vm"
        self.containers = [f"{self.tag}-c1", f"{self.tag}-c2"]
        self.conn = fleet_connection(
            fleet, provision_libvirt_socket=str(libvirtd.socket_path),
            provision_libvirt_domain_type="qemu", provision_docker_socket=str(dockerd.socket),
            # the slice's ownership mark: here, not in the host's /run/provision
            provision_run_dir=str(work / "run"))

    def resources(self, *, memory: str = "1GiB", pids: int = 256, state: str = "present",
                  members: bool = True):
        slice_ = {"name": self.slice, "cpus": 1.5, "memory": memory, "pids": pids,
                  "state": state}
        items = [{"slice": slice_}]
        if members:
            items.append({"pool": {"name": f"{self.tag}-pool", "path": str(self.pool_dir)}})
            for name in self.containers:
                items.append({"container": {
                    "name": name, "image": self.images.busybox, "network_mode": "none",
                    "command": ["sleep", "3600"], "slice": self.slice, "stop_timeout": 1}})
            items.append({"vm": {
                "name": self.vm, "pool": f"{self.tag}-pool", "memory": "128MiB",
                "virt_type": "qemu", "kernel": str(self.boot.kernel),
                "initrd": str(self.boot.initrd), "cmdline": "console=ttyS0 panic=-1 quiet",
                "console_log": str(self.console), "shutdown_timeout": 0,
                "slice": self.slice}})
        body = "\n".join(f"    - {json.dumps(i)}" for i in items)
        text = textwrap.dedent("""\
        - name: slice members
          hosts: localhost
          resources:
        """) + body + "\n"
        path = self.work / f"slice-{self.tag}.yml"  # one file name: one owner
        path.write_text(text)
        return localhost_resources(path)

    def plan(self, resources):
        return {(c.kind, c.name): c for c in steps.plan(self.conn, resources)}

    def apply(self, resources, *, ok: bool = True):
        changes, report = steps.apply(self.conn, resources, check=ok)
        return {(c.kind, c.name): c for c in changes}, report

    # -- what is really there ----------------------------------------------------------
    def container_ids(self) -> dict[str, str]:
        client = self.dockerd.client()
        try:
            return {n: client.containers.get(n).id for n in self.containers}
        finally:
            client.close()

    def container_pids(self) -> dict[str, int]:
        client = self.dockerd.client()
        try:
            return {n: client.containers.get(n).attrs["State"]["Pid"] for n in self.containers}
        finally:
            client.close()

    def qemu_pid(self) -> int:
        pidfile = self.libvirtd.dirs["/run/libvirt"] / "qemu" / f"{self.vm}.pid"
        return int(pidfile.read_text().strip())

    def limits(self) -> dict[str, int]:
        base = "provision/" + self.slice
        return {"memory": int(_read(CG / "memory" / base / "memory.limit_in_bytes")),
                "pids": int(_read(CG / "pids" / base / "pids.max")),
                "quota": int(_read(CG / "cpu" / base / "cpu.cfs_quota_us")),
                "period": int(_read(CG / "cpu" / base / "cpu.cfs_period_us"))}

    def wait_booted(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        text = ""
        while time.monotonic() < deadline:
            text = self.console.read_text(errors="replace") if self.console.exists() else ""
            if self.boot.marker in text:
                return
            assert "Kernel panic" not in text, text[-1500:]
            time.sleep(0.5)
        raise AssertionError(f"guest did not boot in {BOOT_TIMEOUT:.0f}s: {text[-1500:]}")

    # -- cleanup -------------------------------------------------------------------------
    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            client = self.dockerd.client()
            try:
                for name in self.containers:
                    with contextlib.suppress(Exception):
                        client.containers.get(name).remove(force=True)
            finally:
                client.close()
        with contextlib.suppress(Exception):
            self.libvirtd.remove(self.tag, volumes=True)
        with contextlib.suppress(Exception):
            self.conn.close()
        # the slice's cgroups in every hierarchy (Docker makes its parents in all of
        # them), deepest first; a process still in one would make rmdir fail: wait a bit
        deadline = time.monotonic() + 10
        while True:
            left = [p for p in CG.glob(f"*/provision/{self.slice}") if p.is_dir()]
            for top in left:
                for d in sorted((p for p in top.rglob("*") if p.is_dir()),
                                key=lambda p: -len(p.parts)) + [top]:
                    with contextlib.suppress(OSError):
                        d.rmdir()
            left = [p for p in CG.glob(f"*/provision/{self.slice}") if p.is_dir()]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not left, f"slice cgroups left behind: {left}"
        shutil.rmtree(self.pool_dir, ignore_errors=True)
        (self.pool_dir.parent / f".{self.pool_dir.name}.provision.json").unlink(missing_ok=True)
        self.console.unlink(missing_ok=True)


@pytest.fixture
def scenario(ssh_fleet, dockerd, docker_images, libvirtd, guest_boot_files, tmp_path):
    s = Scenario(ssh_fleet, dockerd, docker_images, libvirtd, guest_boot_files, tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


def _assert_members(s: Scenario) -> None:
    """Both containers and the QEMU process are in the slice in every core hierarchy."""
    base = f"/provision/{s.slice}/"
    for name, pid in s.container_pids().items():
        cg = _cgroups(pid)
        for ctrl in ("cpu", "memory", "pids", "cpuset"):
            assert cg[ctrl].startswith(base), (name, ctrl, cg[ctrl])
    qemu = s.qemu_pid()
    cg = _cgroups(qemu)
    for ctrl in ("cpu", "memory", "pids", "cpuset"):
        assert cg[ctrl] == f"{base}vm-{s.vm}", (ctrl, cg[ctrl])
    # every thread of QEMU moved, not just the main one
    for tid in os.listdir(f"/proc/{qemu}/task"):
        assert f"{base}vm-{s.vm}" in Path(f"/proc/{qemu}/task/{tid}/cgroup").read_text()


def test_slice_with_containers_and_a_vm(scenario):
    s = scenario
    t0 = time.monotonic()
    resources = s.resources()
    deps = {r.kind: r.depends_on for r in resources}
    assert f"localhost/slice/{s.slice}" in deps["vm"]
    assert f"localhost/slice/{s.slice}" in deps["container"]

    changes, _ = s.apply(resources)
    assert {c.action for c in changes.values()} == {Action.CREATE}
    _assert_members(s)
    mark = s.work / "run" / "slices" / f"{s.slice}.owner"
    assert json.loads(mark.read_text()) == {"owner": f"slice-{s.tag}"}  # the playbook's stem
    lim = s.limits()
    assert lim["memory"] == 1024 * MiB and lim["pids"] == 256
    assert (lim["quota"], lim["period"]) == (150000, 100000)
    s.wait_booted()
    ids, qemu = s.container_ids(), s.qemu_pid()

    # a second run changes nothing
    plan = s.plan(resources)
    moving = [(k, c.action.value, c.changed_fields) for k, c in plan.items() if c.action.changes]
    assert not moving, moving
    assert plan[("slice", s.slice)].before["members"] == 3  # 2 containers + QEMU

    # limits change in place; members stay where they are
    changed = s.resources(memory="768MiB", pids=200)
    plan = s.plan(changed)
    sl = plan[("slice", s.slice)]
    assert sl.action is Action.UPDATE, (sl.action, sl.replace_fields)
    assert sorted(sl.changed_fields) == ["memory", "pids"]
    others = [(k, c.action.value) for k, c in plan.items() if k[0] != "slice" and c.action.changes]
    assert not others, others
    s.apply(changed)
    lim = s.limits()
    assert lim["memory"] == 768 * MiB and lim["pids"] == 200
    assert s.container_ids() == ids  # not recreated
    assert s.qemu_pid() == qemu  # not restarted
    _assert_members(s)
    plan = s.plan(changed)
    moving = [(k, c.action.value, c.changed_fields) for k, c in plan.items() if c.action.changes]
    assert not moving, moving

    # a VM taken out of its slice (by hand) is an update, back in place without a restart
    root = CG / "memory"
    (root / "cgroup.procs").write_text(str(qemu))
    plan = s.plan(changed)
    vm = plan[("vm", s.vm)]
    assert vm.action is Action.UPDATE and vm.changed_fields == ["slice"], vm.changed_fields
    assert any("joins slice" in n and "not restarted" in n for n in vm.notes), vm.notes
    s.apply(changed)
    assert s.qemu_pid() == qemu
    _assert_members(s)

    # the slice cannot go while it has members: the plan says so, apply refuses
    gone = s.resources(memory="768MiB", pids=200, state="absent", members=False)
    plan = s.plan(gone)
    sl = plan[("slice", s.slice)]
    assert sl.action is Action.DELETE
    assert any("3 member process(es): removing it will fail" in n for n in sl.notes), sl.notes
    _, report = s.apply(gone, ok=False)
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert failed and "has 3 member processes; not removing it" in failed[0].message, \
        [(o.address, o.message) for o in report.outcomes]
    assert (CG / "memory" / "provision" / s.slice).is_dir()
    assert time.monotonic() - t0 < 180, time.monotonic() - t0
