"""The one narrow I/O boundary: everything that touches a host goes through a
Connection. Unit tests use FakeConnection; integration tests the real ones."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner.errors import HostError


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class Held(abc.ABC):
    """A process kept running on a host (see Connection.hold)."""

    @abc.abstractmethod
    def readline(self, timeout: float) -> str:
        """The next line of its stdout ('' at EOF)."""

    @abc.abstractmethod
    def close(self) -> int | None:
        """Close its stdin and wait for it; returns the exit status if known."""


class Connection(abc.ABC):
    """One persistent connection to one host.

    argv is always a list; implementations quote it with shlex.join and never
    pass user text through a shell format string.
    """

    host: str  # the inventory name, for messages
    become: bool = False  # run every command through sudo

    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        sudo: bool | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run argv on the host; sudo=None means "as the connection's become"."""

    @abc.abstractmethod
    def put(self, path: str, data: bytes, *, mode: int | None = None) -> None:
        """Write data to path atomically (temp file in the same dir + rename)."""

    @abc.abstractmethod
    def get(self, path: str) -> bytes:
        """Read a whole file from the host."""

    @property
    def vars(self) -> dict[str, Any]:
        """The host's inventory variables (e.g. provision_docker_socket)."""
        return self.__dict__.setdefault("_vars", {})

    @vars.setter
    def vars(self, value: dict[str, Any]) -> None:
        self.__dict__["_vars"] = dict(value)

    def environment(self) -> list[str]:
        """`env NAME=VALUE…` for every command, from the host variable
        provision_environment (a proxy, an APT_CONFIG), like Ansible's
        `environment:`; empty when unset. Goes after sudo, which resets the
        environment."""
        env = self.vars.get("provision_environment") or {}
        if not isinstance(env, dict):
            raise HostError(self.host, "provision_environment must be a mapping of names to values")
        bad = [k for k in env if not (isinstance(k, str) and k.isidentifier())]
        if bad:
            raise HostError(self.host, f"provision_environment: {bad[0]!r} is not a variable name")
        return ["env", *(f"{k}={v}" for k, v in sorted(env.items()))] if env else []

    @property
    def cache(self) -> dict[str, Any]:
        """Per-connection state modules keep between calls (API clients,
        the native helper's path). Values are dropped on close()."""
        return self.__dict__.setdefault("_cache", {})

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run callback when the connection closes (close API clients first)."""
        self.__dict__.setdefault("_closers", []).append(callback)

    def _run_closers(self) -> None:
        for callback in reversed(self.__dict__.pop("_closers", [])):
            try:
                callback()
            except Exception:  # closing is best effort; the transport goes anyway
                pass
        self.cache.clear()

    def hold(self, argv: Sequence[str], *, sudo: bool | None = None) -> "Held":
        """Start argv and keep it running until Held.close(): its stdin stays
        open, so a process that waits on stdin (a lock holder) lives exactly
        as long as we do — even if we are killed, the connection drops and
        it gets EOF."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold processes")

    def forward(self, remote_socket: str, bridge: Sequence[str] | None = None) -> str:
        """Expose a unix socket of the host as a local unix socket path.

        bridge is an argv that speaks the socket's protocol on stdio (e.g.
        `docker system dial-stdio`); None means a generic socket bridge.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot forward sockets")

    def close(self) -> None:
        self._run_closers()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
