"""`user`: validation, getent/id output → observed, plans, exact argv, secrets."""

from __future__ import annotations

from typing import Any

import pytest

from modules import get_module
from provisioner.connection.base import Connection, Result
from provisioner.errors import SpecError
from provisioner.plan.codec import change_to_dict
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource
from provisioner.secret import Secret
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import ValidationFailure, validate

MOD = get_module("user")
HASH = "$y$j9T$abcdefghijklmnop$0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef."
OTHER_HASH = "$6$salt$zzzzzzzzzzzzzzzzzzzzzz"


def build(**fields: Any) -> Resource:
    ctx = SpecContext(file="/spec/site.yml", line=3, field_prefix="resources[0].user",
                      field_lines={}, variables={}, host="h1")
    desired = MOD.normalize(validate(fields, MOD.schema), ctx)
    return Resource(host="h1", kind="user", name=desired["name"], fields=desired,
                    origin=Origin("/spec/site.yml", 3))


def r(rc: int = 0, out: str = "", err: str = "") -> Result:
    return Result(rc, out.encode(), err.encode())


class Recorder(Connection):
    host = "h1"

    def __init__(self, groups: tuple[str, ...] = ()) -> None:
        self.groups = groups  # groups that exist on the host
        self.runs: list[tuple[list[str], bytes | None]] = []

    def run(self, argv, *, stdin=None, sudo=None, timeout=None) -> Result:
        if argv[0] == "getent":  # a look-up, not an action: not recorded
            name = argv[-1]
            return r(0, f"{name}:x:1500:\n") if name in self.groups else r(2)
        self.runs.append((list(argv), stdin))
        return r()

    def put(self, path, data, *, mode=None) -> None:
        raise AssertionError

    def get(self, path) -> bytes:
        raise AssertionError


# -- spec -------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("name", "-o"), ("name", "--badname"), ("name", "a; rm -rf /tmp/x"), ("name", "bob\n"),
    ("name", "bo\nb"), ("name", "Bob"), ("name", "a:b"), ("name", "$(id)"),
    ("group", "-g"), ("group", "a;b"), ("group", "a\n"),
    ("groups", ["ok", "-G"]), ("groups", ["a,b"]), ("groups", ["a\n"]),
    ("home", "relative"), ("home", "/a:b"), ("home", "/a\n"), ("shell", "/bin/sh\n"),
    ("shell", "-s"),
])
def test_hostile_values_rejected(field, value):
    with pytest.raises(ValidationFailure) as err:
        build(**{"name": "ok", field: value})
    assert err.value.path[0] == field


@pytest.mark.parametrize("password", ["hunter2", "$6$x:y", "$6$x\n", "a$6$b"])
def test_plain_or_malformed_passwords_refused_without_echo(password):
    with pytest.raises(SpecError) as err:
        build(name="bob", password=password)
    assert password not in str(err.value)
    assert "crypt" in err.value.message


@pytest.mark.parametrize("password", [HASH, OTHER_HASH, "!", "*", "!" + HASH])
def test_hashes_accepted_and_become_secret(password):
    res = build(name="bob", password=password)
    assert isinstance(res.fields["password"], Secret)
    assert res.fields["password"].reveal() == password


def test_absent_keeps_only_the_name():
    assert build(name="bob", state="absent", shell="/bin/sh").fields == {
        "name": "bob", "state": "absent"}


def test_implicit_deps_on_named_groups():
    from modules.group import GroupModule  # noqa: F401  (kind registered)

    user = build(name="bob", group="staff", groups=["docker", "adm"])
    groups = [Resource(host="h1", kind="group", name=n, fields={"name": n},
                       origin=Origin("x")) for n in ("staff", "docker", "other")]
    other_host = Resource(host="h2", kind="group", name="adm", fields={"name": "adm"},
                          origin=Origin("x"))
    assert sorted(MOD.implicit_deps(user, [*groups, other_host, user])) == [
        "h1/group/docker", "h1/group/staff"]
    own = Resource(host="h1", kind="group", name="bob", fields={"name": "bob"},
                   origin=Origin("x"))
    assert MOD.implicit_deps(build(name="bob"), [own, *groups]) == ["h1/group/bob"]
    assert MOD.implicit_deps(build(name="bob", group="staff"), [own, *groups]) == [
        "h1/group/staff"]


# -- probes + parse ---------------------------------------------------------------------

def test_probes():
    assert [p.argv for p in MOD.probes(build(name="bob"))] == [
        ("getent", "passwd", "--", "bob"), ("id", "-gn", "--", "bob"),
        ("id", "-Gn", "--", "bob"), ("getent", "shadow", "--", "bob")]


def test_parse_missing():
    assert MOD.parse(build(name="bob"), [r(2), r(1), r(1), r(2)]) is None


def test_parse_present():
    got = MOD.parse(build(name="bob"), [
        r(0, "bob:x:1001:1002:Bob,,,:/home/bob:/bin/bash\n"), r(0, "bob\n"),
        r(0, "bob sudo docker\n"), r(0, f"bob:{HASH}:19000:0:99999:7:::\n")])
    assert got == {"name": "bob", "uid": 1001, "gid": 1002, "group": "bob",
                   "groups": ["docker", "sudo"], "home": "/home/bob", "shell": "/bin/bash",
                   "password": Secret(HASH)}


def test_parse_without_shadow_access():
    got = MOD.parse(build(name="bob"), [
        r(0, "bob:x:1001:1002::/home/bob:/bin/sh\n"), r(0, "bob\n"), r(0, "bob\n"),
        r(2, err="permission denied")])
    assert got["password"] is None and got["groups"] == []


