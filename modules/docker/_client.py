"""Reaching a host's dockerd, once per connection.

Host variables:
  provision_docker_socket   the daemon's unix socket on the host
                            (default /var/run/docker.sock)
  provision_docker_timeout  seconds per API call (default 60)

Local connection: the socket itself. SSH connection: the socket is forwarded
through the host's one existing SSH transport (Connection.forward: one exec
channel per HTTP connection, running `docker -H unix://SOCK system
dial-stdio` when the docker CLI is on the host, else a python3 socket bridge).
No second SSH connection, the same host-key checking as every other
command; see docs/containers.md for why not the SDK's own ssh:// transport.

Two clients share that socket:
- reads (every plan, the whole of a no-op run) are plain JSON GETs over one
  keep-alive HTTP connection made with the standard library: importing the
  Docker SDK (requests, urllib3) costs ~0.5 s of CPU, more than a no-op run
  of 20 containers spends on everything else;
- acting (create, update, build, pull, load...) uses the Docker SDK's
  low-level APIClient, imported and connected on first use.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

from provisioner.connection.base import Connection
from provisioner.connection.local import LocalConnection
from provisioner.errors import HostError
from provisioner.secret import REGISTRY

DEFAULT_SOCKET = "/var/run/docker.sock"
OWNER_LABEL = "dev.provision.owner"


def unowned_note(what: str, desired: dict[str, Any], observed: dict[str, Any] | None,
                 changed: list[str], deleting: bool) -> list[str]:
    """The plan's warning for a change to a container, volume or network
    provision did not create (no ownership label) and may not touch."""
    if observed and (changed or deleting) and not desired.get("adopt") \
            and observed.get("owner") is None:
        return [f"{what} not created by provision (no {OWNER_LABEL} label): apply refuses "
                "to change it unless adopt: true"]
    return []


def refuse_unowned(conn: Connection, what: str, name: str, desired: dict[str, Any],
                   observed: dict[str, Any]) -> None:
    """Apply's side of unowned_note."""
    if observed.get("owner") is None and not desired.get("adopt"):
        raise HostError(conn.host, f"{what} {name} exists but was not created by provision "
                        f"(no {OWNER_LABEL} label); refusing to change it "
                        "(set adopt: true to take it over)")
SOURCE_LABEL = "dev.provision.source"  # hash of what an image was built/imported from
LABEL_PREFIX = "dev.provision."
# Each HTTP connection is one SSH channel (one bridge process). sshd's
# MaxSessions defaults to 10 and SshConnection runs up to 8 commands at
# once; modules call the API from one thread per host, so the reader's one
# connection plus at most 2 pooled SDK connections stay within the cap.
MAX_POOL_SIZE = 2

_CACHE_KEY = "docker.client"
_lock = threading.Lock()


def docker_sdk() -> Any:
    try:
        import docker
    except ImportError:
        raise HostError("controller", "the Docker SDK for Python is not installed "
                        "(pip install 'docker>=7')") from None
    return docker


