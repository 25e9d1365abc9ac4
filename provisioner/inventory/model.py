"""The inventory model: the parsers fill an `InventoryBuilder`, `finalize()` makes an `Inventory`."""

from __future__ import annotations

import difflib
import fnmatch
import getpass
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from provisioner.errors import SpecError

from .hostrange import split_host_port

__all__ = ["Group", "Host", "Inventory", "InventoryBuilder", "split_host_pattern"]

LOCALHOST_NAMES = frozenset(("localhost", "127.0.0.1", "::1"))

# field -> (our variable, Ansible variables in increasing precedence)
CONNECTION_VARS: dict[str, tuple[str, tuple[str, ...]]] = {
    "address": ("provision_host", ("ansible_host", "ansible_ssh_host")),
    "port": ("provision_port", ("ansible_port", "ansible_ssh_port")),
    "user": ("provision_user", ("ansible_user", "ansible_ssh_user")),
    "key_file": (
        "provision_key_file",
        ("ansible_private_key_file", "ansible_ssh_private_key_file"),
    ),
    "connection": ("provision_connection", ("ansible_connection",)),
    "become": ("provision_become", ("ansible_become",)),
    "become_user": ("provision_become_user", ("ansible_become_user",)),
    "known_hosts": ("provision_known_hosts", ()),
}
_CONNECTIONS = {
    "ssh": "ssh",
    "smart": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "local": "local",
}
_TRUE = frozenset(("yes", "on", "1", "true", "y", "t"))
_FALSE = frozenset(("no", "off", "0", "false", "n", "f", ""))


@dataclass
class Host:
    """One target, with connection settings resolved from its variables."""

    name: str
    address: str
    port: int = 22
    user: str | None = None  # None: the current local user
    key_file: str | None = None
    connection: str = "ssh"  # 'ssh' | 'local'
    become: bool = False
    become_user: str | None = None  # None: root
    known_hosts: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def group_names(self) -> list[str]:
        return list(self.vars.get("group_names", ()))

    @property
    def effective_user(self) -> str:
        return self.user or getpass.getuser()


@dataclass
class Group:
    """A group as defined by the inventory (vars are the inventory's own, not group_vars/)."""

    name: str
    hosts: list[str] = field(default_factory=list)  # direct members, in order
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    depth: int = 0
    priority: int = 1


class _G:
    __slots__ = ("name", "vars", "children", "parents", "hosts", "priority", "where")

    def __init__(self, name: str) -> None:
        self.name = name
        self.vars: dict[str, Any] = {}
        self.children: dict[str, _G] = {}
        self.parents: dict[str, _G] = {}
        self.hosts: dict[str, _H] = {}
        self.priority = 1
        self.where: tuple[str | None, int | None] = (None, None)


class _H:
    __slots__ = ("name", "vars", "groups", "where")

    def __init__(self, name: str, where: tuple[str | None, int | None]) -> None:
        self.name = name
        self.vars: dict[str, Any] = {}
        self.groups: dict[str, _G] = {}  # direct memberships
        self.where = where


# Looks up group_vars/host_vars for ("group" | "host", name): one dict per inventory basedir.
VarsLookup = Callable[[str, str], list[dict[str, Any]]]


