"""Atomic file writes through a plain command, for when SFTP cannot be used
(become/sudo: SFTP runs as the login user)."""

from __future__ import annotations

from provisioner.connection.base import Connection
from provisioner.errors import CommandFailed

# A fixed script: the paths travel as positional parameters, never as code.
_PUT_SCRIPT = (
    'set -e; dir=$(dirname -- "$1"); base=$(basename -- "$1"); '
    'tmp=$(mktemp "$dir/.$base.XXXXXX.provision-tmp"); '
    'trap \'rm -f -- "$tmp"\' EXIT; cat > "$tmp"; chmod "$2" "$tmp"; '
    'mv -f -- "$tmp" "$1"; trap - EXIT'
)


def put_via_shell(conn: Connection, path: str, data: bytes, mode: int | None) -> None:
    argv = ["sh", "-c", _PUT_SCRIPT, "provision-put", path, format(mode or 0o644, "o")]
    result = conn.run(argv, stdin=data)
    if not result.ok:
        raise CommandFailed(conn.host, ["(write)", path], result.rc, result.err)
