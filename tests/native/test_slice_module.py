"""modules/slice.py: the `slice` resource kind against a fake cgroup v2 tree
and the real cgroup v1, through the helper and through the plain fallback;
its ownership marks and prune through the engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import modules.slice as slice_mod
from modules.slice import FALLBACK_NOTE, UNMARKED_NOTE, SliceModule
from provisioner.engine.executor import apply_host
from provisioner.engine.observe import observe
from provisioner.engine.prune import PRUNE_REASON, prune_changes
from provisioner.engine.runner import plan_changes, with_pruned
from provisioner.errors import HostError
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource
from tests.fakes import SubprocessConnection

CGROUP = Path("/sys/fs/cgroup")


class LocalConnection(SubprocessConnection):
    """Runs argv locally with its own HOME and cgroup root; records them."""

    def __init__(self, home: Path, cgroup_root: Path | None = None,
                 run_dir: Path | None = None):
        env = {**os.environ, "HOME": str(home)}
        env.pop("PROVISION_CGROUP_ROOT", None)
        if cgroup_root is not None:
            env["PROVISION_CGROUP_ROOT"] = str(cgroup_root)
        super().__init__(env)
        # the ownership marks: beside the fake tree, never the host's /run/provision
        base = cgroup_root.parent if cgroup_root is not None else home
        self.vars = {"provision_run_dir": str(run_dir or base / "run")}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One HOME per module: the helper compiles once, later connections find it."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(params=["helper", "fallback"])
def mode(request, monkeypatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(slice_mod, "ensure_helper", lambda conn: None)
    return request.param


MOD = SliceModule()


def resource(name: str, owner: str = "", **fields) -> Resource:
    desired = MOD.normalize({"name": name, **fields}, base_dir=".")
    return Resource(
        host="local", kind="slice", name=name, fields=desired, origin=Origin("test.yml", 1),
        owner=owner,
    )


# -- pure parts -------------------------------------------------------------------------


def test_memory_sizes_are_normalised():
    for given, want in (
        (123 << 20, 123 << 20),
        ("4GiB", 4 << 30),
        ("512M", 512 << 20),
        ("1.5G", 3 << 29),
        ("1GB", 10**9),
    ):
        assert MOD.normalize({"name": "a", "memory": given}, base_dir=".")["memory"] == want
    for bad in ("lots", "-1", "1X", True):
        with pytest.raises(ValueError):
            MOD.normalize({"name": "a", "memory": bad}, base_dir=".")


def test_normalize_and_compare():
    desired = MOD.normalize(
        {"name": "a", "cpus": 2, "memory": "100M", "pids": "10", "cpuset": "0,1"}, base_dir="."
    )
    assert desired == {
        "name": "a",
        "cpus": 2.0,
        "memory": 100 << 20,
        "pids": 10,
        "cpuset": "0,1",
        "state": "present",
        "marked": True,
    }
    observed = {
        "name": "a",
        "cpus": 2.0,
        "memory": 100 << 20,
        "pids": 10,
        "cpuset": "0-1",
        "members": 3,
        "state": "present",
        "owner": "site",
        "marked": True,
    }
    assert MOD.compare(desired, observed) == []
    # any spec's mark will do: a slice two specs declare does not change hands
    assert MOD.compare(desired, {**observed, "owner": "other"}) == []
    # no mark: an update that only writes it, and the plan says why
    unmarked = {**observed, "owner": None, "marked": False}
    assert MOD.compare(desired, unmarked) == ["marked"]
    assert MOD.notes(desired, unmarked, ["marked"]) == [slice_mod.UNMARKED_NOTE]
    assert MOD.notes(desired, None, list(desired)) == []  # a create needs no such note
    # kernels keep whole pages of a memory limit
    odd = MOD.normalize({"name": "a", "memory": 100_000_001}, base_dir=".")
    assert MOD.compare(odd, {"memory": 100_000_001 // 4096 * 4096, "marked": True}) == []
    assert MOD.compare(odd, {"memory": "max", "marked": True}) == ["memory"]
    changed = MOD.compare(desired, {**observed, "cpus": "max", "cpuset": "0-3", "pids": "max"})
    assert changed == ["cpus", "pids", "cpuset"]
    assert MOD.wants_absent({"name": "a", "state": "absent"})
    assert MOD.notes({"state": "absent"}, {"members": 2, "_via": "cgroupfs"}, []) == [
        FALLBACK_NOTE,
        "slice has 2 member process(es): removing it will fail",
    ]


def test_schema_is_declared():
    assert MOD.kind == "slice" and MOD.uses_api
    assert set(MOD.schema) == {"name", "cpus", "memory", "pids", "cpuset", "state"}


# -- fake cgroup v2 tree ----------------------------------------------------------------


def test_v2_read_apply_converge(home, v2_root, mode, helper_bin):
    conn = LocalConnection(home, v2_root)
    web = resource("web", cpus=1.5, memory="512M", pids=64, cpuset="0-1")
    gone = resource("gone", cpus=1)
    observed = MOD.read_many(conn, [web, gone])
    assert observed[gone.address] is None
    before = observed[web.address]
    assert before["cpus"] == "max" and before["memory"] == "max" and before["pids"] == "max"
    assert before["cgroup_version"] == 2 and before["members"] == 0
    assert before["_via"] == ("helper" if mode == "helper" else "cgroupfs")
    assert before["owner"] is None and before["marked"] is False
    assert MOD.compare(web.fields, before) == ["cpus", "memory", "pids", "cpuset", "marked"]
    if mode == "fallback":
        assert FALLBACK_NOTE in MOD.notes(web.fields, before, [])
        assert all(argv[0] == "sh" for argv in conn.runs)  # plain cat, no helper

    MOD.apply(conn, web, None)
    d = v2_root / "provision" / "web"
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert (d / "memory.max").read_text() == str(512 << 20)
    assert (d / "pids.max").read_text() == "64"
    assert (d / "cpuset.cpus").read_text() == "0-1"
    after = MOD.read_many(conn, [web])[web.address]
    assert MOD.compare(web.fields, after) == []
    assert after["cpus"] == 1.5
    assert after["owner"] == "provision"  # a resource without an owner: the default mark


def test_v2_reads_every_slice_in_one_helper_call(home, v2_root, helper_bin):
    conn = LocalConnection(home, v2_root)
    resources = [resource("web"), resource("db"), resource("x"), resource("y")]
    MOD.read_many(conn, resources)  # installs or finds the helper
    conn.runs.clear()
    observed = MOD.read_many(conn, resources)
    # cgroups and ownership marks in one command, which runs the helper
    assert len(conn.runs) == 1
    argv = conn.runs[0]
    assert argv[:2] == ["sh", "-c"] and argv[4].endswith("/provision-helper")
    assert argv[-4:] == ["web", "db", "x", "y"]
    assert observed[resources[0].address]["_via"] == "helper"
    assert observed[resources[2].address] is None


def test_v2_absent_with_members_is_an_error(home, v2_root, mode, helper_bin):
    conn = LocalConnection(home, v2_root)
    (v2_root / "provision" / "db" / "cgroup.procs").write_text("4321\n")
    db = resource("db", state="absent")
    observed = MOD.read_many(conn, [db])[db.address]
    assert observed["members"] == 1
    assert MOD.notes(db.fields, observed, [])[-1].startswith("slice has 1 member")
    with pytest.raises(HostError, match="member"):
        MOD.apply(conn, db, None)
    assert (v2_root / "provision" / "db").is_dir()


def test_v2_absent_removes_via_helper(home, v2_root, helper_bin):
    conn = LocalConnection(home, v2_root)
    db = resource("db", state="absent")
    MOD.apply(conn, db, None)
    assert not (v2_root / "provision" / "db").exists()
    assert MOD.read_many(conn, [db])[db.address] is None


def test_v2_missing_controller_is_named(home, tmp_path, make_v2, mode, helper_bin):
    root = make_v2(tmp_path / "cg", controllers="cpu pids", slices=("provision/a",))
    conn = LocalConnection(home, root)
    with pytest.raises(HostError, match="memory"):
        MOD.apply(conn, resource("a", memory="1G"), None)


# -- real cgroup v1 ----------------------------------------------------------------------------


def test_v1_roundtrip(home, v1_slice, mode, helper_bin):
    name = v1_slice.split("/", 1)[1]
    conn = LocalConnection(home)
    res = resource(name, cpus=0.5, memory="64M", pids=20, cpuset="0")
    assert MOD.read_many(conn, [res])[res.address] is None
    MOD.apply(conn, res, None)
    assert (CGROUP / "cpu" / v1_slice / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (CGROUP / "memory" / v1_slice / "memory.limit_in_bytes").read_text().strip() == str(
        64 << 20
    )
    assert (CGROUP / "pids" / v1_slice / "pids.max").read_text().strip() == "20"
    assert (CGROUP / "cpuset" / v1_slice / "cpuset.mems").read_text().strip() != ""
    observed = MOD.read_many(conn, [res])[res.address]
    assert observed["cgroup_version"] == 1
    assert MOD.compare(res.fields, observed) == []
    assert _marks(conn)[name] == "provision"
    assert MOD.list_owned(conn, "provision")[name] == observed

    # members block deletion
    proc = subprocess.Popen(["sleep", "60"])
    try:
        (CGROUP / "memory" / v1_slice / "cgroup.procs").write_text(str(proc.pid))
        gone = resource(name, state="absent")
        assert MOD.read_many(conn, [gone])[gone.address]["members"] == 1
        with pytest.raises(HostError, match="member"):
            MOD.apply(conn, gone, None)
    finally:
        proc.kill()
        proc.wait()
    assert _marks(conn)[name] == "provision"  # the refused delete kept the mark
    MOD.apply(conn, gone, None)
    assert MOD.read_many(conn, [gone])[gone.address] is None
    assert name not in _marks(conn) and name not in MOD.list_owned(conn, "provision")
    for c in ("cpu", "memory", "pids", "cpuset"):
        assert not (CGROUP / c / v1_slice).exists()


def test_schema_validates_through_the_core():
    from provisioner.spec.schema import ValidationFailure, validate

    fields = validate(
        {"name": "tenant-a", "cpus": "1.5", "memory": "4GiB", "pids": "512", "cpuset": "0-3"},
        MOD.schema,
    )
    assert MOD.normalize(fields, base_dir=".") == {
        "name": "tenant-a",
        "cpus": 1.5,
        "memory": 4 << 30,
        "pids": 512,
        "cpuset": "0-3",
        "state": "present",
        "marked": True,
    }
    for bad in (
        {"name": "../x"},
        {"name": "a/b"},
        {"name": "a", "cpus": 0},
        {"name": "a", "memory": "lots"},
        {"name": "a", "cpuset": "all"},
        {"name": "a", "state": "gone"},
    ):
        with pytest.raises(ValidationFailure):
            validate(bad, MOD.schema)


# -- ownership marks ---------------------------------------------------------------------------


def _marks(conn: LocalConnection) -> dict[str, str]:
    """slice name -> owner, from the mark files."""
    d = Path(conn.vars["provision_run_dir"]) / "slices"
    if not d.is_dir():
        return {}
    return {p.name[: -len(".owner")]: json.loads(p.read_text())["owner"]
            for p in d.glob("*.owner")}


def test_v2_declared_slices_get_marked_and_list_owned_reads_them(home, v2_root, mode,
                                                                 helper_bin):
    conn = LocalConnection(home, v2_root)
    web = resource("web", owner="site", pids=32)
    db = resource("db", owner="site")
    # both cgroups exist without a mark (made by hand): none is owned yet, and
    # declaring them plans updates that say they will be marked
    observed = MOD.read_many(conn, [web, db])
    assert MOD.list_owned(conn, "site") == {}
    web_change = diff(MOD, web, observed[web.address])
    assert web_change.action is Action.UPDATE
    assert web_change.changed_fields == ["pids", "marked"]
    assert UNMARKED_NOTE in web_change.notes
    db_change = diff(MOD, db, observed[db.address])
    assert db_change.action is Action.UPDATE and db_change.changed_fields == ["marked"]

    conn.runs.clear()
    MOD.apply(conn, db, db_change)
    # only the mark was missing: one command, the mark script, no cgroup write
    assert [argv[2] for argv in conn.runs] == [slice_mod._MARK_SCRIPT]
    MOD.apply(conn, web, web_change)
    assert (v2_root / "provision" / "web" / "pids.max").read_text().strip() == "32"
    assert _marks(conn) == {"web": "site", "db": "site"}

    again = MOD.read_many(conn, [web, db])
    assert [diff(MOD, r, again[r.address]).action for r in (web, db)] == [Action.NOOP] * 2
    conn.runs.clear()
    owned = MOD.list_owned(conn, "site")
    assert len(conn.runs) == 1  # prune's read: one command
    # the very state read_many gives: a saved plan's prune delete re-reads equal
    assert owned == {"web": again[web.address], "db": again[db.address]}
    assert owned["web"]["owner"] == "site" and owned["web"]["marked"] is True
    assert MOD.list_owned(conn, "other") == {}


def test_v2_prune_deletes_only_owned_slices_that_left_the_spec(home, tmp_path, make_v2,
                                                              helper_bin):
    root = make_v2(tmp_path / "cg", slices=tuple(
        f"provision/{n}" for n in ("keep", "gone", "theirs", "byhand")))
    conn = LocalConnection(home, root)
    for res in (resource("keep", owner="site"), resource("gone", owner="site"),
                resource("theirs", owner="other")):
        MOD.apply(conn, res, None)
    assert _marks(conn) == {"keep": "site", "gone": "site", "theirs": "other"}

    declared = [resource("keep", owner="site")]  # "gone" left the spec
    addresses = {r.address for r in declared}
    changes = plan_changes(declared, observe(conn, declared))
    changes += prune_changes(conn, "local", [("slice", "site")], addresses)
    moving = [(c.name, c.action, c.reason) for c in changes if c.action.changes]
    assert moving == [("gone", Action.DELETE, PRUNE_REASON)]

    report = apply_host(conn, with_pruned(declared, changes, "site"), changes)
    assert report.status == "changed", report
    assert not (root / "provision" / "gone").exists()
    assert _marks(conn) == {"keep": "site", "theirs": "other"}
    for name in ("keep", "theirs", "byhand"):  # never another owner's, never unmarked
        assert (root / "provision" / name).is_dir()

    changes = plan_changes(declared, observe(conn, declared))
    changes += prune_changes(conn, "local", [("slice", "site")], addresses)
    assert [c.action for c in changes] == [Action.NOOP]


def test_a_mark_whose_cgroup_is_gone_is_never_owned(home, tmp_path, make_v2, mode, helper_bin):
    root = make_v2(tmp_path / "cg", slices=("provision/a", "provision/b"))
    conn = LocalConnection(home, root)
    MOD.apply(conn, resource("a", owner="site"), None)
    MOD.apply(conn, resource("b", owner="site"), None)
    shutil.rmtree(root / "provision" / "a")  # removed by hand
    assert set(MOD.list_owned(conn, "site")) == {"b"}
    assert set(_marks(conn)) == {"a", "b"}  # stale until the next mark write
    MOD.apply(conn, resource("b", owner="site"), None)
    assert _marks(conn) == {"b": "site"}
    # a cgroup made again under the old name is someone else's: not owned
    make_v2(root, slices=("provision/a",))
    assert set(MOD.list_owned(conn, "site")) == {"b"}
    a = resource("a", owner="site")
    assert MOD.read_many(conn, [a])[a.address]["marked"] is False


def test_another_specs_mark_is_kept_when_limits_change(home, v2_root, mode, helper_bin):
    conn = LocalConnection(home, v2_root)
    MOD.apply(conn, resource("web", owner="other"), None)
    web = resource("web", owner="site", pids=7)
    change = diff(MOD, web, MOD.read_many(conn, [web])[web.address])
    assert change.action is Action.UPDATE and change.changed_fields == ["pids"]
    assert UNMARKED_NOTE not in change.notes
    MOD.apply(conn, web, change)
    assert (v2_root / "provision" / "web" / "pids.max").read_text().strip() == "7"
    assert _marks(conn) == {"web": "other"}
    assert set(MOD.list_owned(conn, "other")) == {"web"}
    assert MOD.list_owned(conn, "site") == {}


def test_odd_marks_and_owners(home, v2_root, mode, helper_bin, tmp_path):
    conn = LocalConnection(home, v2_root)
    marks = Path(conn.vars["provision_run_dir"]) / "slices"
    marks.mkdir(parents=True)
    good = json.dumps({"owner": "site"})
    # names the schema refuses (nothing hidden, no '.', no blanks) are not slices
    for odd in (".hidden", ".", "..", "a b", "x" * 129):
        (marks / f"{odd}.owner").write_text(good + "\n")
    (marks / "web.owner").write_text("not json\n")  # unreadable: unmarked
    (marks / "db.owner").write_text(good)  # no final newline
    assert set(MOD.list_owned(conn, "site")) == {"db"}
    web = resource("web", owner="site")
    assert MOD.read_many(conn, [web])[web.address]["marked"] is False

    # an owner is data, never code: quotes, $(...), newlines travel as they are
    pwned = tmp_path / "pwned"
    owner = f'we"ird \'$(touch {pwned})\' `touch {pwned}`\n; echo hi'
    hostile = resource("web", owner=owner)
    MOD.apply(conn, hostile, diff(MOD, hostile, MOD.read_many(conn, [hostile])[hostile.address]))
    assert not pwned.exists()
    assert _marks(conn)["web"] == owner
    assert set(MOD.list_owned(conn, owner)) == {"web"}


def test_run_dir_must_be_absolute(home, v2_root):
    conn = LocalConnection(home, v2_root, run_dir=Path("relative/run"))
    web = resource("web")
    with pytest.raises(HostError, match="provision_run_dir must be an absolute path"):
        MOD.read_many(conn, [web])
