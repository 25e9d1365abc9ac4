"""provision-helper clone: reflink on XFS/btrfs, sparse copy on ext4,
--size, atomicity under signals, and the error contract."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

MiB = 1 << 20


def make_sparse(path: Path, size: int, regions: list[tuple[int, int]]) -> bytes:
    """A sparse file of `size` bytes with random data at (offset, length)."""
    chunks = []
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in regions:
            data = os.urandom(length)
            f.seek(offset)
            f.write(data)
            chunks.append(data)
    return b"".join(chunks)


def same_content(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 * MiB), fb.read(8 * MiB)
            if x != y:
                return False
            if not x:
                return True


def temps(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if ".provision-tmp." in n]


# -- reflink ------------------------------------------------------------------------


def test_reflink_clone(helper, reflink_fs):
    src = reflink_fs / "base.img"
    make_sparse(src, 256 * MiB, [(0, 4 * MiB), (100 * MiB, 8 * MiB)])
    os.sync()
    run = helper("clone", str(src), str(reflink_fs / "vm1.img"))
    assert run.rc == 0, run
    assert run.data["method"] == "reflink"
    assert run.data["bytes_written"] == 0
    assert run.data["size"] == 256 * MiB
    assert run.data["dst"] == str(reflink_fs / "vm1.img")
    assert same_content(src, reflink_fs / "vm1.img")
    assert temps(reflink_fs) == []
    # explicit --method reflink and growing the clone
    run = helper(
        "clone", "--method", "reflink", "--size", "1G", str(src), str(reflink_fs / "vm2.img")
    )
    assert run.rc == 0, run
    assert run.data["method"] == "reflink"
    assert (reflink_fs / "vm2.img").stat().st_size == 1 << 30
    with open(reflink_fs / "vm2.img", "rb") as f:
        assert f.read(4 * MiB) == src.read_bytes()[: 4 * MiB]


def test_reflink_to_other_filesystem_is_an_error(helper, xfs_mount, tmp_path):
    src = xfs_mount / "base.img"
    make_sparse(src, 16 * MiB, [(0, MiB)])
    dst = tmp_path / "out.img"
    run = helper("clone", "--method", "reflink", str(src), str(dst))
    assert run.rc == 1
    assert "reflink" in run.data["error"]
    assert not dst.exists() and temps(tmp_path) == []
    # auto falls back to a copy across filesystems
    run = helper("clone", str(src), str(dst))
    assert run.rc == 0 and run.data["method"] == "copy"
    assert same_content(src, dst)


# -- sparse copy on ext4 -----------------------------------------------------------------


def test_sparse_copy_keeps_holes(helper, tmp_path):
    src = tmp_path / "disk.img"
    make_sparse(src, 256 * MiB, [(0, 2 * MiB), (100 * MiB, 3 * MiB), (254 * MiB, MiB)])
    for method in ("auto", "copy"):
        dst = tmp_path / f"clone-{method}.img"
        run = helper("clone", "--method", method, str(src), str(dst))
        assert run.rc == 0, run
        if run.data["method"] == "reflink":  # /tmp on a reflink filesystem
            continue
        assert run.data["method"] == "copy"
        assert run.data["holes_detected"] is True
        assert run.data["bytes_written"] == 6 * MiB
        assert dst.stat().st_size == src.stat().st_size
        assert dst.stat().st_blocks <= src.stat().st_blocks + 64
        assert dst.stat().st_blocks < 8 * MiB // 512  # not filled
        assert same_content(src, dst)
        assert dst.stat().st_mode & 0o777 == src.stat().st_mode & 0o777
    assert temps(tmp_path) == []


def test_size_grows_and_shrink_is_refused(helper, tmp_path):
    src = tmp_path / "base.img"
    data = make_sparse(src, 8 * MiB, [(0, MiB)])
    run = helper("clone", "--size", "64M", str(src), str(tmp_path / "big.img"))
    assert run.rc == 0, run
    assert run.data["size"] == 64 * MiB
    big = tmp_path / "big.img"
    assert big.stat().st_size == 64 * MiB
    assert big.stat().st_blocks * 512 < 4 * MiB  # the growth is a hole
    assert big.read_bytes()[:MiB] == data
    run = helper("clone", "--size", str(8 * MiB), str(src), str(tmp_path / "same.img"))
    assert run.rc == 0 and run.data["size"] == 8 * MiB

    run = helper("clone", "--size", "1M", str(src), str(tmp_path / "small.img"))
    assert run.rc == 1
    assert "shrink" in run.data["error"]
    assert run.data["src_size"] == str(8 * MiB)
    assert not (tmp_path / "small.img").exists()
    assert temps(tmp_path) == []


def test_overwrites_existing_destination_atomically(helper, tmp_path):
    src = tmp_path / "new"
    src.write_bytes(b"new contents\n")
    dst = tmp_path / "dst"
    dst.write_bytes(b"old contents that are longer\n")
    inode = dst.stat().st_ino
    run = helper("clone", str(src), str(dst))
    assert run.rc == 0
    assert dst.read_bytes() == b"new contents\n"
    assert dst.stat().st_ino != inode  # replaced by rename, not rewritten


# -- interruption -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """1 GiB of real data (no holes): a copy takes long enough to interrupt."""
    path = tmp_path_factory.mktemp("big") / "big.img"
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(1024):
            f.write(block)
    return path


def start_clone_and_wait_for_temp(helper_bin: Path, src: Path, dst: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(helper_bin), "clone", "--method", "copy", str(src), str(dst)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if temps(dst.parent) and proc.poll() is None:
            time.sleep(0.02)  # let it copy a little
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    pytest.fail("the clone never showed its temp file while running")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_leaves_nothing_under_dst(helper_bin, big_file, tmp_path, sig):
    dst = tmp_path / "clone.img"
    proc = start_clone_and_wait_for_temp(helper_bin, big_file, dst)
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    assert proc.returncode == -sig, "the helper should die by the signal, mid-copy"
    assert not dst.exists()
    assert temps(tmp_path) == []


def test_sigkill_temp_is_recognisable_and_cleaned_next_time(helper_bin, helper, big_file, tmp_path):
    dst = tmp_path / "clone.img"
    proc = start_clone_and_wait_for_temp(helper_bin, big_file, dst)
    proc.kill()
    proc.communicate(timeout=30)
    assert not dst.exists()
    assert temps(tmp_path) == [f".clone.img.provision-tmp.{proc.pid}"]
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    run = helper("clone", str(small), str(dst))
    assert run.rc == 0
    assert run.data["stale_temps_removed"] == 1
    assert temps(tmp_path) == []
    assert dst.read_bytes() == b"x" * 100


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["clone"],
        ["clone", "onlysrc"],
        ["clone", "a", "b", "c"],
        ["clone", "--method", "magic", "a", "b"],
        ["clone", "--size", "lots", "a", "b"],
        ["clone", "--size"],
        ["clone", "--frobnicate", "a", "b"],
        ["clone", "a", "dir/"],
        ["nonsense"],
        ["version", "extra"],
    ],
)
def test_usage_errors_exit_2(helper, args):
    run = helper(*args)
    assert run.rc == 2, run
    assert run.data["error"]


def test_runtime_errors_exit_1(helper, tmp_path):
    missing = tmp_path / "missing.img"
    run = helper("clone", str(missing), str(tmp_path / "x"))
    assert run.rc == 1
    assert str(missing) in run.data["error"] and run.data["errno"] == 2
    assert "No such file" in run.stderr

    src = tmp_path / "src"
    src.write_bytes(b"abc")
    run = helper("clone", str(src), str(tmp_path / "nodir" / "x"))
    assert run.rc == 1 and "nodir" in run.data["error"]
    run = helper("clone", str(src), str(tmp_path))
    assert run.rc == 1 and "directory" in run.data["error"]
    run = helper("clone", str(tmp_path), str(tmp_path / "y"))
    assert run.rc == 1 and "not a regular file" in run.data["error"]
    run = helper("clone", str(src), str(src))
    assert run.rc == 1 and "same file" in run.data["error"]
    assert temps(tmp_path) == []


def test_reflink_unsupported_on_ext4(helper, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"abc")
    run = helper("clone", "--method", "reflink", str(src), str(tmp_path / "dst"))
    if run.rc == 0:
        pytest.skip("this tmp filesystem supports reflink")
    assert run.rc == 1
    assert "reflink" in run.data["error"]
    assert not (tmp_path / "dst").exists() and temps(tmp_path) == []


def test_version(helper):
    run = helper("version")
    assert run.rc == 0
    assert run.data["version"]
    assert {"clone", "reflink", "slice", "cgroup-v1", "cgroup-v2"} <= set(run.data["features"])
