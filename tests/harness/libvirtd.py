"""A private virtlogd + libvirtd (QEMU driver), invisible to any system libvirtd.

Running as root, libvirtd's QEMU driver uses fixed system paths (/etc/libvirt,
/run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt) that no option
moves. So both daemons start inside a private mount namespace (`unshare --mount`) in which
those paths are bind mounts of directories under base_dir; nothing is mounted in the root
namespace, and the namespace goes away with the daemons. Seen from outside, the socket is
base_dir/run/libvirt-sock: `uri` is qemu+unix:///system?socket=<that>.

Inside the namespace /dev/kvm is hidden (a mode-000 file is bound over it): this machine
has a /dev/kvm that root can open but that cannot run guests, and libvirt then re-probes
QEMU (~4 s) on every call because KVM looks usable to one check and not to another. Hidden,
the probe result stays valid, <domain type='qemu'> (TCG) works, and type='kvm' is refused
with a clear error instead of "running, never boots". For that bind mount to work,
qemu.conf sets namespaces = [] (no per-guest mount namespace). QEMU runs as libvirt-qemu
(uid 64055): files a guest uses must be readable by it.

The QEMU capabilities cache is kept across runs in CACHE_DIR/libvirt-cache (first start
~4-12 s, later ones ~0.4 s).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from pathlib import Path

from .util import (
    CACHE_DIR,
    HarnessError,
    kill_pid,
    kill_pidfile,
    pid_alive,
    read_pid,
    register_cleanup,
    tail,
    wait_for,
)

# system path (inside the namespace) -> subdirectory of base_dir
PRIVATE_DIRS = {
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
}


class PrivateLibvirtd:
    """virtlogd + libvirtd with private config, state, logs and sockets.

    Attributes: base_dir, socket_path (Path), uri ("qemu+unix:///system?socket=..."),
    libvirtd_pidfile, virtlogd_pidfile, log (libvirtd's), virtlogd_log, qemu_log_dir
    (per-guest QEMU logs), guest_dir (a 0755 directory for guest files and consoles).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike,
        *,
        cache_dir: str | os.PathLike | None = None,
        start: bool = True,
    ):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o711)
        self.dirs = {system: self.base_dir / sub for system, sub in PRIVATE_DIRS.items()}
        if cache_dir is None:
            shared = CACHE_DIR / "libvirt-cache"
            with contextlib.suppress(OSError):
                shared.mkdir(parents=True, exist_ok=True)
            cache_dir = shared if os.access(shared, os.W_OK) else self.base_dir / "cache"
        self.dirs["/var/cache/libvirt"] = Path(cache_dir)
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.dirs["/run/libvirt"] / "libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.socket_path}"
        self.libvirtd_pidfile = self.base_dir / "libvirtd.pid"
        self.virtlogd_pidfile = self.base_dir / "virtlogd.pid"
        self.log = self.base_dir / "libvirtd.log"
        self.virtlogd_log = self.base_dir / "virtlogd.log"
        self.qemu_log_dir = self.dirs["/var/log/libvirt"] / "qemu"
        self.guest_dir = self.base_dir / "guests"
        self.guest_dir.mkdir(exist_ok=True)
        self.guest_dir.chmod(0o755)
        self._write_configs()
        register_cleanup(self.stop)
        if start:
            self.start()

    def _write_configs(self) -> None:
        etc = self.dirs["/etc/libvirt"]
        (etc / "libvirtd.conf").write_text(
            "listen_tls = 0\nlisten_tcp = 0\n"
            'unix_sock_group = "root"\nunix_sock_rw_perms = "0700"\nunix_sock_ro_perms = "0700"\n'
            'unix_sock_admin_perms = "0700"\nauth_unix_ro = "none"\nauth_unix_rw = "none"\n'
            f'log_outputs = "3:file:{self.log}"\n'
        )
        (etc / "virtlogd.conf").write_text(f'log_outputs = "3:file:{self.virtlogd_log}"\n')
        (etc / "qemu.conf").write_text(
            "# provision test harness: see tests/harness/libvirtd.py\n"
            'security_driver = "none"\n'
            "namespaces = [ ]\n"
        )
        (etc / "qemu.conf").chmod(0o600)
        self._nokvm = self.base_dir / "nokvm"
        self._nokvm.touch()
        self._nokvm.chmod(0)

    def _start_script(self) -> str:
        q = shlex.quote
        lines = ["set -e"]
        for system, private in self.dirs.items():
            lines.append(f"mount --bind {q(str(private))} {q(system)}")
        if os.path.exists("/dev/kvm"):
            lines.append(f"mount --bind {q(str(self._nokvm))} /dev/kvm")
        etc = self.dirs["/etc/libvirt"]
        lines.append(
            f"virtlogd -d -p {q(str(self.virtlogd_pidfile))} -f {q(str(etc / 'virtlogd.conf'))}"
        )
        # libvirtd -d returns once its drivers are initialised.
        lines.append(
            f"exec libvirtd -d -p {q(str(self.libvirtd_pidfile))} -f {q(str(etc / 'libvirtd.conf'))}"
        )
        return "\n".join(lines) + "\n"

    def is_running(self) -> bool:
        pid = read_pid(self.libvirtd_pidfile)
        return pid is not None and pid_alive(pid)

    def start(self, timeout: float = 90) -> None:
        """Start both daemons and wait until a connection answers (the first start probes QEMU)."""
        if self.is_running():
            return
        for (
            system
        ) in self.dirs:  # bind mount targets; normally there already (libvirt-daemon-system)
            os.makedirs(system, exist_ok=True)
        for pidfile in (self.libvirtd_pidfile, self.virtlogd_pidfile):
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", self._start_script()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            self.stop()
            raise HarnessError(
                f"libvirtd did not start ({proc.returncode}): {proc.stdout.decode(errors='replace').strip()}\n"
                f"{tail(self.log)}"
            )
        try:
            wait_for(
                self._answers,
                timeout,
                f"libvirtd at {self.socket_path}",
                interval=0.1,
                on_timeout=lambda: "\n" + tail(self.log),
            )
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        import libvirt

        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError:
            return False
        try:
            conn.getCapabilities()  # makes the driver probe QEMU now, not in the first test
            return True
        finally:
            conn.close()

    def open(self):
        """A new libvirt.virConnect to this daemon; the caller closes it."""
        import libvirt  # lazy: optional dependency

        return libvirt.open(self.uri)

    def destroy_all(self) -> None:
        """Destroy and undefine every domain (QEMU processes outlive a killed libvirtd)."""
        self.remove("")

    def remove(self, prefix: str, *, volumes: bool = False) -> None:
        """Destroy and undefine the domains and storage pools whose names start
        with prefix (a test's tag), best effort; volumes=True deletes the pools'
        volumes first. Directories on disk are the caller's."""
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            for dom in conn.listAllDomains():
                if not dom.name().startswith(prefix):
                    continue
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isPersistent():
                        dom.undefineFlags(
                            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                        )
            for pool in conn.listAllStoragePools():
                if not pool.name().startswith(prefix):
                    continue
                with contextlib.suppress(libvirt.libvirtError):
                    if pool.isActive():
                        if volumes:
                            for vol in pool.listAllVolumes(0):
                                vol.delete(0)
                        pool.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    pool.undefine()
        finally:
            conn.close()

    def stop(self) -> None:
        """Destroy and undefine guests, then kill libvirtd, then virtlogd."""
        if self.is_running():
            with contextlib.suppress(Exception):
                self.destroy_all()
        kill_pidfile(self.libvirtd_pidfile, timeout=15)
        # Safety net: QEMU processes whose guests could not be destroyed.
        for pidfile in (self.dirs["/run/libvirt"] / "qemu").glob("*.pid"):
            pid = read_pid(pidfile)
            if pid is not None and pid_alive(pid):
                kill_pid(pid)
        kill_pidfile(self.virtlogd_pidfile)

    def restart(self, timeout: float = 90) -> None:
        """Kill and start both daemons (guests are destroyed: fault tests for the client side)."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> PrivateLibvirtd:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
