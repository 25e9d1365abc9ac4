"""All the probes of a host in one remote script: one round trip per host.

Each probe's argv is quoted with shlex.join; the script only adds fixed
framing. Frames are delimited by a random nonce so no file content can forge
a boundary. stdout and stderr are framed on their own streams with shell
builtins (printf), so the framing itself spawns no process: on a busy host
every fork counts.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError


def build_script(probes: Sequence[Sequence[str]], nonce: str) -> str:
    lines = []
    for i, argv in enumerate(probes):
        tag = f"@@{nonce}@@ {i}"
        lines.append(f"printf '%s\\n' '{tag} o'; printf '%s\\n' '{tag} e' >&2")
        lines.append(f"{shlex.join(argv)} </dev/null")
        lines.append(f"printf '\\n%s %d\\n' '{tag} r' \"$?\"; printf '\\n%s\\n' '{tag} x' >&2")
    return "\n".join(lines) + "\n"


def _frames(data: bytes, count: int, nonce: str, start_suffix: bytes,
            end_suffix: bytes) -> list[tuple[bytes, bytes]]:
    """Split a stream into per-probe (body, trailer) by the nonce tags."""
    out = []
    pos = 0
    for i in range(count):
        tag = f"@@{nonce}@@ {i}".encode()
        start = data.find(tag + start_suffix + b"\n", pos)
        if start < 0:
            raise ValueError(f"probe {i}: output frame missing")
        body = start + len(tag) + len(start_suffix) + 1
        end = data.find(b"\n" + tag + end_suffix, body)
        if end < 0:
            raise ValueError(f"probe {i}: output frame not closed")
        trailer_end = data.find(b"\n", end + 1 + len(tag) + len(end_suffix))
        out.append((data[body:end], data[end + 1 + len(tag) + len(end_suffix):trailer_end]))
        pos = trailer_end
    return out


def parse_output(stdout: bytes, stderr: bytes, count: int, nonce: str) -> list[Result]:
    outs = _frames(stdout, count, nonce, b" o", b" r ")
    errs = _frames(stderr, count, nonce, b" e", b" x")
    return [Result(int(rc), body, err) for (body, rc), (err, _) in zip(outs, errs, strict=False)]


def run_batch(conn: Connection, probes: Sequence[Sequence[str]],
              timeout: float | None = None) -> list[Result]:
    if not probes:
        return []
    nonce = os.urandom(8).hex()
    result = conn.run(["sh", "-c", build_script(probes, nonce)], timeout=timeout)
    try:
        return parse_output(result.stdout, result.stderr, len(probes), nonce)
    except ValueError as exc:
        detail = result.err.strip().splitlines()[-1:] or ["no error output"]
        raise HostError(conn.host, f"reading state failed (rc {result.rc}: {detail[0]}; {exc})") from None
