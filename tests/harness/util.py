"""Small helpers shared by the harness: ports, waiting, processes, pid files, cleanup."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Where .ci/install.sh caches what the tests would otherwise download (the guest kernel).
CACHE_DIR = Path(os.environ.get("PROVISION_TEST_CACHE", "/var/cache/provision-test"))


class HarnessError(RuntimeError):
    """A daemon or artefact of the harness could not be started or built."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free ports: all sockets stay bound until every port is picked."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.02,
    on_timeout: Callable[[], str] | None = None,
) -> object:
    """Poll predicate until it returns something truthy; HarnessError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def run(
    cmd: Sequence[str | os.PathLike],
    *,
    check: bool = True,
    input: bytes | str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run cmd, capture output as text; HarnessError with stderr when it fails."""
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run(
        [str(c) for c in cmd],
        input=input,
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    proc.stdout = proc.stdout.decode(errors="replace")
    proc.stderr = proc.stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise HarnessError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def missing_binaries(*names: str) -> list[str]:
    """Names among `names` that are neither on PATH nor an existing absolute path."""
    return [
        n for n in names if not (os.path.isabs(n) and os.access(n, os.X_OK)) and not shutil.which(n)
    ]


def tail(path: str | os.PathLike, lines: int = 20) -> str:
    """The last lines of a log file, for error messages ('' when it does not exist)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def read_pid(pidfile: str | os.PathLike) -> int | None:
    try:
        return int(Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM pid, wait for it to go, SIGKILL it after timeout seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.01)


def descendants(pid: int) -> list[int]:
    """Pids of every live descendant of pid (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_pidfile(pidfile: str | os.PathLike, timeout: float = 10.0, children: bool = False) -> None:
    """Stop the process named by pidfile (if any) and remove the file.

    With children=True its descendants go too (an sshd's open sessions: a host that goes
    down drops its connections), killed after the parent so it cannot fork new ones.
    """
    pid = read_pid(pidfile)
    if pid is not None and pid_alive(pid):
        kids = descendants(pid) if children else []
        kill_pid(pid, timeout)
        for kid in kids:
            kill_pid(kid, timeout)
    with contextlib.suppress(OSError):
        Path(pidfile).unlink()


_cleanups: list[Callable[[], None]] = []
_cleanup_lock = threading.Lock()


def _run_cleanups() -> None:
    while True:
        with _cleanup_lock:
            if not _cleanups:
                return
            fn = _cleanups.pop()
        with contextlib.suppress(Exception):
            fn()


atexit.register(_run_cleanups)


def register_cleanup(fn: Callable[[], None]) -> Callable[[], None]:
    """Run fn at interpreter exit (last registered first): the safety net behind teardown.

    Cleanups must be idempotent: the normal teardown usually ran them already.
    """
    with _cleanup_lock:
        _cleanups.append(fn)
    return fn


def unregister_cleanup(fn: Callable[[], None]) -> None:
    with _cleanup_lock, contextlib.suppress(ValueError):
        _cleanups.remove(fn)


def unmount_below(base: str | os.PathLike) -> None:
    """Unmount everything mounted under base, deepest first. dockerd leaves
    an nsfs mount at <exec-root>/netns/default behind when it stops, which
    would keep the run directory from being removed."""
    prefix = os.path.realpath(base).rstrip("/") + "/"
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1].replace("\\040", " ") for line in fh]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def make_run_dir(prefix: str = "prov-") -> Path:
    """A private directory for one test run, short (unix socket paths max out at 107 bytes).

    Mode 0711: others may traverse it (QEMU runs as libvirt-qemu and must reach the guest
    files) but not list it.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("PROVISION_TEST_TMP", "/tmp")))
    path.chmod(0o711)
    return path


def ssh_keygen(path: Path, comment: str = "provision-test") -> str:
    """Make an ed25519 key pair at path (+ .pub); returns the public key line."""
    for p in (path, path.with_name(path.name + ".pub")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    return path.with_name(path.name + ".pub").read_text().strip()
