"""A host's unix socket (libvirtd, dockerd) reached through the existing SSH
transport.

paramiko cannot open direct-streamlocal channels, so each client that
connects to our private local socket gets a fresh exec channel running a
stdio-to-socket bridge on the host, and two threads pump bytes both ways.
Anyone who can open the local socket owns the remote daemon: it lives in a
0700 directory, is 0600, and is removed when the connection closes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioner.connection.ssh import SshConnection

# Fallback bridge when the daemon's own (virt-ssh-helper, docker dial-stdio)
# is not given: python3 is on nearly every host that runs libvirt or Docker.
_PY_BRIDGE = (
    "import os,socket,sys,threading\n"
    "s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1])\n"
    "def up():\n"
    "  while True:\n"
    "    d=os.read(0,65536)\n"
    "    if not d: break\n"
    "    s.sendall(d)\n"
    "  s.shutdown(socket.SHUT_WR)\n"
    "threading.Thread(target=up,daemon=True).start()\n"
    "while True:\n"
    "  d=s.recv(65536)\n"
    "  if not d: break\n"
    "  os.write(1,d)\n"
)


class SocketForward:
    def __init__(self, conn: "SshConnection", remote_socket: str,
                 bridge: Sequence[str] | None = None) -> None:
        self.conn = conn
        self.remote_socket = remote_socket
        self.bridge = list(bridge) if bridge else ["python3", "-c", _PY_BRIDGE, remote_socket]
        self._dir = tempfile.mkdtemp(prefix="provision-fwd-")
        os.chmod(self._dir, 0o700)
        self.path = os.path.join(self._dir, "sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._server.bind(self.path)
        finally:
            os.umask(old)
        self._server.listen(16)
        self._closed = False
        threading.Thread(target=self._accept_loop, name=f"fwd-{conn.host}", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        # Tunnels are not counted against the command cap: they are long-lived
        # (keep-alive HTTP, a libvirt session) and would starve it into a
        # deadlock. Per host, commands run one at a time, plus the lock
        # channel and a few tunnels (Docker's pool is capped at 2): well under
        # sshd's default MaxSessions of 10.
        command = self.conn._command(self.bridge, None)
        try:
            chan = self.conn.transport.open_session(timeout=self.conn.options.connect_timeout)
            chan.exec_command(command)
        except Exception:
            client.close()
            return

        def upstream() -> None:
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    chan.shutdown_write()
                except Exception:
                    pass

        def drain_stderr() -> None:
            try:
                while chan.recv_stderr(65536):
                    pass
            except Exception:
                pass

        threading.Thread(target=upstream, daemon=True).start()
        threading.Thread(target=drain_stderr, daemon=True).start()
        try:
            while True:
                data = chan.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()
            try:
                chan.close()
            except (EOFError, OSError):
                pass  # the transport died first (the host went away): nothing to close

    def close(self) -> None:
        self._closed = True
        try:
            self._server.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<SocketForward {self.conn.host}:{self.remote_socket} via {shlex.join(self.bridge[:2])}>"
