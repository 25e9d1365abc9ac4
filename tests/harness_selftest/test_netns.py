"""Hosts in network namespaces, reached from the root namespace through connect_socket."""

from __future__ import annotations

import socket

import pytest

from tests.harness.netns import connect_socket
from tests.harness.sshd import ssh_connect
from tests.harness.util import run


def test_each_host_has_its_own_hostname_and_address(netns_hosts):
    assert [h["name"] for h in netns_hosts.hosts] == ["h1", "h2", "h3"]
    for host in netns_hosts.hosts:
        sock = connect_socket(host["address"], host["port"], netns=netns_hosts.hub)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client = ssh_connect(host, netns_hosts.known_hosts, sock=sock)
        try:
            _, out, _ = client.exec_command("hostname; ip -4 -o addr show dev eth0")
            hostname, addr_line = out.read().decode().splitlines()[:2]
        finally:
            client.close()
        assert hostname == host["name"]
        assert f"inet {host['address']}/24" in addr_line


def test_private_range_never_reaches_the_root_namespace(netns_hosts):
    assert "10.200.0." not in run(["ip", "-o", "addr"]).stdout
    assert "10.200.0." not in run(["ip", "route"]).stdout


def test_link_down_cuts_a_host_off(netns_hosts):
    netns_hosts.connect("h2").close()
    netns_hosts.link_down("h2")
    try:
        with pytest.raises(OSError):
            netns_hosts.connect_socket("h2", timeout=1)
        netns_hosts.connect("h1").close()  # the others stay reachable
    finally:
        netns_hosts.link_up("h2")
    netns_hosts.connect("h2").close()
