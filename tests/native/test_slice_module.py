"""modules/slice.py: the `slice` resource kind against a fake cgroup v2 tree
and the real cgroup v1, through the helper and through the plain fallback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

import modules.slice as slice_mod
from modules.slice import FALLBACK_NOTE, SliceModule
from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError
from provisioner.resource import Origin, Resource

CGROUP = Path("/sys/fs/cgroup")


class LocalConnection(Connection):
    """A tiny fake Connection: runs argv locally with subprocess."""

    def __init__(self, home: Path, cgroup_root: Path | None = None):
        self.host = "local"
        self.env = {**os.environ, "HOME": str(home)}
        self.env.pop("PROVISION_CGROUP_ROOT", None)
        if cgroup_root is not None:
            self.env["PROVISION_CGROUP_ROOT"] = str(cgroup_root)
        self.runs: list[list[str]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        sudo: bool | None = None,
        timeout: float | None = None,
    ) -> Result:
        assert isinstance(argv, (list, tuple))
        self.runs.append(list(argv))
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, env=self.env, timeout=timeout
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def put(self, path: str, data: bytes, *, mode: int | None = None) -> None:
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(path + ".tmp", mode)
        os.replace(path + ".tmp", path)

    def get(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()


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


def resource(name: str, **fields) -> Resource:
    desired = MOD.normalize({"name": name, **fields}, base_dir=".")
    return Resource(
        host="local", kind="slice", name=name, fields=desired, origin=Origin("test.yml", 1)
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
    }
    observed = {
        "name": "a",
        "cpus": 2.0,
        "memory": 100 << 20,
        "pids": 10,
        "cpuset": "0-1",
        "members": 3,
        "state": "present",
    }
    assert MOD.compare(desired, observed) == []
    # kernels keep whole pages of a memory limit
    odd = MOD.normalize({"name": "a", "memory": 100_000_001}, base_dir=".")
    assert MOD.compare(odd, {"memory": 100_000_001 // 4096 * 4096}) == []
    assert MOD.compare(odd, {"memory": "max"}) == ["memory"]
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
    assert MOD.compare(web.fields, before) == ["cpus", "memory", "pids", "cpuset"]
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


def test_v2_reads_every_slice_in_one_helper_call(home, v2_root, helper_bin):
    conn = LocalConnection(home, v2_root)
    resources = [resource("web"), resource("db"), resource("x"), resource("y")]
    MOD.read_many(conn, resources)  # installs or finds the helper
    conn.runs.clear()
    MOD.read_many(conn, resources)
    assert len(conn.runs) == 1 and conn.runs[0][1:3] == ["slice", "show"]


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
    MOD.apply(conn, gone, None)
    assert MOD.read_many(conn, [gone])[gone.address] is None
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