class InventoryBuilder:
    """Mutable inventory data in the shape Ansible's InventoryData has."""

    def __init__(self) -> None:
        self.groups: dict[str, _G] = {}
        self.hosts: dict[str, _H] = {}
        self.add_group("all")
        self.add_group("ungrouped")
        self.add_child("all", "ungrouped")

    def add_group(self, name: str, where: tuple[str | None, int | None] = (None, None)) -> _G:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = _G(name)
            g.where = where
        return g

    def add_host(
        self,
        name: str,
        group: str | None,
        port: int | None = None,
        where: tuple[str | None, int | None] = (None, None),
    ) -> _H:
        h = self.hosts.get(name)
        if h is None:
            h = self.hosts[name] = _H(name, where)
            if port:
                h.vars["ansible_port"] = int(port)
        if group is not None:
            g = self.groups[group]
            if name not in g.hosts:
                g.hosts[name] = h
                h.groups[group] = g
        return h

    def set_group_var(self, group: str, key: str, value: Any) -> None:
        g = self.groups[group]
        if key == "ansible_group_priority":
            try:
                g.priority = int(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"ansible_group_priority must be an integer, got {value!r}"
                ) from None
        else:
            g.vars[key] = value

    def set_host_var(self, host: str, key: str, value: Any) -> None:
        self.hosts[host].vars[key] = value

    def add_child(
        self, parent: str, child: str, file: str | None = None, line: int | None = None
    ) -> None:
        p, c = self.groups[parent], self.groups[child]
        if child in p.children:
            return
        if p is c:
            raise SpecError(f"group {child!r} cannot be a child of itself", file=file, line=line)
        # would `child` become its own ancestor? walk up from parent looking for child
        path = self._ancestor_path(p, c)
        if path is not None:
            cycle = " -> ".join([child, *path, child])
            raise SpecError(
                f"group {child!r} would be its own ancestor ({cycle})", file=file, line=line
            )
        p.children[child] = c
        c.parents[parent] = p

    @staticmethod
    def _ancestor_path(start: _G, target: _G) -> list[str] | None:
        """Names from start up to (excluding) target if target is an ancestor of start."""
        stack: list[tuple[_G, list[str]]] = [(start, [start.name])]
        seen = {start.name}
        while stack:
            g, path = stack.pop()
            for pname, pg in g.parents.items():
                if pg is target:
                    return list(reversed(path))
                if pname not in seen:
                    seen.add(pname)
                    stack.append((pg, [*path, pname]))
        return None

    # -- reconcile ---------------------------------------------------------------------------
    def finalize(
        self,
        sources: Sequence[str],
        vars_lookup: VarsLookup | None = None,
        implicit_localhost: bool = True,
    ) -> Inventory:
        """Apply Ansible's reconcile rules and compute every host's variables."""
        all_g = self.groups["all"]
        for g in list(self.groups.values()):
            if g is not all_g and not g.parents:
                self.add_child("all", g.name)
        ungrouped = self.groups["ungrouped"]
        ancestors = _Ancestry(self.groups)
        for h in self.hosts.values():
            mine = ancestors.of_host(h)
            if "ungrouped" in mine:
                if set(mine) - {"all", "ungrouped"} and h.name in ungrouped.hosts:
                    del ungrouped.hosts[h.name]
                    del h.groups["ungrouped"]
                    ancestors.forget(h)
            elif len(mine) == 0 or (len(mine) == 1 and "all" in mine):
                ungrouped.hosts[h.name] = h
                h.groups["ungrouped"] = ungrouped
                ancestors.forget(h)
        return Inventory._from_builder(self, ancestors, list(sources), vars_lookup)


class _Ancestry:
    """Memoised group depth / ancestor sets."""

    def __init__(self, groups: dict[str, _G]) -> None:
        self.groups = groups
        self._anc: dict[str, frozenset[str]] = {}
        self._depth: dict[str, int] = {}
        self._host: dict[str, frozenset[str]] = {}

    def ancestors(self, g: _G) -> frozenset[str]:
        """Names of g and every group above it."""
        got = self._anc.get(g.name)
        if got is None:
            acc = {g.name}
            for p in g.parents.values():
                acc |= self.ancestors(p)
            got = self._anc[g.name] = frozenset(acc)
        return got

    def depth(self, g: _G) -> int:
        got = self._depth.get(g.name)
        if got is None:
            got = max((self.depth(p) + 1 for p in g.parents.values()), default=0)
            self._depth[g.name] = got
        return got

    def of_host(self, h: _H) -> frozenset[str]:
        got = self._host.get(h.name)
        if got is None:
            acc: set[str] = set()
            for g in h.groups.values():
                acc |= self.ancestors(g)
            got = self._host[h.name] = frozenset(acc)
        return got

    def forget(self, h: _H) -> None:
        self._host.pop(h.name, None)


