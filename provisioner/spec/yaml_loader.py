"""YAML loading that remembers where every value came from.

Mappings and sequences load as MarkedDict / MarkedList: plain dict/list
subclasses carrying the file and the line of each key or item, so any later
stage (templating, schema) can name `playbook.yml:14` in its error.
Tags: `!secret VALUE` marks a literal as secret; `!env NAME` reads an
environment variable (and is secret too: environments carry credentials).
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from provisioner.errors import SpecError
from provisioner.secret import REGISTRY, Secret

try:  # the C loader is several times faster on big specs
    _BaseLoader = yaml.CSafeLoader  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - libyaml missing
    _BaseLoader = yaml.SafeLoader


class MarkedDict(dict):
    file: str = ""
    line: int | None = None
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int | None:
        return self.key_lines.get(key, self.line)


class MarkedList(list):
    file: str = ""
    line: int | None = None
    item_lines: list[int]

    def line_of(self, index: int) -> int | None:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


class EnvLookup:
    """A deferred `!env NAME`: resolved at template time so a missing variable
    is reported with its location rather than at load."""

    def __init__(self, name: str) -> None:
        self.name = name


def _loader_for(path: str) -> type:
    class Loader(_BaseLoader):  # type: ignore[misc, valid-type]
        pass

    def construct_mapping(loader: Any, node: yaml.MappingNode) -> MarkedDict:
        result = MarkedDict()
        result.file = path
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise SpecError(
                    "mapping keys must be plain scalars", file=path, line=key_node.start_mark.line + 1
                )
            if key in result:
                raise SpecError(
                    f"duplicate key {key!r}", file=path, line=key_node.start_mark.line + 1
                )
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(loader: Any, node: yaml.SequenceNode) -> MarkedList:
        result = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
        result.file = path
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result

    def construct_secret(loader: Any, node: yaml.Node) -> Secret:
        if not isinstance(node, yaml.ScalarNode):
            raise SpecError("!secret takes a plain string", file=path, line=node.start_mark.line + 1)
        value = str(loader.construct_scalar(node))
        REGISTRY.add(value)
        return Secret(value)

    def construct_env(loader: Any, node: yaml.Node) -> EnvLookup:
        if not isinstance(node, yaml.ScalarNode):
            raise SpecError("!env takes a variable name", file=path, line=node.start_mark.line + 1)
        return EnvLookup(str(loader.construct_scalar(node)))

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    Loader.add_constructor("!secret", construct_secret)
    Loader.add_constructor("!env", construct_env)
    return Loader


def load_yaml_text(text: str, path: str) -> Any:
    try:
        return yaml.load(text, Loader=_loader_for(path))  # noqa: S506 - safe loader subclass
    except SpecError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"YAML syntax error: {problem}", file=path, line=line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        raise SpecError(f"YAML error: character {exc.character!r} is not allowed in YAML",
                        file=path, line=line) from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise SpecError(f"YAML error: {first}", file=path) from None


def load_yaml_file(path: str) -> Any:
    display = os.path.relpath(path)
    if display.startswith(".."):
        display = path
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise SpecError("file not found", file=display) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", file=display) from None
    return load_yaml_text(text, display)
