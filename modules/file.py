"""`file`: a regular file with given content, mode and ownership.

    - file: {path: /etc/motd, content: "hello\n", mode: "0644", owner: root}
    - file: {path: /etc/app.conf, template: app.conf.j2}
    - file: {path: /usr/local/bin/tool, source: files/tool, mode: "0755"}
    - file: {path: /tmp/old, state: absent}

Written atomically (temp file in the same directory, then rename), so a
reader never sees half a file and an interrupted apply leaves the old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from modules._fs import (
    OWNERSHIP_SCHEMA,
    normalize_path,
    parent_dependencies,
    parse_stat,
    run_ok,
    set_ownership,
    sha256sum_digest,
    stat_probe,
)
from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError
from provisioner.module import Module, Probe
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.secret import Secret
from provisioner.spec import schema as s

SHOWN_CONTENT_LIMIT = 65536  # bigger files are compared by hash only


def _content_bytes(value: Any) -> bytes:
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


class FileModule(Module):
    kind = "file"
    name_field = "path"
    schema = {
        "path": s.string(required=True, empty=False),
        "content": s.text(nullable=True),
        "template": s.string(),
        "source": s.string(),
        "state": s.one_of("present", "absent", default="present"),
        **OWNERSHIP_SCHEMA,
    }
    control_fields = frozenset({"state", "content"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        fields["path"] = normalize_path(fields["path"], ctx)
        given = [k for k in ("content", "template", "source") if fields.get(k) is not None]
        if len(given) > 1:
            ctx.fail(given[1], f"give only one of content, template, source (also {given[0]})")
        if fields["state"] == "absent":
            if given:
                ctx.fail(given[0], "a file declared absent takes no content")
            return {"path": fields["path"], "state": "absent"}
        content: Any = fields.pop("content", None)
        if "template" in fields:
            content = ctx.render_file("template", fields.pop("template"))
        elif "source" in fields:
            raw = ctx.read_file("source", fields.pop("source"))
            try:
                content = raw.decode("utf-8")
            except UnicodeDecodeError:
                content = raw
        if content is None:
            ctx.fail("content", "a file needs content, template or source")
        digest = hashlib.sha256(_content_bytes(content)).hexdigest()
        return {
            "path": fields["path"],
            "state": "present",
            "content": content,
            # the hash of a secret would let anyone holding the plan test guesses
            "sha256": Secret(digest) if isinstance(content, Secret) else digest,
            "mode": fields.get("mode"),
            "owner": fields.get("owner"),
            "group": fields.get("group"),
        }

    def implicit_deps(self, res: Resource, others: Sequence[Resource]) -> list[str]:
        return parent_dependencies(res, others)

    def probes(self, res: Resource) -> list[Probe]:
        path = res.fields["path"]
        return [stat_probe(path), Probe(("sha256sum", "--", path)),
                Probe(("head", "-c", str(SHOWN_CONTENT_LIMIT + 1), "--", path))]

    def parse(self, res: Resource, results: list[Result]) -> dict[str, Any] | None:
        st = parse_stat(results[0])
        if st is None:
            return None
        observed: dict[str, Any] = {"path": res.fields["path"], "state": "present",
                                    "type": st["type"], "mode": st["mode"],
                                    "owner": st["owner"], "group": st["group"]}
        if st["type"] != "regular file" and st["type"] != "regular empty file":
            return observed
        observed["type"] = "regular file"
        observed["sha256"] = sha256sum_digest(results[1].out) if results[1].ok else None
        raw = results[2].stdout
        content: Any = None
        if results[2].ok and len(raw) <= SHOWN_CONTENT_LIMIT:
            try:
                content = raw.decode("utf-8")
            except UnicodeDecodeError:
                content = f"(binary, {st['size']} bytes)"
        else:
            content = f"({st['size']} bytes)"
        observed["content"] = content
        return observed

    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        changed = []
        if observed.get("type") != "regular file":
            changed.append("type")
        want, have = desired["sha256"], observed.get("sha256")
        want = want.reveal() if isinstance(want, Secret) else want
        have = have.reveal() if isinstance(have, Secret) else have
        if have != want:
            changed.append("content")
        for key in ("mode", "owner", "group"):
            if desired.get(key) is not None and observed.get(key) != desired[key]:
                changed.append(key)
        return changed

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        if observed and "type" in changed:
            return [f"{desired['path']} exists as a {observed.get('type')}: apply will refuse "
                    "to replace it"]
        return []

    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        desired = res.fields
        path = desired["path"]
        if change.action is Action.DELETE:
            run_ok(conn, ["rm", "-f", "--", path])
            return
        observed = change.before
        if observed and observed.get("type") != "regular file":
            raise HostError(conn.host, f"{path} exists and is a {observed.get('type')}, "
                                       "not a file; remove it first")
        mode = desired.get("mode")
        if mode is None:
            mode = observed.get("mode") if observed else 0o644
        if change.action is Action.CREATE or "content" in change.changed_fields:
            conn.put(path, _content_bytes(desired["content"]), mode=mode)
            set_ownership(conn, path, {**desired, "mode": None}, None)  # put set the mode
        else:
            set_ownership(conn, path, desired, observed)
