"""provision-helper reflink-probe: the answer on XFS, btrfs, XFS without
reflink, ext4, across filesystems and where O_TMPFILE is missing; that it
leaves the directories untouched; the error contract; and
HelperHandle.reflink_probe over a LocalConnection."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner import helper as helper_mod
from provisioner.connection.local import LocalConnection
from provisioner.helper import HelperError, ensure_helper

IS_ROOT = os.geteuid() == 0
MQUEUE_MAGIC = "0x19800202"  # a filesystem without O_TMPFILE


def snapshot(*roots: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under the roots (hidden ones too) and, for directories,
    their (mtime, ctime) in ns: a probe must change none of it."""
    seen: dict[str, tuple[int, int] | None] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            st = os.stat(dirpath)
            seen[dirpath] = (st.st_mtime_ns, st.st_ctime_ns)
            for name in dirnames + filenames:
                seen.setdefault(os.path.join(dirpath, name), None)
    return seen


def probe(helper, src: Path, dst: Path, *watch: Path):
    """Run the probe; assert it left src, dst and `watch` exactly as they were."""
    roots = (src, dst, *watch)
    before = snapshot(*roots)
    run = helper("reflink-probe", str(src), str(dst))
    assert snapshot(*roots) == before, "the probe changed a directory"
    return run


def reflink_clone_works(helper, src_dir: Path, dst_dir: Path) -> bool:
    """What a real `clone --method reflink` between the directories does: the
    probe must predict it."""
    src, dst = src_dir / "check.src", dst_dir / "check.dst"
    src.write_bytes(os.urandom(1 << 16))
    try:
        return helper("clone", "--method", "reflink", str(src), str(dst)).rc == 0
    finally:
        src.unlink()
        dst.unlink(missing_ok=True)


