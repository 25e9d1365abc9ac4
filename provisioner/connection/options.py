"""SSH options, apart from the SSH code: building them must not import
paramiko (~0.3 s), which a run with only local hosts never needs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SshOptions:
    connect_timeout: float = 10.0
    command_timeout: float | None = None  # default per command; None = no limit
    retries: int = 2
    accept_new_host_keys: bool = False  # trust-on-first-use, only when asked
    known_hosts: str | None = None  # default ~/.ssh/known_hosts
    max_channels: int = 8  # sshd's MaxSessions defaults to 10
