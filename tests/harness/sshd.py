"""OpenSSH servers for tests: n sshd on 127.0.0.1 free ports, strict host keys, root login by key.

Everything (keys, configs, pid files, logs, known_hosts, inventory) lives under base_dir.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .util import (
    HarnessError,
    free_ports,
    kill_pidfile,
    pid_alive,
    read_pid,
    register_cleanup,
    ssh_keygen,
    tail,
    wait_for,
)

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@dataclass
class SshHost:
    """One sshd: where it listens and the files it runs from (all under dir)."""

    name: str
    address: str
    port: int
    user: str
    key_file: str  # the client's private key
    dir: Path
    host_public_key: str = ""
    extra: dict = field(default_factory=dict)  # e.g. netns name

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def pidfile(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    def as_dict(self) -> dict:
        """The public view tests use: name, address, port, user, key_file."""
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "key_file": self.key_file,
            **self.extra,
        }


def sshd_config_text(
    host: SshHost, authorized_keys: Path, env: dict[str, str] | None = None
) -> str:
    """The sshd_config of INFRA.md: private paths only, key auth for root, generous limits.

    env: extra variables every session gets (sshd SetEnv), e.g. {"APT_CONFIG": ...}.
    """
    set_env = " ".join(f'"{k}={v}"' for k, v in {"SHLVL": "1", **(env or {})}.items())
    return "\n".join(
        [
            f"Port {host.port}",
            f"ListenAddress {host.address}",
            f"HostKey {host.host_key}",
            f"PidFile {host.pidfile}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "MaxStartups 200",
            "MaxSessions 100",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            # bash reads ~/.bashrc for ssh commands when SHLVL < 2: root's rc files
            # (pyenv here) cost 100-150 ms per command (PERFORMANCE.md).
            f"SetEnv {set_env}",
            f"Subsystem sftp {SFTP_SERVER}",
            "",
        ]
    )


def known_hosts_line(address: str, port: int, public_key: str) -> str:
    """A known_hosts entry: bare address on port 22, [address]:port otherwise (as OpenSSH/paramiko look it up)."""
    key_type, key_b64 = public_key.split()[:2]
    hostpat = address if port == 22 else f"[{address}]:{port}"
    return f"{hostpat} {key_type} {key_b64}"


def write_inventory(hosts: list[SshHost], path: Path, known_hosts: Path) -> Path:
    """An Ansible-style YAML inventory: group `all`, one entry per host, known_hosts as a var."""
    doc = {
        "all": {
            "hosts": {
                h.name: {
                    "ansible_host": h.address,
                    "ansible_port": h.port,
                    "ansible_user": h.user,
                    "ansible_ssh_private_key_file": h.key_file,
                    # every test host is this machine: give each its own apply
                    # lock, as separate machines would have
                    "provision_lock_path": str(h.dir / "provision.lock"),
                }
                for h in hosts
            },
            "vars": {"provision_known_hosts": str(known_hosts)},
        }
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ssh_connect(
    host: dict | SshHost, known_hosts: str | os.PathLike, sock=None, timeout: float = 10.0
):
    """A paramiko SSHClient connected with strict host-key checking (RejectPolicy + known_hosts).

    Opens the TCP socket itself with TCP_NODELAY (PERFORMANCE.md: auth 52 ms -> 8.5 ms)
    unless `sock` is given (e.g. from netns.connect_socket).
    """
    import paramiko  # lazy: a run without SSH tests does not pay for it

    h = host.as_dict() if isinstance(host, SshHost) else host
    if sock is None:
        sock = socket.create_connection((h["address"], h["port"]), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            h["address"],
            port=h["port"],
            username=h["user"],
            key_filename=h["key_file"],
            sock=sock,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except BaseException:
        client.close()
        raise
    return client


class SshFleet:
    """n OpenSSH servers on 127.0.0.1 free ports, named h1..hn, for user root.

    All of them are this machine (same filesystem, dpkg, hostname): only the port and the
    host key differ. env: variables sshd sets in
    every session (SetEnv), e.g. {"APT_CONFIG": apt_repo.apt_config}.

    Attributes: base_dir, known_hosts (Path), client_key (Path), client_public_key,
    hosts (list of dicts: name, address, port, user, key_file), inventory (Path, after
    write_inventory()).
    """

    def __init__(
        self,
        n: int,
        base_dir: str | os.PathLike,
        *,
        user: str = "root",
        env: dict[str, str] | None = None,
        start: bool = True,
    ):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.client_key = self.base_dir / "client_ed25519"
        self.client_public_key = ssh_keygen(self.client_key, "provision-test-client")
        self.authorized_keys = self.base_dir / "authorized_keys"
        self.authorized_keys.write_text(self.client_public_key + "\n")
        self.known_hosts = self.base_dir / "known_hosts"
        self.inventory: Path | None = None
        self._hosts: dict[str, SshHost] = {}
        ports = free_ports(n)
        for i in range(1, n + 1):
            name = f"h{i}"
            host = SshHost(
                name=name,
                address="127.0.0.1",
                port=ports[i - 1],
                user=user,
                key_file=str(self.client_key),
                dir=self.base_dir / name,
            )
            host.dir.mkdir(exist_ok=True)
            host.host_public_key = ssh_keygen(host.host_key, f"provision-test-{name}")
            host.config.write_text(sshd_config_text(host, self.authorized_keys, env))
            self._hosts[name] = host
        self.write_known_hosts()
        register_cleanup(self.stop_all)
        if start:
            self.start_all()

    # -- views -----------------------------------------------------------------
    @property
    def hosts(self) -> list[dict]:
        return [h.as_dict() for h in self._hosts.values()]

    @property
    def names(self) -> list[str]:
        return list(self._hosts)

    def host(self, name: str) -> dict:
        return self._get(name).as_dict()

    def _get(self, name: str) -> SshHost:
        try:
            return self._hosts[name]
        except KeyError:
            raise KeyError(
                f"no host {name!r} in this fleet (have {', '.join(self._hosts)})"
            ) from None

    def write_known_hosts(self) -> Path:
        lines = [
            known_hosts_line(h.address, h.port, h.host_public_key) for h in self._hosts.values()
        ]
        self.known_hosts.write_text("\n".join(lines) + "\n")
        return self.known_hosts

    def write_inventory(self, path: str | os.PathLike | None = None) -> Path:
        """Write the YAML inventory (default base_dir/inventory.yml) and return its path."""
        self.inventory = write_inventory(
            list(self._hosts.values()),
            Path(path) if path else self.base_dir / "inventory.yml",
            self.known_hosts,
        )
        return self.inventory

    def connect(self, name: str, timeout: float = 10.0):
        """A paramiko client to host `name`, strict host keys (known_hosts of this fleet)."""
        return ssh_connect(self._get(name), self.known_hosts, timeout=timeout)

    # -- lifecycle -------------------------------------------------------------
    def start_all(self) -> None:
        _ensure_privsep_dir()
        procs = [(h, _spawn_sshd([], h)) for h in self._hosts.values()]
        for h, proc in procs:
            _wait_started(h, proc, probe=_tcp_probe)

    def start(self, name: str) -> None:
        """(Re)start one host's sshd (fault tests); no-op if it runs."""
        h = self._get(name)
        if self.is_running(name):
            return
        _ensure_privsep_dir()
        _wait_started(h, _spawn_sshd([], h), probe=_tcp_probe)

    def stop(self, name: str) -> None:
        """Stop one host's sshd and its sessions: open connections drop, new ones are refused."""
        kill_pidfile(self._get(name).pidfile, children=True)

    def is_running(self, name: str) -> bool:
        pid = read_pid(self._get(name).pidfile)
        return pid is not None and pid_alive(pid)

    def regenerate_host_key(self, name: str, update_known_hosts: bool = False) -> str:
        """Give host `name` a new host key and restart its sshd; returns the new public key.

        known_hosts keeps the old key unless update_known_hosts: a strict client must then
        refuse the host (the changed-key test).
        """
        h = self._get(name)
        was_running = self.is_running(name)
        self.stop(name)
        h.host_public_key = ssh_keygen(h.host_key, f"provision-test-{name}")
        if update_known_hosts:
            self.write_known_hosts()
        if was_running:
            self.start(name)
        return h.host_public_key

    def stop_all(self) -> None:
        for h in self._hosts.values():
            kill_pidfile(h.pidfile, children=True)

    def __enter__(self) -> SshFleet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


