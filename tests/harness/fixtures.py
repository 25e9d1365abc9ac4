"""Session-scoped pytest fixtures that start real servers (import them in tests/conftest.py).

Each fixture skips with the reason when its programs are missing; under CI (CI=true) or
PROVISION_TEST_STRICT=1 it fails instead, so a broken install cannot pass as "skipped".
Everything lives in one private directory per run (`harness_dir`), removed at the end
unless PROVISION_TEST_KEEP=1.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .aptrepo import AptRepo
from .dockerd import PrivateDockerd
from .guest import GuestBootFiles, cached_kernel_deb, prepare_boot_files
from .images import BUSYBOX, DockerImages
from .libvirtd import PrivateLibvirtd
from .netns import NetnsHosts
from .sshd import SFTP_SERVER, SSHD, SshFleet
from .util import CACHE_DIR, make_run_dir, missing_binaries

__all__ = [
    "harness_dir",
    "ssh_fleet",
    "netns_hosts",
    "dockerd",
    "docker_images",
    "libvirtd",
    "guest_boot_files",
    "apt_repo",
]

SSH_HOSTS = 5
NETNS_HOSTS = 3


def _strict() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or bool(
        os.environ.get("PROVISION_TEST_STRICT")
    )


def _require(what: str, binaries=(), modules=(), root: bool = False, files=()) -> None:
    """Skip (fail under CI) unless every program, Python module and file is there."""
    missing = missing_binaries(*binaries)
    missing += [f"python module {m}" for m in modules if importlib.util.find_spec(m) is None]
    missing += [str(f) for f in files if not os.path.exists(f)]
    if root and os.geteuid() != 0:
        missing.append("root privileges")
    if missing:
        reason = f"{what} needs {', '.join(missing)} (run .ci/install.sh)"
        if _strict():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def harness_dir() -> Iterator[Path]:
    """The private directory of this test run (/tmp/prov-XXXX, mode 0711)."""
    path = make_run_dir()
    yield path
    if not os.environ.get("PROVISION_TEST_KEEP"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_fleet(harness_dir: Path) -> Iterator[SshFleet]:
    """5 sshd on 127.0.0.1 (h1..h5), root by key, strict known_hosts, inventory written."""
    _require("ssh_fleet", [SSHD, SFTP_SERVER, "ssh-keygen"], ["paramiko", "yaml"], root=True)
    fleet = SshFleet(SSH_HOSTS, harness_dir / "ssh")
    fleet.write_inventory()
    yield fleet
    fleet.stop_all()


@pytest.fixture(scope="session")
def netns_hosts(harness_dir: Path) -> Iterator[NetnsHosts]:
    """3 hosts in network namespaces (10.200.0.1-3, hostnames h1..h3, sshd on port 22)."""
    _require("netns_hosts", ["ip", "unshare", SSHD, "ssh-keygen"], ["paramiko", "yaml"], root=True)
    hosts = NetnsHosts(NETNS_HOSTS, harness_dir / "netns")
    try:
        hosts.write_inventory()
        yield hosts
    finally:
        hosts.teardown()


@pytest.fixture(scope="session")
def dockerd(harness_dir: Path) -> Iterator[PrivateDockerd]:
    """A private dockerd (no iptables, no bridge) on harness_dir/docker/docker.sock."""
    _require("dockerd", ["dockerd", "docker", "containerd", "runc"], root=True)
    daemon = PrivateDockerd(harness_dir / "docker")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def docker_images(dockerd: PrivateDockerd, harness_dir: Path) -> DockerImages:
    """provision-test/busybox:1 (imported) and provision-test/healthcheck:1 (built) in dockerd."""
    _require("docker_images", [BUSYBOX])
    return DockerImages(dockerd, harness_dir / "images")


@pytest.fixture(scope="session")
def libvirtd(harness_dir: Path) -> Iterator[PrivateLibvirtd]:
    """virtlogd + libvirtd in a private mount namespace; connect with libvirtd.uri."""
    _require(
        "libvirtd",
        ["libvirtd", "virtlogd", "qemu-system-x86_64", "unshare"],
        ["libvirt"],
        root=True,
    )
    daemon = PrivateLibvirtd(harness_dir / "libvirt")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def guest_boot_files(harness_dir: Path) -> GuestBootFiles:
    """Kernel (from the cached Debian .deb), busybox initramfs and a base qcow2 for a guest."""
    _require("guest_boot_files", ["qemu-img", "cpio", "gzip", "dpkg-deb", BUSYBOX])
    if cached_kernel_deb(CACHE_DIR) is None:
        _require("guest_boot_files", files=[CACHE_DIR / "linux-image-*.deb"])
    return prepare_boot_files(harness_dir / "guest")


@pytest.fixture(scope="session")
def apt_repo(harness_dir: Path) -> Iterator[AptRepo]:
    """A local flat apt repo with provision-test-hello 1.0 and 1.1, and a private apt config."""
    _require("apt_repo", ["dpkg-deb", "dpkg-scanpackages", "apt-get"], root=True)
    repo = AptRepo(harness_dir / "apt")
    yield repo
    repo.cleanup()
