"""Benchmark: provision-helper clone against cp and shutil.

A 2 GiB sparse image holding 512 MiB of data (64 extents of 8 MiB):

1. on a loop-mounted XFS with reflink=1: `provision-helper clone` (reflink)
   against `cp --reflink=never` (a full data copy; the target is >= 100x
   faster and < 50 ms) and plain `cp` (coreutils >= 9 reflinks by default);
2. on ext4 (/var/tmp): the helper's sparse copy against `cp --sparse=always`
   and shutil.copyfile, and whether each kept the holes.

The helper fsyncs its result before the rename; cp and shutil do not, so the
ext4 table also shows cp followed by an fsync of the copy.

Needs root (loop mount). Sets up and tears down its own mounts under a
private directory. Usage: python bench/clone.py [--reps N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "native" / "build" / "provision-helper"
MiB = 1 << 20
IMAGE_SIZE = 2048 * MiB
EXTENT = 8 * MiB
EXTENTS = 64  # 64 x 8 MiB = 512 MiB of data


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


@contextlib.contextmanager
def xfs_mount(base: Path) -> Iterator[Path]:
    img, mnt = base / "xfs.img", base / "xfs"
    mnt.mkdir()
    run(["truncate", "-s", "4G", str(img)])
    run(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)])
    run(["mount", "-o", "loop", str(img), str(mnt)])
    try:
        yield mnt
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        img.unlink(missing_ok=True)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def report(rows: list[tuple[str, list[float], str]], baseline: float) -> None:
    for name, times, extra in rows:
        med = statistics.median(times)
        ratio = med / baseline if baseline else float("inf")
        print(f"  {name:<34} median {fmt(med)}  ({len(times)} runs)  x{ratio:8.1f} helper  {extra}")


def bench_xfs(base: Path, reps: int) -> dict:
    print("== XFS (loop, reflink=1): 2 GiB sparse image, 512 MiB data ==")
    with xfs_mount(base) as mnt:
        src = mnt / "base.img"
        make_image(src)
        dst = mnt / "clone.img"

        def rm() -> None:
            dst.unlink(missing_ok=True)

        helper = timed(lambda: helper_clone(src, dst), reps, rm)
        out = helper_clone(src, dst.with_name("check.img"))
        assert out["method"] == "reflink", out
        assert same(src, dst.with_name("check.img"))
        dst.with_name("check.img").unlink()
        full = timed(lambda: run(["cp", "--reflink=never", str(src), str(dst)]), reps, rm)
        plain = timed(lambda: run(["cp", str(src), str(dst)]), reps, rm)
        rm()
    h = statistics.median(helper)
    print(f"  {'provision-helper clone (reflink)':<34} median {fmt(h)}  ({reps} runs)")
    report([("cp --reflink=never (full copy)", full, ""), ("cp (coreutils default)", plain, "")], h)
    ratio = statistics.median(full) / h
    ok = ratio >= 100 and h < 0.050
    print(
        f"  target >=100x faster than a full copy and < 50 ms: "
        f"{'MET' if ok else 'NOT MET'} (x{ratio:.0f}, {h * 1000:.1f} ms)"
    )
    return {
        "helper_ms": h * 1000,
        "cp_full_ms": statistics.median(full) * 1000,
        "cp_default_ms": statistics.median(plain) * 1000,
        "ratio_vs_full_copy": ratio,
        "target_met": ok,
    }


def bench_ext4(base: Path, reps: int) -> dict:
    fstype = run(["stat", "-f", "-c", "%T", str(base)]).strip()
    print(f"== {fstype} ({base}): 2 GiB sparse image, 512 MiB data ==")
    src = base / "base.img"
    make_image(src)
    dst = base / "copy.img"
    src_alloc = allocated(src)

    def rm() -> None:
        dst.unlink(missing_ok=True)

    results: dict = {}
    helper = timed(lambda: helper_clone(src, dst), reps, rm)
    out = helper_clone(src, dst)
    holes_helper = allocated(dst) <= src_alloc + MiB
    assert same(src, dst), "helper copy differs"
    cp = timed(lambda: run(["cp", "--sparse=always", str(src), str(dst)]), reps, rm)
    holes_cp = allocated(dst) <= src_alloc + MiB

    def cp_fsync() -> None:
        run(["cp", "--sparse=always", str(src), str(dst)])
        fsync_path(dst)

    cp_sync = timed(cp_fsync, reps, rm)
    shutil_times = timed(lambda: shutil.copyfile(src, dst), 1, rm)
    holes_shutil = allocated(dst) <= src_alloc + MiB
    shutil_alloc = allocated(dst)
    rm()
    src.unlink()

    h = statistics.median(helper)
    print(
        f"  {'provision-helper clone (' + out['method'] + ', ' + out.get('engine', '-') + ')':<34}"
        f" median {fmt(h)}  ({reps} runs)  holes kept: {holes_helper}"
    )
    report(
        [
            ("cp --sparse=always", cp, f"holes kept: {holes_cp}"),
            ("cp --sparse=always + fsync", cp_sync, f"holes kept: {holes_cp}"),
            (
                "shutil.copyfile",
                shutil_times,
                f"holes kept: {holes_shutil} ({shutil_alloc // MiB} MiB allocated)",
            ),
        ],
        h,
    )
    print(f"  source allocates {src_alloc // MiB} MiB of {IMAGE_SIZE // MiB} MiB")
    results.update(
        {
            "helper_ms": h * 1000,
            "helper_method": out["method"],
            "helper_holes_kept": holes_helper,
            "cp_ms": statistics.median(cp) * 1000,
            "cp_holes_kept": holes_cp,
            "cp_fsync_ms": statistics.median(cp_sync) * 1000,
            "shutil_ms": statistics.median(shutil_times) * 1000,
            "shutil_holes_kept": holes_shutil,
        }
    )
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workdir", default="/var/tmp", help="an ext4 directory for the copy bench")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (loop mounts)", file=sys.stderr)
        return 2
    run(["make", "-s", "-C", str(REPO / "native")])
    summary = {}
    with tempfile.TemporaryDirectory(prefix="provision-bench-clone-", dir=args.workdir) as tmp:
        base = Path(tmp)
        summary["xfs"] = bench_xfs(base, args.reps)
        print()
        summary["ext4"] = bench_ext4(base, max(1, args.reps // 2 + 1))
    print()
    print(json.dumps(summary, indent=None, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
