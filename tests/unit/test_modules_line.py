"""`line`: pure editing, parse of probe output, plan decisions, apply argv."""

from __future__ import annotations

from typing import Any

import pytest

from modules import get_module
from modules.line import edit
from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError, SpecError
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource
from provisioner.secret import Secret
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import ValidationFailure, validate

MOD = get_module("line")


def build(**fields: Any) -> Resource:
    ctx = SpecContext(file="/spec/site.yml", line=3, field_prefix="resources[0].line",
                      field_lines={}, variables={}, host="h1")
    desired = MOD.normalize(validate(fields, MOD.schema), ctx)
    return Resource(host="h1", kind="line", name=desired["name"], fields=desired,
                    origin=Origin("/spec/site.yml", 3))


def ok(out: bytes | str = b"", err: bytes = b"") -> Result:
    return Result(0, out.encode() if isinstance(out, str) else out, err)


def fail(rc: int = 1, err: bytes = b"no such file") -> Result:
    return Result(rc, b"", err)


def results_for(content: str | None) -> list[Result]:
    if content is None:
        return [fail(), fail()]
    kind = "regular file" if content else "regular empty file"
    return [ok(kind + "\n"), ok(content)]


class Recorder(Connection):
    """Answers commands from a table; records every run and put."""

    host = "h1"

    def __init__(self, files: dict[str, tuple[bytes, str]] | None = None,
                 links: dict[str, str] | None = None) -> None:
        self.files = dict(files or {})  # path -> (content, "mode|uid|gid")
        self.links = dict(links or {})
        self.runs: list[list[str]] = []
        self.puts: list[tuple[str, bytes, int | None]] = []

    def run(self, argv, *, stdin=None, sudo=None, timeout=None) -> Result:
        argv = list(argv)
        self.runs.append(argv)
        path = argv[-1]
        if argv[0] == "readlink":
            return ok(self.links.get(path, path) + "\n")
        if argv[0] == "stat":
            if path not in self.files:
                return fail()
            return ok(f"regular file|{self.files[path][1]}\n")
        if argv[0] == "cat":
            return ok(self.files[path][0])
        return ok()

    def put(self, path, data, *, mode=None) -> None:
        self.puts.append((path, data, mode))

    def get(self, path) -> bytes:
        raise AssertionError("line reads through cat (get ignores become over SSH)")


# -- the pure edit ---------------------------------------------------------------

EDITS = [
    # (content, line, regexp, state, expected)
    ("a\nb\n", "c", None, "present", "a\nb\nc\n"),
    ("a\nb", "c", None, "present", "a\nb\nc"),  # no final newline stays so
    ("", "c", None, "present", "c\n"),
    ("a\nc\nb\n", "c", None, "present", "a\nc\nb\n"),  # already there
    ("a\r\nb\r\n", "c", None, "present", "a\r\nb\r\nc\r\n"),  # CRLF file
    ("Port 22\nX\n", "Port 2222", r"^#?Port\s", "present", "Port 2222\nX\n"),
    ("#Port 22\nPort 23\nX\n", "Port 2", r"^#?Port\s", "present", "#Port 22\nPort 2\nX\n"),
    ("X\n", "Port 2", r"^Port\s", "present", "X\nPort 2\n"),  # no match: appended
    ("Port 2\n", "Port 2", r"^NoMatch", "present", "Port 2\n"),  # exact line wins
    ("a\r\nPort 1\r\n", "Port 2", "^Port", "present", "a\r\nPort 2\r\n"),  # keeps CRLF
    ("a\nb\na\n", "a", None, "absent", "b\n"),
    ("a\nb\nc", "c", None, "absent", "a\nb"),  # removed the open last line
    ("x=1\ny=2\nx=3\n", None, r"^x=", "absent", "y=2\n"),
    ("a\n", "z", None, "absent", "a\n"),
    ("caf\xe9 \udcff\nb\n", "b", None, "absent", "caf\xe9 \udcff\n"),
]


@pytest.mark.parametrize("content,line,regexp,state,expected", EDITS)
def test_edit(content, line, regexp, state, expected):
    assert edit(content, line=line, regexp=regexp, state=state) == expected


