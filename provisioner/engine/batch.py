"""All the probes of a host in one remote script: one round trip per host.

Each probe's argv is quoted with shlex.join; the script only adds fixed
framing. Output frames are delimited by a random nonce so no file content
can forge a frame boundary.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError


def build_script(probes: Sequence[Sequence[str]], nonce: str) -> str:
    lines = ['t=$(mktemp) || exit 97', 'trap \'rm -f "$t"\' EXIT']
    for i, argv in enumerate(probes):
        tag = f"@@{nonce}@@ {i}"
        lines.append(f"printf '%s\\n' '{tag} o'")
        lines.append(f"{shlex.join(argv)} </dev/null 2>\"$t\"")
        lines.append(f"printf '\\n%s %d\\n' '{tag} r' \"$?\"")
        lines.append(f"printf '%s\\n' '{tag} e'; cat \"$t\"; printf '\\n%s\\n' '{tag} x'")
    return "\n".join(lines) + "\n"


def parse_output(stdout: bytes, count: int, nonce: str) -> list[Result]:
    results: list[Result] = []
    pos = 0
    for i in range(count):
        tag = f"@@{nonce}@@ {i}".encode()
        start = stdout.find(tag + b" o\n", pos)
        if start < 0:
            raise ValueError(f"probe {i}: output frame missing")
        body = start + len(tag) + 3
        rc_at = stdout.find(b"\n" + tag + b" r ", body)
        if rc_at < 0:
            raise ValueError(f"probe {i}: no exit status")
        rc_end = stdout.find(b"\n", rc_at + len(tag) + 4)
        rc = int(stdout[rc_at + len(tag) + 4:rc_end])
        err_start = stdout.find(tag + b" e\n", rc_end) + len(tag) + 3
        err_end = stdout.find(b"\n" + tag + b" x\n", err_start)
        results.append(Result(rc, stdout[body:rc_at], stdout[err_start:err_end]))
        pos = err_end + len(tag) + 4
    return results


def run_batch(conn: Connection, probes: Sequence[Sequence[str]],
              timeout: float | None = None) -> list[Result]:
    if not probes:
        return []
    nonce = os.urandom(8).hex()
    result = conn.run(["sh", "-c", build_script(probes, nonce)], timeout=timeout)
    try:
        return parse_output(result.stdout, len(probes), nonce)
    except ValueError as exc:
        detail = result.err.strip().splitlines()[-1:] or ["no error output"]
        raise HostError(conn.host, f"reading state failed (rc {result.rc}: {detail[0]}; {exc})") from None
