"""Planning and applying across hosts: connections, parallelism, stale checks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from modules import get_module
from provisioner.connection import open_connection
from provisioner.connection.base import Connection
from provisioner.engine.executor import HostReport, apply_host
from provisioner.engine.observe import observe
from provisioner.errors import HostError, ProvisionError, StalePlan, Unreachable
from provisioner.plan.diff import diff
from provisioner.plan.graph import order
from provisioner.plan.model import Action, Change, HostPlan, Plan
from provisioner.resource import Resource
from provisioner.secret import REGISTRY
from provisioner.spec.loader import Spec

DEFAULT_FORKS = 64  # handshakes are CPU-bound; more threads only add contention


@dataclass
class RunOptions:
    forks: int = DEFAULT_FORKS
    ssh: Any = None  # SshOptions
    command_timeout: float | None = None
    lock_wait: float = 0.0  # seconds to wait for another apply's host lock
    lock: bool = True
    journal_dir: str | None = None  # None: $PROVISION_STATE_DIR or ./.provision
    journal: bool = True


class Progress:
    """Receives per-host events; the CLI shows them live."""

    def start(self, hosts: list[str], title: str) -> None: ...
    def event(self, host: str, text: str) -> None: ...
    def done(self, host: str, status: str) -> None: ...
    def stop(self) -> None: ...


def ordered_resources(spec: Spec) -> dict[str, list[Resource]]:
    """Per host, resources in dependency order (cycles raise SpecError)."""
    per_host: dict[str, list[Resource]] = {h: [] for h in spec.hosts}
    for res in spec.resources:
        per_host.setdefault(res.host, []).append(res)
    return {h: order(rs) for h, rs in per_host.items()}


def select_targets(ordered: dict[str, list[Resource]],
                   targets: list[str]) -> dict[str, list[Resource]]:
    """Only the resources named by address, and what they depend on
    (ordered_resources already folded implicit edges into depends_on)."""
    import difflib

    from provisioner.errors import SpecError

    all_addresses = {r.address: r for rs in ordered.values() for r in rs}
    wanted: set[str] = set()
    for target in targets:
        if target not in all_addresses:
            close = difflib.get_close_matches(target, list(all_addresses), n=1)
            hint = f", did you mean {close[0]}?" if close else ""
            raise SpecError(f"--target {target}: no such resource in the spec{hint}")
        stack = [target]
        while stack:
            address = stack.pop()
            if address in wanted:
                continue
            wanted.add(address)
            stack.extend(d for d in all_addresses[address].depends_on if d in all_addresses)
    return {h: [r for r in rs if r.address in wanted] for h, rs in ordered.items()
            if any(r.address in wanted for r in rs)}


def plan_changes(resources: list[Resource], observed: dict[str, Any]) -> list[Change]:
    """Pure: the changes for one host's ordered resources."""
    return [diff(get_module(r.kind), r, observed.get(r.address)) for r in resources]


