"""What a module may use while turning spec fields into desired state."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from provisioner.errors import SpecError
from provisioner.secret import Secret
from provisioner.spec.templating import TemplateError, render_string


class SpecContext:
    def __init__(self, *, file: str, line: int | None, field_prefix: str,
                 field_lines: dict[str, int], variables: dict[str, Any], host: str) -> None:
        self.file = file
        self.line = line
        self.field_prefix = field_prefix
        self.field_lines = field_lines
        self.variables = variables
        self.host = host

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.file))

    def fail(self, field: str, message: str) -> NoReturn:
        raise SpecError(
            message,
            file=self.file,
            line=self.field_lines.get(field.split(".")[0].split("[")[0], self.line),
            field=f"{self.field_prefix}.{field}" if field else self.field_prefix,
        )

    def resolve_path(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.base_dir, path)

    def read_file(self, field: str, path: str) -> bytes:
        full = self.resolve_path(path)
        try:
            with open(full, "rb") as fh:
                return fh.read()
        except OSError as exc:
            self.fail(field, f"cannot read {path}: {exc.strerror or exc}")

    def render_file(self, field: str, path: str) -> str | Secret:
        raw = self.read_file(field, path)
        try:
            return render_string(raw.decode("utf-8"), self.variables)
        except UnicodeDecodeError:
            self.fail(field, f"template {path} is not UTF-8 text")
        except TemplateError as exc:
            self.fail(field, f"{path}: {exc}")
