"""Resource kinds. Each module is imported only when a spec uses its kind, so
a host-only run never pays for importing libvirt or the Docker SDK."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioner.module import Module

# kind -> "python.module:ClassName"
KINDS: dict[str, str] = {
    "file": "modules.file:FileModule",
    "directory": "modules.directory:DirectoryModule",
    "line": "modules.line:LineModule",
    "package": "modules.package:PackageModule",
    "user": "modules.user:UserModule",
    "group": "modules.group:GroupModule",
    "command": "modules.command:CommandModule",
    "slice": "modules.slice:SliceModule",
    "pool": "modules.libvirt.pool:PoolModule",
    "network": "modules.libvirt.network:NetworkModule",
    "image": "modules.libvirt.image:ImageModule",
    "vm": "modules.libvirt.vm:VmModule",
    "docker_image": "modules.docker.image:DockerImageModule",
    "container": "modules.docker.container:ContainerModule",
    "docker_volume": "modules.docker.volume:DockerVolumeModule",
    "docker_network": "modules.docker.network:DockerNetworkModule",
}

_loaded: dict[str, "Module"] = {}


def known_kinds() -> list[str]:
    return sorted(KINDS)


def get_module(kind: str) -> "Module":
    module = _loaded.get(kind)
    if module is None:
        target = KINDS[kind]
        mod_name, cls_name = target.split(":")
        module = getattr(importlib.import_module(mod_name), cls_name)()
        _loaded[kind] = module
    return module