@pytest.mark.parametrize("content,line,regexp,state,expected", EDITS)
def test_edit_is_idempotent(content, line, regexp, state, expected):
    once = edit(content, line=line, regexp=regexp, state=state)
    assert edit(once, line=line, regexp=regexp, state=state) == once


# -- spec ---------------------------------------------------------------------------

def test_name_is_path_and_regexp_or_line():
    assert build(path="/etc/x", line="a=1").name == "/etc/x:a=1"
    assert build(path="/etc//x", line="a=1", regexp="^a=").name == "/etc/x:^a="
    assert build(path="/etc/x", line="a", name="mine").name == "mine"


@pytest.mark.parametrize("fields,field,message", [
    ({"path": "etc/x", "line": "a"}, "path", "absolute"),
    ({"path": "/etc/x"}, "line", "needs `line`"),
    ({"path": "/etc/x", "state": "absent"}, "line", "line` or `regexp"),
    ({"path": "/etc/x", "line": "a\nb"}, "line", "single line"),
    ({"path": "/etc/x", "line": "a", "regexp": "("}, "regexp", "regular expression"),
])
def test_spec_errors(fields, field, message):
    with pytest.raises(SpecError) as err:
        build(**fields)
    assert err.value.field == f"resources[0].line.{field}"
    assert message in err.value.message


def test_unknown_state_rejected():
    with pytest.raises(ValidationFailure):
        build(path="/etc/x", line="a", state="latest")


def test_secret_line_needs_a_regexp_to_be_named():
    with pytest.raises(SpecError, match="regexp"):
        build(path="/etc/x", line=Secret("pw=hunter22"))
    res = build(path="/etc/x", line=Secret("pw=hunter22"), regexp="^pw=")
    assert "hunter22" not in res.name


# -- parse + diff -------------------------------------------------------------------

PLANS = [
    # (fields, file content or None, observed, action, changed)
    ({"line": "a"}, None, None, Action.CREATE, None),
    ({"line": "a"}, "x\n", None, Action.CREATE, None),
    ({"line": "a"}, "x\na\n", {"line": "a", "count": 1}, Action.NOOP, []),
    ({"line": "P 2", "regexp": "^P "}, "P 1\n", {"line": "P 1", "count": 1},
     Action.UPDATE, ["line"]),
    ({"line": "P 2", "regexp": "^P "}, "P 1\nP 2\n", {"line": "P 2", "count": 2},
     Action.NOOP, []),
    ({"line": "P 2", "regexp": "^Q"}, "P 2\n", {"line": "P 2", "count": 1}, Action.NOOP, []),
    ({"line": "a", "state": "absent"}, None, None, Action.NOOP, []),
    ({"line": "a", "state": "absent"}, "b\n", None, Action.NOOP, []),
    ({"line": "a", "state": "absent"}, "a\nb\na\n", {"line": "a", "count": 2},
     Action.DELETE, []),
    ({"regexp": "^a", "state": "absent"}, "ab\nb\n", {"line": "ab", "count": 1},
     Action.DELETE, []),
]


@pytest.mark.parametrize("fields,content,observed,action,changed", PLANS)
def test_parse_and_plan(fields, content, observed, action, changed):
    res = build(path="/etc/x", **fields)
    got = MOD.parse(res, results_for(content))
    if observed is None:
        assert got is None
    else:
        assert got == {"name": res.name, "path": "/etc/x", **observed}
    change = diff(MOD, res, got)
    assert change.action is action
    if changed is not None:
        assert change.changed_fields == changed


def test_probes_read_whole_file_with_a_limit():
    res = build(path="/etc/x", line="a")
    argvs = [p.argv for p in MOD.probes(res)]
    assert argvs[0] == ("stat", "-L", "-c", "%F", "--", "/etc/x")
    assert argvs[1][0] == "head" and argvs[1][-2:] == ("--", "/etc/x")


def test_parse_refuses_a_directory():
    res = build(path="/etc/x", line="a")
    with pytest.raises(ValueError, match="directory"):
        MOD.parse(res, [ok("directory\n"), fail()])


