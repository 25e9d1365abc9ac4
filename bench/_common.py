"""Shared helpers for the scripts in bench/: a virtualenv for peer tools, timing a
whole command with the peak RSS of its process tree, medians and a plain table.

Nothing here imports provisioner: a bench measures the `provision` command from
the outside, the way a user runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def log(message: str) -> None:
    """Progress on stderr (stdout is kept for the results)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the peers' virtualenv ------------------------------------------------------

def ensure_venv(path: str | os.PathLike, packages: Sequence[str], probe: Sequence[str]) -> Path:
    """A virtualenv at `path` with `packages` installed; created if missing.

    `probe` names executables in the venv's bin/ that must exist; if any is
    missing the packages are (re)installed. Returns the venv's bin directory.
    """
    venv = Path(path)
    bindir = venv / "bin"
    if not (bindir / "python").exists():
        log(f"creating virtualenv {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not all((bindir / name).exists() for name in probe):
        log(f"pip install {' '.join(packages)} into {venv} (once)")
        subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", *packages], check=True)
    return bindir


def pip_version(bindir: Path, package: str) -> str:
    """Installed version of `package` in the venv of `bindir` ('?' if unknown)."""
    out = subprocess.run(
        [str(bindir / "python"), "-c",
         f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True,
    )
    return out.stdout.strip() or "?"


# -- measuring one command -------------------------------------------------------

@dataclass
class Measured:
    """One run of a command: wall seconds, peak summed RSS of its process tree, output."""

    cmd: list[str]
    returncode: int
    wall: float  # process start to exit, seconds
    peak_rss: int  # bytes: max over samples of the summed RSS of the process tree
    peak_procs: int  # most processes of the tree alive at one sample
    cpu: float  # user+sys seconds of the command and the descendants it waited for (wait4)
    samples: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 25) -> str:
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).rstrip()
        return "\n".join(text.splitlines()[-lines:])


class TreeSampler(threading.Thread):
    """Every `interval` s, sum the RSS of every process of the command's tree.

    A process belongs to the tree if its session id is `sid` (the command was started
    with start_new_session, so sid is its pid), if its parent belongs, or if its
    command line contains one of `markers`. Descendants count even when they start
    sessions of their own: Ansible's workers call setsid() and run ssh with
    start_new_session; ssh ControlPersist masters daemonize (reparented to init), so
    they are found by a marker (their ControlPath) instead.

    Reads /proc/<pid>/stat. A pid is classified once, at first sight (a process does
    not become a descendant later, and pids do not wrap around within a run), so a
    scan reads only the tree's own stat files plus new pids: well under a millisecond.
    """

    def __init__(self, sid: int, interval: float = 0.01, markers: Sequence[str] = ()) -> None:
        super().__init__(daemon=True)
        self.sid = sid
        self.interval = interval
        self.markers = [m.encode() for m in markers if m]
        self.peak_rss = 0
        self.peak_procs = 0
        self.samples = 0
        self._members: set[str] = set()
        self._others: set[str] = set()
        self._halt = threading.Event()

    @staticmethod
    def _stat(pid: str) -> list[bytes] | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return None  # exited between listdir and open
        # fields after "(comm)": state ppid pgrp session ... rss (index 21 here)
        return data[data.rindex(b")") + 2:].split()

    def _marked(self, pid: str) -> bool:
        if not self.markers:
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            return False
        return any(m in cmdline for m in self.markers)

    def sample(self) -> None:
        members, others = self._members, self._others
        alive = set()
        new: dict[str, list[bytes]] = {}
        total = 0
        for pid in os.listdir("/proc"):
            if pid in others or not pid.isdigit():
                continue
            fields = self._stat(pid)
            if fields is None:
                continue
            if pid in members:
                alive.add(pid)
                total += int(fields[21]) * PAGE_SIZE
            else:
                new[pid] = fields
        # classify new pids; repeat while a new member makes its children members
        changed = True
        while changed and new:
            changed = False
            for pid, fields in list(new.items()):
                if (int(fields[3]) == self.sid or fields[1].decode() in members
                        or self._marked(pid)):
                    members.add(pid)
                    alive.add(pid)
                    total += int(fields[21]) * PAGE_SIZE
                    del new[pid]
                    changed = True
        others.update(new)
        members &= alive | {str(self.sid)}  # forget exited members (keep the root's pid)
        self.samples += 1
        self.peak_rss = max(self.peak_rss, total)
        self.peak_procs = max(self.peak_procs, len(alive))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_measured(
    cmd: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = 600,
    interval: float = 0.01,
    markers: Sequence[str] = (),
) -> Measured:
    """Run `cmd` in a new session; wall time from just before start to its exit, and the
    peak summed RSS of its process tree (TreeSampler: the tool and everything it forks).

    Output goes to temporary files (not pipes) so the tool never blocks on us.
    On timeout or KeyboardInterrupt the whole session's process group is killed.
    """
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
        sampler = TreeSampler(proc.pid, interval, markers)
        sampler.start()
        # wait4 (not Popen.wait) for the rusage: CPU of the command and of every
        # descendant it reaped. A timer kills the session on timeout.
        timer = threading.Timer(timeout, kill_session, (proc.pid,))
        timer.start()
        try:
            while True:
                try:
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                except InterruptedError:
                    continue
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:
            kill_session(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
            sampler.stop()
        kill_session(proc.pid)  # leftovers in its process group do not outlive the run
        out.seek(0)
        err.seek(0)
        return Measured(
            cmd=argv, returncode=proc.returncode, wall=wall, peak_rss=sampler.peak_rss,
            peak_procs=sampler.peak_procs, samples=sampler.samples,
            cpu=usage.ru_utime + usage.ru_stime,
            stdout=out.read().decode(errors="replace"), stderr=err.read().decode(errors="replace"),
        )


def kill_session(pgid: int) -> None:
    """SIGKILL the process group `pgid` (a session leader's group), if anything is left."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- results -----------------------------------------------------------------------

@dataclass
class Series:
    """Repeated measurements of one quantity."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def spread(self, fmt: str = "{:.2f}") -> str:
        if len(self.values) < 2:
            return ""
        return f"{fmt.format(min(self.values))}-{fmt.format(max(self.values))}"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def mb(nbytes: float) -> float:
    return nbytes / 1e6


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown-style table (readable as text, pastes into docs)."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def clean_tree(path: str | os.PathLike) -> None:
    shutil.rmtree(path, ignore_errors=True)