# -- shared with netns.py ---------------------------------------------------------
def _ensure_privsep_dir() -> None:
    # sshd exits 255 ("Missing privilege separation directory") without it.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)


def _spawn_sshd(prefix: list[str], host: SshHost) -> subprocess.Popen:
    """Start sshd (it daemonizes: the Popen ends once it has forked)."""
    with contextlib.suppress(FileNotFoundError):
        host.pidfile.unlink()
    cmd = [*prefix, SSHD, "-f", str(host.config), "-E", str(host.log)]
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_started(host: SshHost, proc: subprocess.Popen, probe, timeout: float = 10.0) -> None:
    """Wait for the foreground sshd to fork, then for its pid file and a listening port."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise HarnessError(f"sshd for {host.name} did not daemonize") from None
    if proc.returncode != 0:
        raise HarnessError(
            f"sshd for {host.name} exited {proc.returncode}: {err.decode(errors='replace').strip()}\n"
            f"{tail(host.log)}"
        )

    def ready() -> bool:
        pid = read_pid(host.pidfile)
        return pid is not None and pid_alive(pid) and probe(host)

    wait_for(
        ready,
        timeout,
        f"sshd {host.name} on {host.address}:{host.port}",
        on_timeout=lambda: "\n" + tail(host.log),
    )


def _tcp_probe(host: SshHost) -> bool:
    try:
        with socket.create_connection((host.address, host.port), timeout=1):
            return True
    except OSError:
        return False