def test_parse_refuses_a_huge_file():
    from modules.line import MAX_FILE_SIZE

    res = build(path="/etc/x", line="a")
    with pytest.raises(ValueError, match="bigger"):
        MOD.parse(res, [ok("regular file\n"), ok(b"x" * (MAX_FILE_SIZE + 1))])


def test_plan_notes_missing_file_without_create():
    change = diff(MOD, build(path="/etc/x", line="a"), None)
    assert any("apply fails" in n for n in change.notes)
    change = diff(MOD, build(path="/etc/x", line="a", create=True), None)
    assert any("created if missing" in n for n in change.notes)


def test_secret_line_is_masked_in_the_plan():
    res = build(path="/etc/x", line=Secret("pw=new"), regexp="^pw=")
    change = diff(MOD, res, MOD.parse(res, results_for("pw=old\n")))
    assert change.action is Action.UPDATE
    assert isinstance(change.before["line"], Secret)  # the old value is as secret


# -- apply ---------------------------------------------------------------------------

def plan_for(res: Resource, content: str | None):
    return diff(MOD, res, MOD.parse(res, results_for(content)))


def test_apply_replaces_keeping_mode_and_owner():
    res = build(path="/etc/x", line="P 2", regexp="^P ")
    conn = Recorder({"/etc/x": (b"a\nP 1\n", "640|0|42")})
    MOD.apply(conn, res, plan_for(res, "a\nP 1\n"))
    assert conn.runs == [["readlink", "-f", "--", "/etc/x"],
                         ["stat", "-c", "%F|%a|%u|%g", "--", "/etc/x"],
                         ["cat", "--", "/etc/x"],
                         ["chown", "--", "0:42", "/etc/x"]]
    assert conn.puts == [("/etc/x", b"a\nP 2\n", 0o640)]


def test_apply_follows_a_symlink():
    res = build(path="/etc/x", line="b")
    conn = Recorder({"/srv/real": (b"a\n", "644|0|0")}, links={"/etc/x": "/srv/real"})
    MOD.apply(conn, res, plan_for(res, "a\n"))
    assert conn.puts == [("/srv/real", b"a\nb\n", 0o644)]


def test_apply_missing_file_without_create_fails_clearly():
    res = build(path="/etc/x", line="a")
    conn = Recorder()
    with pytest.raises(HostError, match="create: true"):
        MOD.apply(conn, res, plan_for(res, None))
    assert conn.puts == []


def test_apply_creates_the_file_when_asked():
    res = build(path="/etc/x", line="a", create=True)
    conn = Recorder()
    MOD.apply(conn, res, plan_for(res, None))
    assert conn.puts == [("/etc/x", b"a\n", 0o644)]


def test_apply_removes_lines():
    res = build(path="/etc/x", regexp="^x", state="absent")
    conn = Recorder({"/etc/x": (b"x1\ny\nx2", "600|1000|1000")})
    MOD.apply(conn, res, plan_for(res, "x1\ny\nx2"))
    assert conn.puts == [("/etc/x", b"y", 0o600)]


def test_hostile_text_never_reaches_a_command():
    hostile = "a'; rm -rf /tmp/x; echo '$(id)`id`"
    res = build(path="/etc/x; rm -rf $(id)", line=hostile, regexp="^a'")
    conn = Recorder({"/etc/x; rm -rf $(id)": (b"a'old\n", "644|0|0")})
    MOD.apply(conn, res, plan_for(res, "a'old\n"))
    assert all(hostile not in arg for argv in conn.runs for arg in argv)
    for argv in conn.runs:  # the path comes after `--`: never an option
        assert argv[-1] == "/etc/x; rm -rf $(id)" and "--" in argv[:-1]
    assert conn.puts[0][1] == (hostile + "\n").encode()


def test_apply_secret_line_writes_the_value():
    res = build(path="/etc/x", line=Secret("pw=new"), regexp="^pw=")
    conn = Recorder({"/etc/x": (b"pw=old\n", "600|0|0")})
    MOD.apply(conn, res, plan_for(res, "pw=old\n"))
    assert conn.puts[0][1] == b"pw=new\n"
