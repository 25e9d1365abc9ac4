"""become over SSH: a non-root login user whose commands go through sudo.

The user can log in with the harness's client key (its sshd reads one
absolute AuthorizedKeysFile) and has passwordless sudo; root-owned paths
are writable only with become."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.cli import main

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or not shutil.which("sudo"):
    pytest.skip("needs root and sudo (run .ci/install.sh)", allow_module_level=True)


@pytest.fixture
def sudo_user():
    name = f"provb{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    # "!" (locked) would make sshd refuse even key logins without PAM; "*" is no password
    subprocess.run(["usermod", "-p", "*", name], check=True)
    sudoers = Path(f"/etc/sudoers.d/{name}")
    sudoers.write_text(f"{name} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    try:
        yield name
    finally:
        sudoers.unlink(missing_ok=True)
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)


@pytest.fixture
def target():
    path = Path(f"/root/provision-become-{uuid.uuid4().hex[:8]}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _inventory(tmp_path: Path, fleet, user: str, become: bool) -> Path:
    doc = yaml.safe_load(Path(fleet.inventory).read_text())
    host = dict(doc["all"]["hosts"]["h1"], ansible_user=user, ansible_become=become)
    if not become:  # the lock file must be one the login user can open
        host["provision_lock_path"] = f"/tmp/{user}.lock"
    doc["all"]["hosts"] = {"h1": host}
    inv = tmp_path / f"inv-{int(become)}.yml"
    inv.write_text(yaml.safe_dump(doc))
    return inv


def _playbook(tmp_path: Path, target: Path) -> Path:
    pb = tmp_path / "become.yml"
    pb.write_text(yaml.safe_dump([{"name": "become", "hosts": "all", "resources": [
        {"directory": {"path": str(target), "mode": "0700", "owner": "root"}},
        {"file": {"path": f"{target}/secret.conf", "content": "root only\n", "mode": "0600",
                  "owner": "root", "group": "root"}},
        {"line": {"path": f"{target}/extra.conf", "line": "more=1", "create": True}},
    ]}]))
    return pb


def test_without_become_root_paths_fail_clearly(ssh_fleet, sudo_user, target, tmp_path):
    inv = _inventory(tmp_path, ssh_fleet, sudo_user, become=False)
    r = CliRunner().invoke(main, ["apply", str(_playbook(tmp_path, target)), "-i", str(inv)])
    assert r.exit_code == 1, r.output
    assert "Permission denied" in r.output
    assert not target.exists()


def test_become_writes_root_owned_files_and_converges(ssh_fleet, sudo_user, target, tmp_path):
    inv = _inventory(tmp_path, ssh_fleet, sudo_user, become=True)
    pb = _playbook(tmp_path, target)
    r = CliRunner().invoke(main, ["apply", str(pb), "-i", str(inv)])
    assert r.exit_code == 0, r.output
    conf = target / "secret.conf"
    assert conf.read_text() == "root only\n"
    assert (target / "extra.conf").read_text() == "more=1\n"
    st = conf.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o600)
    r = CliRunner().invoke(main, ["plan", str(pb), "-i", str(inv), "--detailed-exitcode"])
    assert r.exit_code == 0, r.output
