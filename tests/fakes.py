"""Test doubles of the connection interface shared by several test files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from provisioner.connection.base import Connection, Result


class SubprocessConnection(Connection):
    """Runs argv on this machine with subprocess, in an environment of the test's
    choosing (its own HOME, PATH, cgroup root), and records every command and
    write: the real programs run, and the test sees what was asked of them."""

    def __init__(self, env: Mapping[str, str], host: str = "local") -> None:
        self.host = host
        self.env = dict(env)
        self.runs: list[list[str]] = []
        self.puts: list[str] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        sudo: bool | None = None,
        timeout: float | None = None,
    ) -> Result:
        # argv lists of strings only: never a shell string built by formatting
        assert isinstance(argv, (list, tuple)) and all(isinstance(a, str) for a in argv)
        self.runs.append(list(argv))
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, env=self.env, timeout=timeout
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def put(self, path: str, data: bytes, *, mode: int | None = None) -> None:
        self.puts.append(path)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)

    def get(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()
