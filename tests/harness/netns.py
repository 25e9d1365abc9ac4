"""Hosts as Linux network namespaces: own address in 10.200.0.0/24, own hostname, own sshd.

Layout (INFRA.md): a hub namespace holds bridge br0 (10.200.0.254/24); each host namespace
has eth0 (10.200.0.<i>/24), joined to br0 by a veth pair created inside the hub, so no
interface or address ever appears in the root namespace. Namespace names carry a per-run
prefix (ip netns keeps them in /run/netns), so parallel runs do not collide.

A client in the root namespace reaches a host through `connect_socket()`: the TCP socket is
created in a thread that called setns() into the hub, then handed to paramiko (`sock=`).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from pathlib import Path

from .sshd import (
    SshHost,
    _ensure_privsep_dir,
    _spawn_sshd,
    _wait_started,
    known_hosts_line,
    ssh_connect,
    sshd_config_text,
    write_inventory,
)
from .util import kill_pid, kill_pidfile, pid_alive, read_pid, register_cleanup, run, ssh_keygen

CLONE_NEWNET = 0x40000000
SUBNET_PREFIX = "10.200.0."
HUB_ADDRESS = SUBNET_PREFIX + "254"
NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, nstype)
        return
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def connect_socket(
    address: str, port: int, netns: str = "hub", timeout: float = 10.0
) -> socket.socket:
    """A TCP socket connected to address:port inside network namespace `netns`.

    netns is a name under /run/netns or a path (e.g. /proc/PID/ns/net). The socket is made
    in a short-lived thread that joined the namespace (setns affects only the calling thread),
    and it stays bound to that namespace after the thread ends. TCP_NODELAY is set.
    """
    ns_path = netns if "/" in netns else str(NETNS_DIR / netns)
    result: dict = {}

    def worker() -> None:
        try:
            fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect((address, port))
                sock.settimeout(None)
            except BaseException:
                sock.close()
                raise
            result["sock"] = sock
        except BaseException as e:  # handed to the caller
            result["error"] = e

    t = threading.Thread(target=worker, name=f"setns-{netns}", daemon=True)
    t.start()
    t.join(timeout + 5)
    if "error" in result:
        raise result["error"]
    if "sock" not in result:
        raise TimeoutError(f"connect to {address}:{port} in netns {netns} timed out")
    return result["sock"]


class NetnsHosts:
    """n hosts h1..hn, each a network + UTS namespace with its own sshd on port 22.

    Attributes: base_dir, prefix, hub (namespace name to pass to connect_socket),
    known_hosts (Path), client_key (Path), hosts (list of dicts: name, address, port, user,
    key_file, netns), inventory (Path, after write_inventory()).
    """

    def __init__(
        self, n: int, base_dir: str | os.PathLike, *, prefix: str | None = None, start: bool = True
    ):
        if n > 250:
            raise ValueError("at most 250 hosts fit in 10.200.0.0/24 next to the hub")
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix or f"pt{os.getpid()}"
        self.hub = f"{self.prefix}-hub"
        self.client_key = self.base_dir / "client_ed25519"
        client_pub = ssh_keygen(self.client_key, "provision-test-client")
        self.authorized_keys = self.base_dir / "authorized_keys"
        self.authorized_keys.write_text(client_pub + "\n")
        self.known_hosts = self.base_dir / "known_hosts"
        self.inventory: Path | None = None
        self._hosts: dict[str, SshHost] = {}
        for i in range(1, n + 1):
            name = f"h{i}"
            host = SshHost(
                name=name,
                address=f"{SUBNET_PREFIX}{i}",
                port=22,  # a private namespace: nothing else listens there
                user="root",
                key_file=str(self.client_key),
                dir=self.base_dir / name,
                extra={"netns": f"{self.prefix}-{name}"},
            )
            host.dir.mkdir(exist_ok=True)
            host.host_public_key = ssh_keygen(host.host_key, f"provision-test-{name}")
            host.config.write_text(sshd_config_text(host, self.authorized_keys))
            self._hosts[name] = host
        self.known_hosts.write_text(
            "".join(
                known_hosts_line(h.address, h.port, h.host_public_key) + "\n"
                for h in self._hosts.values()
            )
        )
        self._created: list[str] = []
        register_cleanup(self.teardown)
        if start:
            self.start()

    # -- views -----------------------------------------------------------------
    @property
    def hosts(self) -> list[dict]:
        return [h.as_dict() for h in self._hosts.values()]

    def host(self, name: str) -> dict:
        return self._hosts[name].as_dict()

    def netns_of(self, name: str) -> str:
        return self._hosts[name].extra["netns"]

    def write_inventory(self, path: str | os.PathLike | None = None) -> Path:
        self.inventory = write_inventory(
            list(self._hosts.values()),
            Path(path) if path else self.base_dir / "inventory.yml",
            self.known_hosts,
        )
        return self.inventory

    def connect_socket(
        self, name_or_address: str, port: int = 22, timeout: float = 10.0
    ) -> socket.socket:
        """connect_socket() through this run's hub, by host name (h1) or address."""
        h = self._hosts.get(name_or_address)
        return connect_socket(h.address if h else name_or_address, port, self.hub, timeout)

    def connect(self, name: str, timeout: float = 10.0):
        """A paramiko client to host `name` (strict host keys), reached from the root namespace."""
        h = self._hosts[name]
        return ssh_connect(
            h, self.known_hosts, sock=self.connect_socket(name, h.port, timeout), timeout=timeout
        )

    def exec_in(self, name: str, *cmd: str) -> str:
        """Run a command inside host `name`'s network namespace (not its UTS one); stdout."""
        return run(["ip", "netns", "exec", self.netns_of(name), *cmd]).stdout

    # -- lifecycle -------------------------------------------------------------
    def _netns_add(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        self._created.append(ns)

    def start(self) -> None:
        hub = self.hub
        self._netns_add(hub)
        run(["ip", "-n", hub, "link", "set", "lo", "up"])
        run(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", hub, "addr", "add", f"{HUB_ADDRESS}/24", "dev", "br0"])
        run(["ip", "-n", hub, "link", "set", "br0", "up"])
        for h in self._hosts.values():
            ns = h.extra["netns"]
            self._netns_add(ns)
            # Both ends are born inside namespaces: the veth never exists in the root one.
            run(
                [
                    "ip",
                    "-n",
                    hub,
                    "link",
                    "add",
                    self._veth(h.name),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                ]
            )
            run(["ip", "-n", hub, "link", "set", self._veth(h.name), "master", "br0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{h.address}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _ensure_privsep_dir()
        procs = [(h, _spawn_sshd(self._sshd_prefix(h), h)) for h in self._hosts.values()]
        for h, proc in procs:
            _wait_started(h, proc, probe=self._probe)

    def _veth(self, name: str) -> str:
        return f"v{name}"[:15]

    def _sshd_prefix(self, h: SshHost) -> list[str]:
        # Own UTS namespace so the host has its own hostname; sshd then daemonizes inside.
        return [
            "ip",
            "netns",
            "exec",
            h.extra["netns"],
            "unshare",
            "--uts",
            "sh",
            "-c",
            f'hostname {h.name} && exec "$0" "$@"',
        ]

    def _probe(self, h: SshHost) -> bool:
        try:
            connect_socket(h.address, h.port, self.hub, timeout=1).close()
            return True
        except OSError:
            return False

    def stop_sshd(self, name: str) -> None:
        kill_pidfile(self._hosts[name].pidfile, children=True)

    def start_sshd(self, name: str) -> None:
        h = self._hosts[name]
        pid = read_pid(h.pidfile)
        if pid is not None and pid_alive(pid):
            return
        _wait_started(h, _spawn_sshd(self._sshd_prefix(h), h), probe=self._probe)

    def link_down(self, name: str) -> None:
        """Cut host `name` off the hub (its sshd keeps running): connections time out."""
        run(["ip", "-n", self.hub, "link", "set", self._veth(name), "down"])

    def link_up(self, name: str) -> None:
        run(["ip", "-n", self.hub, "link", "set", self._veth(name), "up"])

    def teardown(self) -> None:
        """Stop every sshd, then delete the namespaces (their veths and bridge go with them)."""
        for h in self._hosts.values():
            kill_pidfile(h.pidfile, children=True)
        while self._created:
            ns = self._created.pop()
            # Anything else still running in the namespace (sessions, test processes).
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                kill_pid(int(pid), timeout=5)
            run(["ip", "netns", "del", ns], check=False)

    def __enter__(self) -> NetnsHosts:
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()
