"""The pure heart: (desired, observed) → Change. No I/O here."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from provisioner.module import Absent, Module
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.secret import Secret


def fingerprint(observed: dict[str, Any] | None) -> str:
    """Stable hash of an observed state (stored in plans for the stale check).

    Secrets in observed state (rare: modules hash them) are folded in by
    digest, so the fingerprint changes when they do but does not reveal them."""
    blob = json.dumps(observed, sort_keys=True, default=_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _default(value: Any) -> Any:
    if isinstance(value, Secret):
        return "secret:" + value.digest()
    if isinstance(value, (bytes, bytearray)):
        return "bytes:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def mask_like(desired: Any, observed: Any,
              sensitive: frozenset[str] = frozenset()) -> Any:
    """Where the spec holds a secret, the observed value is secret too: the
    old password in a config file is as sensitive as the new one. Mappings
    are followed (a secret in a container's env masks that key's observed
    value), and fields a module declares sensitive are masked whatever the
    spec says."""
    if not isinstance(observed, dict):
        return observed
    masked = dict(observed)
    for key in masked:
        if key in sensitive and masked[key] is not None and not isinstance(masked[key], Secret):
            masked[key] = Secret(str(masked[key]))
    if not isinstance(desired, dict):
        return masked
    for key, want in desired.items():
        have = masked.get(key)
        if have is None or isinstance(have, Secret):
            continue
        if isinstance(want, Secret):
            masked[key] = Secret(str(have))
        elif isinstance(want, dict) and isinstance(have, dict):
            masked[key] = mask_like(want, have)
    return masked


def diff(module: Module, res: Resource, observed: dict[str, Any] | None) -> Change:
    desired = res.fields
    base = dict(address=res.address, host=res.host, kind=res.kind, name=res.name,
                fingerprint=fingerprint(observed), depends_on=list(res.depends_on))
    facts = observed if isinstance(observed, Absent) else None
    observed = None if facts is not None else mask_like(desired, observed,
                                                         module.sensitive_fields)
    desired = mask_like({}, desired, module.sensitive_fields) or desired
    if module.wants_absent(desired):
        if observed is None:
            return Change(action=Action.NOOP, before=None, after=None,
                          reason="absent, as declared", **base)
        return Change(action=Action.DELETE, before=observed, after=None,
                      changed_fields=[], reason="declared absent",
                      notes=module.notes(desired, observed, []), **base)
    if observed is None:
        after = {**desired, **module.planned(desired, facts)}
        return Change(action=Action.CREATE, before=None, after=after,
                      changed_fields=[k for k in desired if desired[k] is not None],
                      reason=module.create_reason(desired), notes=module.notes(after, None, []),
                      **base)
    changed = module.compare(desired, observed)
    if not changed:
        return Change(action=Action.NOOP, before=observed, after=desired, reason="up to date",
                      **base)
    forcing = module.forces_replace(desired, observed, changed)
    if forcing:
        after = {**desired, **module.planned(desired, observed)}
        notes = module.notes(after, observed, changed)
        return Change(action=Action.REPLACE, before=observed, after=after,
                      changed_fields=changed, replace_fields=forcing,
                      reason=", ".join(forcing) + " cannot change in place", notes=notes, **base)
    return Change(action=Action.UPDATE, before=observed, after=desired, changed_fields=changed,
                  reason=", ".join(changed) + " differ",
                  notes=module.notes(desired, observed, changed), **base)
