"""`user`: a local user account.

    - user: {name: app, uid: 2000, group: app, groups: [www-data], home: /srv/app,
             shell: /bin/bash}
    - user: {name: deploy, groups: [docker], append: true}   # adds, never removes
    - user: {name: svc, system: true, shell: /usr/sbin/nologin}
    - user: {name: alice, password: "{{ alice_hash }}"}      # a crypt hash, e.g. $y$...
    - user: {name: old, state: absent}

`groups` is the exact set of supplementary groups unless `append: true`,
which only adds the ones missing. `system` and `create_home` only matter
when the account is created. The password is a crypt(3) hash: it is
compared with /etc/shadow (reading that needs root) but never shown, and it
is set through `chpasswd -e` on stdin so it never appears in a command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modules._fs import run_ok
from modules.group import ACCOUNT_NAME_RE
from provisioner.connection.base import Connection, Result
from provisioner.module import Module, Probe
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource, make_address
from provisioner.secret import REGISTRY, Secret
from provisioner.spec import schema as s

# passwd fields are ':'-separated lines: paths must not hold ':' or a newline
PATH_RE = r"^/[^:\n\r\x00]{0,4095}\Z"
GROUP_RE = r"^([a-z_][a-z0-9_-]{0,31}\$?|[0-9]{1,10})\Z"  # a name or a gid
# crypt(3) output ($id$...), or a locked/disabled marker (!, *, !$id$...)
HASH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./$=,+-")


def _looks_like_hash(value: str) -> bool:
    core = value.lstrip("!")
    if core in ("", "*"):
        return True
    return core.startswith("$") and set(core) <= HASH_CHARS


class UserModule(Module):
    kind = "user"
    schema = {
        "name": s.string(required=True, regex=ACCOUNT_NAME_RE),
        "uid": s.integer(min=0, max=4294967294, nullable=True),
        "group": s.string(regex=GROUP_RE, nullable=True),
        "groups": {"type": "list", "nullable": True,
                   "schema": s.string(regex=ACCOUNT_NAME_RE)},
        "append": s.boolean(default=False),
        "home": s.string(regex=PATH_RE, nullable=True),
        "shell": s.string(regex=PATH_RE, nullable=True),
        "system": s.boolean(default=False),
        "create_home": s.boolean(nullable=True),
        "password": s.text(nullable=True),
        "state": s.one_of("present", "absent", default="present"),
    }
    control_fields = frozenset({"state", "name", "append", "system", "create_home"})
    sensitive_fields = frozenset({"password"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        password = fields.get("password")
        if password is not None:
            plain = password.reveal() if isinstance(password, Secret) else password
            if not _looks_like_hash(plain):
                # never echo the value: it may be a real password typed by mistake
                ctx.fail("password", "must be a crypt(3) hash (like $y$... or $6$..., from "
                                     "`mkpasswd`), or ! to lock; a plain password is refused")
            REGISTRY.add(plain)
            fields["password"] = Secret(plain)
        if fields.get("groups") is not None:
            fields["groups"] = sorted(set(fields["groups"]))
        if fields["state"] == "absent":
            return {"name": fields["name"], "state": "absent"}
        return {k: fields.get(k) for k in
                ("name", "uid", "group", "groups", "append", "home", "shell", "system",
                 "create_home", "password", "state")}

    def implicit_deps(self, res: Resource, others: Sequence[Resource]) -> list[str]:
        wanted = set(res.fields.get("groups") or [])
        # without `group`, a group named like the user becomes its primary group
        wanted.add(res.fields.get("group") or res.fields["name"])
        return [make_address(o.host, o.kind, o.name) for o in others
                if o.kind == "group" and o.host == res.host and o.name in wanted]

    # -- reading -------------------------------------------------------------------
    def probes(self, res: Resource) -> list[Probe]:
        name = res.fields["name"]
        return [Probe(("getent", "passwd", "--", name)),
                Probe(("id", "-gn", "--", name)),
                Probe(("id", "-Gn", "--", name)),
                Probe(("getent", "shadow", "--", name))]

    def parse(self, res: Resource, results: list[Result]) -> dict[str, Any] | None:
        name = res.fields["name"]
        passwd, primary, all_groups, shadow = results
        entry = None
        if passwd.ok:
            for row in passwd.out.splitlines():
                parts = row.split(":")
                if len(parts) >= 7 and parts[0] == name:
                    entry = parts
                    break
        if entry is None:
            return None
        group = primary.out.strip() if primary.ok else entry[3]
        names = all_groups.out.split() if all_groups.ok else []
        observed: dict[str, Any] = {
            "name": name, "uid": int(entry[2]), "gid": int(entry[3]), "group": group,
            "groups": sorted(set(names) - {group}), "home": entry[5], "shell": entry[6],
            "password": None,
        }
        if shadow.ok:
            for row in shadow.out.splitlines():
                parts = row.split(":")
                if len(parts) >= 2 and parts[0] == name:
                    observed["password"] = Secret(parts[1])
        return observed

    # -- deciding --------------------------------------------------------------------
    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        changed = []
        for key in ("uid", "home", "shell", "password"):
            if desired.get(key) is not None and observed.get(key) != desired[key]:
                changed.append(key)
        group = desired.get("group")
        if group is not None:
            have = str(observed.get("gid")) if group.isdigit() else observed.get("group")
            if have != group:
                changed.append("group")
        if desired.get("groups") is not None:
            primary = {group or observed.get("group")}
            want = set(desired["groups"]) - primary
            have_set = set(observed.get("groups") or []) - primary
            if (not want <= have_set) if desired.get("append") else want != have_set:
                changed.append("groups")
        return changed

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        out = []
        if observed is not None and "password" in changed and observed.get("password") is None:
            out.append("cannot read /etc/shadow (needs root): the password is always set")
        if observed is not None and "home" in changed:
            out.append("the home directory is not moved; only the account's entry changes")
        return out

    # -- acting ------------------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        desired = res.fields
        if change.action is Action.CREATE and desired.get("group") is None:
            # useradd would try to make a group named like the user and fail if
            # one exists (declared as a group resource, say): join that one
            same = conn.run(["getent", "group", "--", desired["name"]])
            if same.ok and same.out.strip():
                desired = {**desired, "group": desired["name"]}
        for argv in self.commands(desired, change):
            run_ok(conn, argv)
        password = res.fields.get("password")
        if change.action is not Action.DELETE and password is not None and (
                change.action is Action.CREATE or "password" in change.changed_fields):
            plain = password.reveal() if isinstance(password, Secret) else password
            # name and hash are validated (no ':' or newline): one well-formed record
            run_ok(conn, ["chpasswd", "-e"], stdin=f"{res.fields['name']}:{plain}\n".encode())

    @staticmethod
    def commands(desired: dict[str, Any], change: Change) -> list[list[str]]:
        """The useradd/usermod/userdel argv (the password goes separately)."""
        name = desired["name"]
        if change.action is Action.DELETE:
            return [["userdel", "--", name]]
        create = change.action is Action.CREATE
        fields = set(change.changed_fields)
        opts: list[str] = []

        def want(key: str) -> bool:
            return desired.get(key) is not None and (create or key in fields)

        if want("uid"):
            opts += ["-u", str(desired["uid"])]
        if want("group"):
            opts += ["-g", desired["group"]]
        if want("groups") and (desired["groups"] or not create):
            if desired.get("append") and not create:
                opts.append("-a")
            opts += ["-G", ",".join(desired["groups"])]
        if want("home"):
            opts += ["-d", desired["home"]]
        if want("shell"):
            opts += ["-s", desired["shell"]]
        if create:
            if desired.get("system"):
                opts.append("-r")
            if desired.get("create_home") is True:
                opts.append("-m")
            elif desired.get("create_home") is False:
                opts.append("-M")
            return [["useradd", *opts, "--", name]]
        return [["usermod", *opts, "--", name]] if opts else []
