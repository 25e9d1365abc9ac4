"""A per-host lock, held on the host, so two applies cannot interleave.

The lock is flock(2) on a file on the host, held by a process whose stdin is
our SSH channel. When we finish, or die (even SIGKILL), the channel closes,
the process sees EOF and exits, and the lock is released: no stale locks.
Who holds it is written beside the lock, for the "locked by" message.
"""

from __future__ import annotations

import getpass
import os
import socket
import time

from provisioner.connection.base import Connection, Held
from provisioner.errors import HostError

DEFAULT_LOCK_PATH = "/var/lock/provision.lock"

# Fixed script; the lock path, wait seconds and holder text are positional
# parameters, never code.
_LOCK_SCRIPT = r"""
command -v flock >/dev/null 2>&1 || { echo "no-flock"; exit 0; }
( : >>"$1" ) 2>/dev/null || { echo "cannot-open"; exit 71; }
exec 9>>"$1"
if ! flock -w "$2" 9; then
  printf 'busy %s\n' "$(cat "$1.holder" 2>/dev/null || echo unknown)"; exit 75
fi
printf '%s\n' "$3" > "$1.holder"
echo locked
exec cat >/dev/null
"""


class HostLocked(HostError):
    pass


class HostLock:
    def __init__(self, conn: Connection, path: str | None = None, wait: float = 0.0) -> None:
        self.conn = conn
        self.path = path or conn.vars.get("provision_lock_path") or DEFAULT_LOCK_PATH
        self.wait = wait
        self.held: Held | None = None
        self.note = ""

    def acquire(self) -> None:
        holder = (f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since "
                  f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        held = self.conn.hold(["sh", "-c", _LOCK_SCRIPT, "provision-lock", self.path,
                               str(int(self.wait)), holder])
        line = held.readline(timeout=self.wait + 30).strip()
        if line == "locked":
            self.held = held
            return
        held.close()
        if line == "no-flock":
            self.note = "flock is not installed on the host: applying without a lock"
            return
        if line == "cannot-open":
            raise HostError(self.conn.host, f"cannot open the lock file {self.path} "
                                            "(set provision_lock_path, or use become)")
        if line.startswith("busy"):
            raise HostLocked(self.conn.host, f"another apply holds the lock {self.path}: "
                                             f"{line[5:] or 'unknown holder'}")
        raise HostError(self.conn.host, f"cannot take the lock {self.path}"
                                        f" ({line or 'no answer'})")

    def release(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None

    def __enter__(self) -> "HostLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
