"""The slice kind's ownership marks on a fake connection: what is sent (fixed
scripts, every value an argument), how the one-round-trip answer is read,
and in which order apply touches the cgroup and the mark. The scripts
themselves run for real in tests/native/test_slice_module.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

import modules.slice as slice_mod
from modules.slice import SliceModule
from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError
from provisioner.helper import HelperError
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource

MOD = SliceModule()
HELPER = "/home/u/.cache/provision/helper-x/provision-helper"


class FakeHelper:
    path = HELPER

    def __init__(self, log: list[Any], refuse_rm: bool = False) -> None:
        self.log = log
        self.refuse_rm = refuse_rm

    def slice_apply(self, path: str, limits: dict[str, Any]) -> dict[str, Any]:
        self.log.append(("apply", path))
        return {}

    def slice_rm(self, path: str) -> dict[str, Any]:
        if self.refuse_rm:
            raise HelperError("h1", ["slice", "rm", path], 3, "slice has 2 member processes",
                              None)
        self.log.append(("rm", path))
        return {}


class FakeConn(Connection):
    """Answers the read script with `slices` (helper JSON) and `marks`
    (name -> mark line); records every command in `log`."""

    host = "h1"

    def __init__(self, slices: dict[str, Any] | None = None, marks: dict[str, str] | None = None,
                 *, raw: bytes | None = None, rc: int = 0, mark_rc: int = 0) -> None:
        self.slices = slices or {}
        self.marks = marks or {}
        self.raw, self.rc, self.mark_rc = raw, rc, mark_rc
        self.log: list[Any] = []

    def run(self, argv, *, stdin=None, sudo=None, timeout=None) -> Result:
        argv = list(argv)
        self.log.append(argv)
        if argv[2] == slice_mod._MARK_SCRIPT:
            return Result(self.mark_rc, b"", b"mkdir: Permission denied\n" if self.mark_rc else b"")
        assert argv[2] == slice_mod._READ_SCRIPT
        sep, mode, names = argv[6], argv[7], argv[8:]
        if mode == "marked":
            names = sorted(self.marks)
        if self.raw is not None:
            return Result(0, self.raw.replace(b"SEP", sep.encode()), b"")
        paths = [f"provision/{n}" for n in names]
        shown = {p: self.slices.get(p, {"path": p, "version": 2, "exists": False}) for p in paths}
        head = json.dumps({"version": 2, "slices": shown}) if len(paths) > 1 else \
            json.dumps(shown[paths[0]]) if paths else ""
        tail = "".join(f"mark {n} {self.marks[n]}\n" for n in names if n in self.marks)
        return Result(0, f"{head}\n{sep} {self.rc}\n{tail}".encode(), b"")

    def put(self, path, data, *, mode=None) -> None:
        raise AssertionError("marks are written by the mark script")

    def get(self, path) -> bytes:
        raise AssertionError("marks are read in the read script")


def _slice(name: str, pids: Any = "max") -> dict[str, Any]:
    return {"path": f"provision/{name}", "version": 2, "exists": True, "members": 0,
            "limits": {"cpus": "max", "memory.max": "max", "pids.max": pids, "cpuset.cpus": ""}}


def _res(name: str, owner: str = "site", **fields: Any) -> Resource:
    return Resource(host="h1", kind="slice", name=name, owner=owner, origin=Origin("t.yml", 1),
                    fields=MOD.normalize({"name": name, **fields}))


@pytest.fixture
def helper_log(monkeypatch) -> list[Any]:
    log: list[Any] = []
    monkeypatch.setattr(slice_mod, "ensure_helper", lambda conn: FakeHelper(log))
    return log


def test_reading_sends_values_only_as_arguments(helper_log):
    conn = FakeConn({"provision/web": _slice("web")})
    MOD.read_many(conn, [_res("web"), _res("db"), _res("web", owner="other")])
    (argv,) = conn.log  # one command for cgroups and marks
    assert argv[:5] == ["sh", "-c", slice_mod._READ_SCRIPT, "sh", HELPER]
    assert argv[5] == "/run/provision/slices"  # the default marks directory
    assert argv[7:] == ["names", "web", "db"]  # each name once
    assert argv[6].startswith("@@provision-slices-") and argv[6] not in argv[2]

    conn = FakeConn()
    conn.vars = {"provision_run_dir": "/var/lib/prov"}
    assert MOD.list_owned(conn, "site") == {}
    (argv,) = conn.log
    assert argv[5] == "/var/lib/prov/slices" and argv[7:] == ["marked"]


def test_marks_become_owner_and_marked(helper_log):
    conn = FakeConn(
        {f"provision/{n}": _slice(n) for n in ("web", "db", "odd", "other")},
        {"web": json.dumps({"owner": "site"}), "db": "{not json", "odd": json.dumps(["site"]),
         "other": json.dumps({"owner": "them"}), "nocgroup": json.dumps({"owner": "site"})})
    names = ("web", "db", "odd", "other", "nocgroup")
    got = MOD.read_many(conn, [_res(n) for n in names])
    owners = {n: (got[f"h1/slice/{n}"] or {}).get("owner") for n in names}
    assert owners == {"web": "site", "db": None, "odd": None, "other": "them", "nocgroup": None}
    assert got["h1/slice/nocgroup"] is None  # a mark alone is not a slice
    assert [got[f"h1/slice/{n}"]["marked"] for n in names[:4]] == [True, False, False, True]
    # prune: marked for this owner and present, nothing else
    assert set(MOD.list_owned(conn, "site")) == {"web"}
    assert set(MOD.list_owned(conn, "them")) == {"other"}


def test_read_failures_are_named(helper_log):
    conn = FakeConn(raw=b'{"error": "slice: no cgroup root", "path": "provision/web"}\nSEP 2\n')
    with pytest.raises(HelperError, match="no cgroup root"):
        MOD.read_many(conn, [_res("web")])
    conn = FakeConn(raw=b"sh: 1: syntax error\n")  # no frame: the script did not finish
    with pytest.raises(HostError, match="reading cgroups failed"):
        MOD.read_many(conn, [_res("web")])


def test_apply_marks_what_it_creates_and_unmarked_slices(helper_log):
    conn = FakeConn()
    web = _res("web", owner="o'wn $(x)", pids=5)
    MOD.apply(conn, web, diff(MOD, web, None))
    assert helper_log == [("apply", "provision/web")]
    (mark,) = conn.log
    assert mark == ["sh", "-c", slice_mod._MARK_SCRIPT, "sh", "/run/provision/slices", "web",
                    json.dumps({"owner": "o'wn $(x)"})]

    # present and marked by anyone: limits only, the mark stays
    conn, helper_log[:] = FakeConn(), []
    before = {**slice_mod._from_helper(_slice("web")), "owner": "them", "marked": True}
    change = diff(MOD, web, before)
    assert change.changed_fields == ["pids"]
    MOD.apply(conn, web, change)
    assert helper_log == [("apply", "provision/web")] and conn.log == []

    # present, right limits, no mark: only the mark is written
    conn, helper_log[:] = FakeConn(), []
    before = {**slice_mod._from_helper(_slice("web", pids=5)), "owner": None, "marked": False}
    change = diff(MOD, web, before)
    assert change.action is Action.UPDATE and change.changed_fields == ["marked"]
    MOD.apply(conn, web, change)
    assert helper_log == [] and [argv[2] for argv in conn.log] == [slice_mod._MARK_SCRIPT]

    # a resource without an owner (old callers) marks as "provision"
    conn = FakeConn()
    MOD.apply(conn, _res("db", owner=""), None)
    assert conn.log[0][-1] == json.dumps({"owner": "provision"})


def test_delete_removes_the_mark_after_the_cgroup(monkeypatch):
    log: list[Any] = []
    monkeypatch.setattr(slice_mod, "ensure_helper", lambda conn: FakeHelper(log))
    conn = FakeConn()
    gone = _res("web", state="absent")
    before = {**slice_mod._from_helper(_slice("web")), "owner": "site", "marked": True}
    MOD.apply(conn, gone, diff(MOD, gone, before))
    assert log == [("rm", "provision/web")]
    (mark,) = conn.log
    assert mark[2] == slice_mod._MARK_SCRIPT and mark[5:] == ["web", ""]  # "" = remove

    # a refused delete (members) keeps the mark: the slice is still ours
    monkeypatch.setattr(slice_mod, "ensure_helper", lambda conn: FakeHelper(log, refuse_rm=True))
    conn = FakeConn()
    with pytest.raises(HostError, match="member processes"):
        MOD.apply(conn, gone, diff(MOD, gone, before))
    assert conn.log == []


def test_a_mark_that_cannot_be_written_fails_the_change(helper_log):
    conn = FakeConn(mark_rc=1)
    web = _res("web")
    with pytest.raises(HostError, match="cannot write its ownership mark in "
                                        "/run/provision/slices: mkdir: Permission denied"):
        MOD.apply(conn, web, diff(MOD, web, None))


def test_a_created_slice_does_not_list_its_mark():
    import io

    from modules import get_module
    from provisioner.plan.diff import diff
    from provisioner.resource import Origin, Resource
    from provisioner.ui.console import Console
    from provisioner.ui.render import change_lines

    module = get_module("slice")
    fields = module.normalize({"name": "t1", "pids": 10, "state": "present"})
    assert fields["marked"] is True  # carried in the plan's data
    change = diff(module, Resource(host="h1", kind="slice", name="t1", fields=fields,
                                   origin=Origin("s.yml", 1)), None)
    out = io.StringIO()
    change_lines(Console(out, color=False), change)
    assert "pids: 10" in out.getvalue() and "marked" not in out.getvalue()
