"""A running VM as a member of a `slice`: its QEMU process moved into the
slice's cgroup (see docs/vms.md, "Slices").

libvirt's own knob, <resource><partition>, cannot name the slice's cgroup:
without systemd it maps /a/b to the cgroups /a.partition/b.partition (and the
partition must already exist, or the guest does not start); with systemd it
becomes a-b.slice. So after the guest starts, its QEMU process is found and
written into the cgroup.procs of `provision/<slice>/vm-<name>` in every core v1
hierarchy (cpu, memory, pids, cpuset), or of that one cgroup on v2 (a leaf
cgroup, because v2 allows processes only in leaves once controllers are
enabled below the slice, as they are for Docker's containers in it).
Writing to cgroup.procs moves every thread of the process.

How the QEMU process is found, without trusting a name in a pattern: libvirt's
pid file (<run dir>/qemu/<name>.pid, the run dir being the directory of the
libvirt socket), checked against the process's argv; else the processes whose
argv mentions qemu, checked the same way. The check is an exact comparison of
one argv element with "guest=<name>" or "guest=<name>,...", which is how
libvirt passes -name. Every value reaches the host as a positional argument of
a fixed script.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from provisioner.connection.base import Connection
from provisioner.errors import HostError

SLICE_PARENT = "provision"  # modules/slice.py: the slice's cgroup is provision/<name>
CORE = ("cpu", "memory", "pids", "cpuset")
DEFAULT_RUN_DIR = "/var/run/libvirt"

_FIND = r"""
is_guest() {
  [ -r "/proc/$1/cmdline" ] || return 1
  case "$(readlink "/proc/$1/exe" 2>/dev/null)" in *qemu*) ;; *) return 1;; esac
  tr '\0' '\n' < "/proc/$1/cmdline" | {
    while IFS= read -r a; do
      case "$a" in "guest=$2"|"guest=$2,"*) exit 0;; esac
    done
    exit 1
  }
}
find_pid() {
  f="$rundir/qemu/$1.pid"
  if [ -r "$f" ]; then
    p=$(cat "$f" 2>/dev/null)
    case "$p" in ''|*[!0-9]*) ;; *) if is_guest "$p" "$1"; then echo "$p"; return; fi;; esac
  fi
  if command -v pgrep >/dev/null 2>&1; then cands=$(pgrep -f qemu); else
    cands=$(cd /proc && ls -d [0-9]*); fi
  for p in $cands; do
    [ "$p" = "$$" ] && continue
    if is_guest "$p" "$1"; then echo "$p"; return; fi
  done
}
"""

# $1 libvirt run dir, then VM names: "vm NAME PID|-" then "cg LINE" per line of
# /proc/PID/cgroup
_READ = _FIND + r"""
rundir=$1; shift
root=${PROVISION_CGROUP_ROOT:-/sys/fs/cgroup}
if [ -e "$root/cgroup.controllers" ]; then echo "version 2"; else echo "version 1"; fi
for name; do
  pid=$(find_pid "$name")
  echo "vm $name ${pid:--}"
  [ -n "$pid" ] && sed 's/^/cg /' "/proc/$pid/cgroup" 2>/dev/null
done
exit 0
"""

# $1 libvirt run dir, $2 VM name, $3 slice path (provision/NAME), $4 leaf name
_ATTACH = _FIND + r"""
rundir=$1; name=$2; p=$3; leaf=$4
root=${PROVISION_CGROUP_ROOT:-/sys/fs/cgroup}
pid=$(find_pid "$name")
[ -n "$pid" ] || { echo "cannot find the QEMU process of vm $name" >&2; exit 1; }
if [ -e "$root/cgroup.controllers" ]; then
  [ -d "$root/$p" ] || { echo "slice cgroup $p does not exist" >&2; exit 2; }
  d=$root/$p/$leaf
  [ -d "$d" ] || mkdir "$d" || exit 1
  echo "$pid" > "$d/cgroup.procs" || { echo "cannot move process $pid into $d" >&2; exit 1; }
