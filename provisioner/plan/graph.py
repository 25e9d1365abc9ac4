"""Dependency order of the resources of one host: a topological sort."""

from __future__ import annotations

from collections.abc import Sequence

from modules import get_module
from provisioner.errors import SpecError
from provisioner.resource import Resource


def order(resources: Sequence[Resource]) -> list[Resource]:
    """Resources in an order where each comes after what it depends on.

    Declaration order is kept where the edges allow it, so a plan reads like
    its spec. Raises SpecError naming the cycle."""
    by_addr = {r.address: r for r in resources}
    edges: dict[str, list[str]] = {}
    for r in resources:
        module = get_module(r.kind)
        r.fields.update(module.link(r, resources))
        implicit = module.implicit_deps(r, resources)
        deps = [d for d in dict.fromkeys(r.depends_on + implicit) if d in by_addr and d != r.address]
        edges[r.address] = deps
        # implicit edges become explicit: the plan shows them and the executor
        # skips a resource whose dependency failed (no VM on a failed image)
        r.depends_on = deps
    result: list[Resource] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    for start in by_addr:
        if state.get(start):
            continue
        # iterative DFS: a deep chain must not hit Python's recursion limit
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                if state.get(node) == 2:
                    continue
                state[node] = 1
                path.append(node)
            deps = edges[node]
            if i < len(deps):
                stack.append((node, i + 1))
                dep = deps[i]
                if state.get(dep) == 1:
                    cycle = path[path.index(dep):] + [dep]
                    r = by_addr[node]
                    raise SpecError("dependency cycle: " + " -> ".join(cycle),
                                    file=r.origin.file, line=r.origin.line, field="depends_on")
                if not state.get(dep):
                    stack.append((dep, 0))
            else:
                state[node] = 2
                path.pop()
                result.append(by_addr[node])
    return result
