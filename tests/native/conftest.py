"""Fixtures for the native helper tests: the build, loop-mounted
filesystems, a fake cgroup v2 tree and slices on the real cgroup v1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.loopfs import MKFS, LoopFs

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "native"
HELPER = NATIVE / "build" / "provision-helper"
CGROUP = Path("/sys/fs/cgroup")
V1_CORE = ("cpu", "memory", "pids", "cpuset")

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mounts, cgroups)")
HAVE_V1 = (CGROUP / "memory" / "cgroup.procs").exists() and not (
    CGROUP / "cgroup.controllers"
).exists()
needs_v1 = pytest.mark.skipif(not (IS_ROOT and HAVE_V1), reason="needs root and cgroup v1")


@dataclass
class Run:
    rc: int
    data: dict[str, Any]
    stderr: str


@pytest.fixture(scope="session")
def helper_bin() -> Path:
    """Built once per session with `make -C native`."""
    proc = subprocess.run(["make", "-C", str(NATIVE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert HELPER.is_file()
    return HELPER


def run_helper(
    binary: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> Run:
    full_env = dict(os.environ)
    full_env.pop("PROVISION_CGROUP_ROOT", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    if proc.returncode != 0:
        assert "error" in data, data
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return Run(proc.returncode, data, proc.stderr)


@pytest.fixture
def helper(helper_bin):
    def call(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
        return run_helper(helper_bin, *args, env=env, timeout=timeout)

    return call


# -- loop-mounted filesystems ---------------------------------------------------


@contextlib.contextmanager
def loop_fs(base: Path, fstype: str, size: str = "1G") -> Iterator[Path]:
    if not shutil.which(MKFS[fstype][0]):
        pytest.skip(f"{MKFS[fstype][0]} not installed")
    with LoopFs(base, fstype, size) as fs:
        yield fs.mountpoint


@pytest.fixture(params=["xfs", "btrfs"])
def reflink_fs(request, tmp_path) -> Iterator[Path]:
    if not IS_ROOT:
        pytest.skip("needs root to mount")
    with loop_fs(tmp_path, request.param) as mnt:
        yield mnt


@pytest.fixture
def xfs_mount(tmp_path) -> Iterator[Path]:
    if not IS_ROOT:
        pytest.skip("needs root to mount")
    with loop_fs(tmp_path, "xfs") as mnt:
        yield mnt


@pytest.fixture
def mount_fs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """mount_fs("ext4") -> a fresh loop mount of that type (a key of MKFS in
    tests/harness/loopfs.py; one of each type per test), unmounted at the end
    of the test."""
    if not IS_ROOT:
        pytest.skip("needs root to mount")
    with contextlib.ExitStack() as stack:
        yield lambda fstype: stack.enter_context(loop_fs(tmp_path, fstype))


# -- a fake cgroup v2 tree --------------------------------------------------------

V2_CONTROLLERS = "cpuset cpu io memory pids"


def make_v2_tree(
    root: Path, controllers: str = V2_CONTROLLERS, slices: tuple[str, ...] = ()
) -> Path:
    """The root's interface files plus, for each slice path, the directories
    with the files the kernel would create (a plain tree cannot do that)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    for path in slices:
        d = root
        for part in path.split("/"):
            d = d / part
            d.mkdir(exist_ok=True)
            (d / "cgroup.controllers").write_text(controllers + "\n")
            for name in ("cgroup.subtree_control", "cgroup.procs"):
                if not (d / name).exists():
                    (d / name).write_text("")
        for name, value in (
            ("cpu.max", "max 100000"),
            ("cpu.weight", "100"),
            ("memory.max", "max"),
            ("memory.high", "max"),
            ("pids.max", "max"),
            ("cpuset.cpus", ""),
        ):
            (d / name).write_text(value + "\n")
    return root


@pytest.fixture
def make_v2():
    return make_v2_tree


@pytest.fixture
def v2_root(tmp_path) -> Path:
    return make_v2_tree(tmp_path / "cgroup2", slices=("provision/web", "provision/db"))


# -- slices on the real cgroup v1 --------------------------------------------------


@pytest.fixture(scope="session")
def _v1_parent() -> Iterator[None]:
    """Remove provision/ at the end only in the hierarchies where this
    session created it (other tests may share it), and only if empty."""
    before = {c: (CGROUP / c / "provision").exists() for c in V1_CORE}
    yield
    for c, existed in before.items():
        if not existed:
            with contextlib.suppress(OSError):
                (CGROUP / c / "provision").rmdir()


@pytest.fixture
def v1_slice(_v1_parent, helper_bin) -> Iterator[str]:
    """A unique slice name under provision/; removed (members killed) after."""
    if not (IS_ROOT and HAVE_V1):
        pytest.skip("needs root and cgroup v1")
    name = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path = f"provision/{name}"
    yield path
    for c in V1_CORE:
        procs = CGROUP / c / path / "cgroup.procs"
        if procs.exists():
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
    run = None
    for _ in range(100):
        run = run_helper(helper_bin, "slice", "rm", path)
        if run.rc == 0:
            break
        time.sleep(0.05)
    assert run is not None and run.rc == 0, run