else
  n=0
  for c in cpu memory pids cpuset; do
    [ -d "$root/$c/$p" ] || continue
    d=$root/$c/$p/$leaf
    if [ ! -d "$d" ]; then
      mkdir "$d" || exit 1
      if [ $c = cpuset ]; then
        cat "$root/$c/$p/cpuset.cpus" > "$d/cpuset.cpus" || exit 1
        cat "$root/$c/$p/cpuset.mems" > "$d/cpuset.mems" || exit 1
      fi
    fi
    echo "$pid" > "$d/cgroup.procs" || { echo "cannot move process $pid into $d" >&2; exit 1; }
    n=$((n + 1))
  done
  [ $n -gt 0 ] || { echo "slice cgroup $p does not exist" >&2; exit 2; }
fi
echo "$pid"
"""

# $1 leaf name: remove the VM's (empty) leaf cgroups in every slice
_FORGET = r"""
root=${PROVISION_CGROUP_ROOT:-/sys/fs/cgroup}
for d in "$root/provision"/*/"$1" "$root"/*/provision/*/"$1"; do
  [ -d "$d" ] && rmdir "$d" 2>/dev/null
done
exit 0
"""


def leaf_name(vm: str) -> str:
    return f"vm-{vm}"


def run_dir(conn: Connection) -> str:
    """Where libvirt keeps qemu/<name>.pid: the directory of its socket."""
    sock = conn.vars.get("provision_libvirt_socket")
    return posixpath.dirname(str(sock)) if sock else DEFAULT_RUN_DIR


def _last_line(text: str, default: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else default


def slice_of(version: int, lines: Sequence[str]) -> tuple[str | None, str]:
    """The slice a process is in, from its /proc/PID/cgroup lines, and a
    description for the plan ("" when it is in one slice everywhere)."""
    paths: dict[str, str] = {}
    for line in lines:
        _, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if version == 2:
            if ctrls == "":
                paths["unified"] = path
        else:
            for c in ctrls.split(","):
                if c in CORE:
                    paths[c] = path
    if not paths:
        return None, "no cgroup information"
    names = {}
    for ctrl, path in paths.items():
        parts = path.strip("/").split("/")
        names[ctrl] = parts[1] if len(parts) >= 2 and parts[0] == SLICE_PARENT else None
    found = set(names.values())
    if len(found) == 1:
        name = found.pop()
        return name, "" if name else "in no slice"
    where = ", ".join(f"{c}: {n or 'none'}" for c, n in sorted(names.items()))
    return None, f"in different cgroups per controller ({where})"


def read_membership(conn: Connection, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For each running VM name: {"pid", "slice", "detail"} (pid None when the
    QEMU process was not found)."""
    if not names:
        return {}
    res = conn.run(["sh", "-c", _READ, "sh", run_dir(conn), *names])
    if not res.ok:
        raise HostError(conn.host, "reading the cgroups of VMs failed: "
                        f"{_last_line(res.err, f'exit {res.rc}')}")
    version = 1
    raw: dict[str, tuple[int | None, list[str]]] = {}
    current: str | None = None
    for line in res.out.splitlines():
        key, _, rest = line.partition(" ")
        if key == "version":
            version = int(rest or 1)
        elif key == "vm":
            name, _, pid = rest.rpartition(" ")
            current = name
            raw[name] = (int(pid) if pid.isdigit() else None, [])
        elif key == "cg" and current is not None:
            raw[current][1].append(rest)
    out = {}
    for name in names:
        pid, lines = raw.get(name, (None, []))
        if pid is None:
            out[name] = {"pid": None, "slice": None, "detail": "QEMU process not found"}
            continue
        slice_name, detail = slice_of(version, lines)
        out[name] = {"pid": pid, "slice": slice_name, "detail": detail}
    return out


def attach(conn: Connection, vm: str, slice_name: str) -> int:
    """Move the running VM's QEMU process into the slice; returns its pid."""
    path = f"{SLICE_PARENT}/{slice_name}"
    res = conn.run(["sh", "-c", _ATTACH, "sh", run_dir(conn), vm, path, leaf_name(vm)])
    if not res.ok:
        detail = _last_line(res.err, f"exit {res.rc}")
        if res.rc == 2:
            detail += " (declare a `slice` resource for it on this host)"
        raise HostError(conn.host, f"vm {vm}: joining slice {slice_name}: {detail}")
    out = res.out.strip().splitlines()
    return int(out[-1]) if out and out[-1].isdigit() else 0


def forget(conn: Connection, vm: str) -> None:
    """Remove the VM's leaf cgroups (best effort; they are empty once it stopped)."""
    conn.run(["sh", "-c", _FORGET, "sh", leaf_name(vm)])
