"""Plan ⇄ JSON. Format documented in docs/plan-format.md; bump
FORMAT_VERSION on any incompatible change. Secrets are redacted on the way
out, so a plan file can be an artifact anyone reviews."""

from __future__ import annotations

import json
from typing import Any

from provisioner import __version__
from provisioner.errors import ProvisionError
from provisioner.plan.model import Action, Change, HostPlan, Plan
from provisioner.secret import REDACTED, Secret

FORMAT_VERSION = 1


def _clean(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"({len(value)} bytes)"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _sensitive(change: Change) -> list[str]:
    """Dotted paths of every value shown as (sensitive): env.DB_PASSWORD."""
    found: set[str] = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Secret):
            found.add(path)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))

    walk(change.before or {}, "")
    walk(change.after or {}, "")
    return sorted(found)


def change_to_dict(c: Change) -> dict[str, Any]:
    return {
        "address": c.address,
        "host": c.host,
        "kind": c.kind,
        "name": c.name,
        "action": c.action.value,
        "reason": c.reason,
        "changed_fields": c.changed_fields,
        "replace_fields": c.replace_fields,
        "sensitive_fields": _sensitive(c),
        "notes": c.notes,
        "before": _clean(c.before),
        "after": _clean(c.after),
        "fingerprint": c.fingerprint,
        "depends_on": c.depends_on,
    }


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "tool": f"provision {__version__}",
        "created": plan.created,
        "spec": {
            "path": plan.spec_path,
            "digest": plan.spec_digest,
            "inventory": plan.inventory,
            "extra_vars": _clean(plan.extra_vars),
            "limit": plan.limit,
        },
        "summary": plan.counts(),
        "has_changes": plan.has_changes(),
        "hosts": {
            name: {"error": hp.error, "unreachable": hp.unreachable,
                   "changes": [change_to_dict(c) for c in hp.changes]}
            for name, hp in plan.hosts.items()
        },
    }


def dumps(plan: Plan) -> str:
    return json.dumps(plan_to_dict(plan), indent=2, sort_keys=False) + "\n"


def loads(text: str, source: str = "plan") -> Plan:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProvisionError(f"{source}:{exc.lineno}: not a plan file: {exc.msg}") from None
    if not isinstance(doc, dict) or "format_version" not in doc:
        raise ProvisionError(f"{source}: not a plan file (no format_version)")
    if doc["format_version"] != FORMAT_VERSION:
        raise ProvisionError(f"{source}: plan format {doc['format_version']} is not supported "
                             f"by this version (expects {FORMAT_VERSION})")
    try:
        spec = doc["spec"]
        hosts = {}
        for name, h in doc["hosts"].items():
            changes = [
                Change(address=c["address"], host=c["host"], kind=c["kind"], name=c["name"],
                       action=Action(c["action"]), before=c["before"], after=c["after"],
                       changed_fields=c["changed_fields"], replace_fields=c["replace_fields"],
                       reason=c["reason"], notes=c["notes"], fingerprint=c["fingerprint"],
                       depends_on=c["depends_on"])
                for c in h["changes"]
            ]
            hosts[name] = HostPlan(name, changes, error=h["error"],
                                   unreachable=bool(h.get("unreachable", False)))
        return Plan(hosts=hosts, spec_path=spec["path"], spec_digest=spec["digest"],
                    inventory=spec["inventory"], extra_vars=spec["extra_vars"],
                    limit=spec["limit"], created=doc.get("created", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProvisionError(f"{source}: malformed plan file ({type(exc).__name__}: {exc})") from None
