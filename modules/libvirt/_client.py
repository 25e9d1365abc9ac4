"""Reaching a host's libvirtd, once per connection.

Host variables:
  provision_libvirt_uri     qemu:///system (default) | test:///default | ...
  provision_libvirt_socket  the daemon's unix socket on the host
                            (default /var/run/libvirt/libvirt-sock)
  provision_libvirt_bridge  "virt-ssh-helper" | "python" (default: virt-ssh-helper
                            for the default socket, python when a socket is given)

Over SSH the daemon's socket is forwarded through the host's one existing
SSH transport (Connection.forward: an exec channel per libvirt client running
a stdio bridge), then opened locally as qemu+unix:///system?socket=LOCAL. No
second SSH connection, no ssh binary, the same host-key checking as every
other command (see docs/vms.md). `test:` URIs are opened directly: the
in-memory test driver needs no daemon.
"""

from __future__ import annotations

import json
import posixpath
import threading
from typing import Any
from urllib.parse import urlsplit

from provisioner.connection.base import Connection
from provisioner.errors import HostError

DEFAULT_URI = "qemu:///system"
DEFAULT_SOCKET = "/var/run/libvirt/libvirt-sock"
NS = "https://provision.dev/xmlns/1"
NS_PREFIX = "provision"

_CACHE_KEY = "libvirt"
_silenced = False
_silence_lock = threading.Lock()


def libvirt_module() -> Any:
    """The bindings, imported on first use; their default error handler
    (which prints every error to stderr) replaced by a silent one."""
    global _silenced
    try:
        import libvirt
    except ImportError:
        raise HostError("controller", "the libvirt Python bindings are not installed "
                        "(pip install libvirt-python)") from None
    with _silence_lock:
        if not _silenced:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _silenced = True
    return libvirt


def uri_of(conn: Connection) -> str:
    # host variables, or play variables / -e: the runner folds provision_*
    # variables of plays into the connection's vars
    return str(conn.vars.get("provision_libvirt_uri") or DEFAULT_URI)


def is_test_uri(uri: str) -> bool:
    return uri.startswith("test:")


class Client:
    """A virConnect plus what we learn once per connection."""

    def __init__(self, conn: Connection, virt: Any, uri: str) -> None:
        self.conn = conn
        self.virt = virt
        self.uri = uri
        self.test = is_test_uri(uri)
        self._host_memory: int | None = None
        self.lock = threading.RLock()

    @property
    def host_memory(self) -> int:
        """Bytes of RAM on the host (getInfo reports MiB)."""
        if self._host_memory is None:
            self._host_memory = int(self.virt.getInfo()[1]) * 1024 * 1024
        return self._host_memory

    def fail(self, message: str) -> HostError:
        return HostError(self.conn.host, message)


def client(conn: Connection) -> Client:
    cached = conn.cache.get(_CACHE_KEY)
    if cached is not None and _alive(cached):
        return cached
    libvirt = libvirt_module()
    uri = uri_of(conn)
    try:
        virt = _open(conn, libvirt, uri)
    except libvirt.libvirtError as exc:
        raise HostError(conn.host, f"libvirt at {uri} unreachable: "
                        f"{_one_line(exc.get_error_message() or str(exc))}"
                        f"{_socket_hint(conn, uri)}") from None
    except (OSError, NotImplementedError) as exc:
        raise HostError(conn.host, f"libvirt at {uri} unreachable: {exc}") from None
    result = Client(conn, virt, uri)
    conn.cache[_CACHE_KEY] = result

    def close() -> None:
        try:
            virt.close()
        except Exception:
            pass

    conn.on_close(close)
    return result


def _socket_hint(conn: Connection, uri: str) -> str:
    """Why a forwarded open failed, when the host can tell: the forward only
    shows an EOF when the daemon's socket is not there."""
    from provisioner.connection.local import LocalConnection

    if is_test_uri(uri) or isinstance(conn, LocalConnection):
        return ""
    sock = str(conn.vars.get("provision_libvirt_socket") or DEFAULT_SOCKET)
    try:
        res = conn.run(["test", "-S", sock])
    except Exception:
        return ""
    return "" if res.ok else f" (no socket at {sock} on the host: is libvirtd running?)"


