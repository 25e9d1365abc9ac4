"""Acting on the controller itself (ansible_connection=local, the demo)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence

from provisioner.connection.base import Connection, Held, Result
from provisioner.errors import HostError
from provisioner.log import log_command, log_put


class LocalConnection(Connection):
    def __init__(self, host: str = "localhost", *, become: bool = False) -> None:
        self.host = host
        self.become = become
        self.commands_run = 0

    def _wrap(self, argv: Sequence[str], sudo: bool | None) -> list[str]:
        argv = [*self.environment(), *argv]
        use_sudo = self.become if sudo is None else sudo
        if use_sudo and os.geteuid() != 0:
            return ["sudo", "-n", "--", *argv]
        return argv

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, sudo: bool | None = None,
            timeout: float | None = None) -> Result:
        self.commands_run += 1
        log_command(self.host, argv, bool(self.become if sudo is None else sudo))
        try:
            proc = subprocess.run(self._wrap(argv, sudo), input=stdin or b"", capture_output=True,
                                  timeout=timeout, check=False)
        except FileNotFoundError as exc:
            return Result(127, b"", f"{argv[0]}: command not found ({exc.strerror})".encode())
        except subprocess.TimeoutExpired:
            raise HostError(self.host, f"command timed out after {timeout}s: {argv[0]}") from None
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def put(self, path: str, data: bytes, *, mode: int | None = None) -> None:
        log_put(self.host, path, len(data), mode)
        if self.become and os.geteuid() != 0:
            from provisioner.connection.atomic import put_via_shell

            put_via_shell(self, path, data, mode)
            return
        directory = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".provision-tmp",
                                   dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode if mode is not None else 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def get(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def hold(self, argv: Sequence[str], *, sudo: bool | None = None) -> Held:
        log_command(self.host, argv, bool(self.become if sudo is None else sudo))
        proc = subprocess.Popen(self._wrap(argv, sudo), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return _LocalHeld(proc)

    def forward(self, remote_socket: str, bridge: Sequence[str] | None = None) -> str:
        return remote_socket  # already local


class _LocalHeld(Held):
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def readline(self, timeout: float) -> str:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return ""
        return self.proc.stdout.readline().decode("utf-8", "replace")

    def close(self) -> int | None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
