"""Driving the engine the way a run does (observe → plan_changes → apply_host), for
integration tests that want each step's changes in hand rather than the CLI's output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner.connection.ssh import SshConnection
from provisioner.engine.executor import HostReport, apply_host
from provisioner.engine.observe import observe
from provisioner.engine.runner import ordered_resources, plan_changes
from provisioner.inventory import load_inventory
from provisioner.plan.model import Change
from provisioner.resource import Resource
from provisioner.spec.loader import load_spec


def fleet_connection(fleet: Any, index: int = 0, **host_vars: str) -> SshConnection:
    """An SshConnection to one ssh_fleet host (strict known_hosts), with host vars."""
    host = fleet.hosts[index]
    conn = SshConnection(host["name"], host["address"], port=host["port"], user=host["user"],
                         key_file=host["key_file"], known_hosts=str(fleet.known_hosts))
    conn.vars = dict(host_vars)
    return conn


def localhost_resources(path: Path) -> list[Resource]:
    """The resources a playbook for `localhost` declares, in dependency order."""
    return ordered_resources(load_spec(str(path), load_inventory(None)))["localhost"]


def plan(conn: Any, resources: list[Resource]) -> list[Change]:
    return plan_changes(resources, observe(conn, resources))


def apply(conn: Any, resources: list[Resource], *, check: bool = True
          ) -> tuple[list[Change], HostReport]:
    """Plan and apply; with check, insist nothing failed or failed to converge."""
    changes = plan(conn, resources)
    report = apply_host(conn, resources, changes)
    if check:
        bad = [(o.address, o.status, o.message) for o in report.outcomes
               if o.status in ("failed", "not converged")]
        assert not bad, bad
    return changes, report
