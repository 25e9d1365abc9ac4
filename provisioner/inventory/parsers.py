"""Inventory source parsers: YAML (with line numbers), INI, and 'a,b,' host lists."""

from __future__ import annotations

import ast
import difflib
import re
import shlex
import warnings
from typing import Any

import yaml

from provisioner.errors import SpecError

from .hostrange import RangeError, expand_host_pattern, split_host_port
from .model import InventoryBuilder

__all__ = ["load_yaml_file_data", "parse_host_list", "parse_ini", "parse_yaml", "yaml_root"]

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader plus Ansible's `!unsafe` tag (taken as a plain string)."""


def _unsafe(loader: Any, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _vault(loader: Any, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, "vault-encrypted values (!vault) are not supported", node.start_mark
    )


_Loader.add_constructor("!unsafe", _unsafe)
_Loader.add_constructor("!vault", _vault)

_SECTIONS = ("hosts", "vars", "children")


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


class _Yaml:
    """A composed YAML document whose sub-nodes can be turned into Python values."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.loader = _Loader(text)
        try:
            self.root: yaml.Node | None = self.loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            raise _yaml_error(e, path) from None
        except yaml.YAMLError as e:
            raise SpecError(f"invalid YAML: {e}", file=path) from None

    def value(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_document(node)
        except yaml.MarkedYAMLError as e:
            raise _yaml_error(e, self.path) from None

    def close(self) -> None:
        self.loader.dispose()


def _yaml_error(e: yaml.MarkedYAMLError, path: str) -> SpecError:
    mark = e.problem_mark or e.context_mark
    what = " ".join(x for x in (e.context, e.problem) if x)
    return SpecError(f"invalid YAML: {what or e}", file=path, line=mark.line + 1 if mark else None)


def yaml_root(text: str, path: str) -> Any:
    """Parse a whole YAML document to Python data (SpecError with line on bad YAML)."""
    doc = _Yaml(text, path)
    try:
        return doc.value(doc.root) if doc.root is not None else None
    finally:
        doc.close()


def load_yaml_file_data(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror}", file=path) from None
    except UnicodeDecodeError as e:
        raise SpecError(f"not UTF-8 text: {e.reason}", file=path) from None
    return yaml_root(text, path)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _is_str(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str"


def looks_like_yaml_inventory(text: str, path: str) -> bool:
    """For extension-less files: does the text parse as a YAML mapping (not an INI file)?"""
    try:
        doc = _Yaml(text, path)
    except SpecError:
        return False
    try:
        return isinstance(doc.root, yaml.MappingNode)
    finally:
        doc.close()


def parse_yaml(builder: InventoryBuilder, path: str, text: str) -> None:
    """Add the groups and hosts of a YAML inventory to `builder`."""
    doc = _Yaml(text, path)
    try:
        root = doc.root
        if root is None or _is_null(root):
            return  # an empty file is an empty inventory
        if not isinstance(root, yaml.MappingNode):
            raise SpecError(
                "a YAML inventory must be a mapping of group names (e.g. 'all:')",
                file=path,
                line=_line(root),
            )
        for key, _value in root.value:
            if _is_str(key) and key.value == "plugin":
                raise SpecError(
                    "inventory plugin configuration files are not supported",
                    file=path,
                    line=_line(key),
                )
        for key, value in root.value:
            _yaml_group(builder, doc, key, value)
    finally:
        doc.close()


def _name(doc: _Yaml, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError(f"{what} must be a string", file=doc.path, line=_line(node))
    value = node.value if _is_str(node) else doc.value(node)
    if not isinstance(value, str) or not value:
        raise SpecError(
            f"{what} {value!r} must be a non-empty string (quote numbers)",
            file=doc.path,
            line=_line(node),
        )
    return value


def _yaml_group(b: InventoryBuilder, doc: _Yaml, key: yaml.Node, body: yaml.Node) -> str:
    path = doc.path
    name = _name(doc, key, "group name")
    b.add_group(name, (path, _line(key)))
    if _is_null(body):
        return name
    if not isinstance(body, yaml.MappingNode):
        raise SpecError(
            f"group {name!r} must be a mapping with hosts, vars and/or children",
            file=path,
            line=_line(body),
        )
    for skey, sval in body.value:
        section = doc.value(skey) if isinstance(skey, yaml.ScalarNode) else None
        if section not in _SECTIONS:
            close = difflib.get_close_matches(str(section), _SECTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(
                f"unknown key {section!r} in group {name!r}: expected hosts, vars or children{hint}",
                file=path,
                line=_line(skey),
            )
        if _is_null(sval):
            continue
        if isinstance(sval, yaml.ScalarNode) and _is_str(sval):
            # Ansible accepts a single name as shorthand for {name: null}
            items: list[tuple[yaml.Node, yaml.Node | None]] = [(sval, None)]
        elif isinstance(sval, yaml.MappingNode):
            items = list(sval.value)
        else:
            raise SpecError(
                f"{section!r} of group {name!r} must be a mapping",
                file=path,
                line=_line(sval),
            )
        if section == "vars":
            for k, v in items:
                var = _name(doc, k, "variable name")
                value = doc.value(v) if v is not None else None
                try:
                    b.set_group_var(name, var, value)
                except ValueError as e:
                    raise SpecError(str(e), file=path, line=_line(k)) from None
        elif section == "children":
            for k, v in items:
                if v is None:
                    child = _name(doc, k, "group name")
                    b.add_group(child, (path, _line(k)))
                else:
                    child = _yaml_group(b, doc, k, v)
                b.add_child(name, child, file=path, line=_line(k))
        else:
            for k, v in items:
                pattern = _name(doc, k, "host name")
                try:
                    hosts, port = expand_host_pattern(pattern)
                except RangeError as e:
                    raise SpecError(str(e), file=path, line=_line(k)) from None
                hvars = doc.value(v) if v is not None else None
                if not hvars:
                    hvars = {}
                if not isinstance(hvars, dict):
                    raise SpecError(
                        f"variables of host {pattern!r} must be a mapping",
                        file=path,
                        line=_line(v),
                    )
                for h in hosts:
                    b.add_host(h, name, port, (path, _line(k)))
                    for var, value in hvars.items():
                        b.set_host_var(h, var, value)
    return name


# ---------------------------------------------------------------------------------------------
# INI


_COMMENT = ("#", ";")


def _ini_value(text: str) -> Any:
    """Ansible's INI value rule: a Python literal if it is one, else the text."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _coerce(value)


def _coerce(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return [_coerce(v) for v in value]
    if isinstance(value, dict):
        return {k: _coerce(v) for k, v in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _section(line: str) -> tuple[str, str | None] | None:
    """'[name]' / '[name:tag]' with optional trailing '# comment' -> (name, tag)."""
    if not line.startswith("["):
        return None
    close = line.find("]")
    if close < 0:
        return None
    rest = line[close + 1 :].strip()
    if rest and not rest.startswith("#"):
        return None
    inner = line[1:close]
    name, sep, tag = inner.partition(":")
    if not name or any(c.isspace() for c in name):
        return None
    if sep and (not tag or not all(c.isalnum() or c == "_" for c in tag)):
        return None
    return name, (tag if sep else None)


_GROUP_LINE = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


def _group_name_line(line: str) -> str | None:
    m = _GROUP_LINE.match(line)
    return m.group(1) if m else None


def parse_ini(b: InventoryBuilder, path: str, text: str) -> None:
    """Add the groups and hosts of an INI inventory to `builder` (Ansible's ini plugin rules)."""

    pending: dict[str, dict[str, Any]] = {}
    group = "ungrouped"
    state = "hosts"
    lineno = 0

    def fail(message: str) -> SpecError:
        return SpecError(message, file=path, line=lineno)

    def add_pending_children(name: str) -> None:
        for parent in pending[name]["parents"]:
            b.add_child(parent, name, file=path, line=pending[name]["line"])
            if parent in pending and pending[parent]["state"] == "children":
                add_pending_children(parent)
        del pending[name]

    for raw in text.splitlines():
        lineno += 1
        line = raw.strip()
        if not line or line[0] in _COMMENT:
            continue
        sec = _section(line)
        if sec:
            group, tag = sec
            state = tag or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise fail(
                    f"section [{group}:{tag}] has unknown type {tag!r} (hosts, children or vars)"
                )
            if group not in b.groups:
                if state == "vars" and group not in pending:
                    pending[group] = {"line": lineno, "state": state, "name": group}
                b.add_group(group, (path, lineno))
            if group in pending and state != "vars":
                if pending[group]["state"] == "children":
                    add_pending_children(group)
                elif pending[group]["state"] == "vars":
                    del pending[group]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise fail(
                f"invalid section header {line!r}: no spaces or other invalid characters allowed"
            )

        if state == "hosts":
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as e:
                raise fail(f"bad host line {line!r}: {e}") from None
            if not tokens:
                raise fail(f"bad host line {line!r}")
            pattern = tokens[0]
            try:
                hosts, port = expand_host_pattern(pattern)
            except RangeError as e:
                raise fail(str(e)) from None
            if pattern.strip().endswith(":") and port is None:
                raise fail(f"host {pattern!r} ends with ':' (reserved for a port number)")
            if "---" in (h.strip() for h in hosts):
                raise fail("host '---' found: this looks like a YAML file")
            hvars: dict[str, Any] = {}
            for tok in tokens[1:]:
                if "=" not in tok:
                    raise fail(f"expected key=value host variable, got {tok!r}")
                k, v = tok.split("=", 1)
                hvars[k] = _ini_value(v)
            for h in hosts:
                b.add_host(h, group, port, (path, lineno))
                for k, v in hvars.items():
                    b.set_host_var(h, k, v)
        elif state == "vars":
            if "=" not in line:
                raise fail(f"expected key=value, got {line!r}")
            k, v = (part.strip() for part in line.split("=", 1))
            try:
                b.set_group_var(group, k, _ini_value(v))
            except ValueError as e:
                raise fail(str(e)) from None
        else:  # children
            child = _group_name_line(line)
            if child is None:
                raise fail(f"expected a group name, got {line!r}")
            if child not in b.groups:
                if child not in pending:
                    pending[child] = {
                        "line": lineno,
                        "state": "children",
                        "name": child,
                        "parents": [group],
                    }
                else:
                    pending[child]["parents"].append(group)
            else:
                b.add_child(group, child, file=path, line=lineno)

    for decl in pending.values():
        if decl["state"] == "vars":
            raise SpecError(
                f"section [{decl['name']}:vars] is for a group that is defined nowhere",
                file=path,
                line=decl["line"],
            )
        parent = decl["parents"][-1]
        raise SpecError(
            f"section [{parent}:children] names group {decl['name']!r}, which is defined nowhere",
            file=path,
            line=decl["line"],
        )


# ---------------------------------------------------------------------------------------------
# host lists ('-i web1,web2:2222,')


def parse_host_list(b: InventoryBuilder, text: str) -> None:
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            host, port = split_host_port(item)
            if "[" in host:
                raise ValueError(host)
        except ValueError:
            host, port = item, None
        if host not in b.hosts:
            b.add_host(host, "ungrouped", port, (None, None))
