"""Images made without a registry: a busybox-static root filesystem, docker images built on it.

The same rootfs is the base of the QEMU guest's initramfs (guest.py).
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from .util import HarnessError, run

BUSYBOX = "/bin/busybox"  # from busybox-static: no shared libraries needed


def _has_interpreter(path: str) -> bool:
    """True for a dynamically linked ELF (it has a PT_INTERP program header)."""
    with open(path, "rb") as f:
        elf = f.read(64)
        if elf[:4] != b"\x7fELF" or elf[4] != 2:  # 64-bit ELF only
            return False
        phoff = int.from_bytes(elf[32:40], "little")
        phentsize = int.from_bytes(elf[54:56], "little")
        phnum = int.from_bytes(elf[56:58], "little")
        f.seek(phoff)
        headers = f.read(phentsize * phnum)
    return any(
        int.from_bytes(headers[i : i + 4], "little") == 3 for i in range(0, len(headers), phentsize)
    )


def busybox_rootfs(dest: str | os.PathLike, busybox: str = BUSYBOX) -> Path:
    """A minimal root filesystem at dest: busybox, a symlink per applet, /etc/passwd, empty dirs."""
    dest = Path(dest)
    if not Path(busybox).exists():
        raise HarnessError(f"{busybox} not found (apt-get install busybox-static)")
    if _has_interpreter(busybox):
        raise HarnessError(f"{busybox} is not statically linked (need busybox-static, not busybox)")
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "run",
        "var/tmp",
    ):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    shutil.copy2(busybox, dest / "bin/busybox")
    (dest / "bin/busybox").chmod(0o755)
    for applet in run([busybox, "--list-full"]).stdout.split():
        link = dest / applet
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        depth = len(Path(applet).parts) - 1
        link.symlink_to(Path(*([".."] * depth), "bin/busybox"))
    (dest / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (dest / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (dest / "etc/hostname").write_text("provision-test\n")
    return dest


def tar_directory(src: Path, tar_path: Path) -> Path:
    """tar of src's contents, owned by root (as docker import expects)."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(tar_path, "w") as tar:
        tar.add(src, arcname=".", filter=as_root)
    return tar_path


class DockerImages:
    """Images in a PrivateDockerd, made locally.

    Attributes: busybox ("provision-test/busybox:1"), busybox_id, healthcheck
    ("provision-test/healthcheck:1": busybox + a HEALTHCHECK, runs until stopped),
    healthcheck_id. build_healthcheck_image(tag, version) makes another version of a tag
    (a different image id/digest); image_id(ref) reads an id back.
    """

    BUSYBOX = "provision-test/busybox:1"
    HEALTHCHECK = "provision-test/healthcheck:1"

    def __init__(self, dockerd, work_dir: str | os.PathLike):
        self.dockerd = dockerd
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.busybox = self.BUSYBOX
        self.busybox_id = self.import_busybox(self.busybox)
        self.healthcheck = self.HEALTHCHECK
        self.healthcheck_id = self.build_healthcheck_image(self.healthcheck, version=1)

    def import_busybox(self, tag: str) -> str:
        """docker import of the busybox rootfs as tag; returns the image id."""
        rootfs = busybox_rootfs(self.work_dir / "busybox-rootfs")
        tar = tar_directory(rootfs, self.work_dir / "busybox-rootfs.tar")
        self.dockerd.docker(
            "import",
            "-c",
            'CMD ["/bin/sh"]',
            "-c",
            "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            str(tar),
            tag,
        )
        return self.image_id(tag)

    def build_healthcheck_image(
        self, tag: str, version: int | str = 1, base: str | None = None
    ) -> str:
        """docker build FROM busybox with a HEALTHCHECK; returns the image id.

        The container runs until stopped (exits 0 on SIGTERM at once). It is healthy until
        /tmp/unhealthy exists in it. /etc/provision-test-version and the label
        org.provision-test.version hold `version`: building another version under the same
        tag gives a different image id.
        """
        ctx = self.work_dir / f"build-{tag.replace('/', '_').replace(':', '_')}-{version}"
        ctx.mkdir(parents=True, exist_ok=True)
        (ctx / "version").write_text(f"{version}\n")
        (ctx / "Dockerfile").write_text(
            f"FROM {base or self.busybox}\n"
            "COPY version /etc/provision-test-version\n"
            f'LABEL org.provision-test.version="{version}"\n'
            "HEALTHCHECK --interval=500ms --timeout=2s --retries=2 CMD [ ! -e /tmp/unhealthy ]\n"
            'CMD ["sh", "-c", "trap \'exit 0\' TERM INT; sleep 86400 & wait"]\n'
        )
        self.dockerd.docker("build", "-q", "-t", tag, str(ctx))
        return self.image_id(tag)

    def image_id(self, ref: str) -> str:
        return self.dockerd.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