def _alive(c: Client) -> bool:
    try:
        return bool(c.virt.isAlive())
    except Exception:
        return False


def _open(conn: Connection, libvirt: Any, uri: str) -> Any:
    if is_test_uri(uri):
        return libvirt.open(uri)
    parts = urlsplit(uri)
    driver = parts.scheme.split("+", 1)[0] or "qemu"
    path = parts.path or "/system"
    given = conn.vars.get("provision_libvirt_socket")
    remote_socket = str(given or DEFAULT_SOCKET)
    from provisioner.connection.local import LocalConnection

    if isinstance(conn, LocalConnection):
        if given is None and "+" not in parts.scheme:
            return libvirt.open(uri)  # the local daemon, found the usual way
        return libvirt.open(f"{driver}+unix://{path}?socket={remote_socket}")
    wanted = conn.vars.get("provision_libvirt_bridge") or ("python" if given else "virt-ssh-helper")
    attempts: list[list[str] | None] = []
    if wanted == "virt-ssh-helper":
        attempts.append(["virt-ssh-helper", f"{driver}://{path}"])
    attempts.append(None)  # the generic python bridge to the socket itself
    last: Exception | None = None
    for bridge in attempts:
        local = conn.forward(remote_socket, bridge=bridge)
        try:
            return libvirt.open(f"{driver}+unix://{path}?socket={local}")
        except libvirt.libvirtError as exc:
            last = exc
    assert last is not None
    raise last


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_text(exc: BaseException) -> str:
    getter = getattr(exc, "get_error_message", None)
    text = getter() if getter else None
    return _one_line(text or str(exc))


def is_no_such(exc: BaseException, *codes: int) -> bool:
    getter = getattr(exc, "get_error_code", None)
    return bool(getter) and getter() in codes


# -- the sidecar: what libvirt has no place for ------------------------------------
#
# Storage pools and volumes carry no <metadata> in libvirt. What we must
# remember about them (the pool's owner; each image's owner and the sha256 of
# the content we uploaded, so an unchanged image is never sent again) lives in
# one JSON file beside the pool directory: <parent>/.<dirname>.provision.json
# (beside, not inside: a dir pool lists every file it holds as a volume).
# The test driver has no files: its sidecars live in this process.

_memory_sidecars: dict[tuple[str, str], dict[str, Any]] = {}


def sidecar_path(pool_path: str) -> str:
    pool_path = pool_path.rstrip("/") or "/"
    parent, base = posixpath.split(pool_path)
    return posixpath.join(parent, f".{base}.provision.json")


def read_sidecar(c: Client, pool_path: str) -> dict[str, Any]:
    cache = c.conn.cache.setdefault("libvirt-sidecars", {})
    if pool_path in cache:
        return cache[pool_path]
    if c.test:
        data = _memory_sidecars.get((c.uri, pool_path), {})
    else:
        try:
            raw = c.conn.get(sidecar_path(pool_path))
            data = json.loads(raw.decode("utf-8"))
        except (HostError, OSError, ValueError):
            data = {}
    if not isinstance(data, dict):
        data = {}
    data.setdefault("volumes", {})
    cache[pool_path] = data
    return data


def forget_sidecars(c: Client) -> None:
    c.conn.cache.pop("libvirt-sidecars", None)


def write_sidecar(c: Client, pool_path: str, data: dict[str, Any]) -> None:
    c.conn.cache.setdefault("libvirt-sidecars", {})[pool_path] = data
    if c.test:
        _memory_sidecars[(c.uri, pool_path)] = json.loads(json.dumps(data))
        return
    blob = json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"
    c.conn.put(sidecar_path(pool_path), blob, mode=0o600)
