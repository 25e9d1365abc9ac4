"""Jinja2 over every string of a spec, with secrets tracked through it.

A template that reads a secret variable yields a Secret, so a value built
from a password ("postgres://app:{{ db_password }}@db") stays redacted.
Undefined variables are errors, never empty strings.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta

from provisioner.secret import REGISTRY, Secret, contains_secret, reveal
from provisioner.spec.yaml_loader import EnvLookup, MarkedDict, MarkedList


class TemplateError(Exception):
    """Raised with a one-line message; the caller adds file and line."""


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 - we render config files, not HTML
)


@lru_cache(maxsize=4096)
def _compile(source: str) -> tuple[jinja2.Template, frozenset[str]]:
    try:
        ast = _ENV.parse(source)
        names = frozenset(meta.find_undeclared_variables(ast))
        return _ENV.from_string(source), names
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def render_string(source: str, variables: dict[str, Any]) -> str | Secret:
    template, names = _compile(source)
    secret = any(contains_secret(variables.get(n)) for n in names)
    plain = {n: reveal(variables[n]) for n in names if n in variables}
    try:
        out = template.render(plain)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"undefined variable: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template error: {exc}") from None
    except Exception as exc:  # a filter raising on bad input
        raise TemplateError(f"template error: {type(exc).__name__}: {exc}") from None
    if secret:
        REGISTRY.add(out)
        return Secret(out)
    return out


def resolve_env(value: EnvLookup) -> Secret:
    if value.name not in os.environ:
        raise TemplateError(f"environment variable {value.name} is not set")
    raw = os.environ[value.name]
    REGISTRY.add(raw)
    return Secret(raw)


def render(value: Any, variables: dict[str, Any], where: "Locator") -> Any:
    """Render every string in value. `where` turns a failure into file:line."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            return render_string(value, variables)
        except TemplateError as exc:
            where.fail(str(exc))
    if isinstance(value, EnvLookup):
        try:
            return resolve_env(value)
        except TemplateError as exc:
            where.fail(str(exc))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k] = render(v, variables, where.child(value, k))
        return out
    if isinstance(value, list):
        return [render(v, variables, where.child(value, i)) for i, v in enumerate(value)]
    return value


class Locator:
    """Tracks the file, line and field path while walking a spec value."""

    def __init__(self, file: str, line: int | None, path: list[Any]) -> None:
        self.file = file
        self.line = line
        self.path = path

    def child(self, container: Any, key: Any) -> "Locator":
        line = self.line
        if isinstance(container, (MarkedDict, MarkedList)):
            line = container.line_of(key) or line
        return Locator(getattr(container, "file", "") or self.file, line, self.path + [key])

    def field(self) -> str:
        return format_path(self.path)

    def fail(self, message: str) -> None:
        from provisioner.errors import SpecError

        raise SpecError(message, file=self.file, line=self.line, field=self.field() or None)


def format_path(path: list[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
