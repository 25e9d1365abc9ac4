"""The sshd fleet: strict host keys, every host, inventory, and the fault helpers."""

from __future__ import annotations

import time

import paramiko
import pytest
import yaml

from tests.harness.sshd import SshFleet, ssh_connect


def _exec(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=10)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
    return out


def test_every_host_answers_with_strict_host_keys(ssh_fleet):
    assert len(ssh_fleet.hosts) == 5
    ports = {h["port"] for h in ssh_fleet.hosts}
    assert len(ports) == 5
    for host in ssh_fleet.hosts:
        assert set(host) >= {"name", "address", "port", "user", "key_file"}
        client = ssh_connect(host, ssh_fleet.known_hosts)  # RejectPolicy + known_hosts
        try:
            assert _exec(client, "echo ok; id -u") == "ok\n0\n"
        finally:
            client.close()


def test_sftp_round_trip(ssh_fleet, harness_dir):
    client = ssh_fleet.connect("h1")
    try:
        sftp = client.open_sftp()
        target = harness_dir / "sftp-probe.txt"
        with sftp.open(str(target), "w") as f:
            f.write("through sftp\n")
        assert target.read_text() == "through sftp\n"
        sftp.remove(str(target))
    finally:
        client.close()


def test_commands_do_not_read_shell_rc_files(ssh_fleet):
    """SetEnv SHLVL=1: bash does not source ~/.bashrc for ssh commands."""
    client = ssh_fleet.connect("h2")
    try:
        t0 = time.perf_counter()
        _exec(client, "true")
        assert time.perf_counter() - t0 < 2
        assert _exec(client, 'bash -c "echo $SHLVL"').strip() != ""
    finally:
        client.close()


def test_unknown_host_is_rejected(ssh_fleet, harness_dir):
    empty = harness_dir / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException):
        ssh_connect(ssh_fleet.hosts[0], empty)


def test_inventory_lists_every_host(ssh_fleet):
    doc = yaml.safe_load(ssh_fleet.inventory.read_text())
    hosts = doc["all"]["hosts"]
    assert list(hosts) == ["h1", "h2", "h3", "h4", "h5"]
    for h in ssh_fleet.hosts:
        entry = hosts[h["name"]]
        assert {k: v for k, v in entry.items() if k.startswith("ansible_")} == {
            "ansible_host": "127.0.0.1",
            "ansible_port": h["port"],
            "ansible_user": "root",
            "ansible_ssh_private_key_file": h["key_file"],
        }
    # every test host is this machine: each gets its own apply lock
    locks = [entry["provision_lock_path"] for entry in hosts.values()]
    assert len(set(locks)) == len(locks)
    assert doc["all"]["vars"]["provision_known_hosts"] == str(ssh_fleet.known_hosts)


def test_stop_start_and_changed_host_key(harness_dir):
    """On a fleet of its own, so the session fleet stays intact."""
    with SshFleet(1, harness_dir / "ssh-faults") as fleet:
        client = fleet.connect("h1")
        fleet.stop("h1")  # drops open sessions too
        with pytest.raises(OSError):
            fleet.connect("h1", timeout=2)
        client.close()
        fleet.start("h1")
        fleet.connect("h1").close()

        fleet.regenerate_host_key("h1")
        with pytest.raises(paramiko.BadHostKeyException):
            fleet.connect("h1")
        fleet.write_known_hosts()  # accept the new key
        fleet.connect("h1").close()
