"""SSH through paramiko: one persistent transport per host, a channel per
command, SFTP for files, strict host-key checking.

Why paramiko's Transport rather than SSHClient: we open the TCP socket
ourselves to set TCP_NODELAY (auth drops from ~52 ms to ~8 ms on loopback,
see shared/PERFORMANCE.md) and check the host key against our own
known_hosts handling before authenticating.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import sys
import threading
import time
from collections.abc import Sequence

# paramiko.config imports `invoke` (only for `Match exec` in ssh_config, which
# we never read) at a cost of ~100 ms per run; block it so paramiko skips it.
sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]

import paramiko  # noqa: E402

from provisioner.connection.base import Connection, Held, Result  # noqa: E402
from provisioner.connection.options import SshOptions  # noqa: E402
from provisioner.errors import HostError, HostKeyRejected, Unreachable  # noqa: E402
from provisioner.log import log_command, log_put  # noqa: E402

_key_cache: dict[str, paramiko.PKey] = {}
_known_hosts_cache: dict[str, paramiko.HostKeys] = {}
_cache_lock = threading.Lock()


def load_private_key(path: str) -> paramiko.PKey:
    """Load a key once per process (RSA keys cost ~100 ms to load)."""
    path = os.path.expanduser(path)
    with _cache_lock:
        if path in _key_cache:
            return _key_cache[path]
    last: Exception | None = None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key = cls.from_private_key_file(path)
            break
        except paramiko.SSHException as exc:
            last = exc
        except OSError as exc:
            raise Unreachable("?", f"cannot read private key {path}: {exc.strerror}") from None
    else:
        raise Unreachable("?", f"cannot load private key {path}: {last}")
    with _cache_lock:
        _key_cache[path] = key
    return key


def _known_hosts(path: str) -> paramiko.HostKeys:
    with _cache_lock:
        keys = _known_hosts_cache.get(path)
        if keys is None:
            keys = paramiko.HostKeys()
            if os.path.exists(path):
                keys.load(path)
            _known_hosts_cache[path] = keys
        return keys


def _host_key_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class SshConnection(Connection):
    def __init__(self, name: str, address: str, *, port: int = 22, user: str | None = None,
                 key_file: str | None = None, become: bool = False,
                 known_hosts: str | None = None, options: SshOptions | None = None,
                 sock_factory=None) -> None:
        self.host = name
        self.address = address
        self.port = port
        self.user = user or os.environ.get("USER") or "root"
        self.key_file = key_file
        self.become = become
        self.options = options or SshOptions()
        self.known_hosts_path = os.path.expanduser(
            known_hosts or self.options.known_hosts or "~/.ssh/known_hosts")
        self._sock_factory = sock_factory  # e.g. a socket opened inside a netns
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._channels = threading.BoundedSemaphore(self.options.max_channels)
        self._lock = threading.Lock()
        self._forwards: list = []
        self.commands_run = 0

    # -- connecting ----------------------------------------------------------
    def connect(self) -> None:
        attempts = max(1, self.options.retries + 1)
        for attempt in range(attempts):
            try:
                self._connect_once()
                return
            except HostKeyRejected:
                raise
            except Unreachable:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (2**attempt))

    def _open_socket(self) -> socket.socket:
        if self._sock_factory is not None:
            sock = self._sock_factory(self.address, self.port, self.options.connect_timeout)
        else:
            sock = socket.create_connection((self.address, self.port),
                                            timeout=self.options.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _connect_once(self) -> None:
        where = f"{self.address}:{self.port}"
        try:
            sock = self._open_socket()
        except TimeoutError:
            raise Unreachable(self.host, f"connection to {where} timed out") from None
        except OSError as exc:
            raise Unreachable(self.host, f"cannot connect to {where}: {exc.strerror or exc}") from None
        transport = paramiko.Transport(sock)
        transport.banner_timeout = self.options.connect_timeout
        transport.auth_timeout = self.options.connect_timeout
        try:
            transport.start_client(timeout=self.options.connect_timeout)
            self._check_host_key(transport.get_remote_server_key())
            self._authenticate(transport)
        except (HostKeyRejected, Unreachable):
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise Unreachable(self.host, f"SSH handshake with {where} failed: {exc}") from None
        transport.set_keepalive(30)
        self._transport = transport

    def _check_host_key(self, key: paramiko.PKey) -> None:
        name = _host_key_name(self.address, self.port)
        keys = _known_hosts(self.known_hosts_path)
        with _cache_lock:
            known = keys.lookup(name)
        if known is None:
            if self.options.accept_new_host_keys:
                with _cache_lock:
                    keys.add(name, key.get_name(), key)
                    directory = os.path.dirname(self.known_hosts_path)
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                    with open(self.known_hosts_path, "a") as fh:
                        fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")
                return
            raise HostKeyRejected(
                self.host,
                f"unknown host key for {name} ({key.get_name()} {key.fingerprint}); "
                f"add it to {self.known_hosts_path} or pass --accept-new-host-keys")
        stored = known.get(key.get_name())
        if stored is None or stored.asbytes() != key.asbytes():
            raise HostKeyRejected(
                self.host,
                f"HOST KEY CHANGED for {name}: now {key.get_name()} {key.fingerprint}, "
                f"not what {self.known_hosts_path} says; refusing to connect "
                "(possible man-in-the-middle)")

    def _authenticate(self, transport: paramiko.Transport) -> None:
        candidates: list[paramiko.PKey] = []
        if self.key_file:
            try:
                candidates.append(load_private_key(self.key_file))
            except Unreachable as exc:
                raise Unreachable(self.host, exc.message) from None
        else:
            agent = paramiko.Agent()
            candidates.extend(agent.get_keys())
            for default in ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"):
                if os.path.exists(os.path.expanduser(default)):
                    try:
                        candidates.append(load_private_key(default))
                    except Unreachable:
                        continue
        for key in candidates:
            try:
                transport.auth_publickey(self.user, key)
                if transport.is_authenticated():
                    return
            except paramiko.AuthenticationException:
                continue
        raise Unreachable(self.host, f"authentication as {self.user} failed "
                          f"(tried {len(candidates)} key(s))")

    @property
    def transport(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is None or not self._transport.is_active():
                self._sftp = None
                self.connect()
            assert self._transport is not None
            return self._transport

    # -- commands ------------------------------------------------------------
    def _command(self, argv: Sequence[str], sudo: bool | None) -> str:
        argv = [*self.environment(), *argv]
        use_sudo = self.become if sudo is None else sudo
        if use_sudo and self.user != "root":
            argv = ["sudo", "-n", "--", *argv]
        return shlex.join(argv)

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, sudo: bool | None = None,
            timeout: float | None = None) -> Result:
        timeout = timeout if timeout is not None else self.options.command_timeout
        command = self._command(argv, sudo)
        self.commands_run += 1
        log_command(self.host, argv, bool(self.become if sudo is None else sudo))
        with self._channels:
            try:
                chan = self.transport.open_session(timeout=self.options.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise Unreachable(self.host, f"cannot open an SSH channel: {exc}") from None
            try:
                self._exec(chan, command, timeout)
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()
                return self._collect(chan, timeout, argv)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise Unreachable(self.host, f"connection lost while running {argv[0]}: {exc}") from None
            finally:
                chan.close()

    def _exec(self, chan: paramiko.Channel, command: str, timeout: float | None) -> None:
        """chan.exec_command, bounded. paramiko waits for the server's reply to
        the exec request without a timeout, so a link cut between opening the
        channel and that reply (the transport still looks alive) would hang
        the run for good: a timer closes the channel instead, which ends the
        wait with an error. The same limit bounds sending stdin."""
        chan.settimeout(timeout)
        limits = [t for t in (timeout, self.options.connect_timeout) if t]
        if not limits:
            chan.exec_command(command)
            return
        timer = threading.Timer(min(limits), chan.close)
        timer.daemon = True
        timer.start()
        try:
            chan.exec_command(command)
        finally:
            timer.cancel()

    def _collect(self, chan: paramiko.Channel, timeout: float | None,
                 argv: Sequence[str]) -> Result:
        out: list[bytes] = []
        err: list[bytes] = []
        deadline = time.monotonic() + timeout if timeout else None
        out_done = err_done = False
        while not (out_done and err_done):
            progressed = False
            if chan.recv_ready() or (not out_done and chan.eof_received):
                data = chan.recv(65536)
                if data:
                    out.append(data)
                else:
                    out_done = True
                progressed = True
            if chan.recv_stderr_ready() or (not err_done and chan.eof_received):
                data = chan.recv_stderr(65536)
                if data:
                    err.append(data)
                else:
                    err_done = True
                progressed = True
            if progressed:
                continue
            if chan.closed and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            wait = 1.0
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise HostError(self.host, f"command timed out after {timeout}s: "
                                    f"{shlex.join(list(argv))[:120]}")
                wait = min(wait, 1.0)
            select.select([chan], [], [], wait)
            if not self.transport.is_active():
                raise Unreachable(self.host, "connection lost")
        rc = chan.recv_exit_status()
        return Result(rc, b"".join(out), b"".join(err))

    # -- files ---------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient:
        transport = self.transport
        with self._lock:
            if self._sftp is None:
                self._sftp = paramiko.SFTPClient.from_transport(transport)
                # SFTP requests wait for their replies without a limit otherwise
                self._sftp.get_channel().settimeout(self.options.command_timeout)
            return self._sftp

    def put(self, path: str, data: bytes, *, mode: int | None = None) -> None:
        log_put(self.host, path, len(data), mode)
        if self.become and self.user != "root":
            from provisioner.connection.atomic import put_via_shell

            put_via_shell(self, path, data, mode)
            return
        directory, base = os.path.split(path)
        tmp = os.path.join(directory, f".{base}.{os.urandom(4).hex()}.provision-tmp")
        with self._channels:
            sftp = self._sftp_client()
            try:
                with sftp.open(tmp, "wb") as fh:
                    fh.set_pipelined(True)
                    fh.write(data)
                    fh.chmod(mode if mode is not None else 0o644)
                sftp.posix_rename(tmp, path)
            except OSError as exc:
                try:
                    sftp.remove(tmp)
                except OSError:
                    pass
                raise HostError(self.host, f"cannot write {path}: {exc.strerror or exc}") from None

    def get(self, path: str) -> bytes:
        if self.become and self.user != "root":
            # SFTP runs as the login user; a become read goes through sudo
            result = self.run(["cat", "--", path])
            if not result.ok:
                raise HostError(self.host, f"cannot read {path}: {result.err.strip()}")
            return result.stdout
        with self._channels:
            sftp = self._sftp_client()
            try:
                with sftp.open(path, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise HostError(self.host, f"cannot read {path}: {exc.strerror or exc}") from None

    def hold(self, argv: Sequence[str], *, sudo: bool | None = None) -> Held:
        log_command(self.host, argv, bool(self.become if sudo is None else sudo))
        try:
            chan = self.transport.open_session(timeout=self.options.connect_timeout)
            chan.exec_command(self._command(argv, sudo))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise Unreachable(self.host, f"cannot open an SSH channel: {exc}") from None
        return _SshHeld(chan)

    # -- sockets -------------------------------------------------------------
    def forward(self, remote_socket: str, bridge: Sequence[str] | None = None) -> str:
        from provisioner.connection.forward import SocketForward

        fwd = SocketForward(self, remote_socket, bridge)
        self._forwards.append(fwd)
        return fwd.path

    def close(self) -> None:
        self._run_closers()
        for fwd in self._forwards:
            fwd.close()
        self._forwards.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _SshHeld(Held):
    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self._buf = b""

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ""
            ready, _, _ = select.select([self.chan], [], [], remaining)
            if ready and self.chan.recv_ready():
                data = self.chan.recv(4096)
                if not data:
                    break
                self._buf += data
            elif self.chan.eof_received and not self.chan.recv_ready():
                break
        line, sep, rest = self._buf.partition(b"\n")
        self._buf = rest
        return (line + sep).decode("utf-8", "replace")

    def close(self) -> int | None:
        try:
            self.chan.shutdown_write()
            if self.chan.status_event.wait(10):
                return self.chan.recv_exit_status()
            return None
        finally:
            self.chan.close()
