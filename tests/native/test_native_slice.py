"""provision-helper slice: the v2 code path on a fake cgroup2 tree, and the
real cgroup v1 of this machine (limits enforced)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

CGROUP = Path("/sys/fs/cgroup")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


# -- v2, fake tree ----------------------------------------------------------------------


def test_v2_apply_show_rm(helper, v2_root):
    env = {"PROVISION_CGROUP_ROOT": str(v2_root)}
    run = helper("slice", "show", "provision/web", env=env)
    assert run.rc == 0
    assert run.data["version"] == 2 and run.data["exists"] is True
    assert run.data["limits"]["memory.max"] == "max"
    assert run.data["limits"]["cpus"] == "max"

    run = helper(
        "slice",
        "apply",
        "provision/web",
        "cpus=1.5",
        "cpu.weight=250",
        "memory.max=4GiB",
        "memory.high=3G",
        "pids.max=100",
        "cpuset.cpus=0-1",
        env=env,
    )
    assert run.rc == 0, run
    web = v2_root / "provision" / "web"
    assert (web / "cpu.max").read_text() == "150000 100000"
    assert (web / "cpu.weight").read_text() == "250"
    assert (web / "memory.max").read_text() == str(4 << 30)
    assert (web / "memory.high").read_text() == str(3 << 30)
    assert (web / "pids.max").read_text() == "100"
    assert (web / "cpuset.cpus").read_text() == "0-1"
    # controllers enabled top-down for the children
    for d in (v2_root, v2_root / "provision"):
        enabled = (d / "cgroup.subtree_control").read_text().split()
        assert {"+cpu", "+memory", "+pids", "+cpuset"} <= set(enabled)
    limits = run.data["limits"]
    assert run.data["applied"] == [
        "cpu.max",
        "cpu.weight",
        "memory.max",
        "memory.high",
        "pids.max",
        "cpuset.cpus",
    ]
    assert limits["cpus"] == 1.5
    assert limits["cpu.max"] == {"quota": 150000, "period": 100000}
    assert limits["memory.max"] == 4 << 30 and limits["pids.max"] == 100
    assert run.data["members"] == 0

    run = helper("slice", "apply", "provision/web", "cpu.max=max", "pids.max=max", env=env)
    assert run.rc == 0
    assert (web / "cpu.max").read_text() == "max"
    assert run.data["limits"]["pids.max"] == "max"

    run = helper("slice", "show", "provision/web", "provision/db", "provision/gone", env=env)
    assert run.rc == 0
    assert set(run.data["slices"]) == {"provision/web", "provision/db", "provision/gone"}
    assert run.data["slices"]["provision/gone"]["exists"] is False
    assert run.data["slices"]["provision/db"]["limits"]["cpu.weight"] == 100

    run = helper("slice", "rm", "provision/web", env=env)
    assert run.rc == 0 and run.data["removed"] is True
    assert not web.exists()
    run = helper("slice", "rm", "provision/web", env=env)
    assert run.rc == 0 and run.data["existed"] is False
    run = helper("slice", "show", "provision/web", env=env)
    assert run.rc == 0 and run.data["exists"] is False


def test_v2_members_block_rm(helper, v2_root):
    env = {"PROVISION_CGROUP_ROOT": str(v2_root)}
    (v2_root / "provision" / "db" / "cgroup.procs").write_text("1234\n5678\n")
    assert helper("slice", "show", "provision/db", env=env).data["members"] == 2
    run = helper("slice", "rm", "provision/db", env=env)
    assert run.rc == 1
    assert "member" in run.data["error"] and run.data["members"] == "2"
    assert (v2_root / "provision" / "db").is_dir()


def test_v2_missing_controller_is_named(helper, tmp_path, make_v2):
    root = make_v2(tmp_path / "cg", controllers="cpu pids", slices=("provision/a",))
    env = {"PROVISION_CGROUP_ROOT": str(root)}
    run = helper("slice", "apply", "provision/a", "memory.max=1G", env=env)
    assert run.rc == 1
    assert run.data["controller"] == "memory"
    assert "'memory'" in run.data["error"] and "not available" in run.data["error"]
    run = helper("slice", "apply", "provision/a", "cpuset.cpus=0", env=env)
    assert run.rc == 1 and run.data["controller"] == "cpuset"
    # controllers that are there work
    run = helper("slice", "apply", "provision/a", "cpus=0.25", "pids.max=5", env=env)
    assert run.rc == 0, run


def test_v2_controller_not_enabled_for_new_slice(helper, v2_root):
    # A plain tree cannot create interface files on mkdir as the kernel does:
    # the helper then reports the controller that is not enabled there.
    env = {"PROVISION_CGROUP_ROOT": str(v2_root)}
    run = helper("slice", "apply", "provision/new", "memory.max=64M", env=env)
    assert run.rc == 1
    assert run.data["controller"] == "memory" and "not enabled" in run.data["error"]
    assert (v2_root / "provision" / "new").is_dir()


def test_bad_slice_arguments(helper, v2_root):
    env = {"PROVISION_CGROUP_ROOT": str(v2_root)}
    for args in (
        ["slice"],
        ["slice", "apply"],
        ["slice", "frob", "x"],
        ["slice", "apply", "../up", "cpus=1"],
        ["slice", "apply", "/abs", "cpus=1"],
        ["slice", "apply", "a//b"],
        ["slice", "apply", "a/./b"],
        ["slice", "apply", "ok", "cpus"],
        ["slice", "apply", "ok", "cpus=lots"],
        ["slice", "apply", "ok", "cpus=0.001"],
        ["slice", "apply", "ok", "cpu.weight=0"],
        ["slice", "apply", "ok", "memory.max=1Q"],
        ["slice", "apply", "ok", "pids.max=-1"],
        ["slice", "apply", "ok", "cpuset.cpus=all"],
        ["slice", "apply", "ok", "swap=1"],
        ["slice", "rm", "a", "b"],
    ):
        run = helper(*args, env=env)
        assert run.rc == 2, (args, run)
    run = helper("slice", "apply", "ok", "io.max=1", env=env)
    assert "unknown limit 'io.max'" in run.data["error"]


def test_no_cgroup_filesystem(helper, tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "missing"):
        run = helper("slice", "show", "x", env={"PROVISION_CGROUP_ROOT": str(root)})
        assert run.rc == 1, run


# -- v1, the real thing ------------------------------------------------------------------------


def v1(ctrl: str, path: str, name: str) -> str:
    return (CGROUP / ctrl / path / name).read_text().strip()


def test_v1_apply_show_rm(helper, v1_slice):
    run = helper("slice", "show", v1_slice)
    assert run.rc == 0 and run.data == {"path": v1_slice, "version": 1, "exists": False}
    run = helper(
        "slice",
        "apply",
        v1_slice,
        "cpus=0.5",
        "cpu.weight=50",
        "memory.max=64M",
        "memory.high=32M",
        "pids.max=50",
        "cpuset.cpus=0",
    )
    assert run.rc == 0, run
    assert v1("cpu", v1_slice, "cpu.cfs_quota_us") == "50000"
    assert v1("cpu", v1_slice, "cpu.cfs_period_us") == "100000"
    assert v1("cpu", v1_slice, "cpu.shares") == "512"
    assert v1("memory", v1_slice, "memory.limit_in_bytes") == str(64 << 20)
    assert v1("memory", v1_slice, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert v1("pids", v1_slice, "pids.max") == "50"
    assert v1("cpuset", v1_slice, "cpuset.cpus") == "0"
    assert (
        v1("cpuset", v1_slice, "cpuset.mems")
        == (CGROUP / "cpuset" / "cpuset.mems").read_text().strip()
    )
    assert run.data["version"] == 1
    assert run.data["limits"] == {
        "cpu.max": {"quota": 50000, "period": 100000},
        "cpus": 0.5,
        "cpu.weight": 50,
        "memory.max": 64 << 20,
        "memory.high": 32 << 20,
        "pids.max": 50,
        "cpuset.cpus": "0",
    }
    assert sorted(run.data["controllers"]) == ["cpu", "cpuset", "memory", "pids"]

    run = helper("slice", "apply", v1_slice, "cpus=max", "memory.max=max", "pids.max=max")
    assert run.rc == 0
    assert v1("cpu", v1_slice, "cpu.cfs_quota_us") == "-1"
    assert run.data["limits"]["memory.max"] == "max"
    assert run.data["limits"]["cpus"] == "max" and run.data["limits"]["pids.max"] == "max"

    run = helper("slice", "rm", v1_slice)
    assert run.rc == 0 and sorted(run.data["hierarchies"]) >= ["cpu", "cpuset", "memory", "pids"]
    for c in ("cpu", "memory", "pids", "cpuset"):
        assert not (CGROUP / c / v1_slice).exists()


@pytest.mark.parametrize("weight", [1, 2, 33, 100, 150, 999, 5000, 10000])
def test_v1_weight_round_trips_through_shares(helper, v1_slice, weight):
    run = helper("slice", "apply", v1_slice, f"cpu.weight={weight}")
    assert run.rc == 0
    assert run.data["limits"]["cpu.weight"] == weight


def spawn_waiting(code: str) -> subprocess.Popen:
    """A python child that waits for a line on stdin before running code."""
    return subprocess.Popen(
        [PY, "-c", "import sys; sys.stdin.readline()\n" + code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def join(proc: subprocess.Popen, ctrl: str, path: str) -> None:
    (CGROUP / ctrl / path / "cgroup.procs").write_text(str(proc.pid))


def test_v1_memory_limit_is_enforced(helper, v1_slice):
    assert helper("slice", "apply", v1_slice, "memory.max=64M").rc == 0
    proc = spawn_waiting("b = b'x' * (512 << 20)\nprint('survived', flush=True)")
    try:
        join(proc, "memory", v1_slice)
        out, _ = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9, out  # OOM-killed
    assert "survived" not in out


def test_v1_pids_limit_is_enforced(helper, v1_slice):
    assert helper("slice", "apply", v1_slice, "pids.max=4").rc == 0
    code = (
        "import os, time\n"
        "kids, err = [], None\n"
        "for _ in range(10):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        err = e.errno\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "print(len(kids), err, flush=True)\n"
        "for k in kids:\n"
        "    os.kill(k, 9)\n"
        "    os.waitpid(k, 0)\n"
    )
    proc = spawn_waiting(code)
    try:
        join(proc, "pids", v1_slice)
        out, _ = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert out.split() == ["3", str(errno.EAGAIN)]  # itself plus 3 children


def test_v1_rm_refuses_while_members(helper, v1_slice):
    assert helper("slice", "apply", v1_slice, "pids.max=10").rc == 0
    proc = subprocess.Popen(["sleep", "60"])
    try:
        join(proc, "pids", v1_slice)
        assert helper("slice", "show", v1_slice).data["members"] == 1
        run = helper("slice", "rm", v1_slice)
        assert run.rc == 1
        assert "1 member process" in run.data["error"] and run.data["members"] == "1"
        assert (CGROUP / "pids" / v1_slice).is_dir()
    finally:
        proc.kill()
        proc.wait()
    run = helper("slice", "rm", v1_slice)
    assert run.rc == 0, run
    assert not (CGROUP / "pids" / v1_slice).exists()


def test_v1_nested_path_and_cpuset_inheritance(helper, v1_slice):
    nested = v1_slice + "/inner"
    run = helper("slice", "apply", nested, "pids.max=3")
    assert run.rc == 0, run
    for level in (v1_slice, nested):
        assert v1("cpuset", level, "cpuset.mems") != ""
        assert v1("cpuset", level, "cpuset.cpus") != ""
    run = helper("slice", "rm", v1_slice)  # removes the empty child too
    assert run.rc == 0, run
    assert not (CGROUP / "pids" / v1_slice).exists()
