"""`package`: names validated, probe output → observed, plans, exact argv."""

from __future__ import annotations

from typing import Any

import pytest

from modules import get_module
from provisioner.connection.base import Connection, Result
from provisioner.errors import CommandFailed, HostError, SpecError
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import ValidationFailure, validate

MOD = get_module("package")
APT_INSTALL = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
               "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120"]
APT_REMOVE = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "remove", "-y",
              "-o", "DPkg::Lock::Timeout=120"]


def build(**fields: Any) -> Resource:
    ctx = SpecContext(file="/spec/site.yml", line=3, field_prefix="resources[0].package",
                      field_lines={}, variables={}, host="h1")
    desired = MOD.normalize(validate(fields, MOD.schema), ctx)
    return Resource(host="h1", kind="package", name=desired["name"], fields=desired,
                    origin=Origin("/spec/site.yml", 3))


def r(rc: int = 0, out: str = "", err: str = "") -> Result:
    return Result(rc, out.encode(), err.encode())


NOT_FOUND = r(127, err="sh: 1: x: not found")
APT = r(0, "/usr/bin/apt-get\n")
DNF = r(0, "/usr/bin/dnf\n")


def apt_results(dpkg: Result, policy: Result | None = None) -> list[Result]:
    out = [APT, dpkg, NOT_FOUND]
    return out + [policy or r(), NOT_FOUND]


def dnf_results(rpm: Result, check: Result | None = None) -> list[Result]:
    return [DNF, NOT_FOUND, rpm, NOT_FOUND, check or r()]


class Recorder(Connection):
    host = "h1"

    def __init__(self, manager: str = "/usr/bin/apt-get", fail: bool = False) -> None:
        self.manager = manager
        self.fail = fail
        self.runs: list[list[str]] = []

    def run(self, argv, *, stdin=None, sudo=None, timeout=None) -> Result:
        self.runs.append(list(argv))
        if argv[0] == "sh":
            return r(0, self.manager + "\n" if self.manager else "")
        if self.fail:
            return r(100, err="Reading package lists...\nE: Unable to locate package nope\n")
        return r()

    def put(self, path, data, *, mode=None) -> None:
        raise AssertionError("package writes no files")

    def get(self, path) -> bytes:
        raise AssertionError("package reads no files")


# -- spec -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nginx", "libc6:i386", "g++", "python3.11", "NetworkManager",
                                  "perl-Data-Dumper", "lib_foo"])
def test_good_names(name):
    assert build(name=name).name == name


@pytest.mark.parametrize("name", ["-y", "--purge", "a; rm -rf /tmp/x", "a b", "a\n", "a\nb",
                                  "$(id)", "a`id`", "a|b", "a*", "", "../x", "a/b", "a=1"])
def test_hostile_names_rejected(name):
    with pytest.raises(ValidationFailure) as err:
        build(name=name)
    assert err.value.path == ["name"]


@pytest.mark.parametrize("version", ["-1", "1 2", "1;id", "1\n", "$(id)"])
def test_hostile_versions_rejected(version):
    with pytest.raises(ValidationFailure):
        build(name="x", version=version)


def test_version_only_with_present():
    assert build(name="x", version="1:2.0-1~bpo12+1").fields["version"] == "1:2.0-1~bpo12+1"
    with pytest.raises(SpecError, match="state present"):
        build(name="x", version="1.0", state="latest")


# -- probes + parse ---------------------------------------------------------------------

def test_probes():
    argvs = [p.argv for p in MOD.probes(build(name="curl"))]
    assert argvs[1] == ("dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}\\n",
                        "--", "curl")
    assert argvs[2][:2] == ("rpm", "-q") and argvs[2][-2:] == ("--", "curl")
    assert len(argvs) == 3
    latest = [p.argv for p in MOD.probes(build(name="curl", state="latest"))]
    assert latest[3] == ("apt-cache", "policy", "--", "curl")
    assert latest[4] == ("dnf", "-q", "check-update", "--", "curl")


