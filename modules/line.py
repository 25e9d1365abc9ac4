"""`line`: one line present in (or absent from) a file.

    - line: {path: /etc/ssh/sshd_config, regexp: '^#?PermitRootLogin\\b',
             line: "PermitRootLogin no"}
    - line: {path: /etc/hosts, line: "10.0.0.5 db"}
    - line: {path: /etc/fstab, regexp: '\\s/old\\s', state: absent}
    - line: {path: /etc/app.env, line: "MODE=prod", create: true}

present with a regexp: the last line matching it becomes `line`; if none
matches and the exact line is not there, the line is appended. Without a
regexp: the exact line is appended unless it is already there.
absent: every line matching the regexp (or, without one, equal to `line`)
is removed.

The file is edited in Python and written back atomically, keeping its mode,
ownership, line endings and whether it ends with a newline. A symlink is
followed: the file it points at is edited. Regular expressions are Python's
(`re.search` on each line, without its line ending).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modules._fs import normalize_path, parent_dependencies, run_ok
from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError
from provisioner.module import Module, Probe
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource, make_address
from provisioner.secret import Secret
from provisioner.spec import schema as s

# Files bigger than this are not edited (they are not the config files this is for).
MAX_FILE_SIZE = 4 * 1024 * 1024
NEW_FILE_MODE = 0o644


def _plain(value: Any) -> Any:
    return value.reveal() if isinstance(value, Secret) else value


# -- the pure editing core ----------------------------------------------------

@dataclass
class _Lines:
    """A file as (text, ending) pairs; ending is "\\n", "\\r\\n" or "" (last line)."""

    items: list[tuple[str, str]]

    @classmethod
    def parse(cls, content: str) -> "_Lines":
        # only \n ends a line in a POSIX text file (str.splitlines would also
        # break on \r, \x0c, \u2028 ...); a \r before it makes a CRLF line
        pieces = content.split("\n")
        items = [(p[:-1], "\r\n") if p.endswith("\r") else (p, "\n") for p in pieces[:-1]]
        if pieces[-1]:
            items.append((pieces[-1], ""))
        return cls(items)

    def render(self) -> str:
        return "".join(text + ending for text, ending in self.items)

    def newline(self) -> str:
        """The file's convention for a new line ending: that of its last ended line."""
        for _text, ending in reversed(self.items):
            if ending:
                return ending
        return "\n"


def _matches(lines: _Lines, regexp: str | None, line: str | None) -> list[int]:
    if regexp is not None:
        pattern = re.compile(regexp)
        return [i for i, (text, _e) in enumerate(lines.items) if pattern.search(text)]
    return [i for i, (text, _e) in enumerate(lines.items) if text == line]


def edit(content: str, *, line: str | None, regexp: str | None, state: str) -> str:
    """The file's content after making the line present/absent (pure)."""
    lines = _Lines.parse(content)
    items = lines.items
    if state == "absent":
        drop = set(_matches(lines, regexp, line))
        if not drop:
            return content
        ends_open = bool(items) and items[-1][1] == ""
        kept = [item for i, item in enumerate(items) if i not in drop]
        if ends_open and kept and kept[-1][1]:
            # the file did not end with a newline: neither does the result
            kept[-1] = (kept[-1][0], "")
        return _Lines(kept).render()
    assert line is not None
    found = _matches(lines, regexp, None) if regexp is not None else []
    if found:
        last = found[-1]
        items[last] = (line, items[last][1])
        return lines.render()
    if any(text == line for text, _e in items):
        return content
    newline = lines.newline()
    if items and items[-1][1] == "":
        # no newline at the end: keep it that way, the new line is the open one
        items[-1] = (items[-1][0], newline)
        items.append((line, ""))
    else:
        items.append((line, newline))
    return lines.render()


def current_line(content: str, *, line: str | None, regexp: str | None) -> tuple[str | None, int]:
    """For present: (the line standing where `line` should, how many match)."""
    lines = _Lines.parse(content)
    if regexp is not None:
        found = _matches(lines, regexp, None)
        if found:
            return lines.items[found[-1]][0], len(found)
    exact = _matches(lines, None, line)
    return (line if exact else None), len(exact)


def decode(raw: bytes) -> str:
    # surrogateescape: bytes that are not UTF-8 survive the round trip untouched
    return raw.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# -- the module ----------------------------------------------------------------

