"""`command`: argv building (no shell unless asked), guards, plans, failures."""

from __future__ import annotations

from typing import Any

import pytest

from modules import get_module
from modules.command import CHDIR_SCRIPT
from provisioner.connection.base import Connection, Result
from provisioner.errors import CommandFailed, SpecError
from provisioner.plan.codec import change_to_dict
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource
from provisioner.secret import Secret
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import ValidationFailure, validate

MOD = get_module("command")


def build(**fields: Any) -> Resource:
    ctx = SpecContext(file="/spec/site.yml", line=3, field_prefix="resources[0].command",
                      field_lines={}, variables={}, host="h1")
    fields.setdefault("name", "job")
    desired = MOD.normalize(validate(fields, MOD.schema), ctx)
    return Resource(host="h1", kind="command", name=desired["name"], fields=desired,
                    origin=Origin("/spec/site.yml", 3))


def r(rc: int = 0, out: str = "", err: str = "") -> Result:
    return Result(rc, out.encode(), err.encode())


class Recorder(Connection):
    host = "h1"

    def __init__(self, result: Result | None = None) -> None:
        self.result = result or r()
        self.runs: list[tuple[list[str], float | None]] = []

    def run(self, argv, *, stdin=None, sudo=None, timeout=None) -> Result:
        self.runs.append((list(argv), timeout))
        return self.result

    def put(self, path, data, *, mode=None) -> None:
        raise AssertionError

    def get(self, path) -> bytes:
        raise AssertionError


def run_argv(res: Resource) -> list[str]:
    conn = Recorder()
    MOD.apply(conn, res, diff(MOD, res, None))
    assert len(conn.runs) == 1
    return conn.runs[0][0]


# -- argv building -------------------------------------------------------------------------

HOSTILE = "a; rm -rf /tmp/x $(id) `id` | cat > /etc/passwd"


@pytest.mark.parametrize("fields,argv", [
    ({"argv": ["echo", HOSTILE]}, ["echo", HOSTILE]),
    ({"cmd": "echo 'a b' c"}, ["echo", "a b", "c"]),
    ({"cmd": f"echo {HOSTILE}"},  # split into words, none of them run by a shell
     ["echo", "a;", "rm", "-rf", "/tmp/x", "$(id)", "`id`", "|", "cat", ">", "/etc/passwd"]),
    ({"cmd": "echo $HOME | wc", "shell": True}, ["sh", "-c", "echo $HOME | wc"]),
    ({"argv": ["make", "-j2"], "chdir": "/srv/a b"},
     ["sh", "-c", CHDIR_SCRIPT, "sh", "/srv/a b", "make", "-j2"]),
    ({"argv": ["make"], "env": {"A": "x y", "B_2": 8080, "C": True}},
     ["env", "--", "A=x y", "B_2=8080", "C=true", "make"]),
    ({"argv": ["make"], "env": {"A": "1"}, "chdir": "/srv"},
     ["env", "--", "A=1", "sh", "-c", CHDIR_SCRIPT, "sh", "/srv", "make"]),
])
def test_apply_argv(fields, argv):
    assert run_argv(build(**fields)) == argv


def test_chdir_script_is_fixed_text():
    # the one script used takes the directory as $1: nothing user-given is code
    assert "$1" in CHDIR_SCRIPT and "/srv" not in CHDIR_SCRIPT


@pytest.mark.parametrize("fields,field,message", [
    ({}, "argv", "exactly one of"),
    ({"argv": ["a"], "cmd": "a"}, "cmd", "exactly one of"),
    ({"argv": ["a"], "shell": True}, "shell", "goes with cmd"),
    ({"cmd": "echo 'unbalanced"}, "cmd", "cannot split"),
    ({"cmd": "   "}, "cmd", "is empty"),
    ({"cmd": "A=1 make", "env": {"B": "2"}}, "cmd", "assignment"),
    ({"argv": ["a"], "chdir": "rel"}, "chdir", "absolute"),
    ({"argv": ["a"], "creates": "rel"}, "creates", "absolute"),
])
def test_spec_errors(fields, field, message):
    with pytest.raises(SpecError) as err:
        build(**fields)
    assert err.value.field == f"resources[0].command.{field}"
    assert message in err.value.message


@pytest.mark.parametrize("fields", [
    {"argv": []}, {"argv": "echo"}, {"env": {"A-B": "1"}, "argv": ["x"]},
    {"env": {"A;rm": "1"}, "argv": ["x"]}, {"env": {"A\n": "1"}, "argv": ["x"]},
])
def test_schema_errors(fields):
    with pytest.raises(ValidationFailure):
        build(**fields)


