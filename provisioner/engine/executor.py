"""Applying the changes of one host in dependency order, then proving it:
every changed resource is re-read and re-diffed; anything but no-op is a
"did not converge" failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modules import get_module
from provisioner.connection.base import Connection
from provisioner.engine.observe import observe
from provisioner.errors import ProvisionError, Unreachable
from provisioner.plan.diff import diff
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.secret import REGISTRY

if TYPE_CHECKING:
    from provisioner.engine.journal import Journal


@dataclass
class Outcome:
    address: str
    action: Action
    status: str  # "changed" | "failed" | "skipped" | "not converged"
    message: str = ""
    seconds: float = 0.0


@dataclass
class HostReport:
    host: str
    status: str = "ok"  # ok | changed | failed | unreachable | stale
    outcomes: list[Outcome] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def changed(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "changed")

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o.status in ("failed", "not converged"))


EventSink = Callable[[str, str], None]  # (host, text)


def apply_host(conn: Connection, resources: Sequence[Resource], changes: Sequence[Change],
               *, on_event: EventSink | None = None, should_stop: Callable[[], bool] | None = None,
               timeout: float | None = None, journal: "Journal | None" = None) -> HostReport:
    started = time.monotonic()
    report = HostReport(conn.host)
    by_addr = {r.address: r for r in resources}
    todo = [c for c in changes if c.action.changes]
    # Deletes go last and in reverse dependency order: a file leaves before
    # its directory, a container before its network. Unchanged resources that
    # depend on something stay in the sequence: if a dependency changes in
    # this apply (an image rebuilt), they are read and diffed again, so the
    # container on it is recreated now rather than on the next apply.
    sequence = [c for c in changes if c.action is not Action.DELETE
                and (c.action.changes or c.depends_on)]
    sequence += list(reversed([c for c in todo if c.action is Action.DELETE]))
    total = len(todo)  # grows when a dependent is re-planned
    failed: set[str] = set()
    changed_now: set[str] = set()
    index = 0

    def record(outcome: Outcome) -> None:
        report.outcomes.append(outcome)
        if journal:
            event = {"changed": "done", "skipped": "skipped"}.get(outcome.status, "failed")
            journal.write(event, host=conn.host, address=outcome.address,
                          action=outcome.action.value, message=outcome.message)

    def planned(change: Change) -> None:
        if journal:
            journal.write("planned", host=conn.host, address=change.address,
                          action=change.action.value)

    for change in todo:
        planned(change)
    for change in sequence:
        if change.action is Action.NOOP:
            trigger = next((d for d in change.depends_on if d in changed_now), None)
            if trigger is None:
                continue
            res = by_addr[change.address]
            fresh = diff(get_module(res.kind), res,
                         observe(conn, [res], timeout=timeout).get(res.address))
            if fresh.action is Action.NOOP:
                continue
            fresh.notes = fresh.notes + [f"re-planned: {trigger} changed in this apply"]
            change = fresh
            total += 1
            planned(change)
        index += 1
        if should_stop and should_stop():
            record(Outcome(change.address, change.action, "skipped",
                           "interrupted before it started"))
            continue
        blocked = [d for d in change.depends_on if d in failed]
        if blocked:
            failed.add(change.address)
            record(Outcome(change.address, change.action, "skipped",
                           f"depends on failed {blocked[0]}"))
            continue
        res = by_addr[change.address]
        if on_event:
            on_event(conn.host, f"[{index}/{total}] {change.action.value} "
                                f"{change.kind} {change.name}")
        t0 = time.monotonic()
        if journal:
            journal.write("started", host=conn.host, address=change.address,
                          action=change.action.value)
        try:
            get_module(change.kind).apply(conn, res, change)
        except Unreachable as exc:
            failed.add(change.address)
            record(Outcome(change.address, change.action, "failed",
                           REGISTRY.scrub(exc.message), time.monotonic() - t0))
            # nothing more can be done on this host; say what never started
            done = {o.address for o in report.outcomes}
            for rest in todo:
                if rest.address not in done:
                    record(Outcome(rest.address, rest.action, "skipped", "host unreachable"))
            report.status = "unreachable"
            report.error = REGISTRY.scrub(exc.message)
            report.seconds = time.monotonic() - started
            return report
        except ProvisionError as exc:
            failed.add(change.address)
            record(Outcome(change.address, change.action, "failed",
                           REGISTRY.scrub(_strip_host(str(exc), conn.host)),
                           time.monotonic() - t0))
            continue
        except Exception as exc:  # a module bug must not take the other hosts down
            failed.add(change.address)
            record(Outcome(change.address, change.action, "failed",
                           REGISTRY.scrub(f"{type(exc).__name__}: {exc}"),
                           time.monotonic() - t0))
            continue
        changed_now.add(change.address)
        record(Outcome(change.address, change.action, "changed", "", time.monotonic() - t0))
    try:
        _check_converged(conn, by_addr, report, timeout)
    except Unreachable as exc:
        report.status = "unreachable"
        report.error = REGISTRY.scrub(exc.message)
        report.seconds = time.monotonic() - started
        return report
    report.seconds = time.monotonic() - started
    skipped = [o for o in report.outcomes if o.status == "skipped"]
    if skipped and not report.failed:
        interrupted = any(o.message.startswith("interrupted") for o in skipped)
        report.status = "interrupted" if interrupted else "failed"
        report.error = f"{len(skipped)} change(s) not started: {skipped[0].message}"
    elif report.failed:
        report.status = "failed"
        report.error = next(o.message for o in report.outcomes
                            if o.status in ("failed", "not converged"))
    elif report.changed:
        report.status = "changed"
    return report


def _check_converged(conn: Connection, by_addr: dict[str, Resource], report: HostReport,
                     timeout: float | None) -> None:
    done = [o for o in report.outcomes if o.status == "changed"]
    check = [by_addr[o.address] for o in done
             if get_module(by_addr[o.address].kind).converges(by_addr[o.address].fields)]
    if not check:
        return
    observed = observe(conn, check, timeout=timeout)
    for outcome in done:
        res = by_addr[outcome.address]
        if res not in check:
            continue
        again = diff(get_module(res.kind), res, observed.get(res.address))
        if again.action is not Action.NOOP:
            outcome.status = "not converged"
            outcome.message = (f"did not converge: after apply, a re-read still shows "
                               f"{again.action.value} ({again.reason})")


def _strip_host(message: str, host: str) -> str:
    prefix = f"{host}: "
    return message[len(prefix):] if message.startswith(prefix) else message
