"""Benchmark: provision-helper clone against cp and shutil.

A 2 GiB sparse image holding 512 MiB of data (64 extents of 8 MiB), copied on
three filesystems:

1. a loop-mounted XFS with reflink=1 (backing file under --workdir):
   `provision-helper clone` (reflink) against `cp --reflink=never` (a full
   data copy; the brief's target is >= 100x faster and < 50 ms), the same cp
   followed by an fsync of the copy, and plain `cp` (coreutils >= 9 reflinks
   by default) with and without an fsync;
2. ext4 in --workdir (default /var/tmp, on a real disk): the helper's sparse
   copy against `cp --sparse=always` (the brief's target: <= 1.1x cp's time,
   holes kept), the same cp followed by an fsync, and shutil.copyfile;
3. the same as 2. on a loop-mounted ext4 whose backing file lives on tmpfs
   (/dev/shm, 3 GiB, written with zeros before mkfs so that tmpfs allocating
   pages is not timed): writeback and fsync reach RAM, not a disk, so this
   measures the copy itself without disk writeback dominating. Not a
   durability figure.

Like with like: the helper is atomic and durable (temp file, fsync, rename,
fsync of the directory), so its time includes writing the data to the disk,
while cp and shutil leave theirs dirty in the page cache. Each table prints
the brief's literal comparison (cp as is) and a same-durability one (cp, then
an fsync of the copy), the "durability" of every row, whether every copy kept
the source's holes and how much it allocates, and the ratios to the helper.
shutil.copyfile is shown as is (no fsync; it fills the holes). Every run starts
with the previous copy removed and a sync; the source stays in the page cache.
Medians of --reps runs (shutil: half as many). Timings and ratios are
printed, never asserted; only correctness is (the helper's copy is compared
with the source).

Needs root (loop devices). Sets up its own loop devices and mounts under
private directories (in --workdir and /dev/shm) and removes them at the end:
all unmounted and detached, also on error, Ctrl-C or SIGTERM.
Usage: python bench/clone.py [--reps N] [--workdir DIR] [--skip-tmpfs]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "native" / "build" / "provision-helper"
MiB = 1 << 20
IMAGE_SIZE = 2048 * MiB
EXTENT = 8 * MiB
EXTENTS = 64  # 64 x 8 MiB = 512 MiB of data
XFS_SIZE = 4 << 30  # the loop-mounted XFS (sparse backing file)
TMPFS_EXT4_SIZE = 3 << 30  # the ext4 on tmpfs: the image and shutil's filled copy fit
TEARDOWN_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def make_image(path: Path) -> None:
    stride = IMAGE_SIZE // EXTENTS
    with open(path, "wb") as f:
        f.truncate(IMAGE_SIZE)
        for i in range(EXTENTS):
            f.seek(i * stride)
            f.write(os.urandom(EXTENT))
        f.flush()
        os.fsync(f.fileno())


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def timed(fn: Callable[[], object], reps: int, cleanup: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(reps):
        cleanup()
        os.sync()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stdout} {proc.stderr}")
    return proc.stdout


def helper_clone(src: Path, dst: Path, method: str = "auto") -> dict:
    return json.loads(run([str(HELPER), "clone", "--method", method, str(src), str(dst)]))


def same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y:
                return False
            if not x:
                return True


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


# -- loop mounts ------------------------------------------------------------------

@contextlib.contextmanager
def teardown_shielded() -> Iterator[None]:
    """Hold off Ctrl-C/SIGTERM while tearing down; they are delivered afterwards."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, TEARDOWN_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def private_dir(parent: str | Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="provision-bench-clone-", dir=parent))
    try:
        yield path
    finally:
        with teardown_shielded():
            shutil.rmtree(path, ignore_errors=True)


def unmount(mnt: Path) -> None:
    for _ in range(50):
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    # still busy: detach it now, the kernel finishes when the last user goes
    subprocess.run(["umount", "--lazy", str(mnt)], capture_output=True)


