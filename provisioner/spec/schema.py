"""Validation of resource fields with cerberus, reported as one line with a
suggestion for misspelt keys."""

from __future__ import annotations

import difflib
from typing import Any

from provisioner.secret import Secret
from provisioner.spec.units import parse_mode, parse_size

# Fields every resource accepts besides its module's own.
COMMON_FIELDS: dict[str, Any] = {
    "depends_on": {"type": "list", "schema": {"type": "string"}},
}


def _coerce_int(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return value


def _coerce_float(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _coerce_bool(value: Any) -> Any:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
    return value


_validator_class: Any = None


def _validator_type() -> Any:
    """cerberus is imported only when a document fails the fast path (or in
    tests): a valid spec never pays its ~90 ms import."""
    global _validator_class
    if _validator_class is None:
        import cerberus

        class _Validator(cerberus.Validator):
            """Adds size/mode types and the coercions the shorthands name."""

            types_mapping = cerberus.Validator.types_mapping.copy()
            types_mapping["secretstring"] = cerberus.TypeDefinition(
                "secretstring", (str, Secret), ())

            def _normalize_coerce_size(self, value: Any) -> Any:
                return _coerce_size(value)  # a bad size stays: the type check reports it

            def _normalize_coerce_mode(self, value: Any) -> Any:
                return _coerce_mode(value)

            def _normalize_coerce_int(self, value: Any) -> Any:
                return _coerce_int(value)

            def _normalize_coerce_float(self, value: Any) -> Any:
                return _coerce_float(value)

            def _normalize_coerce_bool(self, value: Any) -> Any:
                return _coerce_bool(value)

        _validator_class = _Validator
    return _validator_class


# Shorthands so module schemas stay short and consistent.
def size(**extra: Any) -> dict[str, Any]:
    return {"type": "integer", "coerce": "size", "min": 0, "meta": "size", **extra}


def mode(**extra: Any) -> dict[str, Any]:
    return {"type": "integer", "coerce": "mode", "meta": "mode", "min": 0, "max": 0o7777, **extra}


def integer(**extra: Any) -> dict[str, Any]:
    return {"type": "integer", "coerce": "int", **extra}


def number(**extra: Any) -> dict[str, Any]:
    return {"type": "float", "coerce": "float", **extra}


def boolean(**extra: Any) -> dict[str, Any]:
    return {"type": "boolean", "coerce": "bool", **extra}


def string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def text(**extra: Any) -> dict[str, Any]:
    """A string that may be secret."""
    return {"type": "secretstring", **extra}


def one_of(*values: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "allowed": list(values), **extra}


_MESSAGES = {
    "size": "must be a size like 2GiB or 512M",
    "mode": "must be an octal mode like '0644' (quote it)",
}


class ValidationFailure(Exception):
    def __init__(self, path: list[Any], message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(message)


def _first_error(tree: dict, schema: dict, prefix: list[Any]) -> tuple[list[Any], str]:
    key = sorted(tree, key=str)[0]
    errors = tree[key]
    path = prefix + [key]
    for err in errors:
        if isinstance(err, dict):
            sub = schema.get(key, {}) if isinstance(schema, dict) else {}
            sub_schema = sub.get("schema", {}) if isinstance(sub, dict) else {}
            if sub.get("type") == "list":
                # list items: errors keyed by index, schema is the item schema
                idx = sorted(err, key=str)[0]
                inner = err[idx]
                item_schema = sub_schema.get("schema", {}) if isinstance(sub_schema, dict) else {}
                for e in inner:
                    if isinstance(e, dict):
                        return _first_error(e, item_schema, path + [idx])
                    return path + [idx], str(e)
            return _first_error(err, sub_schema, path)
    message = str(errors[0])
    field_schema = schema.get(key, {}) if isinstance(schema, dict) else {}
    if message == "unknown field":
        close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
        if close:
            message = f"unknown field, did you mean {close[0]}?"
        else:
            message = "unknown field (allowed: " + ", ".join(sorted(map(str, schema))) + ")"
    elif (message.startswith(("must be of", "min value", "max value"))
          and field_schema.get("meta") in _MESSAGES):
        message = _MESSAGES[field_schema["meta"]]
    return path, message


_validators: dict[int, Any] = {}
_fast: dict[int, Any] = {}


def _fast_schema(full: dict[str, Any]) -> Any:
    from provisioner.spec.fastcheck import FastSchema, Unsupported

    coercers = {"size": _coerce_size, "mode": _coerce_mode, "int": _coerce_int,
                "float": _coerce_float, "bool": _coerce_bool}
    try:
        return FastSchema(full, coercers, {"secretstring": (str, Secret)})
    except Unsupported:
        return None


def _coerce_size(value: Any) -> Any:
    try:
        return parse_size(value)
    except ValueError:
        return value


def _coerce_mode(value: Any) -> Any:
    try:
        return parse_mode(value)
    except ValueError:
        return value


def validate(fields: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Return normalised fields or raise ValidationFailure naming the field.

    A compiled fast path accepts valid documents; anything it does not accept
    goes to cerberus, which decides and words the error."""
    key = id(schema)
    if key not in _fast:
        full = {**schema, **COMMON_FIELDS}
        _fast[key] = (_fast_schema(full), full)
    fast, full = _fast[key]
    if fast is not None:
        ok, doc = fast.check(fields)
        if ok:
            return doc
    validator = _validators.get(key)
    if validator is None:
        validator = _validator_type()(full, allow_unknown=False)
        _validators[key] = validator
    if not validator.validate(dict(fields)):
        path, message = _first_error(validator.errors, full, [])
        raise ValidationFailure(path, message)
    return validator.document


def validate_with_cerberus(fields: dict[str, Any], schema: dict[str, Any]) -> tuple[bool, Any]:
    """cerberus alone (for the fast path's equivalence tests)."""
    full = {**schema, **COMMON_FIELDS}
    validator = _validator_type()(full, allow_unknown=False)
    ok = validator.validate(dict(fields))
    return ok, validator.document if ok else validator.errors
