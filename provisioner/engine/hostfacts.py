"""Basic facts about a host (for `provision facts`), in one round trip."""

from __future__ import annotations

from typing import Any

from provisioner.connection.base import Connection
from provisioner.engine.batch import run_batch

_PROBES = [
    ("arch", ["uname", "-m"]),
    ("kernel", ["uname", "-r"]),
    ("hostname", ["uname", "-n"]),
    ("os_release", ["cat", "/etc/os-release"]),
    ("apt", ["sh", "-c", "command -v apt-get"]),
    ("dnf", ["sh", "-c", "command -v dnf"]),
    ("cgroup2", ["stat", "-f", "-c", "%T", "/sys/fs/cgroup"]),
    ("memory", ["cat", "/proc/meminfo"]),
    ("cpus", ["nproc"]),
    ("user", ["id", "-un"]),
]


def gather_host_facts(conn: Connection) -> dict[str, Any]:
    results = dict(zip([k for k, _ in _PROBES], run_batch(conn, [a for _, a in _PROBES]), strict=False))
    os_release: dict[str, str] = {}
    for line in results["os_release"].out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            os_release[key] = value.strip().strip('"')
    mem_kib = 0
    for line in results["memory"].out.splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    manager = "apt" if results["apt"].ok else "dnf" if results["dnf"].ok else None
    return {
        "arch": results["arch"].out.strip(),
        "kernel": results["kernel"].out.strip(),
        "hostname": results["hostname"].out.strip(),
        "os": os_release.get("PRETTY_NAME", ""),
        "os_id": os_release.get("ID", ""),
        "package_manager": manager,
        "cgroup": "v2" if results["cgroup2"].out.strip() == "cgroup2fs" else "v1",
        "memory_bytes": mem_kib * 1024,
        "cpus": int(results["cpus"].out.strip() or 0),
        "user": results["user"].out.strip(),
    }
