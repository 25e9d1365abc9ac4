"""A QEMU guest that really boots without a network: Debian's kernel + a busybox initramfs.

The kernel comes from the linux-image-*.deb that .ci/install.sh caches in CACHE_DIR; its
/init prints MARKER on the serial console (ttyS0), which the domain writes to a file.
TCG only (no hardware virtualization here): use <domain type='qemu'>, boots in ~7-20 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import time
import xml.sax.saxutils
from dataclasses import dataclass
from pathlib import Path

from .images import busybox_rootfs
from .util import CACHE_DIR, HarnessError, run

MARKER = "PROVISION-GUEST-BOOTED"
#: TCG boots in ~15-20 s on an idle 2-core machine, over 100 s when it is very busy; a
#: guest that panics or stops fails at once, so the generous timeout costs nothing then.
BOOT_TIMEOUT = float(os.environ.get("PROVISION_TEST_BOOT_TIMEOUT", "180"))
QEMU_UID = 64055  # libvirt-qemu: every file the guest uses must be readable by it

INIT_SCRIPT = f"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
hostname provision-guest
echo "{MARKER} kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
if grep -q provision.poweroff /proc/cmdline; then
    sync
    poweroff -f
fi
while :; do sleep 3600; done
"""


@dataclass
class GuestBootFiles:
    """Files to boot a guest from: kernel, initrd, a small qcow2 base image, the marker."""

    kernel: Path
    initrd: Path
    base_image: Path
    kernel_version: str
    dir: Path
    marker: str = MARKER

    def overlay(self, path: str | os.PathLike) -> Path:
        """A qcow2 overlay backed by base_image (~30 ms), readable by libvirt-qemu."""
        path = Path(path)
        run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(self.base_image),
                str(path),
            ]
        )
        path.chmod(0o644)
        return path


def cached_kernel_deb(cache_dir: Path = CACHE_DIR) -> Path | None:
    """The newest linux-image-*.deb in the cache (None when install.sh has not fetched one)."""
    debs = sorted(cache_dir.glob("linux-image-*.deb"), key=lambda p: p.stat().st_mtime)
    return debs[-1] if debs else None


def extract_kernel(deb: Path, dest_dir: Path) -> Path:
    """vmlinuz from the kernel .deb (dpkg-deb --fsys-tarfile), cached next to it when possible.

    /boot comes first in the package, so the stream is cut once vmlinuz is read (~0.3 s
    instead of ~3.5 s for the whole 70 MB).
    """
    cached = deb.with_name(deb.name[: -len(".deb")] + ".vmlinuz")
    if cached.exists():
        return cached
    target = cached if os.access(deb.parent, os.W_OK) else dest_dir / "vmlinuz"
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and Path(member.name).name.startswith("vmlinuz-"):
                    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
                    with tar.extractfile(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    tmp.chmod(0o644)
                    os.replace(tmp, target)
                    return target
    finally:
        proc.kill()
        proc.wait()
    raise HarnessError(f"no boot/vmlinuz-* in {deb}")


def make_initramfs(work_dir: Path, dest: Path) -> Path:
    """A gzip'd newc cpio of busybox-static + /init printing MARKER."""
    root = busybox_rootfs(work_dir / "initramfs-root")
    init = root / "init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join(["."] + files) + "\n"
    with open(dest, "wb") as out:
        p = subprocess.run(
            ["sh", "-c", "cpio --quiet -o -H newc -R 0:0 | gzip -1"],
            input=listing.encode(),
            stdout=out,
            stderr=subprocess.PIPE,
            cwd=root,
            check=False,
        )
    if p.returncode != 0:
        raise HarnessError(f"cpio failed: {p.stderr.decode(errors='replace')}")
    dest.chmod(0o644)
    return dest


def prepare_boot_files(work_dir: str | os.PathLike, cache_dir: Path = CACHE_DIR) -> GuestBootFiles:
    """Kernel, initrd and base qcow2 under work_dir, all readable by libvirt-qemu."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o755)
    deb = cached_kernel_deb(cache_dir)
    if deb is None:
        raise HarnessError(f"no linux-image-*.deb in {cache_dir}: run .ci/install.sh")
    kernel = extract_kernel(deb, work_dir)
    initrd = make_initramfs(work_dir, work_dir / "initrd.gz")
    base = work_dir / "base.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"])
    base.chmod(0o644)
    version = deb.name.split("_")[0].removeprefix("linux-image-")
    return GuestBootFiles(
        kernel=kernel, initrd=initrd, base_image=base, kernel_version=version, dir=work_dir
    )


def domain_xml(
    name: str,
    files: GuestBootFiles,
    console: str | os.PathLike,
    *,
    memory_mib: int = 128,
    disk: str | os.PathLike | None = None,
    cmdline_extra: str = "",
) -> str:
    """<domain type='qemu'> booting files.kernel/initrd, serial console written to `console`."""
    e = xml.sax.saxutils.escape
    cmdline = f"console=ttyS0 panic=-1 quiet {cmdline_extra}".strip()
    disk_xml = (
        f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{e(str(disk))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
        if disk
        else ""
    )
    return f"""<domain type='qemu'>
  <name>{e(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{e(str(files.kernel))}</kernel>
    <initrd>{e(str(files.initrd))}</initrd>
    <cmdline>{e(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>{disk_xml}
    <serial type='file'>
      <source path='{e(str(console))}'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def wait_for_marker(
    console: str | os.PathLike, marker: str = MARKER, timeout: float = BOOT_TIMEOUT, dom=None
) -> str:
    """Wait until `marker` appears in the console file; returns the console text so far.

    Fails early on a kernel panic or (when dom is given) when the domain stopped.
    """
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        with contextlib.suppress(OSError):
            text = Path(console).read_text(errors="replace")
        if marker in text:
            return text
        problem = ""
        if "Kernel panic" in text:
            problem = "the guest kernel panicked"
        elif dom is not None and not dom.isActive():
            problem = "the domain stopped"
        elif time.monotonic() > deadline:
            problem = f"timed out after {timeout:.0f} s (PROVISION_TEST_BOOT_TIMEOUT)"
        if problem:
            raise HarnessError(
                f"no {marker!r} on the guest console: {problem}; console:\n{text[-2000:]}"
            )
        time.sleep(0.2)


def boot_guest(
    conn,
    name: str,
    files: GuestBootFiles,
    console_dir: str | os.PathLike,
    *,
    timeout: float = BOOT_TIMEOUT,
    **xml_options,
):
    """Define and start a guest, wait for MARKER on its console; returns (domain, console text).

    The domain is persistent (defined): the caller destroys and undefines it, or lets the
    libvirtd teardown do it.
    """
    console = Path(console_dir) / f"{name}.console"
    with contextlib.suppress(FileNotFoundError):
        console.unlink()
    dom = conn.defineXML(domain_xml(name, files, console, **xml_options))
    try:
        dom.create()
    except Exception:
        dom.undefine()
        raise
    return dom, wait_for_marker(console, files.marker, timeout, dom=dom)