def test_relative_creates_is_under_chdir():
    assert build(argv=["x"], chdir="/srv", creates="out/../done").fields["creates"] == "/srv/done"


# -- guards -------------------------------------------------------------------------------

def test_probes():
    res = build(argv=["x"], creates="/srv/done", unless="test -f '/srv/a b'", env={"A": "1"})
    assert [p.argv for p in MOD.probes(res)] == [
        ("test", "-e", "/srv/done"),
        ("env", "--", "A=1", "test", "-f", "/srv/a b")]
    assert MOD.probes(build(argv=["x"])) == []
    shell = build(cmd="x", shell=True, unless="grep -q y /f || false")
    assert [p.argv for p in MOD.probes(shell)] == [("sh", "-c", "grep -q y /f || false")]
    listed = build(argv=["x"], unless=["pgrep", "-x", "svc"], chdir="/srv")
    assert [p.argv for p in MOD.probes(listed)] == [
        ("sh", "-c", CHDIR_SCRIPT, "sh", "/srv", "pgrep", "-x", "svc")]


PLANS = [
    # (fields, probe results, observed, action)
    ({}, [], None, Action.CREATE),
    ({"creates": "/d"}, [r(1)], None, Action.CREATE),
    ({"creates": "/d"}, [r(0)], {"name": "job", "guard": "/d exists"}, Action.NOOP),
    ({"unless": "true"}, [r(1)], None, Action.CREATE),
    ({"unless": "true"}, [r(127)], None, Action.CREATE),
    ({"unless": "true"}, [r(0)], {"name": "job", "guard": "unless succeeded"}, Action.NOOP),
    ({"creates": "/d", "unless": "true"}, [r(1), r(0)],
     {"name": "job", "guard": "unless succeeded"}, Action.NOOP),
    ({"creates": "/d", "unless": "true"}, [r(1), r(1)], None, Action.CREATE),
]


@pytest.mark.parametrize("fields,results,observed,action", PLANS)
def test_parse_and_plan(fields, results, observed, action):
    res = build(argv=["x"], **fields)
    got = MOD.parse(res, results)
    assert got == observed
    assert diff(MOD, res, got).action is action


def test_notes_and_convergence():
    unguarded = build(argv=["x"])
    change = diff(MOD, unguarded, None)
    assert change.notes == ["may change the host", "runs on every apply (no creates/unless)"]
    assert MOD.converges(unguarded.fields) is False
    guarded = build(argv=["x"], creates="/d")
    assert diff(MOD, guarded, None).notes == ["may change the host"]
    assert MOD.converges(guarded.fields) is True


# -- running ------------------------------------------------------------------------------

def test_failure_carries_the_stderr_tail():
    res = build(argv=["make", "all"])
    err = "".join(f"line {i}\n" for i in range(50)) + "fatal: it broke\n"
    with pytest.raises(CommandFailed) as exc:
        MOD.apply(Recorder(r(2, err=err)), res, diff(MOD, res, None))
    assert exc.value.rc == 2 and exc.value.argv == ["make", "all"]
    assert str(exc.value).endswith("exited 2: fatal: it broke")
    assert exc.value.stderr.splitlines()[-1] == "fatal: it broke"
    assert len(exc.value.stderr.splitlines()) == 20


def test_failure_falls_back_to_stdout():
    res = build(argv=["x"])
    with pytest.raises(CommandFailed, match="oops on stdout"):
        MOD.apply(Recorder(r(1, out="oops on stdout\n")), res, diff(MOD, res, None))


def test_timeout_is_passed():
    res = build(argv=["x"], timeout=5)
    conn = Recorder()
    MOD.apply(conn, res, diff(MOD, res, None))
    assert conn.runs == [(["x"], 5.0)]


def test_secrets_run_but_never_show():
    res = build(argv=["login", Secret("s3cr3t-token")], env={"TOKEN": Secret("env-s3cr3t")})
    assert run_argv(res) == ["env", "--", "TOKEN=env-s3cr3t", "login", "s3cr3t-token"]
    doc = repr(change_to_dict(diff(MOD, res, None)))
    assert "s3cr3t" not in doc
    with pytest.raises(CommandFailed) as exc:
        MOD.apply(Recorder(r(1, err="denied")), res, diff(MOD, res, None))
    assert "s3cr3t" not in str(exc.value)


def test_secret_cmd_is_split_into_secret_words():
    res = build(cmd=Secret("login --token abc123"))
    assert all(isinstance(w, Secret) for w in res.fields["argv"])
    assert run_argv(res) == ["login", "--token", "abc123"]