def socket_of(conn: Connection) -> str:
    return str(conn.vars.get("provision_docker_socket") or DEFAULT_SOCKET)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Docker:
    """One host's dockerd: `get()` for reads, `api` (the SDK) for acting."""

    def __init__(self, conn: Connection, local: str, socket_path: str, via: str,
                 timeout: float) -> None:
        self.conn = conn
        self.local = local  # the unix socket we talk to (maybe a forward)
        self.socket = socket_path  # the daemon's socket on the host
        self.via = via  # "local" | "ssh + docker system dial-stdio" | "ssh + python3 bridge"
        self.timeout = timeout
        self._http: _UnixHTTPConnection | None = None
        self._http_lock = threading.Lock()
        self._api: Any = None
        self._info: dict[str, Any] | None = None
        self.last_headers: Any = None
        self.api_version = ""
        self.calls = 0

    @property
    def host(self) -> str:
        return self.conn.host

    # -- reads: stdlib HTTP ------------------------------------------------------
    def _request(self, method: str, path: str) -> tuple[int, bytes]:
        with self._http_lock:
            for attempt in (0, 1):
                fresh = self._http is None
                if fresh:
                    self._http = _UnixHTTPConnection(self.local, self.timeout)
                try:
                    self._http.request(method, path, headers={"Host": "docker"})
                    resp = self._http.getresponse()
                    body = resp.read()
                    self.last_headers = resp.headers
                    if resp.will_close:
                        self._http.close()
                        self._http = None
                    return resp.status, body
                except (http.client.HTTPException, ConnectionError, BrokenPipeError) as exc:
                    self._http.close()
                    self._http = None
                    # a kept-alive connection the daemon (or bridge) closed: retry
                    # once on a new one; GETs are idempotent
                    if fresh or attempt == 1:
                        raise ConnectionError(f"{type(exc).__name__}: {exc}") from None
            raise AssertionError("unreachable")

    def get(self, path: str, params: dict[str, Any] | None = None, *,
            doing: str = "") -> Any:
        """GET a JSON document of the versioned API; None on 404."""
        query = ("?" + urlencode(params)) if params else ""
        doing = doing or f"read {path}"
        with self.errors(doing):
            status, body = self._request("GET", f"/v{self.api_version}{path}{query}")
        if status == 404:
            return None
        if status >= 400:
            raise HostError(self.host, REGISTRY.scrub(f"cannot {doing}: {_message(body)}"))
        return json.loads(body) if body else None

    def inspect(self, what: str, ref: str) -> dict[str, Any] | None:
        """GET /containers|images|volumes|networks/<ref>/json; None when missing."""
        suffix = "" if what in ("volumes", "networks") else "/json"
        return self.get(f"/{what}/{quote(ref, safe='')}{suffix}",
                        doing=f"inspect {what.rstrip('s')} {ref}")

    def handshake(self) -> None:
        """GET /_ping: liveness check, and the API version to speak from its
        API-Version header. (Not /version: the daemon runs `runc --version`
        and friends to answer it, ~0.1-0.7 s.)"""
        try:
            status, body = self._request("GET", "/_ping")
        except (OSError, ConnectionError) as exc:
            raise HostError(self.host, f"cannot reach dockerd at {self.socket} ({self.via}): "
                                       f"{_short_cause(exc)}") from None
        if status != 200:
            raise HostError(self.host, f"cannot reach dockerd at {self.socket} ({self.via}): "
                                       f"HTTP {status} {_message(body)}")
        version = self.last_headers.get("API-Version") if self.last_headers else None
        if not version:
            version = (self.get_unversioned("/version") or {}).get("ApiVersion")
        self.api_version = version or "1.41"

    def get_unversioned(self, path: str) -> Any:
        with self.errors(f"read {path}"):
            status, body = self._request("GET", path)
        return json.loads(body) if status == 200 and body else None

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.get("/info", doing="read the daemon's info") or {}
        return self._info

    # -- acting: the SDK ------------------------------------------------------------
    @property
    def api(self) -> Any:
        if self._api is None:
            docker = docker_sdk()
            with self.errors("connect the Docker SDK"):
                api = docker.APIClient(base_url=f"unix://{self.local}", version=self.api_version,
                                       timeout=int(self.timeout), max_pool_size=MAX_POOL_SIZE)
            api.trust_env = False  # a unix socket never goes through a proxy
            self._api = api
        return self._api

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._api is not None:
            self._api.close()

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn SDK and transport errors into one-line HostErrors."""
        self.calls += 1
        try:
            yield
        except HostError:
            raise
        except Exception as exc:
            raise self._translate(exc, doing) from None

    def _translate(self, exc: Exception, doing: str) -> Exception:
        derr = sys.modules.get("docker.errors")
        if derr is not None and isinstance(exc, derr.APIError):
            return HostError(self.host, REGISTRY.scrub(f"cannot {doing}: {api_message(exc)}"))
        rexc = sys.modules.get("requests.exceptions")
        if isinstance(exc, (socket.timeout, TimeoutError)) or (
                rexc is not None and isinstance(exc, rexc.Timeout)):
            return HostError(self.host, f"cannot {doing}: dockerd at {self.socket} did not "
                                        f"answer within {self.timeout:g}s")
        if isinstance(exc, (OSError, ConnectionError, http.client.HTTPException)):
            return HostError(self.host, REGISTRY.scrub(
                f"cannot {doing}: lost the connection to dockerd at {self.socket} "
                f"({self.via}): {_short_cause(exc)}"))
        return exc

    def post_json(self, path: str, body: dict[str, Any], doing: str) -> Any:
        """POST a JSON body to an endpoint the SDK does not wrap fully (the
        container update endpoint: the SDK's update_container lacks NanoCpus
        and PidsLimit)."""
        api = self.api
        url = f"{api.base_url}/v{api.api_version}{path}"
        with self.errors(doing):
            resp = api.post(url, json=body)
        if resp.status_code >= 400:
            raise HostError(self.host, REGISTRY.scrub(f"cannot {doing}: {_message(resp.content)}"))
        return resp.json() if resp.content else None

    def container_path(self, name_or_id: str, action: str) -> str:
        return f"/containers/{quote(name_or_id, safe='')}/{action}"


def _message(body: bytes) -> str:
    try:
        text = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        text = body.decode("utf-8", "replace")
    return " ".join(str(text).split()) or "(no message)"


def api_message(exc: Any) -> str:
    """The daemon's own explanation (e.g. "No such image: x:1"), one line."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        text = explanation.decode() if isinstance(explanation, bytes) else str(explanation)
    else:
        text = str(exc)
    return " ".join(text.split())


