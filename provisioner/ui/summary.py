"""The recap after apply: a line per host and totals with time."""

from __future__ import annotations

from typing import Any

from provisioner.engine.executor import HostReport
from provisioner.ui.console import Console

_STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "unreachable": "bold red",
          "stale": "bold red", "locked": "bold red", "interrupted": "bold red"}


def render_summary(console: Console, reports: dict[str, HostReport], elapsed: float) -> None:
    width = max((len(h) for h in reports), default=4)
    for host, r in reports.items():
        for o in r.outcomes:
            if o.status != "changed":
                console.line((f"  {host}: {o.status} {o.address}: {o.message}", "red"))
        line = [(f"{host.ljust(width)}  ", "bold"), (f"{r.status:<11}", _STYLE.get(r.status, "")),
                (f" changed={r.changed} failed={r.failed}", "")]
        if r.error and not r.outcomes:
            line.append((f"  {r.error}", "red"))
        console.line(*line)
    counts: dict[str, int] = {}
    for r in reports.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    changed = sum(r.changed for r in reports.values())
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.line(("Apply: ", "bold"), (f"{len(reports)} hosts ({parts or 'none'}); ", ""),
                 (f"{changed} resources changed", "yellow" if changed else "green"),
                 (f" in {elapsed:.2f}s", "dim"))


def render_interrupted(console: Console, info: dict[str, Any]) -> None:
    """What the journal of a killed run says (printed by the next apply)."""
    started = info.get("started")
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    console.line((f"! A previous apply (pid {info.get('pid')}, started {when}) was interrupted; "
                  f"its journal {info['path']} says:", "bold yellow"))
    for host, h in sorted(info["hosts"].items()):
        console.line((f"  {host}: {len(h['done'])} applied, {len(h['failed'])} failed, "
                      f"{len(h['in_flight'])} in flight, {len(h['not_started'])} not started", ""))
        for address in h["in_flight"]:
            console.line((f"    in flight (may be partly applied): {address}", "yellow"))
        for address in h["not_started"]:
            console.line((f"    not started: {address}", "dim"))
    console.line(("  This plan reads the hosts as they are now and converges from there.", "dim"))


def reports_to_json(reports: dict[str, HostReport], elapsed: float) -> dict[str, Any]:
    return {
        "seconds": round(elapsed, 3),
        "hosts": {
            h: {"status": r.status, "error": r.error, "changed": r.changed, "failed": r.failed,
                "outcomes": [{"address": o.address, "action": o.action.value, "status": o.status,
                              "message": o.message} for o in r.outcomes]}
            for h, r in reports.items()
        },
    }
