"""Shared pieces of the filesystem kinds (file, directory, line)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from provisioner.connection.base import Connection, Result
from provisioner.errors import CommandFailed
from provisioner.module import Probe
from provisioner.resource import Resource, make_address
from provisioner.spec import schema as s

OWNERSHIP_SCHEMA: dict[str, Any] = {
    "mode": s.mode(),
    "owner": s.string(),
    "group": s.string(),
}


def stat_probe(path: str) -> Probe:
    # %F type, %a octal mode, %U/%G names, %s size
    return Probe(("stat", "-c", "%F|%a|%U|%G|%s", "--", path))


def sha256sum_digest(out: str) -> str | None:
    """The hex digest in `sha256sum -- PATH` output. GNU sha256sum escapes a
    name holding a backslash or newline and then starts the line with a
    backslash, which is not part of the digest."""
    first = out.split(" ", 1)[0].strip()
    return first.removeprefix("\\") or None


def parse_stat(result: Result) -> dict[str, Any] | None:
    if result.rc != 0:
        return None
    kind, mode, owner, group, size = result.out.strip().split("|")
    return {"type": kind, "mode": int(mode, 8), "owner": owner, "group": group, "size": int(size)}


def run_ok(conn: Connection, argv: list[str], stdin: bytes | None = None) -> Result:
    result = conn.run(argv, stdin=stdin)
    if not result.ok:
        raise CommandFailed(conn.host, argv, result.rc, result.err)
    return result


def set_ownership(conn: Connection, path: str, desired: dict[str, Any],
                  observed: dict[str, Any] | None, *, force_mode: bool = False) -> None:
    owner, group = desired.get("owner"), desired.get("group")
    if (owner and (not observed or observed.get("owner") != owner)) or (
            group and (not observed or observed.get("group") != group)):
        spec = (owner or "") + (f":{group}" if group else "")
        run_ok(conn, ["chown", "--", spec, path])
    mode = desired.get("mode")
    if mode is not None and (force_mode or not observed or observed.get("mode") != mode):
        run_ok(conn, ["chmod", "--", format(mode, "o"), path])


def parent_dependencies(res: Resource, others: Sequence[Resource]) -> list[str]:
    """A path depends on the directory resources that contain it."""
    path = res.fields.get("path", "")
    deps = []
    for other in others:
        if other.kind == "directory" and other.host == res.host and other is not res:
            d = other.fields.get("path", "").rstrip("/") + "/"
            if path.startswith(d):
                deps.append(make_address(other.host, other.kind, other.name))
    return deps


def normalize_path(path: str, ctx: Any, field: str = "path") -> str:
    if not path.startswith("/"):
        ctx.fail(field, "must be an absolute path")
    if "\0" in path:
        ctx.fail(field, "must not contain NUL")
    norm = os.path.normpath(path)
    return "/" + norm.lstrip("/") if norm != "/" else norm
