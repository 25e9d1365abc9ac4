"""Playbook → Resources for every targeted host.

Structure (a list of plays; each entry declares a resource, not a step):

    - name: web
      hosts: webservers          # inventory pattern
      vars: {port: 8080}
      vars_files: [vars.yml, {path: secrets.yml, secret: true}]
      prune: false
      resources:
        - file: {path: /etc/motd, content: "hi {{ inventory_hostname }}\n"}
        - include: more-resources.yml
    - include: other-playbook.yml
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from modules import get_module, known_kinds
from provisioner.errors import SpecError
from provisioner.resource import Origin, Resource, make_address
from provisioner.secret import REGISTRY, Secret, redact
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import ValidationFailure, validate
from provisioner.spec.templating import Locator, format_path, render
from provisioner.spec.yaml_loader import MarkedDict, MarkedList, load_yaml_file

PLAY_KEYS = {"name", "hosts", "vars", "vars_files", "resources", "prune", "include"}
MAX_INCLUDE_DEPTH = 20


@dataclass
class Play:
    name: str
    hosts: list[str]
    prune: bool
    file: str
    # kinds whose owned-but-undeclared resources prune deletes: the kinds the
    # play declares, or the list given as `prune: [container, vm]`
    prune_kinds: list[str] = field(default_factory=list)
    owner: str = ""  # the ownership label of what this play creates


@dataclass
class Spec:
    path: str
    resources: list[Resource]
    plays: list[Play]
    hosts: list[str]  # targeted host names, inventory order
    extra_vars: dict[str, Any] = field(default_factory=dict)
    owner: str = ""
    # provision_* variables set by plays or -e for a host: they steer its
    # connection (provision_libvirt_uri, provision_docker_socket, ...)
    connection_vars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def prune_targets(self, host: str) -> list[tuple[str, str]]:
        """(kind, owner) pairs whose owned-but-undeclared resources prune deletes."""
        targets: set[tuple[str, str]] = set()
        for play in self.plays:
            if play.prune and host in play.hosts:
                targets.update((kind, play.owner) for kind in play.prune_kinds)
        return sorted(targets)

    def for_host(self, host: str) -> list[Resource]:
        return [r for r in self.resources if r.host == host]

    def digest(self) -> str:
        """Hash of the desired state with secrets redacted (so it can sit in
        a plan file without becoming a way to guess them)."""
        doc = [[r.address, redact(r.fields), r.depends_on] for r in self.resources]
        blob = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def _expect(cond: bool, message: str, file: str, line: int | None, fld: str | None = None) -> None:
    if not cond:
        raise SpecError(message, file=file, line=line, field=fld)


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f", did you mean {close[0]}?" if close else ""


class SpecLoader:
    def __init__(self, inventory: Any, extra_vars: dict[str, Any] | None = None,
                 limit: str | None = None) -> None:
        self.inventory = inventory
        self.extra_vars = dict(extra_vars or {})
        self.limit_hosts: set[str] | None = None
        if limit:
            self.limit_hosts = {h.name for h in inventory.select(limit)}
        self.resources: list[Resource] = []
        self._seen: dict[str, Origin] = {}
        self.plays: list[Play] = []
        self.hosts: list[str] = []
        self.connection_vars: dict[str, dict[str, Any]] = {}

    # -- entry ---------------------------------------------------------------
    def load(self, path: str) -> Spec:
        self.owner = os.path.splitext(os.path.basename(path))[0]
        self._load_playbook(path, depth=0, chain=())
        self._check_depends()
        return Spec(path=path, resources=self.resources, plays=self.plays,
                    hosts=self.hosts, extra_vars=self.extra_vars,
                    connection_vars=self.connection_vars,
                    owner=str(self.extra_vars.get("provision_owner") or self.owner))

    def _load_playbook(self, path: str, depth: int, chain: tuple[str, ...]) -> None:
        doc = load_yaml_file(path)
        file = getattr(doc, "file", path)
        if doc is None:
            raise SpecError("playbook is empty", file=file)
        _expect(isinstance(doc, list), "a playbook is a list of plays", file,
                getattr(doc, "line", 1))
        for index, play in enumerate(doc):
            line = doc.line_of(index)
            _expect(isinstance(play, dict), "each play is a mapping (name, hosts, resources)",
                    file, line, f"plays[{index}]")
            if "include" in play:
                self._include_playbook(play, file, line, depth, chain + (os.path.abspath(path),))
                continue
            self._load_play(play, index, file, line)

    def _include_playbook(self, play: MarkedDict, file: str, line: int | None, depth: int,
                          chain: tuple[str, ...]) -> None:
        target = play["include"]
        _expect(isinstance(target, str), "include takes a file path", file, line, "include")
        _expect(set(play) == {"include"}, "a playbook include takes no other keys", file, line)
        full = os.path.join(os.path.dirname(file), target)
        if os.path.abspath(full) in chain or depth >= MAX_INCLUDE_DEPTH:
            raise SpecError(f"include cycle through {target}", file=file, line=line, field="include")
        self._load_playbook(full, depth + 1, chain)

    # -- plays ---------------------------------------------------------------
    def _load_play(self, play: MarkedDict, index: int, file: str, line: int | None) -> None:
        for key in play:
            if key not in PLAY_KEYS:
                raise SpecError("unknown play key" + _suggest(str(key), sorted(PLAY_KEYS)),
                                file=file, line=play.line_of(key), field=str(key))
        name = play.get("name", f"play {index + 1}")
        _expect("hosts" in play, "missing required field", file, line, "hosts")
        pattern = play["hosts"]
        if isinstance(pattern, list):
            pattern = ":".join(map(str, pattern))
        _expect(isinstance(pattern, str) and pattern.strip() != "",
                "must be a host pattern (a group, host or glob)", file, play.line_of("hosts"),
                "hosts")
        try:
            hosts = self.inventory.select(pattern)
        except SpecError as exc:
            raise SpecError(exc.message, file=file, line=play.line_of("hosts"),
                            field="hosts") from None
        if self.limit_hosts is not None:
            hosts = [h for h in hosts if h.name in self.limit_hosts]
        prune = play.get("prune", False)
        prune_kinds: list[str] = []
        if isinstance(prune, list):
            for kind in prune:
                if kind not in known_kinds():
                    raise SpecError("unknown resource kind" + _suggest(str(kind), known_kinds()),
                                    file=file, line=play.line_of("prune"), field="prune")
            prune_kinds, prune = [str(k) for k in prune], True
        _expect(isinstance(prune, bool), "must be true or false, or a list of kinds", file,
                play.line_of("prune"), "prune")
        play_vars = self._play_vars(play, file)
        entries = self._flatten_resources(play.get("resources", []), file,
                                          play.line_of("resources"), depth=0, chain=(file,))
        if prune and not prune_kinds:
            prune_kinds = sorted({str(k) for item, _, _ in entries for k in item
                                  if k != "depends_on" and str(k) in known_kinds()})
        owner = self.extra_vars.get("provision_owner") or play_vars.get("provision_owner") \
            or self.owner
        if not isinstance(owner, str) or "{" in owner:
            raise SpecError("must be a plain string (it labels what this play creates)",
                            file=file, line=play.line_of("vars"), field="vars.provision_owner")
        self.plays.append(Play(name=str(name), hosts=[h.name for h in hosts], prune=prune,
                               file=file, prune_kinds=prune_kinds, owner=owner))
        for host in hosts:
            if host.name not in self.hosts:
                self.hosts.append(host.name)
            variables = {**host.vars, **play_vars, **self.extra_vars,
                         "inventory_hostname": host.name}
            steering = {k: v for k, v in {**play_vars, **self.extra_vars}.items()
                        if isinstance(k, str) and k.startswith("provision_")}
            if steering:
                self.connection_vars.setdefault(host.name, {}).update(steering)
            for entry in entries:
                self._add_resource(entry, host.name, variables, str(name), owner)

    def _play_vars(self, play: MarkedDict, file: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        files = play.get("vars_files", [])
        _expect(isinstance(files, list), "must be a list of files", file,
                play.line_of("vars_files"), "vars_files")
        for i, item in enumerate(files):
            where = files.line_of(i) if isinstance(files, MarkedList) else None
            secret = False
            if isinstance(item, dict):
                unknown = set(item) - {"path", "secret"}
                _expect(not unknown, f"unknown key {sorted(unknown)[0]!r} (allowed: path, secret)",
                        file, where, f"vars_files[{i}]")
                path, secret = item.get("path"), bool(item.get("secret", False))
            else:
                path = item
            _expect(isinstance(path, str), "must be a file path", file, where, f"vars_files[{i}]")
            full = os.path.join(os.path.dirname(file), path)
            data = load_yaml_file(full)
            if data is None:
                data = {}
            _expect(isinstance(data, dict), "a vars file is a mapping of names to values",
                    getattr(data, "file", full), 1)
            for k, v in data.items():
                result[k] = _secretize(v) if secret else v
        own = play.get("vars", {}) or {}
        _expect(isinstance(own, dict), "must be a mapping of names to values", file,
                play.line_of("vars"), "vars")
        result.update(own)
        return result

    def _flatten_resources(self, items: Any, file: str, line: int | None, depth: int,
                           chain: tuple[str, ...]) -> list[tuple[MarkedDict, int, str]]:
        _expect(isinstance(items, list), "must be a list of resources", file, line, "resources")
        out: list[tuple[MarkedDict, int, str]] = []
        for i, item in enumerate(items):
            item_line = items.line_of(i) if isinstance(items, MarkedList) else line
            _expect(isinstance(item, dict) and len(item) >= 1,
                    "each resource is a mapping like `file: {path: ...}`", file, item_line,
                    f"resources[{i}]")
            if "include" in item:
                target = item["include"]
                _expect(isinstance(target, str), "include takes a file path", file, item_line,
                        f"resources[{i}].include")
                full = os.path.join(os.path.dirname(file), target)
                if os.path.abspath(full) in chain or depth >= MAX_INCLUDE_DEPTH:
                    raise SpecError(f"include cycle through {target}", file=file, line=item_line,
                                    field=f"resources[{i}].include")
                doc = load_yaml_file(full)
                inner_file = getattr(doc, "file", full)
                out += self._flatten_resources(doc or [], inner_file, 1, depth + 1,
                                               chain + (os.path.abspath(full),))
                continue
            out.append((item, i, file))
        return out

    # -- resources -----------------------------------------------------------
    def _add_resource(self, entry: tuple[MarkedDict, int, str], host: str,
                      variables: dict[str, Any], play: str, owner: str) -> None:
        item, index, file = entry
        line = item.line if isinstance(item, MarkedDict) else None
        kinds = [k for k in item if k != "depends_on"]
        prefix = f"resources[{index}]"
        _expect(len(kinds) == 1, "a resource names exactly one kind", file, line, prefix)
        kind = str(kinds[0])
        if kind not in known_kinds():
            raise SpecError("unknown resource kind" + _suggest(kind, known_kinds()),
                            file=file, line=line, field=f"{prefix}.{kind}")
        module = get_module(kind)
        raw = item[kind]
        if raw is None:
            raw = MarkedDict()
        _expect(isinstance(raw, dict), f"{kind} takes a mapping of fields", file, line,
                f"{prefix}.{kind}")
        field_prefix = f"{prefix}.{kind}"
        locator = Locator(file, line, [])
        rendered = render(raw, variables, _PrefixedLocator(locator, field_prefix))
        try:
            fields = validate(rendered, module.schema)
        except ValidationFailure as exc:
            first = exc.path[0] if exc.path else None
            fline = raw.line_of(first) if isinstance(raw, MarkedDict) and first is not None else line
            raise SpecError(exc.message, file=file, line=fline,
                            field=f"{field_prefix}.{format_path(exc.path)}") from None
        key_lines = dict(getattr(raw, "key_lines", {}))
        ctx = SpecContext(file=file, line=line, field_prefix=field_prefix, field_lines=key_lines,
                          variables=variables, host=host)
        depends = list(fields.pop("depends_on", []) or [])
        outer = item.get("depends_on", [])
        _expect(isinstance(outer, list) and all(isinstance(d, str) for d in outer),
                "must be a list of `kind/name` references", file, line, f"{prefix}.depends_on")
        depends += outer
        desired = module.normalize(fields, ctx)
        name = desired.get(module.name_field)
        if isinstance(name, Secret):
            ctx.fail(module.name_field, "a resource's name cannot be secret")
        _expect(isinstance(name, str) and name != "", "missing required field", file, line,
                f"{field_prefix}.{module.name_field}")
        address = make_address(host, kind, name)
        origin = Origin(file, line)
        if address in self._seen:
            raise SpecError(f"{kind} {name!r} is declared twice on {host} "
                            f"(first at {self._seen[address]})", file=file, line=line,
                            field=f"{field_prefix}.{module.name_field}")
        self._seen[address] = origin
        self.resources.append(Resource(host=host, kind=kind, name=name, fields=desired,
                                       origin=origin, depends_on=list(depends), play=play,
                                       owner=str(owner)))

    def _check_depends(self) -> None:
        for res in self.resources:
            resolved = []
            for dep in res.depends_on:
                kind, _, name = _split_ref(dep)
                address = make_address(res.host, kind, name)
                if address not in self._seen:
                    raise SpecError(f"depends on {dep!r}, which is not declared for {res.host}",
                                    file=res.origin.file, line=res.origin.line,
                                    field=f"{res.kind} {res.name}.depends_on")
                resolved.append(address)
            res.depends_on = resolved


def _split_ref(ref: str) -> tuple[str, str, str]:
    """`kind/name` or `kind:name` (the name may contain either)."""
    for i, ch in enumerate(ref):
        if ch in "/:":
            return ref[:i], ch, ref[i + 1:]
    return ref, "", ""


class _PrefixedLocator(Locator):
    def __init__(self, base: Locator, prefix: str) -> None:
        super().__init__(base.file, base.line, base.path)
        self.prefix = prefix

    def child(self, container: Any, key: Any) -> Locator:
        inner = super().child(container, key)
        return _PrefixedLocator(inner, self.prefix)

    def field(self) -> str:
        rest = format_path(self.path)
        return self.prefix + ("." + rest if rest and not rest.startswith("[") else rest)


def _secretize(value: Any) -> Any:
    if isinstance(value, str):
        REGISTRY.add(value)
        return Secret(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        REGISTRY.add(str(value))
        return Secret(str(value))
    if isinstance(value, dict):
        return {k: _secretize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_secretize(v) for v in value]
    return value


def load_spec(path: str, inventory: Any, extra_vars: dict[str, Any] | None = None,
              limit: str | None = None) -> Spec:
    return SpecLoader(inventory, extra_vars, limit).load(path)
