"""`group`: names validated, getent output → observed, plans, exact argv."""

from __future__ import annotations

from typing import Any

import pytest

from modules import get_module
from provisioner.connection.base import Connection, Result
from provisioner.errors import CommandFailed
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import ValidationFailure, validate

MOD = get_module("group")


def build(**fields: Any) -> Resource:
    ctx = SpecContext(file="/spec/site.yml", line=3, field_prefix="resources[0].group",
                      field_lines={}, variables={}, host="h1")
    desired = MOD.normalize(validate(fields, MOD.schema), ctx)
    desired.pop("depends_on", None)
    return Resource(host="h1", kind="group", name=desired["name"], fields=desired,
                    origin=Origin("/spec/site.yml", 3))


def r(rc: int = 0, out: str = "", err: str = "") -> Result:
    return Result(rc, out.encode(), err.encode())


class Recorder(Connection):
    host = "h1"

    def __init__(self, rc: int = 0, err: str = "") -> None:
        self.rc, self.err = rc, err
        self.runs: list[list[str]] = []

    def run(self, argv, *, stdin=None, sudo=None, timeout=None) -> Result:
        self.runs.append(list(argv))
        return r(self.rc, err=self.err)

    def put(self, path, data, *, mode=None) -> None:
        raise AssertionError

    def get(self, path) -> bytes:
        raise AssertionError


@pytest.mark.parametrize("name", ["app", "_svc", "www-data", "a1", "machine$", "x" * 32])
def test_good_names(name):
    assert build(name=name).name == name


@pytest.mark.parametrize("name", ["-g", "--help", "a; rm -rf /tmp/x", "a\n", "a\nb", "Ab", "1a",
                                  "a b", "$(id)", "a:b", "a,b", "", "x" * 33, "a$b"])
def test_hostile_names_rejected(name):
    with pytest.raises(ValidationFailure) as err:
        build(name=name)
    assert err.value.path == ["name"]


def test_probe():
    assert [p.argv for p in MOD.probes(build(name="app"))] == [("getent", "group", "--", "app")]


@pytest.mark.parametrize("out,observed", [
    (r(2), None),
    (r(0, "app:x:1001:\n"), {"name": "app", "gid": 1001, "members": []}),
    (r(0, "app:x:1001:bob,al\n"), {"name": "app", "gid": 1001, "members": ["al", "bob"]}),
])
def test_parse(out, observed):
    assert MOD.parse(build(name="app"), [out]) == observed


@pytest.mark.parametrize("fields,observed,action,changed", [
    ({}, None, Action.CREATE, None),
    ({}, {"name": "g", "gid": 5, "members": []}, Action.NOOP, []),
    ({"gid": 5}, {"name": "g", "gid": 5, "members": []}, Action.NOOP, []),
    ({"gid": 6}, {"name": "g", "gid": 5, "members": []}, Action.UPDATE, ["gid"]),
    ({"system": True}, {"name": "g", "gid": 5, "members": []}, Action.NOOP, []),
    ({"state": "absent"}, None, Action.NOOP, []),
    ({"state": "absent"}, {"name": "g", "gid": 5, "members": []}, Action.DELETE, []),
])
def test_plan(fields, observed, action, changed):
    change = diff(MOD, build(name="g", **fields), observed)
    assert change.action is action
    if changed is not None:
        assert change.changed_fields == changed


@pytest.mark.parametrize("fields,observed,argv", [
    ({}, None, ["groupadd", "--", "g"]),
    ({"gid": 2000, "system": True}, None, ["groupadd", "-g", "2000", "-r", "--", "g"]),
    ({"gid": 2001}, {"name": "g", "gid": 5}, ["groupmod", "-g", "2001", "--", "g"]),
    ({"state": "absent"}, {"name": "g", "gid": 5}, ["groupdel", "--", "g"]),
])
def test_apply_argv(fields, observed, argv):
    res = build(name="g", **fields)
    conn = Recorder()
    MOD.apply(conn, res, diff(MOD, res, observed))
    assert conn.runs == [argv]


def test_apply_failure():
    res = build(name="g")
    with pytest.raises(CommandFailed, match="already exists"):
        MOD.apply(Recorder(9, "groupadd: group 'g' already exists\n"), res, diff(MOD, res, None))