class Runner:
    def __init__(self, inventory: Any, options: RunOptions | None = None,
                 progress: Progress | None = None) -> None:
        self.inventory = inventory
        self.options = options or RunOptions()
        self.progress = progress or Progress()
        self._conns: dict[str, Connection] = {}
        self.connection_vars: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.stop_requested = threading.Event()

    # -- connections ---------------------------------------------------------
    def connection(self, host: str) -> Connection:
        with self._lock:
            conn = self._conns.get(host)
        if conn is not None:
            return conn
        conn = open_connection(self.inventory.hosts[host], self.options.ssh)
        extra = self.connection_vars.get(host)
        if extra:
            conn.vars = {**conn.vars, **extra}
        with self._lock:
            self._conns[host] = conn
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except Exception:
                pass
        self._conns.clear()

    def _parallel(self, hosts: list[str], work: Callable[[str], Any]) -> dict[str, Any]:
        """Run work(host) for every host on a thread pool. Ctrl-C sets
        stop_requested (work checks it between changes) and keeps waiting:
        changes in flight finish, nothing new starts, a summary follows."""
        results: dict[str, Any] = {}
        if not hosts:
            return results
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.options.forks, len(hosts))))
        futures = {}
        try:
            futures = {h: pool.submit(work, h) for h in hosts}
            pending = set(futures.values())
            while pending:
                try:
                    _, pending = wait(pending, timeout=0.2)
                except KeyboardInterrupt:
                    if not self.stop_requested.is_set():
                        self.progress.event("", "interrupted: finishing changes in flight")
                    self.stop_requested.set()
        finally:
            while True:
                try:
                    pool.shutdown(wait=True)
                    break
                except KeyboardInterrupt:
                    self.stop_requested.set()
        for host, fut in futures.items():
            results[host] = fut.result()
        return results

    # -- plan ----------------------------------------------------------------
    def plan(self, spec: Spec, ordered: dict[str, list[Resource]] | None = None, *,
             prune: bool = True) -> Plan:
        from provisioner.engine.prune import prune_changes

        ordered = ordered if ordered is not None else ordered_resources(spec)
        self.connection_vars = spec.connection_vars
        prune_kinds = {h: spec.prune_targets(h) for h in spec.hosts} if prune else {}
        ordered = {h: rs for h, rs in ordered.items() if rs or prune_kinds.get(h)}
        hosts = [h for h in spec.hosts if ordered.get(h)]
        self.progress.start(hosts, "reading state")

        def one(host: str) -> HostPlan:
            try:
                self.progress.event(host, "connecting")
                conn = self.connection(host)
                self.progress.event(host, f"reading {len(ordered[host])} resources")
                observed = observe(conn, ordered[host], timeout=self.options.command_timeout)
                changes = plan_changes(ordered[host], observed)
                if prune_kinds.get(host):
                    declared = {r.address for r in ordered[host]}
                    changes += prune_changes(conn, host, prune_kinds[host], declared)
                n = sum(1 for c in changes if c.action.changes)
                self.progress.done(host, f"{n} to change" if n else "no changes")
                return HostPlan(host, changes)
            except ProvisionError as exc:
                unreachable = isinstance(exc, Unreachable)
                self.progress.done(host, "unreachable" if unreachable else "failed")
                return HostPlan(host, [], error=REGISTRY.scrub(_host_message(exc, host)),
                                unreachable=unreachable)

        try:
            results = self._parallel(hosts, one)
        finally:
            self.progress.stop()
        return Plan(hosts={h: results[h] for h in hosts}, spec_path=spec.path,
                    spec_digest=spec.digest(), extra_vars=spec.extra_vars,
                    created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    # -- apply ---------------------------------------------------------------
    def apply(self, spec: Spec, plan: Plan, *, saved: bool,
              ordered: dict[str, list[Resource]] | None = None) -> dict[str, HostReport]:
        """Apply plan. saved=True: the plan came from a file and each host is
        re-read first; a host whose state moved since is refused as stale."""
        from provisioner.engine.journal import Journal
        from provisioner.engine.lock import HostLock, HostLocked

        ordered = ordered if ordered is not None else ordered_resources(spec)
        self.connection_vars = spec.connection_vars
        hosts = list(plan.hosts)
        journal = None
        if self.options.journal and plan.has_changes():
            journal = Journal(self.options.journal_dir)
            journal.write("run-start", pid=os.getpid(), spec=spec.path, saved_plan=saved,
                          hosts=hosts)
        self.journal = journal
        self.progress.start(hosts, "applying")

        def one(host: str) -> HostReport:
            hp = plan.hosts[host]
            if hp.error:
                status = "unreachable" if hp.unreachable else "failed"
                self.progress.done(host, status)
                return HostReport(host, status=status, error=hp.error)
            if not any(c.action.changes for c in hp.changes):
                self.progress.done(host, "ok")
                return HostReport(host)
            lock = None
            try:
                conn = self.connection(host)
                changes = hp.changes
                resources = with_pruned(ordered.get(host, []), hp.changes, spec.owner)
                if self.options.lock:
                    self.progress.event(host, "taking the host lock")
                    lock = HostLock(conn, wait=self.options.lock_wait)
                    lock.acquire()
                if saved:
                    self.progress.event(host, "checking the plan is current")
                    changes = self._revalidate(conn, resources, hp)
                report = apply_host(conn, resources, changes,
                                    on_event=self.progress.event,
                                    should_stop=self.stop_requested.is_set,
                                    timeout=self.options.command_timeout, journal=journal)
            except HostLocked as exc:
                report = HostReport(host, status="locked", error=exc.message)
            except StalePlan as exc:
                report = HostReport(host, status="stale", error=exc.message)
            except Unreachable as exc:
                report = HostReport(host, status="unreachable", error=REGISTRY.scrub(exc.message))
            except ProvisionError as exc:
                report = HostReport(host, status="failed",
                                    error=REGISTRY.scrub(_host_message(exc, host)))
            finally:
                if lock is not None:
                    try:
                        lock.release()
                    except ProvisionError:
                        pass  # the host went away; its lock went with the session
            if journal:
                journal.write("host-end", host=host, status=report.status, error=report.error)
            self.progress.done(host, report.status)
            return report

        try:
            reports = self._parallel(hosts, one)
        finally:
            self.progress.stop()
        if journal:
            journal.close(statuses={h: r.status for h, r in reports.items()})
        return reports

    def _revalidate(self, conn: Connection, resources: list[Resource], hp: HostPlan) -> list[Change]:
        """The stale check: same observed fingerprints, and the current spec
        still yields the same actions as the reviewed plan."""
        by_addr = {r.address: r for r in resources}
        planned = {c.address: c for c in hp.changes}
        missing = [a for a in planned if a not in by_addr]
        if missing:
            raise StalePlan(hp.host, f"plan is stale for host {hp.host}: "
                                     f"{missing[0]} is no longer in the spec")
        relevant = [by_addr[a] for a in planned]
        observed = observe(conn, relevant, timeout=self.options.command_timeout)
        fresh = plan_changes(relevant, observed)
        for new in fresh:
            if planned[new.address].reason == "no longer declared" and new.action is Action.DELETE:
                new.reason = "no longer declared"
            old = planned[new.address]
            if new.fingerprint != old.fingerprint:
                raise StalePlan(hp.host, f"plan is stale for host {hp.host}: {new.kind} "
                                         f"{new.name} changed since the plan was made")
            if new.action is not old.action:
                raise StalePlan(hp.host, f"plan is stale for host {hp.host}: the spec now "
                                         f"says {new.action.value} for {new.kind} {new.name}, "
                                         f"the plan said {old.action.value}")
        order_index = {r.address: i for i, r in enumerate(resources)}
        return sorted(fresh, key=lambda c: order_index[c.address])


def with_pruned(resources: list[Resource], changes: list[Change], owner: str) -> list[Resource]:
    """The host's resources plus stand-ins for the deletes prune planned."""
    from provisioner.engine.prune import PRUNE_REASON, absent_resource

    known = {r.address for r in resources}
    extra = [absent_resource(c.host, c.kind, c.name, owner) for c in changes
             if c.address not in known and c.action is Action.DELETE and c.reason == PRUNE_REASON]
    return resources + extra


def _host_message(exc: ProvisionError, host: str) -> str:
    if isinstance(exc, HostError):
        return exc.message
    return str(exc)


def summary_counts(reports: dict[str, HostReport]) -> dict[str, int]:
    out = {"ok": 0, "changed": 0, "failed": 0, "unreachable": 0, "stale": 0, "locked": 0,
           "interrupted": 0}
    for r in reports.values():
        out[r.status] = out.get(r.status, 0) + 1
    return out


__all__ = ["Runner", "RunOptions", "Progress", "ordered_resources", "plan_changes",
           "summary_counts", "Action"]
