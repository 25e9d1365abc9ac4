"""A compiled fast path for the common subset of cerberus rules.

Why: cerberus copies and re-validates the schema on every call (~1.3 ms per
resource here), which made a 10,000-resource spec take 13 s to load. This
compiles a schema once into plain Python checks. It only ever *accepts*: when
a document fails any check, the caller hands it to cerberus, so every error
message still comes from cerberus. A rule this module does not know makes
the schema uncompilable and cerberus does all the work (tests/unit/
test_fastcheck.py checks on generated documents that whatever the fast path
accepts, cerberus accepts with the same result).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Check = Callable[[Any], tuple[bool, Any]]
_FAIL = (False, None)
KNOWN_RULES = {"type", "coerce", "required", "default", "nullable", "allowed", "regex", "min",
               "max", "empty", "minlength", "maxlength", "schema", "valuesrules", "keysrules",
               "meta"}


class Unsupported(Exception):
    pass


def _type_check(names: Any, extra_types: dict[str, tuple[type, ...]]) -> Callable[[Any], bool]:
    names = [names] if isinstance(names, str) else list(names)
    tests = []
    for name in names:
        if name == "string":
            tests.append(lambda v: isinstance(v, str))
        elif name == "integer":
            tests.append(lambda v: isinstance(v, int))
        elif name == "float":
            tests.append(lambda v: isinstance(v, (float, int)))
        elif name == "number":
            tests.append(lambda v: isinstance(v, (float, int)) and not isinstance(v, bool))
        elif name == "boolean":
            tests.append(lambda v: isinstance(v, bool))
        elif name == "list":
            tests.append(lambda v: isinstance(v, Sequence) and not isinstance(v, str))
        elif name == "dict":
            tests.append(lambda v: isinstance(v, Mapping))
        elif name in extra_types:
            types = extra_types[name]
            tests.append(lambda v, t=types: isinstance(v, t))
        else:
            raise Unsupported(f"type {name}")
    return lambda v: any(t(v) for t in tests)


class FastSchema:
    def __init__(self, schema: Mapping[str, Any], coercers: Mapping[str, Callable[[Any], Any]],
                 extra_types: Mapping[str, tuple[type, ...]]) -> None:
        self.coercers = dict(coercers)
        self.extra_types = dict(extra_types)
        self.fields = {name: self._field(rules) for name, rules in schema.items()}
        self.required = [n for n, r in schema.items() if r.get("required") and "default" not in r]
        self.defaults = [(n, r["default"], bool(r.get("nullable"))) for n, r in schema.items()
                         if "default" in r]

    # -- compiling -----------------------------------------------------------
    def _coercer(self, spec: Any) -> Callable[[Any], Any]:
        if callable(spec):
            return spec
        if isinstance(spec, str) and spec in self.coercers:
            return self.coercers[spec]
        raise Unsupported(f"coerce {spec!r}")

    def _field(self, rules: Mapping[str, Any]) -> Check:
        unknown = set(rules) - KNOWN_RULES
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        coerce = self._coercer(rules["coerce"]) if "coerce" in rules else None
        nullable = bool(rules.get("nullable"))
        type_ok = _type_check(rules["type"], self.extra_types) if "type" in rules else None
        types = rules.get("type")
        type_names = [types] if isinstance(types, str) else list(types or [])
        allowed = rules.get("allowed")
        regex = None
        if "regex" in rules:
            pattern = rules["regex"]
            regex = re.compile(pattern if pattern.endswith("$") else pattern + "$")
        lo, hi = rules.get("min"), rules.get("max")
        empty_ok = rules.get("empty", True)
        minlen, maxlen = rules.get("minlength"), rules.get("maxlength")
        sub = rules.get("schema")
        sub_mapping: FastSchema | None = None
        sub_item: Check | None = None
        if sub is not None:
            if "dict" in type_names and "list" in type_names:
                raise Unsupported("schema for both dict and list")
            if "list" in type_names:
                sub_item = self._field(sub)
            elif "dict" in type_names:
                sub_mapping = FastSchema(sub, self.coercers, self.extra_types)
            else:
                raise Unsupported("schema without list/dict type")
        values = self._field(rules["valuesrules"]) if "valuesrules" in rules else None
        keys = self._field(rules["keysrules"]) if "keysrules" in rules else None

        def check(value: Any) -> tuple[bool, Any]:
            if coerce is not None:
                try:
                    value = coerce(value)
                except Exception:
                    return _FAIL
            if value is None:
                return (True, None) if nullable else _FAIL
            if type_ok is not None and not type_ok(value):
                return _FAIL
            if sub_mapping is not None and isinstance(value, Mapping):
                ok, value = sub_mapping.check(value)
                if not ok:
                    return _FAIL
            if sub_item is not None and isinstance(value, Sequence) and not isinstance(value, str):
                items = []
                for item in value:
                    ok, item = sub_item(item)
                    if not ok:
                        return _FAIL
                    items.append(item)
                value = items
            if (values is not None or keys is not None) and isinstance(value, Mapping):
                out = {}
                for k, v in value.items():
                    if keys is not None:
                        ok, k2 = keys(k)
                        if not ok or k2 != k:
                            return _FAIL
                    if values is not None:
                        ok, v = values(v)
                        if not ok:
                            return _FAIL
                    out[k] = v
                value = out
            if allowed is not None:
                if isinstance(value, (list, tuple)):
                    if any(v not in allowed for v in value):
                        return _FAIL
                elif value not in allowed:
                    return _FAIL
            if regex is not None and isinstance(value, str) and not regex.match(value):
                return _FAIL
            try:
                if lo is not None and value < lo:
                    return _FAIL
                if hi is not None and value > hi:
                    return _FAIL
            except TypeError:
                return _FAIL
            if not empty_ok and hasattr(value, "__len__") and len(value) == 0:
                return _FAIL
            if minlen is not None and (not hasattr(value, "__len__") or len(value) < minlen):
                return _FAIL
            if maxlen is not None and (not hasattr(value, "__len__") or len(value) > maxlen):
                return _FAIL
            return True, value

        return check

    # -- checking ------------------------------------------------------------
    def check(self, doc: Any) -> tuple[bool, Any]:
        if not isinstance(doc, Mapping):
            return _FAIL
        out = dict(doc)
        for name in out:
            if name not in self.fields:
                return _FAIL
        for name, default, nullable in self.defaults:
            if name not in out or (out[name] is None and not nullable):
                out[name] = default
        for name in self.required:
            if name not in out:
                return _FAIL
        for name, value in out.items():
            ok, value = self.fields[name](value)
            if not ok:
                return _FAIL
            out[name] = value
        return True, out