@contextlib.contextmanager
def loop_mount(
    backing_dir: Path, name: str, size: int, mkfs: list[str], fill: bool = False
) -> Iterator[Path]:
    """A fresh filesystem (`mkfs` + device) on a loop device over a file of
    `size` bytes in backing_dir, mounted at backing_dir/name; unmounted,
    detached and deleted on the way out. The file is sparse, or with `fill`
    written with zeros first (then `mkfs` must not discard)."""
    img, mnt = backing_dir / f"{name}.img", backing_dir / name
    mnt.mkdir()
    dev, mounted = "", False
    try:
        with open(img, "wb") as f:
            f.truncate(size)
            zeros = bytes(16 * MiB)
            for _ in range(size // len(zeros) if fill else 0):
                f.write(zeros)
        run([*mkfs, str(img)])
        with teardown_shielded():  # no Ctrl-C between attaching and remembering
            dev = run(["losetup", "--find", "--show", str(img)]).strip()
            run(["mount", dev, str(mnt)])
            mounted = True
        yield mnt
    finally:
        with teardown_shielded():
            if mounted:
                unmount(mnt)
            if dev:  # a busy device (lazy unmount) is detached when released
                subprocess.run(["losetup", "--detach", dev], capture_output=True)
            img.unlink(missing_ok=True)


# -- tables -------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    times: list[float]
    note: str  # how it compares with the helper's durability
    alloc: int  # bytes the copy allocates (after its last run)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(name: str, note: str, fn: Callable[[], object], reps: int, dst: Path) -> Row:
    def rm() -> None:
        dst.unlink(missing_ok=True)

    times = timed(fn, reps, rm)
    row = Row(name, times, note, allocated(dst))
    rm()
    return row


def then_fsync(fn: Callable[[], object], dst: Path) -> Callable[[], None]:
    def go() -> None:
        fn()
        fsync_path(dst)

    return go


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def holes_kept(row: Row, src_alloc: int) -> bool:
    return row.alloc <= src_alloc + MiB


def report(rows: list[Row], src_alloc: int) -> None:
    """rows[0] is the helper; the ratio column is each median over the helper's
    median (the min column only shows the spread on a noisy machine)."""
    h = rows[0].median
    print(f"  {'':<46} {'median':>12} {'min':>12}  {'runs':>4}  {'/ helper':>9}  "
          f"{'durability':<20} holes kept")
    for r in rows:
        ratio = f"x{r.median / h:8.1f}" if r is not rows[0] else f"{'':9}"
        kept = "yes" if holes_kept(r, src_alloc) else "NO"
        print(f"  {r.name:<46} {fmt(r.median)} {fmt(min(r.times))}  {len(r.times):>4}  {ratio}  {r.note:<20} "
              f"{kept:<3} ({r.alloc // MiB} MiB allocated)")
    print(f"  source: {IMAGE_SIZE // MiB} MiB, {src_alloc // MiB} MiB allocated; "
          "'/ helper' > 1 means the helper is faster")


ATOMIC = "fsync+rename+dirsync"
NO_FSYNC = "none (page cache)"
FSYNCED = "fsync (same)"


# -- XFS: reflink ----------------------------------------------------------------

def bench_xfs(base: Path, reps: int) -> dict:
    print(f"== XFS (loop, reflink=1; backing file on {fstype(base)} in {base.parent}): "
          "2 GiB sparse image, 512 MiB data ==")
    with loop_mount(base, "xfs", XFS_SIZE, ["mkfs.xfs", "-q", "-m", "reflink=1"]) as mnt:
        src = mnt / "base.img"
        make_image(src)
        src_alloc = allocated(src)
        dst = mnt / "clone.img"
        out = helper_clone(src, dst)
        assert out["method"] == "reflink", out
        assert same(src, dst), "helper clone differs"
        dst.unlink()

        def cp(*opts: str) -> Callable[[], object]:
            return lambda: run(["cp", *opts, str(src), str(dst)])

        rows = [
            measure("provision-helper clone (reflink)", ATOMIC,
                    lambda: helper_clone(src, dst), reps, dst),
            measure("cp --reflink=never (full copy)", NO_FSYNC, cp("--reflink=never"), reps, dst),
            measure("cp --reflink=never + fsync", FSYNCED,
                    then_fsync(cp("--reflink=never"), dst), reps, dst),
            measure("cp (coreutils 9 default: reflink)", NO_FSYNC, cp(), reps, dst),
            measure("cp + fsync", FSYNCED, then_fsync(cp(), dst), reps, dst),
        ]
    report(rows, src_alloc)
    h, full, full_sync = rows[0].median, rows[1].median, rows[2].median
    literal, durable = full / h, full_sync / h
    fast = h < 0.050
    print(f"  target: >= 100x faster than a full copy, and < 50 ms "
          f"(helper {h * 1000:.1f} ms: {'yes' if fast else 'NO'})")
    print(f"    literal (brief): cp --reflink=never / helper          "
          f"x{literal:6.1f}  {'MET' if literal >= 100 and fast else 'NOT MET'}")
    print(f"    same durability: (cp --reflink=never + fsync) / helper "
          f"x{durable:6.1f}  {'MET' if durable >= 100 and fast else 'NOT MET'}")
    return {
        "helper_ms": h * 1000,
        "cp_full_ms": full * 1000,
        "cp_full_fsync_ms": full_sync * 1000,
        "cp_default_ms": rows[3].median * 1000,
        "cp_default_fsync_ms": rows[4].median * 1000,
        "ratio_vs_full_copy": literal,
        "ratio_vs_full_copy_fsync": durable,
        "target_met": literal >= 100 and fast,
        "target_met_same_durability": durable >= 100 and fast,
    }


# -- ext4: sparse copy -------------------------------------------------------------

def bench_ext4(base: Path, reps: int, title: str) -> dict:
    print(f"== {title}: 2 GiB sparse image, 512 MiB data ==")
    src = base / "base.img"
    dst = base / "copy.img"
    try:
        make_image(src)
        src_alloc = allocated(src)
        out = helper_clone(src, dst)
        assert same(src, dst), "helper copy differs"
        dst.unlink()
        cp = lambda: run(["cp", "--sparse=always", str(src), str(dst)])  # noqa: E731
        engine = f"{out['method']}, {out.get('engine', '-')}"
        rows = [
            measure(f"provision-helper clone ({engine})", ATOMIC,
                    lambda: helper_clone(src, dst), reps, dst),
            measure("cp --sparse=always", NO_FSYNC, cp, reps, dst),
            measure("cp --sparse=always + fsync", FSYNCED, then_fsync(cp, dst), reps, dst),
            measure("shutil.copyfile", NO_FSYNC, lambda: shutil.copyfile(src, dst),
                    max(1, reps // 2), dst),
        ]
    finally:
        dst.unlink(missing_ok=True)
        src.unlink(missing_ok=True)
    report(rows, src_alloc)
    helper, cp_row, cp_sync, shutil_row = rows
    h = helper.median
    literal, durable, vs_shutil = h / cp_row.median, h / cp_sync.median, h / shutil_row.median
    kept = holes_kept(helper, src_alloc)
    print(f"  target: helper <= 1.1x cp's time, holes kept (helper: {'yes' if kept else 'NO'})")
    print(f"    literal (brief): helper / cp --sparse=always            "
          f"{literal:5.2f}x  {'MET' if literal <= 1.1 and kept else 'NOT MET'}")
    print(f"    same durability: helper / (cp --sparse=always + fsync)  "
          f"{durable:5.2f}x  {'MET' if durable <= 1.1 and kept else 'NOT MET'}")
    print(f"    helper / shutil.copyfile (no fsync, fills holes)        {vs_shutil:5.2f}x")
    return {
        "helper_ms": h * 1000,
        "helper_method": out["method"],
        "helper_engine": out.get("engine"),
        "helper_holes_kept": kept,
        "cp_ms": cp_row.median * 1000,
        "cp_holes_kept": holes_kept(cp_row, src_alloc),
        "cp_fsync_ms": cp_sync.median * 1000,
        "shutil_ms": shutil_row.median * 1000,
        "shutil_holes_kept": holes_kept(shutil_row, src_alloc),
        "helper_over_cp": literal,
        "helper_over_cp_fsync": durable,
        "helper_over_shutil": vs_shutil,
    }


def fstype(path: Path) -> str:
    return run(["findmnt", "--noheadings", "--output", "FSTYPE", "--target", str(path)]).strip()


def loadavg(extra: str = "") -> tuple[float, ...]:
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
          + (f"; {extra}" if extra else ""))
    return load


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through the teardowns, like Ctrl-C


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workdir", default="/var/tmp",
                    help="an ext4 directory on a real disk (XFS backing file, ext4 copy bench)")
    ap.add_argument("--skip-tmpfs", action="store_true",
                    help="skip the ext4-on-tmpfs run (it takes 3 GiB of /dev/shm)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (loop devices)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    run(["make", "-s", "-C", str(REPO / "native")])
    summary: dict = {"loadavg_start": loadavg(f"{args.reps} reps (shutil.copyfile {max(1, args.reps // 2)})")}
    print()
    with private_dir(args.workdir) as base:
        summary["xfs"] = bench_xfs(base, args.reps)
        print()
        summary["ext4"] = bench_ext4(
            base, args.reps, f"{fstype(base)} ({args.workdir}, real disk, no loop device)")
    if not args.skip_tmpfs:
        print()
        shm = Path("/dev/shm")
        if shutil.disk_usage(shm).free < TMPFS_EXT4_SIZE + 256 * MiB:
            print(f"== ext4 on tmpfs: skipped, {shm} has less than "
                  f"{(TMPFS_EXT4_SIZE >> 20) + 256} MiB free ==")
        else:
            # The backing file is filled up front: tmpfs allocating its pages on
            # first touch otherwise makes a run 2-3x slower whenever ext4 puts
            # the copy on blocks never written before (most runs of a fresh fs).
            mkfs = ["mkfs.ext4", "-q", "-F", "-E",
                    "nodiscard,lazy_itable_init=0,lazy_journal_init=0"]
            with (private_dir(shm) as tmp,
                  loop_mount(tmp, "ext4", TMPFS_EXT4_SIZE, mkfs, fill=True) as mnt):
                summary["ext4_tmpfs"] = bench_ext4(
                    mnt, args.reps,
                    "ext4 on a loop device backed by tmpfs (/dev/shm) -- NO DISK: measures "
                    "the copy itself, fsync only reaches RAM")
    print()
    summary["loadavg_end"] = loadavg()
    print(json.dumps(summary, indent=None, default=float))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the bench's mounts and loop devices are removed", file=sys.stderr)
        sys.exit(130)