def dirs(root: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        (root / name).mkdir()
        out.append(root / name)
    return out


def fs_type(path: Path) -> str:
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.contextmanager
def mounted(source: str, target: Path, *opts: str) -> Iterator[Path]:
    target.mkdir()
    subprocess.run(["mount", *opts, source, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.fixture
def xfs_noreflink(mount_fs) -> Path:
    """XFS made with reflink=0: statfs says xfs all the same."""
    return mount_fs("xfs-noreflink")


# -- yes -----------------------------------------------------------------------------


def test_reflink_filesystem_answers_true(helper, reflink_fs):
    fs = reflink_fs.name.removeprefix("mnt-")  # xfs (reflink=1) or btrfs
    src, dst = dirs(reflink_fs, "images", "vms")
    (src / "base.img").write_bytes(b"base" * 1024)
    run = probe(helper, src, dst)
    assert run.rc == 0, run
    assert run.data == {
        "reflink": True,
        "src_fs": fs,
        "dst_fs": fs,
        "same_fs": True,
        "reason": "FICLONE works",
    }
    assert os.listdir(src) == ["base.img"] and os.listdir(dst) == []
    # one directory for both ends, and the mount's root
    assert probe(helper, src, src).data["reflink"] is True
    assert probe(helper, reflink_fs, dst).data["reflink"] is True
    assert reflink_clone_works(helper, src, dst)


def test_btrfs_subvolume_is_the_same_filesystem(helper, mount_fs):
    """A subvolume has its own st_dev, yet clones work into it: a clone that
    works proves one filesystem whatever the device numbers say."""
    if not shutil.which("btrfs"):
        pytest.skip("btrfs-progs not installed")
    mnt = mount_fs("btrfs")
    (src,) = dirs(mnt, "images")
    sub = mnt / "vms"
    subprocess.run(["btrfs", "-q", "subvolume", "create", str(sub)], check=True)
    assert src.stat().st_dev != sub.stat().st_dev
    for a, b in [(src, sub), (sub, src)]:
        run = probe(helper, a, b)
        assert run.rc == 0, run
        assert run.data["reflink"] is True and run.data["same_fs"] is True
        assert run.data["src_fs"] == run.data["dst_fs"] == "btrfs"
    assert reflink_clone_works(helper, src, sub)


def test_bind_mount_of_one_xfs_agrees_with_clone(helper, xfs_mount, tmp_path):
    """Same filesystem, two mounts: newer kernels clone across them, older
    ones refuse (EXDEV). Whichever this kernel does, the probe says it."""
    src, dst = dirs(xfs_mount, "a", "b")
    with mounted(str(dst), tmp_path / "bind", "--bind") as bind:
        run = probe(helper, src, bind)
        assert run.rc == 0, run
        assert run.data["same_fs"] is True
        assert run.data["src_fs"] == run.data["dst_fs"] == "xfs"
        works = reflink_clone_works(helper, src, bind)
        assert run.data["reflink"] is works
        if not works:
            assert run.data["reason"] == "different mounts of one xfs filesystem"


# -- no ------------------------------------------------------------------------------


def test_xfs_without_reflink(helper, xfs_noreflink):
    src, dst = dirs(xfs_noreflink, "images", "vms")
    run = probe(helper, src, dst)
    assert run.rc == 0, run
    assert run.data == {
        "reflink": False,
        "src_fs": "xfs",
        "dst_fs": "xfs",
        "same_fs": True,
        "reason": "xfs without reflink support",
    }
    assert not reflink_clone_works(helper, src, dst)


def test_ext4_has_no_reflink(helper, mount_fs):
    mnt = mount_fs("ext4")
    assert fs_type(mnt) == "ext2/ext3"  # one magic for all three: the probe says ext4
    src, dst = dirs(mnt, "images", "vms")
    run = probe(helper, src, dst, mnt)  # lost+found untouched too
    assert run.rc == 0, run
    assert run.data == {
        "reflink": False,
        "src_fs": "ext4",
        "dst_fs": "ext4",
        "same_fs": True,
        "reason": "ext4 has no reflink",
    }
    assert not reflink_clone_works(helper, src, dst)


def test_different_filesystems(helper, xfs_mount, mount_fs):
    ext4, btrfs = mount_fs("ext4"), mount_fs("btrfs")
    for src, dst, src_fs, dst_fs in [
        (xfs_mount, ext4, "xfs", "ext4"),
        (ext4, xfs_mount, "ext4", "xfs"),
        # both can reflink, but not into each other
        (xfs_mount, btrfs, "xfs", "btrfs"),
    ]:
        run = probe(helper, src, dst)
        assert run.rc == 0, run
        assert run.data == {
            "reflink": False,
            "src_fs": src_fs,
            "dst_fs": dst_fs,
            "same_fs": False,
            "reason": "different filesystems",
        }
        assert not reflink_clone_works(helper, src, dst)


@pytest.mark.skipif(not IS_ROOT, reason="needs root to mount")
def test_filesystem_without_o_tmpfile_is_an_answer(helper, tmp_path):
    """mqueue has no O_TMPFILE (EOPNOTSUPP): "no" with the reason, not an
    error; and an unnamed filesystem is named by its magic in hex."""
    with mounted("none", tmp_path / "mq", "-t", "mqueue") as mq:
        run = probe(helper, mq, mq)
        assert run.rc == 0, run
        assert run.data == {
            "reflink": False,
            "src_fs": MQUEUE_MAGIC,
            "dst_fs": MQUEUE_MAGIC,
            "same_fs": True,
            "reason": f"O_TMPFILE unsupported on {MQUEUE_MAGIC}",
        }
        # the source side worked (a file was written there), the destination did not
        src = tmp_path / "src"
        src.mkdir()
        run = probe(helper, src, mq)
        assert run.rc == 0, run
        assert run.data["reflink"] is False and run.data["same_fs"] is False
        assert run.data["reason"] == f"O_TMPFILE unsupported on {MQUEUE_MAGIC}"
        assert run.data["dst_fs"] == MQUEUE_MAGIC and run.data["src_fs"] != MQUEUE_MAGIC
        assert os.listdir(src) == []


# -- errors ----------------------------------------------------------------------------


def test_nearest_answers_where_a_missing_directory_will_be_made(helper, xfs_mount, mount_fs):
    """--nearest: a pool that the same apply makes is probed at its nearest existing
    parent, and the answer names the directories probed; nothing is created."""
    ext4 = mount_fs("ext4")
    run = helper("reflink-probe", "--nearest", str(xfs_mount / "a" / "b"), str(xfs_mount / "c/"))
    assert run.rc == 0, run
    assert run.data["reflink"] is True
    assert run.data["src_dir"] == run.data["dst_dir"] == str(xfs_mount)
    run = helper("reflink-probe", "--nearest", str(xfs_mount / "a"), str(ext4 / "pool"))
    assert run.rc == 0, run
    assert run.data["reflink"] is False and run.data["reason"] == "different filesystems"
    assert (run.data["src_dir"], run.data["dst_dir"]) == (str(xfs_mount), str(ext4))
    (xfs_mount / "here").mkdir()
    run = helper("reflink-probe", "--nearest", str(xfs_mount / "here"), str(xfs_mount / "here"))
    assert run.data["src_dir"] == str(xfs_mount / "here")
    assert sorted(os.listdir(xfs_mount)) == ["here"] and os.listdir(ext4) == ["lost+found"]


def test_missing_or_not_a_directory(helper, tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    missing = tmp_path / "missing"
    for src, dst, role in [(missing, ok, "source"), (ok, missing, "destination")]:
        run = probe(helper, src, dst)
        assert run.rc == 1, run
        assert f"{role} directory '{missing}'" in run.data["error"]
        assert run.data["path"] == str(missing) and run.data["errno"] == 2
        assert "No such file or directory" in run.stderr
        assert not missing.exists()

    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    run = helper("reflink-probe", str(ok), str(afile))
    assert run.rc == 1, run
    assert run.data["error"] == f"reflink-probe: destination directory '{afile}' is not a directory"
    assert run.data["path"] == str(afile)
    assert sorted(os.listdir(tmp_path)) == ["afile", "ok"] and os.listdir(ok) == []


@pytest.mark.skipif(not IS_ROOT, reason="needs root to switch to nobody")
def test_permission_denied_names_the_directory(helper_bin):
    """Run as nobody: a directory it cannot write is an error naming it (the
    probe needs to create a file on both ends)."""
    top = Path(tempfile.mkdtemp(prefix="probe-perm-", dir="/tmp"))
    try:
        top.chmod(0o755)
        binary = top / "provision-helper"
        shutil.copy2(helper_bin, binary)
        locked, open_ = top / "locked", top / "open"
        locked.mkdir(mode=0o755)
        open_.mkdir()
        open_.chmod(0o777)
        for src, dst in [(locked, open_), (open_, locked)]:
            proc = subprocess.run(
                [str(binary), "reflink-probe", str(src), str(dst)],
                capture_output=True,
                text=True,
                user=65534,
                group=65534,
                extra_groups=[],
            )
            assert proc.returncode == 1, proc
            assert f"cannot create a file in '{locked}'" in proc.stdout
            assert '"errno": 13' in proc.stdout
            assert "Permission denied" in proc.stderr
            assert os.listdir(locked) == [] and os.listdir(open_) == []
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize(
    "args",
    [
        ["reflink-probe"],
        ["reflink-probe", "onlyone"],
        ["reflink-probe", "a", "b", "c"],
        ["reflink-probe", "--frob", "a", "b"],
        ["reflink-probe", "", "b"],
    ],
)
def test_usage_errors_exit_2(helper, args):
    run = helper(*args)
    assert run.rc == 2, run
    assert run.data["error"].startswith("reflink-probe: ")
    assert run.data["usage"] == "provision-helper reflink-probe [--nearest] SRC_DIR DST_DIR"


def test_version_lists_the_feature(helper):
    run = helper("version")
    assert "reflink-probe" in run.data["features"]
    assert "reflink-probe [--nearest] SRC_DIR DST_DIR" in helper("help").data["usage"]


# -- through HelperHandle ---------------------------------------------------------------


def test_handle_over_local_connection(helper_bin, xfs_mount, tmp_path, monkeypatch):
    # LocalConnection runs with this process's HOME: point it at a host cache
    # pre-seeded with the local build, so ensure_helper finds it in one run
    home = tmp_path / "home"
    cache = home / ".cache" / "provision" / f"helper-{helper_mod.source_hash()}"
    cache.mkdir(parents=True)
    shutil.copy2(helper_bin, cache / "provision-helper")
    monkeypatch.setenv("HOME", str(home))
    conn = LocalConnection("local")
    handle = ensure_helper(conn)
    assert handle is not None and handle.how == "cached", helper_mod.unavailable_reason(conn)

    # a directory named like an option is still a directory
    src, dst = dirs(xfs_mount, "-images", "vms")
    assert handle.reflink_probe(str(src), str(dst)) == {
        "reflink": True,
        "src_fs": "xfs",
        "dst_fs": "xfs",
        "same_fs": True,
        "reason": "FICLONE works",
    }
    out = handle.reflink_probe(str(src), str(tmp_path))  # tmp_path is not the XFS
    assert out["reflink"] is False and out["same_fs"] is False
    assert out["reason"] == "different filesystems"
    assert os.listdir(src) == [] and os.listdir(dst) == []

    with pytest.raises(HelperError) as err:
        handle.reflink_probe(str(src), str(tmp_path / "nowhere"))
    assert err.value.rc == 1 and err.value.data["errno"] == 2
    assert err.value.argv[:2] == ["reflink-probe", "--"]
    assert str(err.value).startswith("local: provision-helper reflink-probe")
    assert str(tmp_path / "nowhere") in str(err.value)


# -- without the helper: plain commands ----------------------------------------------


def test_plain_fallback_answers_like_the_helper(helper, xfs_mount, mount_fs):
    """plain_reflink_probe (cp --reflink=always between two hidden temp files) gives
    the helper's --nearest answer shape, agrees with it, and leaves nothing behind."""
    from provisioner.helper import plain_reflink_probe

    conn = LocalConnection()
    ext4 = mount_fs("ext4")
    for src, dst in [(xfs_mount / "a" / "b", xfs_mount / "c"), (ext4 / "x", ext4 / "y"),
                     (xfs_mount / "a", ext4 / "pool")]:
        plain = plain_reflink_probe(conn, str(src), str(dst))
        native = helper("reflink-probe", "--nearest", str(src), str(dst)).data
        keys = ("reflink", "src_fs", "dst_fs", "same_fs", "src_dir", "dst_dir")
        assert {k: plain[k] for k in keys} == {k: native[k] for k in keys}, (src, dst)
        if not plain["reflink"]:
            assert plain["reason"] == native["reason"]
    assert sorted(os.listdir(xfs_mount)) == [] and os.listdir(ext4) == ["lost+found"]


def test_plain_clone_reflink_only_shares_or_fails(xfs_mount, mount_fs):
    from provisioner.errors import HostError
    from provisioner.helper import plain_clone

    conn = LocalConnection()
    src = xfs_mount / "image.raw"
    src.write_bytes(os.urandom(1 << 20))
    out = plain_clone(conn, str(src), str(xfs_mount / "disk.raw"), 4 << 20, reflink_only=True)
    assert out["size"] == 4 << 20
    frag = subprocess.run(["filefrag", "-v", str(xfs_mount / "disk.raw")], capture_output=True,
                          text=True, check=True).stdout
    assert "shared" in frag
    ext4 = mount_fs("ext4")
    (ext4 / "image.raw").write_bytes(b"x" * 4096)
    with pytest.raises(HostError) as err:
        plain_clone(conn, str(ext4 / "image.raw"), str(ext4 / "disk.raw"), reflink_only=True)
    assert "cp --reflink=always" in str(err.value)
    assert sorted(os.listdir(ext4)) == ["image.raw", "lost+found"]  # no temp left
