"""Faults against real components: hosts as network namespaces, each with its
own address, hostname and sshd. The controller runs inside the hub namespace
(`ip netns exec`), as an operator's machine on that network would.

Every host shares this machine's filesystem, so paths carry the hostname.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.harness.netns import NetnsHosts

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

if os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/usr/sbin/sshd"):
    pytest.skip("needs root, iproute2 and openssh-server", allow_module_level=True)


@pytest.fixture
def net(netns_hosts: NetnsHosts) -> NetnsHosts:
    """The session's namespace hosts (tests/harness/fixtures.py); every test
    here restores links and daemons it breaks."""
    return netns_hosts


@pytest.fixture
def root():
    path = Path(f"/tmp/provision-faults-{uuid.uuid4().hex[:10]}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _playbook(tmp_path: Path, root: Path, seconds: int) -> Path:
    base = f"{root}/{{{{ inventory_hostname }}}}"
    pb = tmp_path / "faults.yml"
    pb.write_text(yaml.safe_dump([{"name": "faults", "hosts": "all", "resources": [
        {"directory": {"path": base}},
        {"file": {"path": f"{base}/before", "content": "1\n" * 50000}},
        {"command": {"name": "slow", "argv": ["sh", "-c", f'sleep {seconds}; touch "$1"', "sh",
                                              f"{base}/slow-done"],
                     "creates": f"{base}/slow-done"}},
        {"file": {"path": f"{base}/after", "content": "done\n",
                  "depends_on": ["command/slow"]}},
    ]}]))
    return pb


def _provision(net: NetnsHosts, tmp_path: Path, *args: str, wait: bool = True,
               timeout: float = 180):
    argv = ["ip", "netns", "exec", net.hub, sys.executable, "-m", "provisioner", *args,
            "-i", str(net.inventory)]
    env = dict(os.environ, PROVISION_STATE_DIR=str(tmp_path / "state"), PYTHONUNBUFFERED="1")
    if not wait:
        return subprocess.Popen(argv + ["-v"], cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, cwd=str(REPO), env=env, capture_output=True, text=True,
                          timeout=timeout)


def _wait_line(proc: subprocess.Popen, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never appeared: {''.join(seen)[-2000:]}")


def _no_temp_files(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if "provision-tmp" in p.name]
    assert leftovers == [], leftovers


def test_hosts_have_their_own_identity(net, tmp_path):
    r = _provision(net, tmp_path, "facts", "all")
    assert r.returncode == 0, r.stderr
    import json
    facts = json.loads(r.stdout)
    assert {facts[h]["host"]["hostname"] for h in ("h1", "h2", "h3")} == {"h1", "h2", "h3"}


def test_host_cut_off_mid_apply(net, root, tmp_path):
    pb = _playbook(tmp_path, root, seconds=3)
    proc = _provision(net, tmp_path, "apply", str(pb), "--timeout", "10", "--connect-timeout", "3",
                      wait=False)
    try:
        _wait_line(proc, "h2: [3/4] create command slow")
        net.link_down("h2")
        out, _ = proc.communicate(timeout=120)
    finally:
        net.link_up("h2")
    assert proc.returncode == 1, out
    assert "h2" in out and ("timed out" in out or "unreachable" in out), out
    for host in ("h1", "h3"):
        assert (root / host / "after").read_text() == "done\n"
    assert not (root / "h2" / "after").exists()
    _no_temp_files(root)
    r = _provision(net, tmp_path, "apply", str(pb))  # the link is back: converge
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "h2" / "after").read_text() == "done\n"


def test_sshd_killed_mid_apply(net, root, tmp_path):
    pb = _playbook(tmp_path, root, seconds=3)
    proc = _provision(net, tmp_path, "apply", str(pb), "--connect-timeout", "3", wait=False)
    try:
        _wait_line(proc, "h3: [3/4] create command slow")
        net.stop_sshd("h3")  # the daemon and its sessions
        out, _ = proc.communicate(timeout=120)
    finally:
        net.start_sshd("h3")
    assert proc.returncode == 1, out
    assert "h3" in out and "unreachable" in out, out
    for host in ("h1", "h2"):
        assert (root / host / "after").read_text() == "done\n"
    _no_temp_files(root)
    r = _provision(net, tmp_path, "apply", str(pb))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "h3" / "after").read_text() == "done\n"


def test_slow_host_does_not_hold_up_the_rest(net, root, tmp_path):
    base = f"{root}/{{{{ inventory_hostname }}}}"
    pb = tmp_path / "slow.yml"
    pb.write_text(yaml.safe_dump([{"name": "slow", "hosts": "all", "resources": [
        {"directory": {"path": base}},
        {"command": {"name": "maybe slow",
                     "argv": ["sh", "-c", 'if [ "$(hostname)" = h2 ]; then sleep 60; fi; touch "$1"',
                              "sh", f"{base}/ok"], "creates": f"{base}/ok"}},
    ]}]))
    started = time.monotonic()
    r = _provision(net, tmp_path, "apply", str(pb), "--timeout", "4")
    elapsed = time.monotonic() - started
    assert r.returncode == 1, r.stdout
    assert "timed out after 4" in r.stdout
    assert (root / "h1" / "ok").exists() and (root / "h3" / "ok").exists()
    assert not (root / "h2" / "ok").exists()
    assert elapsed < 40, f"the slow host held up the run: {elapsed:.1f}s"