def _boolean(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{what} must be a boolean, got {value!r}")


def _pick(hvars: dict[str, Any], fieldname: str) -> tuple[str | None, Any]:
    ours, theirs = CONNECTION_VARS[fieldname]
    if ours in hvars:
        return ours, hvars[ours]
    for name in reversed(theirs):
        if name in hvars:
            return name, hvars[name]
    return None, None


def make_host(name: str, hvars: dict[str, Any]) -> Host:
    """Resolve the connection fields of a host from its merged variables (ValueError if bad)."""
    kw: dict[str, Any] = {}
    var, value = _pick(hvars, "address")
    kw["address"] = name if value is None else str(value)
    var, value = _pick(hvars, "port")
    if value is not None:
        try:
            port = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{var} must be a port number, got {value!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"{var} must be a port number, got {value!r}")
        kw["port"] = port
    for fname in ("user", "key_file", "become_user", "known_hosts"):
        var, value = _pick(hvars, fname)
        if value is not None:
            kw[fname] = str(value)
    var, value = _pick(hvars, "connection")
    if value is not None:
        conn = _CONNECTIONS.get(str(value))
        if conn is None:
            raise ValueError(
                f"{var}: unsupported connection {value!r} (provision supports ssh and local)"
            )
        kw["connection"] = conn
    var, value = _pick(hvars, "become")
    if value is not None:
        kw["become"] = _boolean(value, var or "become")
    return Host(name=name, vars=hvars, **kw)


def _magic(name: str, group_names: list[str]) -> dict[str, Any]:
    is_ip = False
    if name[:1].isdigit() or ":" in name:
        try:
            ipaddress.ip_address(name)
            is_ip = True
        except ValueError:
            pass
    return {
        "inventory_hostname": name,
        "inventory_hostname_short": name if is_ip else name.split(".")[0],
        "group_names": group_names,
    }


# ---------------------------------------------------------------------------------------------
# patterns

_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
_COLON_TERMS = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")


def split_host_pattern(pattern: str | Iterable[str]) -> list[str]:
    """'a,b' / 'a:b:!c' / ['a', 'b'] -> ['a', 'b', ...] (Ansible's rules, ':' kept for IPv6/ranges)."""
    if not isinstance(pattern, str):
        return [p for item in pattern for p in split_host_pattern(item)]
    if "," in pattern:
        parts = pattern.split(",")
    else:
        try:
            split_host_port(pattern)
            parts = [pattern]
        except ValueError:
            parts = _COLON_TERMS.findall(pattern)
    return [p.strip() for p in parts if p.strip()]


def order_patterns(terms: list[str]) -> list[str]:
    """Unions first (in order), then intersections (&), then exclusions (!)."""
    regular = [t for t in terms if t[0] not in "!&"]
    inter = [t for t in terms if t[0] == "&"]
    excl = [t for t in terms if t[0] == "!"]
    return (regular or ["all"]) + inter + excl


class Inventory:
    """A loaded inventory: hosts with resolved connection settings, groups, pattern selection."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self.hosts: dict[str, Host] = {}  # in definition order
        self.groups: dict[str, Group] = {}
        self._hostvars: dict[str, dict[str, Any]] = {}  # what ansible-inventory shows
        self._group_hosts: dict[str, list[Host]] = {}
        self._term_cache: dict[str, list[Host]] = {}
        self._implicit_localhost: Host | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def _from_builder(
        cls,
        b: InventoryBuilder,
        anc: _Ancestry,
        sources: list[str],
        vars_lookup: VarsLookup | None,
    ) -> Inventory:
        inv = cls()
        inv.sources = sources
        for g in b.groups.values():
            inv.groups[g.name] = Group(
                name=g.name,
                hosts=list(g.hosts),
                children=list(g.children),
                parents=list(g.parents),
                vars=dict(g.vars),
                depth=anc.depth(g),
                priority=g.priority,
            )
        lookup = vars_lookup or (lambda kind, name: [])
        all_file_vars = lookup("group", "all")
        group_files: dict[str, list[dict[str, Any]]] = {}
        order_key = {name: (g.depth, g.priority, name) for name, g in inv.groups.items()}
        base_cache: dict[frozenset[str], tuple[dict[str, Any], list[str]]] = {}
        for h in b.hosts.values():
            names = anc.of_host(h)
            cached = base_cache.get(names)
            if cached is None:
                cached = base_cache[names] = _group_merge(
                    b, names, order_key, all_file_vars, group_files, lookup
                )
            merged = dict(cached[0])
            merged.update(h.vars)
            for d in lookup("host", h.name):
                merged.update(d)
            inv._hostvars[h.name] = merged
            full = dict(merged)
            full.update(_magic(h.name, list(cached[1])))
            try:
                inv.hosts[h.name] = make_host(h.name, full)
            except ValueError as e:
                raise SpecError(str(e), file=h.where[0], line=h.where[1], field=h.name) from None
        return inv

    # -- lookups -----------------------------------------------------------------------------
    def get_host(self, name: str) -> Host:
        host = self.hosts.get(name) or self._localhost(name)
        if host is None:
            raise SpecError(f"unknown host {name!r}{self._suggest(name)}")
        return host

    def host_info(self, name: str) -> dict[str, Any]:
        """The variables `ansible-inventory --host NAME` prints."""
        if name not in self._hostvars:
            raise SpecError(f"unknown host {name!r}{self._suggest(name)}")
        return _jsonable(self._hostvars[name])

    def group_hosts(self, name: str) -> list[Host]:
        """Hosts of a group and its descendants, in Ansible's inventory order."""
        got = self._group_hosts.get(name)
        if got is not None:
            return got
        if name not in self.groups:
            raise SpecError(f"unknown group {name!r}{self._suggest(name)}")
        # breadth-first: the group, its children in order, then each next level in order
        order = [name]
        seen = {name}
        level = [name]
        while level:
            nxt = []
            for gname in level:
                for child in self.groups[gname].children:
                    if child not in seen:
                        seen.add(child)
                        order.append(child)
                        nxt.append(child)
            level = nxt
        hosts: list[Host] = []
        taken: set[str] = set()
        for gname in order:
            for hname in self.groups[gname].hosts:
                if hname not in taken:
                    taken.add(hname)
                    hosts.append(self.hosts[hname])
        self._group_hosts[name] = hosts
        return hosts

    def _localhost(self, name: str) -> Host | None:
        if name not in LOCALHOST_NAMES or name in self.hosts:
            return None
        if self._implicit_localhost is None or self._implicit_localhost.name != name:
            hvars = dict(self.groups["all"].vars) if "all" in self.groups else {}
            hvars["ansible_connection"] = "local"
            hvars.update(_magic(name, []))
            self._implicit_localhost = make_host(name, hvars)
        return self._implicit_localhost

    def _suggest(self, word: str) -> str:
        word = word.lstrip("!&~")
        candidates = list(self.groups) + list(self.hosts)
        close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""

    # -- patterns ---------------------------------------------------------------------------
    def select(
        self,
        pattern: str | Sequence[str],
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> list[Host]:
        """Hosts matching an Ansible host pattern, in inventory order, without duplicates.

        `file`/`line`/`field` locate the pattern for the SpecError raised when a
        term matches nothing.
        """
        terms = order_patterns(split_host_pattern(pattern))
        result: list[Host] = []
        seen: set[str] = set()
        keep: set[str] | None = None  # intersection of all '&' terms
        drop: set[str] = set()  # union of all '!' terms
        for term in terms:
            if term in self.hosts:  # plain host names win, as in Ansible
                if term not in seen:
                    seen.add(term)
                    result.append(self.hosts[term])
                continue
            matched = self._match_term(term, file, line, field)
            if term[0] == "!":
                drop.update(h.name for h in matched)
            elif term[0] == "&":
                these = {h.name for h in matched}
                keep = these if keep is None else keep & these
            else:
                for h in matched:
                    if h.name not in seen:
                        seen.add(h.name)
                        result.append(h)
        # one pass for all modifiers: (unions & every intersection) - every exclusion
        if keep is not None or drop:
            result = [h for h in result if (keep is None or h.name in keep) and h.name not in drop]
        return result

    def _match_term(
        self, term: str, file: str | None, line: int | None, field: str | None
    ) -> list[Host]:
        original = term
        if term[0] in "!&":
            term = term[1:]
        if not term:
            raise SpecError("empty host pattern after ! or &", file=file, line=line, field=field)
        got = self._term_cache.get(term)
        if got is not None:
            return got
        expr, sub = term, None
        if term[0] != "~":
            m = _SUBSCRIPT.match(term)
            if m:
                expr, idx, start, _sep, end = m.groups()
                sub = (int(idx), None) if idx else (int(start), int(end) if end else -1)
        hosts = self._enumerate(expr, original, file, line, field)
        if sub and hosts:
            start_i, end_i = sub
            try:
                if end_i:
                    if end_i == -1:
                        end_i = len(hosts) - 1
                    hosts = hosts[start_i : end_i + 1]
                else:
                    hosts = [hosts[start_i]]
            except IndexError:
                raise SpecError(
                    f"no hosts match the subscripted pattern {original!r}",
                    file=file,
                    line=line,
                    field=field,
                ) from None
        self._term_cache[term] = hosts
        return hosts

    def _enumerate(
        self, expr: str, term: str, file: str | None, line: int | None, field: str | None
    ) -> list[Host]:
        special = expr[0] == "~" or any(c in expr for c in "?*[")
        matcher: Callable[[str], Any] | None = None
        if special:
            try:
                regex = re.compile(expr[1:] if expr[0] == "~" else fnmatch.translate(expr))
            except re.error as e:
                raise SpecError(
                    f"invalid host pattern {term!r}: {e}", file=file, line=line, field=field
                ) from None
            matcher = regex.match
            groups = [g for g in self.groups if matcher(g)]
        else:
            groups = [expr] if expr in self.groups else []
        results: list[Host] = []
        seen: set[str] = set()
        for g in groups:
            for h in self.group_hosts(g):
                if h.name not in seen:
                    seen.add(h.name)
                    results.append(h)
        if not groups or special or "." in expr:
            if matcher is not None:
                found = [h for n, h in self.hosts.items() if matcher(n)]
            else:
                found = [self.hosts[expr]] if expr in self.hosts else []
            for h in found:
                if h.name not in seen:
                    seen.add(h.name)
                    results.append(h)
        if not results:
            local = self._localhost(expr)
            if local is not None:
                return [local]
            if not groups:
                raise SpecError(
                    f"host pattern {term!r} matches no host or group{self._suggest(expr)}",
                    file=file,
                    line=line,
                    field=field,
                )
        return results

    # -- ansible-inventory equivalents ---------------------------------------------------------
    def to_ansible_list(self) -> dict[str, Any]:
        """The structure `ansible-inventory --list` prints (as parsed JSON)."""
        available = set(self.hosts)
        results: dict[str, Any] = {}
        seen: set[str] = set()

        def fmt(name: str) -> None:
            g = self.groups[name]
            entry: dict[str, Any] = {}
            if name != "all":
                entry["hosts"] = [h for h in g.hosts if h in available]
            entry["children"] = list(g.children)
            results[name] = entry
            for child in g.children:
                if child not in seen:
                    fmt(child)
                    seen.add(child)
            for key in ("hosts", "children"):
                if key in entry and not entry[key]:
                    del entry[key]
            if not entry:
                del results[name]

        fmt("all")
        hostvars = {}
        for name in self.group_hosts("all"):
            hv = self._hostvars[name.name]
            if hv:
                hostvars[name.name] = _jsonable(hv)
        results["_meta"] = {"hostvars": hostvars, "profile": "inventory_legacy"}
        return results

    def to_ansible_json(self) -> str:
        """`ansible-inventory --list` output text."""
        return json.dumps(self.to_ansible_list(), sort_keys=True, indent=4)

    def graph(self, group: str = "all") -> str:
        """`ansible-inventory --graph [GROUP]` output (without the final newline)."""
        if group not in self.groups:
            raise SpecError(f"unknown group {group!r}{self._suggest(group)}")
        lines: list[str] = []

        def walk(name: str, depth: int) -> None:
            lines.append(_graph_name(f"@{name}:", depth))
            for child in self.groups[name].children:
                walk(child, depth + 1)
            if name != "all":
                for h in self.groups[name].hosts:
                    lines.append(_graph_name(h, depth + 1))

        walk(group, 0)
        return "\n".join(lines)


def _group_merge(
    b: InventoryBuilder,
    names: frozenset[str],
    order_key: dict[str, tuple[int, int, str]],
    all_file_vars: list[dict[str, Any]],
    group_files: dict[str, list[dict[str, Any]]],
    lookup: VarsLookup,
) -> tuple[dict[str, Any], list[str]]:
    """Group-level variables for a host in groups `names` (shared by all such hosts).

    Ansible's default precedence: inventory 'all' vars < inventory group vars <
    group_vars/all < group_vars/<group> (per inventory source, groups sorted).
    """
    ordered = sorted((n for n in names if n != "all"), key=order_key.__getitem__)
    merged: dict[str, Any] = dict(b.groups["all"].vars)
    for n in ordered:
        merged.update(b.groups[n].vars)
    for d in all_file_vars:
        merged.update(d)
    per_group = []
    for n in ordered:
        got = group_files.get(n)
        if got is None:
            got = group_files[n] = lookup("group", n)
        per_group.append(got)
    for i in range(len(all_file_vars)):
        for got in per_group:
            merged.update(got[i])
    return merged, sorted(ordered)


def _graph_name(name: str, depth: int) -> str:
    return "  |" * depth + "--" + name if depth else name


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON the way ansible-inventory's encoder would show values."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)