PARSES = [
    # (fields, results, observed)
    ({"name": "curl"}, apt_results(r(1, err="no packages found matching curl")), None),
    ({"name": "curl"}, apt_results(r(0, "un |\n")), None),
    ({"name": "curl"}, apt_results(r(0, "rc |7.88\n")), None),  # only config files left
    ({"name": "curl"}, apt_results(r(0, "ii |7.88.1-10\n")),
     {"name": "curl", "manager": "apt", "version": "7.88.1-10", "state": "present"}),
    ({"name": "libc6"}, apt_results(r(0, "un |\nii |2.36-9\n")),
     {"name": "libc6", "manager": "apt", "version": "2.36-9", "state": "present"}),
    ({"name": "curl"}, apt_results(r(0, "iF |7.88\n")),
     {"name": "curl", "manager": "apt", "version": "7.88", "state": "half-installed"}),
    ({"name": "curl", "state": "latest"},
     apt_results(r(0, "ii |1.0\n"), r(0, "curl:\n  Installed: 1.0\n  Candidate: 1.1\n")),
     {"name": "curl", "manager": "apt", "version": "1.0", "state": "outdated",
      "candidate": "1.1"}),
    ({"name": "curl", "state": "latest"},
     apt_results(r(0, "ii |1.1\n"), r(0, "curl:\n  Installed: 1.1\n  Candidate: 1.1\n")),
     {"name": "curl", "manager": "apt", "version": "1.1", "state": "latest",
      "candidate": "1.1"}),
    ({"name": "curl", "state": "latest"},
     apt_results(r(0, "ii |1.1\n"), r(0, "curl:\n  Installed: 1.1\n  Candidate: (none)\n")),
     {"name": "curl", "manager": "apt", "version": "1.1", "state": "latest",
      "candidate": None}),
    ({"name": "jq"}, dnf_results(r(1, "package jq is not installed\n")), None),
    ({"name": "jq"}, dnf_results(r(0, "1.8.1-3.fc44\n")),
     {"name": "jq", "manager": "dnf", "version": "1.8.1-3.fc44", "state": "present"}),
    ({"name": "jq", "state": "latest"},
     dnf_results(r(0, "1.8.1-2.fc44\n"), r(100, "\njq.x86_64  1.8.1-3.fc44  updates\n")),
     {"name": "jq", "manager": "dnf", "version": "1.8.1-2.fc44", "state": "outdated",
      "candidate": "1.8.1-3.fc44"}),
    ({"name": "jq", "state": "latest"}, dnf_results(r(0, "1.8.1-3.fc44\n"), r(0)),
     {"name": "jq", "manager": "dnf", "version": "1.8.1-3.fc44", "state": "latest",
      "candidate": None}),
]


@pytest.mark.parametrize("fields,results,observed", PARSES)
def test_parse(fields, results, observed):
    res = build(**fields)
    assert MOD.parse(res, results[:len(MOD.probes(res))]) == observed


def test_parse_without_a_package_manager_is_an_error():
    res = build(name="curl")
    with pytest.raises(ValueError, match="no supported package manager"):
        MOD.parse(res, [r(0, ""), NOT_FOUND, NOT_FOUND])


# -- plans ---------------------------------------------------------------------------------

def obs(version: str, state: str = "present", manager: str = "apt", **extra: Any) -> dict:
    return {"name": "p", "manager": manager, "version": version, "state": state, **extra}