class LineModule(Module):
    kind = "line"
    name_field = "name"
    schema = {
        "path": s.string(required=True, empty=False),
        "line": s.text(nullable=True),
        "regexp": s.string(empty=False, nullable=True),
        "state": s.one_of("present", "absent", default="present"),
        "create": s.boolean(default=False),
        # filled in by normalize; a spec may set it to pick its own label
        "name": s.string(empty=False),
    }
    control_fields = frozenset({"state", "create", "regexp", "name", "path"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        path = normalize_path(fields["path"], ctx)
        line, regexp = fields.get("line"), fields.get("regexp")
        state = fields["state"]
        if regexp is not None:
            try:
                re.compile(regexp)
            except re.error as exc:
                ctx.fail("regexp", f"not a valid regular expression: {exc}")
        if line is None:
            if state == "present":
                ctx.fail("line", "a line declared present needs `line`")
            if regexp is None:
                ctx.fail("line", "give `line` or `regexp` to say which line must go")
        else:
            plain = _plain(line)
            if "\n" in plain or "\r" in plain:
                ctx.fail("line", "must be a single line (no newline characters)")
        if isinstance(line, Secret) and regexp is None and not fields.get("name"):
            ctx.fail("line", "a secret line needs a `regexp` (or a `name`): the line "
                             "itself cannot name the resource")
        name = fields.get("name") or f"{path}:{regexp if regexp is not None else line}"
        return {"name": name, "path": path, "line": line, "regexp": regexp,
                "state": state, "create": bool(fields.get("create"))}

    def implicit_deps(self, res: Resource, others: Sequence[Resource]) -> list[str]:
        deps = parent_dependencies(res, others)
        path = res.fields["path"]
        for other in others:
            if other.kind == "file" and other.host == res.host and \
                    other.fields.get("path") == path:
                deps.append(make_address(other.host, other.kind, other.name))
        return deps

    # -- reading ---------------------------------------------------------------
    def probes(self, res: Resource) -> list[Probe]:
        path = res.fields["path"]
        return [Probe(("stat", "-L", "-c", "%F", "--", path)),
                Probe(("head", "-c", str(MAX_FILE_SIZE + 1), "--", path))]

    def parse(self, res: Resource, results: list[Result]) -> dict[str, Any] | None:
        f = res.fields
        st, body = results
        if not st.ok:
            return None  # no such file: nothing to remove, or everything to add
        ftype = st.out.strip()
        if ftype not in ("regular file", "regular empty file"):
            raise ValueError(f"{f['path']} is a {ftype}, not a regular file")
        if not body.ok:
            raise ValueError(f"cannot read {f['path']}: {body.err.strip() or 'no output'}")
        if len(body.stdout) > MAX_FILE_SIZE:
            raise ValueError(f"{f['path']} is bigger than {MAX_FILE_SIZE // 1048576} MiB; "
                             "line edits only smaller files")
        content = decode(body.stdout)
        line, regexp = _plain(f.get("line")), f.get("regexp")
        if f["state"] == "absent":
            lines = _Lines.parse(content)
            found = _matches(lines, regexp, line)
            if not found:
                return None
            return {"name": f["name"], "path": f["path"], "line": lines.items[found[0]][0],
                    "count": len(found)}
        have, count = current_line(content, line=line, regexp=regexp)
        if have is None:
            return None  # the line is not there: it will be appended
        return {"name": f["name"], "path": f["path"], "line": have, "count": count}

    # -- deciding ----------------------------------------------------------------
    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        return [] if observed.get("line") == desired.get("line") else ["line"]

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        if desired.get("state") == "absent":
            count = (observed or {}).get("count", 0)
            return [f"removes {count} line{'s' if count != 1 else ''} from {desired['path']}"]
        if observed is None:
            if desired.get("create"):
                return [f"appends to {desired['path']} (created if missing)"]
            return [f"appends to {desired['path']}; if the file does not exist apply fails "
                    "(create is false)"]
        return []

    # -- acting --------------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        f = res.fields
        path = f["path"]
        resolved = conn.run(["readlink", "-f", "--", path])
        target = resolved.out.rstrip("\n") if resolved.ok and resolved.out.strip() else path
        st = conn.run(["stat", "-c", "%F|%a|%u|%g", "--", target])
        state = "absent" if change.action is Action.DELETE else "present"
        line = _plain(f.get("line"))
        if not st.ok:
            if state == "absent":
                return  # gone already: nothing to remove
            if not f.get("create"):
                raise HostError(conn.host, f"{path} does not exist (set create: true to "
                                           "create it)")
            conn.put(target, encode(edit("", line=line, regexp=f.get("regexp"),
                                         state="present")), mode=NEW_FILE_MODE)
            return
        ftype, mode, uid, gid = st.out.strip().split("|")
        if ftype not in ("regular file", "regular empty file"):
            raise HostError(conn.host, f"{path} is a {ftype}, not a regular file")
        content = decode(run_ok(conn, ["cat", "--", target]).stdout)
        new = edit(content, line=line, regexp=f.get("regexp"), state=state)
        if new == content:
            return
        conn.put(target, encode(new), mode=int(mode, 8))
        # the rewritten file belongs to whoever wrote it: give it back
        run_ok(conn, ["chown", "--", f"{uid}:{gid}", target])
