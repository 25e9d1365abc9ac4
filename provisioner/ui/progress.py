"""Live per-host progress on a terminal; quiet (or a log with -v) elsewhere."""

from __future__ import annotations

import sys
import threading
import time

from provisioner.engine.runner import Progress
from provisioner.secret import REGISTRY

_STATUS_STYLE = {"ok": "green", "no changes": "green", "changed": "yellow", "failed": "bold red",
                 "unreachable": "bold red", "stale": "bold red"}
MAX_ROWS = 20  # with hundreds of hosts show the busy ones and a count


class LogProgress(Progress):
    """One line per event on stderr (used with -v, or when not a terminal)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self._lock = threading.Lock()

    def event(self, host: str, text: str) -> None:
        if self.verbose:
            with self._lock:
                print(f"  {host}: {REGISTRY.scrub(text)}", file=sys.stderr)

    def done(self, host: str, status: str) -> None:
        if self.verbose:
            with self._lock:
                print(f"  {host}: {status}", file=sys.stderr)


class LiveProgress(Progress):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[str, bool]] = {}
        self._live = None
        self._title = ""
        self._started = 0.0

    def start(self, hosts: list[str], title: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self._state = {h: ("waiting", False) for h in hosts}
        self._title = title
        self._started = time.monotonic()
        self._live = Live(self._render(), console=Console(file=sys.stderr), transient=True,
                          refresh_per_second=8, get_renderable=self._render)
        self._live.start()

    def _render(self):  # type: ignore[no-untyped-def]
        from rich.table import Table

        with self._lock:
            items = list(self._state.items())
        done = sum(1 for _, (_, finished) in items if finished)
        table = Table.grid(padding=(0, 2))
        table.add_row(f"[bold]{self._title}[/] {done}/{len(items)} hosts "
                      f"[dim]{time.monotonic() - self._started:.1f}s[/]", "")
        busy = [(h, s) for h, (s, finished) in items if not finished]
        finished = [(h, s) for h, (s, f) in items if f]
        shown = busy[:MAX_ROWS] + finished[-max(0, MAX_ROWS - len(busy)):] if len(busy) < MAX_ROWS else busy[:MAX_ROWS]
        for host, status in shown:
            style = _STATUS_STYLE.get(status, "cyan")
            table.add_row(f"  {host}", f"[{style}]{REGISTRY.scrub(status)}[/]")
        if len(items) > len(shown):
            table.add_row(f"  … {len(items) - len(shown)} more", "")
        return table

    def event(self, host: str, text: str) -> None:
        with self._lock:
            self._state[host] = (text, False)

    def done(self, host: str, status: str) -> None:
        with self._lock:
            self._state[host] = (status, True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def make_progress(verbose: bool) -> Progress:
    if sys.stderr.isatty() and not verbose:
        return LiveProgress()
    return LogProgress(verbose)
