"""A private dockerd: data, exec state, pid file, socket and config all under one directory.

No iptables, no bridge, no masquerading (INFRA.md): containers use network_mode none or host.
dockerd starts its own containerd under exec_root. System paths it still touches: it creates
an empty /run/docker/plugins (plugin discovery) and containerd puts shim sockets in
/run/containerd/s/<sha256 of a path under exec_root> (unique names).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

from .util import (
    HarnessError,
    kill_pid,
    kill_pidfile,
    pid_alive,
    read_pid,
    register_cleanup,
    run,
    tail,
    unmount_below,
    wait_for,
)

DOCKERD = "dockerd"


class PrivateDockerd:
    """dockerd on a private unix socket.

    Attributes: base_dir, socket (Path), url ("unix://..." for docker.DockerClient(base_url=)),
    host ("unix://...", for `docker -H`), env (os.environ + DOCKER_HOST, for the CLI),
    data_root, exec_root, pidfile, log.
    """

    def __init__(
        self, base_dir: str | os.PathLike, *, start: bool = True, shutdown_timeout: int = 3
    ):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.base_dir / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.host = self.url
        self.data_root = self.base_dir / "root"
        self.exec_root = self.base_dir / "exec"
        self.pidfile = self.base_dir / "dockerd.pid"
        self.log = self.base_dir / "dockerd.log"
        # Our own (empty-ish) config file, so /etc/docker/daemon.json is never read.
        self.config_file = self.base_dir / "daemon.json"
        self.config_file.write_text(json.dumps({"shutdown-timeout": shutdown_timeout}))
        self.env = {
            **os.environ,
            "DOCKER_HOST": self.url,
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CLI_HINTS": "false",
        }
        self.cli = shutil.which("docker") or "docker"
        self._proc: subprocess.Popen | None = None
        register_cleanup(self.stop)
        if start:
            self.start()

    def command(self) -> list[str]:
        return [
            DOCKERD,
            f"--config-file={self.config_file}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-masq=false",
            "--storage-driver=overlay2",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.url}",
        ]

    def start(self, timeout: float = 60) -> None:
        if self.is_running():
            return
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            if self._proc.poll() is not None:
                raise HarnessError(f"dockerd exited {self._proc.returncode}:\n{tail(self.log)}")
            return self.ping()

        wait_for(
            up, timeout, "the dockerd API", interval=0.05, on_timeout=lambda: "\n" + tail(self.log)
        )

    def ping(self) -> bool:
        """True when GET /_ping on the socket answers OK."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        except OSError:
            return False
        return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]

    def is_running(self) -> bool:
        pid = read_pid(self.pidfile)
        return pid is not None and pid_alive(pid)

    def stop(self) -> None:
        """Stop dockerd by its pid file (it stops its containers and containerd first)."""
        containerd_pidfile = self.exec_root / "containerd" / "containerd.pid"
        kill_pidfile(self.pidfile, timeout=30, children=True)
        if self._proc is not None:
            self._proc.poll()  # reap it
            self._proc = None
        # Safety net: a containerd that outlived its dockerd.
        pid = read_pid(containerd_pidfile)
        if pid is not None and pid_alive(pid):
            kill_pid(pid)
        unmount_below(self.base_dir)

    def restart(self, timeout: float = 60) -> None:
        """Stop and start again with the same state (fault tests)."""
        self.stop()
        self.start(timeout)

    def docker(
        self, *args: str, input: bytes | str | None = None, check: bool = True, timeout: float = 120
    ):
        """Run the docker CLI against this daemon; CompletedProcess with text stdout/stderr."""
        return run(
            [self.cli, "-H", self.url, *args],
            input=input,
            check=check,
            env=self.env,
            timeout=timeout,
        )

    def client(self, timeout: int = 60):
        """A docker SDK client (docker.DockerClient) for this daemon; the caller closes it."""
        import docker  # lazy: optional dependency

        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def __enter__(self) -> PrivateDockerd:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