PLANS = [
    ({}, None, Action.CREATE, None),
    ({}, obs("1.0"), Action.NOOP, []),
    ({"version": "1.0"}, obs("1.0"), Action.NOOP, []),
    ({"version": "1.1"}, obs("1.0"), Action.UPDATE, ["version"]),
    ({"version": "1.0"}, obs("1.0-1"), Action.UPDATE, ["version"]),  # dpkg: exact
    ({"version": "1.0"}, obs("1.0-1.fc44", manager="dnf"), Action.NOOP, []),  # rpm: no release
    ({"version": "1.0-1.fc44"}, obs("2:1.0-1.fc44", manager="dnf"), Action.NOOP, []),
    ({"version": "1.1"}, obs("1.0-1.fc44", manager="dnf"), Action.UPDATE, ["version"]),
    ({}, obs("1.0", "half-installed"), Action.UPDATE, ["state"]),
    ({"state": "latest"}, None, Action.CREATE, None),
    ({"state": "latest"}, obs("1.0", "outdated", candidate="1.1"), Action.UPDATE, ["state"]),
    ({"state": "latest"}, obs("1.1", "latest", candidate="1.1"), Action.NOOP, []),
    ({"state": "absent"}, None, Action.NOOP, []),
    ({"state": "absent"}, obs("1.0"), Action.DELETE, []),
]


@pytest.mark.parametrize("fields,observed,action,changed", PLANS)
def test_plan(fields, observed, action, changed):
    change = diff(MOD, build(name="p", **fields), observed)
    assert change.action is action
    if changed is not None:
        assert change.changed_fields == changed


def test_upgrade_note():
    change = diff(MOD, build(name="p", state="latest"), obs("1.0", "outdated", candidate="1.1"))
    assert change.notes == ["upgrades 1.0 → 1.1"]


# -- apply -----------------------------------------------------------------------------------

APPLIES = [
    # (fields, observed, manager path, expected argv)
    ({}, None, "/usr/bin/apt-get", APT_INSTALL + ["--", "p"]),
    ({"version": "1:2.0-1"}, obs("1.0"), "/usr/bin/apt-get",
     APT_INSTALL + ["--allow-downgrades", "--", "p=1:2.0-1"]),
    ({"state": "latest"}, obs("1.0", "outdated", candidate="1.1"), "/usr/bin/apt-get",
     APT_INSTALL + ["--", "p"]),
    ({"state": "absent"}, obs("1.0"), "/usr/bin/apt-get", APT_REMOVE + ["--", "p"]),
    ({}, None, "/usr/bin/dnf", ["dnf", "install", "-y", "--", "p"]),
    ({"version": "1.2-3"}, obs("1.0-1", manager="dnf"), "/usr/bin/dnf",
     ["dnf", "install", "-y", "--", "p-1.2-3"]),
    ({"state": "latest"}, None, "/usr/bin/dnf", ["dnf", "install", "-y", "--", "p"]),
    ({"state": "latest"}, obs("1.0", "outdated", manager="dnf", candidate="1.1"),
     "/usr/bin/dnf", ["dnf", "upgrade", "-y", "--", "p"]),
    ({"state": "absent"}, obs("1.0", manager="dnf"), "/usr/bin/dnf",
     ["dnf", "remove", "-y", "--", "p"]),
    ({}, None, "/usr/bin/yum", ["yum", "install", "-y", "--", "p"]),
]


@pytest.mark.parametrize("fields,observed,manager,argv", APPLIES)
def test_apply_argv(fields, observed, manager, argv):
    res = build(name="p", **fields)
    conn = Recorder(manager)
    MOD.apply(conn, res, diff(MOD, res, observed))
    assert conn.runs[0][0] == "sh"  # the fixed detection script, no user text
    assert "p" not in conn.runs[0][2].split()
    assert conn.runs[1:] == [argv]


def test_apply_failure_names_the_command():
    res = build(name="nope")
    with pytest.raises(CommandFailed) as err:
        MOD.apply(Recorder(fail=True), res, diff(MOD, res, None))
    assert "Unable to locate package nope" in str(err.value)


def test_apply_without_package_manager():
    res = build(name="p")
    with pytest.raises(HostError, match="no supported package manager"):
        MOD.apply(Recorder(""), res, diff(MOD, res, None))
