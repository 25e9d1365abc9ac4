"""Reading the actual state of a host's resources, batched."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from modules import get_module
from provisioner.connection.base import Connection
from provisioner.engine.batch import run_batch
from provisioner.errors import HostError, ProvisionError
from provisioner.resource import Resource

Observed = dict[str, "dict[str, Any] | None"]


def observe(conn: Connection, resources: Sequence[Resource],
            timeout: float | None = None) -> Observed:
    """Observed state of each resource, keyed by address: shell probes of all
    kinds in one round trip, API kinds one listing per kind."""
    observed: Observed = {}
    shell: list[tuple[Resource, int, int]] = []
    argvs: list[tuple[str, ...]] = []
    api: dict[str, list[Resource]] = defaultdict(list)
    for res in resources:
        module = get_module(res.kind)
        if module.uses_api:
            api[res.kind].append(res)
            continue
        probes = module.probes(res)
        shell.append((res, len(argvs), len(probes)))
        argvs.extend(p.argv for p in probes)
    results = run_batch(conn, argvs, timeout=timeout)
    for res, start, count in shell:
        try:
            observed[res.address] = get_module(res.kind).parse(res, results[start:start + count])
        except ProvisionError:
            raise
        except Exception as exc:
            raise HostError(conn.host, f"cannot read {res.kind} {res.name}: "
                            f"{type(exc).__name__}: {exc}") from None
    for kind, group in api.items():
        found = get_module(kind).read_many(conn, group)
        for res in group:
            observed[res.address] = found.get(res.address)
    return observed
