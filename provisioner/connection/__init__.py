"""Connections to hosts: local (subprocess) and ssh (paramiko)."""

from __future__ import annotations

from typing import Any

from provisioner.connection.base import Connection, Result
from provisioner.connection.local import LocalConnection

__all__ = ["Connection", "Result", "LocalConnection", "open_connection"]


def open_connection(host: Any, options: Any = None) -> Connection:
    """A connected Connection for an inventory Host (raises Unreachable)."""
    if getattr(host, "connection", "ssh") == "local":
        local = LocalConnection(host.name, become=bool(getattr(host, "become", False)))
        local.vars = getattr(host, "vars", {}) or {}
        return local
    from provisioner.connection.ssh import SshConnection

    conn = SshConnection(
        host.name,
        host.address or host.name,
        port=host.port or 22,
        user=host.user,
        key_file=host.key_file,
        become=bool(host.become),
        known_hosts=getattr(host, "known_hosts", None),
        options=options,
    )
    conn.vars = getattr(host, "vars", {}) or {}
    conn.connect()
    return conn
