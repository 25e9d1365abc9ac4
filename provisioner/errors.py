"""Errors the user sees. Each renders as one line naming where the problem is."""

from __future__ import annotations


class ProvisionError(Exception):
    """Base class: str(err) is a complete one-line message for a person."""


class SpecError(ProvisionError):
    """A problem in a playbook or inventory: names file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class HostError(ProvisionError):
    """Something went wrong on (or on the way to) one host."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.message = message
        super().__init__(f"{host}: {message}")


class Unreachable(HostError):
    """The host could not be connected to (network, auth, host key)."""


class HostKeyRejected(Unreachable):
    """The host presented an unknown or changed SSH host key."""


class CommandFailed(HostError):
    """A command on the host exited non-zero where success was required."""

    def __init__(self, host: str, argv: list[str], rc: int, stderr: str) -> None:
        import shlex

        self.argv = argv
        self.rc = rc
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(host, f"`{shlex.join(argv)}` exited {rc}: {detail}")


class StalePlan(HostError):
    """The world changed between plan and apply."""


class NotConverged(HostError):
    """After apply, re-reading the resource still shows a difference."""
