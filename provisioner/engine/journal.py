"""A journal of each apply, written as it goes (JSON lines, flushed per
event), so a run killed half way — Ctrl-C, SIGKILL, a lost host — leaves an
exact record of what was done, what was in flight and what never started.
The next apply reports an interrupted run it finds; the next plan converges
from wherever the hosts are, since planning reads the hosts, not the journal.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from provisioner.secret import REGISTRY


def state_dir() -> str:
    return os.environ.get("PROVISION_STATE_DIR") or os.path.join(os.getcwd(), ".provision")


class Journal:
    def __init__(self, directory: str | None = None) -> None:
        self.directory = os.path.join(directory or state_dir(), "journal")
        os.makedirs(self.directory, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.path = os.path.join(self.directory, f"{stamp}-{os.getpid()}.jsonl")
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the run
        self._lock = threading.Lock()

    def write(self, event: str, **data: Any) -> None:
        record = {"ts": round(time.time(), 3), "event": event, **data}
        line = REGISTRY.scrub(json.dumps(record, default=str))
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self, **data: Any) -> None:
        self.write("run-end", **data)
        with self._lock:
            self._fh.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def summarize(path: str) -> dict[str, Any]:
    """What a journal says happened, per host."""
    hosts: dict[str, dict[str, list[str]]] = {}
    start: dict[str, Any] = {}
    ended = False
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            ev = rec.get("event")
            if ev == "run-start":
                start = rec
            elif ev == "run-end":
                ended = True
            elif ev in ("planned", "started", "done", "failed", "skipped"):
                h = hosts.setdefault(rec["host"], {"planned": [], "done": [], "failed": [],
                                                   "in_flight": [], "skipped": []})
                addr = rec["address"]
                if ev == "planned":
                    h["planned"].append(addr)
                elif ev == "started":
                    h["in_flight"].append(addr)
                else:
                    if addr in h["in_flight"]:
                        h["in_flight"].remove(addr)
                    h["done" if ev == "done" else "failed" if ev == "failed" else "skipped"].append(addr)
    for h in hosts.values():
        finished = set(h["done"]) | set(h["failed"]) | set(h["in_flight"]) | set(h["skipped"])
        h["not_started"] = [a for a in h["planned"] if a not in finished]
    return {"path": path, "pid": start.get("pid"), "started": start.get("ts"),
            "ended": ended, "hosts": hosts}


def interrupted_runs(directory: str | None = None) -> list[dict[str, Any]]:
    """Journals of runs that never wrote run-end and whose process is gone."""
    jdir = os.path.join(directory or state_dir(), "journal")
    if not os.path.isdir(jdir):
        return []
    found = []
    for name in sorted(os.listdir(jdir)):
        if not name.endswith(".jsonl"):
            continue
        path = os.path.join(jdir, name)
        info = summarize(path)
        if info["ended"] or (info["pid"] and _pid_alive(int(info["pid"]))
                             and int(info["pid"]) != os.getpid()):
            continue
        found.append(info)
    return found


def mark_reported(info: dict[str, Any]) -> None:
    os.replace(info["path"], info["path"][: -len(".jsonl")] + ".interrupted")
