"""Faults of the daemons behind a host (issue 6), seen through the CLI as a user
sees it: dockerd restarted in the middle of an apply, libvirtd down while
another host has work to do.

Hosts are ssh_fleet hosts (all this machine); the inventory of each test gives
them the harness daemons' sockets and their own apply locks.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _inventory(fleet, path: Path, extra: dict[str, dict]) -> Path:
    """The fleet's inventory with extra vars per host."""
    doc = yaml.safe_load(Path(fleet.inventory).read_text())
    for host, hvars in extra.items():
        doc["all"]["hosts"][host].update(hvars)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "provisioner", *args]


def _env(state: Path) -> dict[str, str]:
    return dict(os.environ, PROVISION_STATE_DIR=str(state), PYTHONUNBUFFERED="1")


def _provision(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(*args), cwd=str(REPO), env=_env(tmp_path / "state"),
                          capture_output=True, text=True, timeout=timeout)


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


# -- (a) dockerd restarted mid-apply ------------------------------------------------------

@pytest.fixture
def tag(dockerd):
    t = "df" + uuid.uuid4().hex[:6]
    yield t
    client = dockerd.client()
    try:
        for c in client.containers.list(all=True, filters={"name": t}):
            c.remove(force=True)
    finally:
        client.close()


def test_dockerd_restarted_mid_apply(ssh_fleet, dockerd, docker_images, tag, tmp_path):
    inv = _inventory(ssh_fleet, tmp_path / "inv.yml",
                     {"h1": {"provision_docker_socket": str(dockerd.socket)}})
    names = [f"{tag}-c{i}" for i in range(1, 7)]
    pb = tmp_path / "containers.yml"
    pb.write_text(yaml.safe_dump([{"name": "containers", "hosts": "h1", "resources": [
        {"container": {"name": n, "image": docker_images.busybox, "network_mode": "none",
                       "command": ["sleep", "3600"], "stop_timeout": 1}}
        for n in names]}]))
    proc = subprocess.Popen(_argv("apply", str(pb), "-i", str(inv), "-v"), cwd=str(REPO),
                            env=_env(tmp_path / "state"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if f"[2/6] create container {names[1]}" in line:
                break
        else:
            raise AssertionError("the apply never reached the second container:\n"
                                 + "".join(seen))
        assert any(f"create container {names[1]}" in s for s in seen), "".join(seen)
        restarted = time.monotonic()
        dockerd.restart()  # containers die with it; the API is gone for a while
        restarted = time.monotonic() - restarted
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if not dockerd.is_running():
            dockerd.start()
    out = "".join(seen) + out
    assert proc.returncode == 1, out
    _no_traceback(out)
    # the failed host and change are named, with the cause
    failed_lines = [line for line in out.splitlines() if "h1" in line and (
        "dockerd" in line or "daemon" in line or "connection" in line.lower())]
    assert failed_lines, out
    assert any(n in out and "fail" in out.lower() for n in names[1:]), out

    # a rerun converges: whatever was half made (created, not started; killed
    # with the daemon) is taken from where it is
    r = _provision(tmp_path, "apply", str(pb), "-i", str(inv))
    _no_traceback(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    client = dockerd.client()
    try:
        for n in names:
            c = client.containers.get(n)
            assert c.status == "running", (n, c.status)
            assert c.labels.get("dev.provision.owner"), n
        leftovers = [c.name for c in client.containers.list(all=True, filters={"name": tag})
                     if c.name not in names]
        assert leftovers == [], leftovers
    finally:
        client.close()
    r = _provision(tmp_path, "plan", str(pb), "-i", str(inv), "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"dockerd restart took {restarted:.1f}s")


# -- (b) libvirtd down on one host, the other converges ----------------------------------

@pytest.fixture
def vm_files(libvirtd, guest_boot_files):
    t = "lf" + uuid.uuid4().hex[:6]
    pool_dir = Path(libvirtd.guest_dir) / f"{t}-pool"
    root = Path(f"/tmp/provision-daemon-faults-{t}")
    root.mkdir()
    yield t, pool_dir, root
    import shutil

    if not libvirtd.is_running():
        libvirtd.start()
    with contextlib.suppress(Exception):
        libvirtd.remove(t, volumes=True)
    shutil.rmtree(pool_dir, ignore_errors=True)
    (pool_dir.parent / f".{pool_dir.name}.provision.json").unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)


def test_libvirtd_down_on_one_host(ssh_fleet, libvirtd, guest_boot_files, vm_files, tmp_path):
    t, pool_dir, root = vm_files
    inv = _inventory(ssh_fleet, tmp_path / "inv.yml", {"h1": {
        "provision_libvirt_socket": str(libvirtd.socket_path),
        "provision_libvirt_domain_type": "qemu"}})
    pb = tmp_path / "site.yml"
    pb.write_text(yaml.safe_dump([
        {"name": "vms", "hosts": "h1", "resources": [
            {"pool": {"name": f"{t}-pool", "path": str(pool_dir)}},
            {"vm": {"name": f"{t}-vm", "pool": f"{t}-pool", "memory": "128MiB",
                    "virt_type": "qemu", "kernel": str(guest_boot_files.kernel),
                    "initrd": str(guest_boot_files.initrd), "state": "stopped"}}]},
        {"name": "files", "hosts": "h2", "resources": [
            {"directory": {"path": f"{root}/h2"}},
            {"file": {"path": f"{root}/h2/motd", "content": "hello\n"}}]},
    ]))
    libvirtd.stop()
    try:
        r = _provision(tmp_path, "plan", str(pb), "-i", str(inv))
        out = r.stdout + r.stderr
        _no_traceback(out)
        assert r.returncode == 1, out
        h1 = [line for line in out.splitlines() if "h1" in line and "libvirt" in line]
        assert any("unreachable" in line and "is libvirtd running?" in line for line in h1), out
        assert "h2" in out and "motd" in out, out  # the other host is still planned
        assert not (root / "h2").exists()  # plan changes nothing

        r = _provision(tmp_path, "apply", str(pb), "-i", str(inv))
        out = r.stdout + r.stderr
        _no_traceback(out)
        assert r.returncode == 1, out
        assert any("h1" in line and "libvirt" in line and "unreachable" in line
                   for line in out.splitlines()), out
        assert (root / "h2" / "motd").read_text() == "hello\n"  # h2 converged
    finally:
        libvirtd.start()

    # the daemon is back: the same spec converges on h1 too
    r = _provision(tmp_path, "apply", str(pb), "-i", str(inv))
    assert r.returncode == 0, r.stdout + r.stderr
    virt = libvirtd.open()
    try:
        assert not virt.lookupByName(f"{t}-vm").isActive()
    finally:
        virt.close()
    r = _provision(tmp_path, "plan", str(pb), "-i", str(inv), "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr
