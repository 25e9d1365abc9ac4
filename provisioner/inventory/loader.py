"""Finding and reading inventory sources, group_vars/ and host_vars/."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from provisioner.errors import SpecError

from .model import Inventory, InventoryBuilder
from .parsers import (
    load_yaml_file_data,
    looks_like_yaml_inventory,
    parse_host_list,
    parse_ini,
    parse_yaml,
)

__all__ = ["load_inventory"]

YAML_EXTS = (".yml", ".yaml", ".json")
VARS_EXTS = ("", *YAML_EXTS)
# files Ansible skips when reading an inventory directory
IGNORED_SUFFIXES = (
    ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry",
)  # fmt: skip
IGNORED_NAMES = ("host_vars", "group_vars", "vars_plugins")


def load_inventory(sources: Sequence[str] | str | None) -> Inventory:
    """Load inventory sources (files, directories or 'h1,h2,' host lists) into an Inventory.

    No sources gives an inventory holding just ``localhost`` with a local connection.
    """
    if isinstance(sources, str):
        sources = [sources]
    builder = InventoryBuilder()
    if not sources:
        builder.add_host("localhost", "ungrouped")
        builder.set_host_var("localhost", "ansible_connection", "local")
        return builder.finalize([])
    basedirs: list[str] = []
    for src in sources:
        if os.path.exists(src):
            _parse_path(builder, src)
            basedirs.append(src if os.path.isdir(src) else os.path.dirname(src) or ".")
        elif "," in src:
            parse_host_list(builder, src)
        else:
            raise SpecError("inventory source not found", file=src)
    return builder.finalize(list(sources), _VarsDirs(basedirs))


def _parse_path(builder: InventoryBuilder, path: str) -> None:
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise SpecError(f"cannot read inventory directory: {e.strerror}", file=path) from None
        for name in names:
            if name.startswith(".") or name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES):
                continue
            _parse_path(builder, os.path.join(path, name))
        return
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise SpecError(f"cannot read inventory: {e.strerror}", file=path) from None
    except UnicodeDecodeError as e:
        raise SpecError(f"inventory is not UTF-8 text: {e.reason}", file=path) from None
    ext = os.path.splitext(path)[1].lower()
    if ext in YAML_EXTS or (ext == "" and looks_like_yaml_inventory(text, path)):
        parse_yaml(builder, path, text)
    else:
        parse_ini(builder, path, text)


class _VarsDirs:
    """group_vars/ and host_vars/ beside each inventory source (Ansible's host_group_vars)."""

    def __init__(self, basedirs: list[str]) -> None:
        self.basedirs = [os.path.realpath(d) for d in basedirs]
        self._listing: dict[str, frozenset[str] | None] = {}
        self._files: dict[str, dict[str, Any]] = {}

    def __call__(self, kind: str, name: str) -> list[dict[str, Any]]:
        sub = "group_vars" if kind == "group" else "host_vars"
        out = []
        for base in self.basedirs:
            data: dict[str, Any] = {}
            if not name.startswith(os.sep):
                for path in self._find(os.path.join(base, sub), name):
                    data.update(self._load(path))
            out.append(data)
        return out

    def _find(self, vdir: str, name: str) -> list[str]:
        listing = self._listing.get(vdir, ())
        if listing == ():
            listing = frozenset(os.listdir(vdir)) if os.path.isdir(vdir) else None
            self._listing[vdir] = listing
        if not listing:
            return []
        for ext in VARS_EXTS:
            if name + ext in listing:
                full = os.path.join(vdir, name + ext)
                if os.path.isdir(full):
                    return self._dir_files(full)
                return [full]
        return []

    def _dir_files(self, path: str) -> list[str]:
        found = []
        for entry in sorted(os.listdir(path)):
            if entry.startswith(".") or entry.endswith("~"):
                continue
            ext = os.path.splitext(entry)[1]
            full = os.path.join(path, entry)
            if os.path.isdir(full) and not ext:
                found.extend(self._dir_files(full))
            elif os.path.isfile(full) and (not ext or ext in YAML_EXTS):
                found.append(full)
        return found

    def _load(self, path: str) -> dict[str, Any]:
        got = self._files.get(path)
        if got is None:
            data = load_yaml_file_data(path)
            if not data:
                data = {}
            if not isinstance(data, dict):
                raise SpecError("a vars file must hold a mapping of variables", file=path, line=1)
            got = self._files[path] = data
        return got