def client(conn: Connection) -> Docker:
    """The Docker client of this connection, made (and cached) on first use."""
    cached = conn.cache.get(_CACHE_KEY)
    if cached is not None:
        return cached
    with _lock:
        cached = conn.cache.get(_CACHE_KEY)
        if cached is None:
            cached = _connect(conn)
            conn.cache[_CACHE_KEY] = cached
            conn.on_close(cached.close)
    return cached


def _connect(conn: Connection) -> Docker:
    sock = socket_of(conn)
    timeout = float(conn.vars.get("provision_docker_timeout") or 60)
    if isinstance(conn, LocalConnection):
        local, via = sock, "local"
        if not os.path.exists(sock):
            raise HostError(conn.host, f"dockerd is not running: no socket at {sock} "
                                       "(start dockerd or set provision_docker_socket)")
    else:
        # One round trip learns whether the docker CLI (for dial-stdio) and
        # the socket exist; the bridge itself starts per HTTP connection.
        probe = conn.run(["sh", "-c", 'command -v docker >/dev/null 2>&1 && echo cli; '
                          'test -S "$1" && echo socket; true', "sh", sock])
        lines = probe.out.split()
        if "socket" not in lines:
            raise HostError(conn.host, f"dockerd is not running: no socket at {sock} "
                                       "(start dockerd or set provision_docker_socket)")
        if "cli" in lines:
            bridge: list[str] | None = ["docker", "-H", f"unix://{sock}", "system", "dial-stdio"]
            via = "ssh + docker system dial-stdio"
        else:
            bridge, via = None, "ssh + python3 bridge"
        try:
            local = conn.forward(sock, bridge=bridge)
        except NotImplementedError:
            raise HostError(conn.host, f"{type(conn).__name__} cannot reach dockerd "
                                       "(no socket forwarding)") from None
    dk = Docker(conn, local, sock, via, timeout)
    dk.handshake()
    return dk


def _short_cause(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in str(exc):
        return "connection refused (is dockerd running?)"
    if isinstance(exc, FileNotFoundError):
        return "no such socket (is dockerd running?)"
    text = str(exc)
    if any(s in text for s in ("RemoteDisconnected", "Connection aborted", "BadStatusLine",
                               "IncompleteRead", "Remote end closed")) or not text:
        return "the daemon closed the connection (is dockerd running?)"
    return " ".join(text.split())[:200]


def split_ref(ref: str) -> tuple[str, str]:
    """'repo:tag' → (repo, tag); a missing tag is 'latest'. A ':' inside a
    registry host:port (before the last '/') is not a tag separator."""
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        return repo, "@" + digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"


def full_ref(ref: str) -> str:
    repo, tag = split_ref(ref)
    return f"{repo}{tag}" if tag.startswith("@") else f"{repo}:{tag}"
