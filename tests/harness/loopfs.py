"""A loop-mounted filesystem (XFS with reflink, btrfs, ext4) for tests, made by root.

The image file and the mount point live under a private directory; close() unmounts and
detaches the loop device, and an interpreter-exit cleanup does the same if a test died
first. `share_with(pid)` mounts the same device at the same path inside another process's
mount namespace (the harness libvirtd runs in its own: see libvirtd.py), so a storage
pool on this filesystem is one filesystem for libvirtd, QEMU and the SSH side alike.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from .util import HarnessError, pid_alive, register_cleanup, unregister_cleanup

MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"],
    "xfs-noreflink": ["mkfs.xfs", "-q", "-m", "reflink=0"],
    "btrfs": ["mkfs.btrfs", "-q"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}


def _quiet(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


class LoopFs:
    """A filesystem of `fstype` in base/<fstype>.img, mounted at base/mnt-<fstype>."""

    def __init__(self, base: Path, fstype: str, size: str = "1G") -> None:
        self.fstype = fstype
        self.image = base / f"{fstype}.img"
        self.mountpoint = base / f"mnt-{fstype}"
        self.device: str | None = None
        self._namespaces: list[int] = []
        self.mountpoint.mkdir(parents=True)
        subprocess.run(["truncate", "-s", size, str(self.image)], check=True)
        made = _quiet([*MKFS[fstype], str(self.image)])
        if made.returncode != 0:
            raise HarnessError(f"{MKFS[fstype][0]} failed: {made.stderr.strip()}")
        register_cleanup(self.close)
        found = _quiet(["losetup", "--find", "--show", str(self.image)])
        if found.returncode != 0:
            self.close()
            raise HarnessError(f"losetup failed: {found.stderr.strip()}")
        self.device = found.stdout.strip()
        mounted = _quiet(["mount", self.device, str(self.mountpoint)])
        if mounted.returncode != 0:
            self.close()
            raise HarnessError(f"mount {self.device} failed: {mounted.stderr.strip()}")

    def share_with(self, pid: int) -> None:
        """Mount the device at the same path in pid's mount namespace too."""
        assert self.device
        done = _quiet(["nsenter", "--target", str(pid), "--mount",
                       "mount", self.device, str(self.mountpoint)])
        if done.returncode != 0:
            raise HarnessError(f"mount in the namespace of {pid} failed: {done.stderr.strip()}")
        self._namespaces.append(pid)

    def close(self) -> None:
        """Unmount everywhere, detach the loop device, delete the image. Idempotent."""
        for pid in self._namespaces:
            if pid_alive(pid):  # a namespace that died took its mount with it
                _quiet(["nsenter", "--target", str(pid), "--mount", "umount",
                        str(self.mountpoint)])
        self._namespaces.clear()
        for _ in range(50):
            if not self.mountpoint.is_mount() or _quiet(
                    ["umount", str(self.mountpoint)]).returncode == 0:
                break
            _quiet(["sync"])
        if self.device:
            _quiet(["losetup", "-d", self.device])
            self.device = None
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()
        unregister_cleanup(self.close)

    def __enter__(self) -> LoopFs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