# -- plans ---------------------------------------------------------------------------------

def obs(**extra: Any) -> dict[str, Any]:
    base = {"name": "bob", "uid": 1001, "gid": 1001, "group": "bob", "groups": ["adm"],
            "home": "/home/bob", "shell": "/bin/sh", "password": Secret(HASH)}
    return {**base, **extra}


PLANS = [
    ({}, None, Action.CREATE, None),
    ({}, obs(), Action.NOOP, []),
    ({"uid": 1001, "group": "bob", "home": "/home/bob", "shell": "/bin/sh", "groups": ["adm"],
      "password": HASH, "system": True, "create_home": True}, obs(), Action.NOOP, []),
    ({"uid": 2000, "shell": "/bin/bash"}, obs(), Action.UPDATE, ["uid", "shell"]),
    ({"group": "1001"}, obs(), Action.NOOP, []),
    ({"group": "staff"}, obs(), Action.UPDATE, ["group"]),
    ({"groups": ["adm", "sudo"]}, obs(), Action.UPDATE, ["groups"]),
    ({"groups": []}, obs(), Action.UPDATE, ["groups"]),
    ({"groups": ["bob"]}, obs(groups=[]), Action.NOOP, []),  # the primary group counts as in
    ({"groups": ["adm"], "append": True}, obs(groups=["adm", "x"]), Action.NOOP, []),
    ({"groups": ["sudo"], "append": True}, obs(groups=["adm"]), Action.UPDATE, ["groups"]),
    ({"password": OTHER_HASH}, obs(), Action.UPDATE, ["password"]),
    ({"password": HASH}, obs(password=None), Action.UPDATE, ["password"]),
    ({"state": "absent"}, None, Action.NOOP, []),
    ({"state": "absent"}, obs(), Action.DELETE, []),
]


@pytest.mark.parametrize("fields,observed,action,changed", PLANS)
def test_plan(fields, observed, action, changed):
    change = diff(MOD, build(name="bob", **fields), observed)
    assert change.action is action
    if changed is not None:
        assert change.changed_fields == changed


def test_password_never_shown_in_a_plan():
    change = diff(MOD, build(name="bob", password=OTHER_HASH), obs())
    doc = repr(change_to_dict(change))
    assert HASH not in doc and OTHER_HASH not in doc
    assert change_to_dict(change)["sensitive_fields"] == ["password"]


def test_unreadable_shadow_is_noted():
    change = diff(MOD, build(name="bob", password=HASH), obs(password=None))
    assert any("/etc/shadow" in n for n in change.notes)


# -- apply -----------------------------------------------------------------------------------

APPLIES = [
    ({}, None, [["useradd", "--", "bob"]]),
    ({"uid": 2000, "group": "staff", "groups": ["sudo", "adm"], "home": "/srv/bob",
      "shell": "/bin/bash", "system": True, "create_home": True}, None,
     [["useradd", "-u", "2000", "-g", "staff", "-G", "adm,sudo", "-d", "/srv/bob",
       "-s", "/bin/bash", "-r", "-m", "--", "bob"]]),
    ({"groups": [], "create_home": False}, None, [["useradd", "-M", "--", "bob"]]),
    ({"uid": 2000, "shell": "/bin/sh"}, obs(), [["usermod", "-u", "2000", "--", "bob"]]),
    ({"groups": ["sudo"]}, obs(), [["usermod", "-G", "sudo", "--", "bob"]]),
    ({"groups": []}, obs(), [["usermod", "-G", "", "--", "bob"]]),
    ({"groups": ["sudo"], "append": True}, obs(),
     [["usermod", "-a", "-G", "sudo", "--", "bob"]]),
    ({"home": "/srv/b", "group": "staff"}, obs(),
     [["usermod", "-g", "staff", "-d", "/srv/b", "--", "bob"]]),
    ({"state": "absent"}, obs(), [["userdel", "--", "bob"]]),
]


@pytest.mark.parametrize("fields,observed,argvs", APPLIES)
def test_apply_argv(fields, observed, argvs):
    res = build(name="bob", **fields)
    conn = Recorder()
    MOD.apply(conn, res, diff(MOD, res, observed))
    assert [argv for argv, _stdin in conn.runs] == argvs


def test_create_joins_an_existing_group_named_like_the_user():
    res = build(name="bob", shell="/bin/sh")
    conn = Recorder(groups=("bob",))
    MOD.apply(conn, res, diff(MOD, res, None))
    assert conn.runs == [(["useradd", "-g", "bob", "-s", "/bin/sh", "--", "bob"], None)]
    conn = Recorder(groups=("bob",))
    explicit = build(name="bob", group="staff")
    MOD.apply(conn, explicit, diff(MOD, explicit, None))
    assert conn.runs == [(["useradd", "-g", "staff", "--", "bob"], None)]


def test_password_goes_through_stdin_only():
    res = build(name="bob", password=OTHER_HASH)
    conn = Recorder()
    MOD.apply(conn, res, diff(MOD, res, None))
    assert conn.runs == [(["useradd", "--", "bob"], None),
                         (["chpasswd", "-e"], f"bob:{OTHER_HASH}\n".encode())]
    conn = Recorder()
    MOD.apply(conn, res, diff(MOD, res, obs()))
    assert conn.runs == [(["chpasswd", "-e"], f"bob:{OTHER_HASH}\n".encode())]


def test_unchanged_password_is_not_rewritten():
    res = build(name="bob", password=HASH, shell="/bin/bash")
    conn = Recorder()
    MOD.apply(conn, res, diff(MOD, res, obs()))
    assert conn.runs == [(["usermod", "-s", "/bin/bash", "--", "bob"], None)]
