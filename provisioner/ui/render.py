"""Plans as people read them: + create, ~ update, -/+ replace, - delete."""

from __future__ import annotations

import difflib
from typing import Any

from provisioner.plan.model import Action, Change, Plan
from provisioner.secret import REDACTED, Secret
from provisioner.spec.units import format_size
from provisioner.ui.console import Console

SYMBOL = {
    Action.CREATE: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.REPLACE: ("-/+", "magenta"),
    Action.DELETE: ("-", "red"),
    Action.NOOP: (" ", "dim"),
}

_SIZE_FIELDS = {"memory", "disk", "size", "memory_high", "shm_size", "capacity"}
# content hashes: the content (or its size) is shown instead
_HIDDEN = {"sha256", "content_sha256"}
MAX_DIFF_LINES = 200


def show_value(field: str, value: Any) -> str:
    if isinstance(value, Secret) or value == REDACTED:
        return REDACTED
    if value is None:
        return "(none)"
    if field == "mode" and isinstance(value, int):
        return format(value, "04o")
    if field in _SIZE_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return format_size(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _quote(s: str) -> str:
    if len(s) > 80:
        s = s[:77] + "..."
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _is_text_block(value: Any) -> bool:
    return isinstance(value, str) and value != REDACTED and ("\n" in value or len(value) > 80)


def change_lines(console: Console, c: Change, indent: str = "  ") -> None:
    symbol, style = SYMBOL[c.action]
    head = [(f"{indent}{symbol} ", f"bold {style}"), (f"{c.kind} ", style), (c.name, "bold")]
    if c.action is Action.REPLACE:
        head.append((f"  (replace: {', '.join(c.replace_fields)} forces replacement)", "magenta"))
    elif c.action is Action.DELETE:
        head.append((f"  ({c.reason})", "red"))
    console.line(*head)
    pad = indent + "    "
    before = c.before or {}
    after = c.after or {}
    if c.action is Action.CREATE:
        hidden = _HIDDEN | _unshown(c.kind)
        for key, value in after.items():
            if value is None or key in hidden or key == c_name_field(c, key, value):
                continue
            if _is_text_block(value):
                console.line((f"{pad}{key}: ", ""), (f"({len(value.splitlines())} lines)", "dim"))
                continue
            console.line((f"{pad}{key}: ", ""), (show_value(key, value), "green"))
    elif c.action in (Action.UPDATE, Action.REPLACE):
        for key in c.changed_fields:
            old, new = before.get(key), after.get(key)
            forces = "   # forces replacement" if key in c.replace_fields else ""
            if _is_text_block(old) or _is_text_block(new):
                console.line((f"{pad}{key}:", ""), (forces, "magenta"))
                _unified(console, old if isinstance(old, str) else "", new if isinstance(new, str) else "", pad + "  ")
                continue
            console.line((f"{pad}{key}: ", ""), (show_value(key, old), "red"), (" → ", "dim"),
                         (show_value(key, new), "green"), (forces, "magenta"))
    for note in c.notes:
        console.line((f"{pad}! {note}", "cyan"))


def _unshown(kind: str) -> frozenset[str]:
    """The kind's own fields not listed on a create (a plan file may name a
    kind this version does not know: then none)."""
    from modules import get_module

    try:
        return get_module(kind).unshown_fields
    except KeyError:
        return frozenset()


def c_name_field(c: Change, key: str, value: Any) -> str | None:
    """The name is in the header already; `state: present` says nothing."""
    if value == c.name or (key == "state" and value == "present") or value is False:
        return key
    return None


def _unified(console: Console, old: str, new: str, pad: str) -> None:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), "before", "after",
                                      lineterm="", n=2))
    for line in lines[:MAX_DIFF_LINES]:
        style = ""
        if line.startswith("+") and not line.startswith("+++"):
            style = "green"
        elif line.startswith("-") and not line.startswith("---"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        console.line((pad + line, style))
    if len(lines) > MAX_DIFF_LINES:
        console.line((f"{pad}... {len(lines) - MAX_DIFF_LINES} more diff lines", "dim"))


def render_plan(console: Console, plan: Plan, *, show_noop: bool = False) -> None:
    for host, hp in plan.hosts.items():
        if hp.error:
            console.line(("✗ ", "bold red"), (host, "bold"), (f": {hp.error}", "red"))
            continue
        changes = [c for c in hp.changes if show_noop or c.action.changes]
        if not changes:
            continue
        console.line((host, "bold underline"))
        for c in changes:
            change_lines(console, c)
        console.line("")
    console.line(*plan_summary(plan))


def plan_summary(plan: Plan) -> list[tuple[str, str]]:
    counts = plan.counts()
    failed = len(plan.failed_hosts)
    if not plan.has_changes():
        text = [("No changes.", "bold green"),
                (f" {counts['no-op']} resources up to date on {len(plan.hosts) - failed} hosts.", "")]
    else:
        text = [("Plan: ", "bold"),
                (f"{counts['create']} to create", "green"), (", ", ""),
                (f"{counts['update']} to update", "yellow"), (", ", ""),
                (f"{counts['replace']} to replace", "magenta"), (", ", ""),
                (f"{counts['delete']} to delete", "red"), (", ", ""),
                (f"{counts['no-op']} unchanged", "dim"), (".", "")]
    if failed:
        text.append((f" {failed} host(s) could not be read.", "bold red"))
    return text
