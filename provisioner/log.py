"""The command log (`-v`): every command sent to a host, secrets scrubbed."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Sequence

from provisioner.secret import REGISTRY

COMMANDS = logging.getLogger("provision.commands")
COMMANDS.propagate = False
COMMANDS.setLevel(logging.WARNING)

# paramiko reports transport errors through logging; without a handler
# Python's last-resort handler would print them mid-progress. Our own errors
# say the same thing in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


class _Scrubbing(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return REGISTRY.scrub(super().format(record))


def enable_command_log(stream=None) -> None:  # type: ignore[no-untyped-def]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Scrubbing("  %(message)s"))
    COMMANDS.addHandler(handler)
    COMMANDS.setLevel(logging.DEBUG)


def log_command(host: str, argv: Sequence[str], sudo: bool) -> None:
    if COMMANDS.isEnabledFor(logging.DEBUG):
        if len(argv) == 3 and argv[0] == "sh" and argv[1] == "-c" and "@@" in argv[2]:
            text = f"(batched read: {argv[2].count(chr(10)) // 3} probes)"
        else:
            text = shlex.join(argv)
            if len(text) > 300:
                text = text[:300] + "…"
        COMMANDS.debug("%s: %s$ %s", host, "sudo " if sudo else "", text)


def log_put(host: str, path: str, size: int, mode: int | None) -> None:
    if COMMANDS.isEnabledFor(logging.DEBUG):
        COMMANDS.debug("%s: write %s (%d bytes, mode %s)", host, path, size,
                       format(mode, "04o") if mode is not None else "default")
