"""`slice`: a cgroup with CPU, memory, pids and cpuset limits.

    - slice: tenant-a
      cpus: 1.5          # cpu.max quota/period (150000/100000)
      memory: 4GiB       # memory.max (v1: memory.limit_in_bytes)
      pids: 512          # pids.max
      cpuset: "0-3"      # cpuset.cpus
      state: present     # or absent: removed when it has no member processes

The cgroup is `provision/<name>` under the host's cgroup root, on cgroup v2
and v1 hosts alike. Reading and writing go through provision-helper (one
round trip reads every slice of a host); without the helper the module reads
the cgroupfs files with `cat` and writes them with `tee`, and says so in the
plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from provisioner.connection.base import Connection
from provisioner.errors import HostError
from provisioner.helper import HelperError, ensure_helper, unavailable_reason
from provisioner.module import Module
from provisioner.resource import Resource
from provisioner.spec import schema as s
from provisioner.spec.units import parse_size

if TYPE_CHECKING:
    from provisioner.plan.model import Change

SLICE_PARENT = "provision"
_NAME_RE = r"^[A-Za-z0-9_@:+-][A-Za-z0-9_.@:+-]{0,127}\Z"
# kernels round memory limits down to whole pages (4 KiB, 16 KiB or 64 KiB)
_PAGE_SLACK = 65536
FALLBACK_NOTE = "provision-helper unavailable on this host: plain cgroupfs reads and writes"

# Fallbacks without the helper. Fixed scripts: every value is a positional
# argument. The cgroup root honours $PROVISION_CGROUP_ROOT like the helper.
_READ_SCRIPT = r"""
root=${PROVISION_CGROUP_ROOT:-/sys/fs/cgroup}
if [ -e "$root/cgroup.controllers" ]; then v=2; else v=1; fi
echo "version $v"
show() { [ -r "$2" ] && printf '%s %s\n' "$1" "$(cat "$2")"; return 0; }
# member pids of the given cgroups and of every cgroup below them (containers
# and VMs sit in child cgroups of their slice)
procs() { [ $# -gt 0 ] && find "$@" -name cgroup.procs -exec cat {} + 2>/dev/null; true; }
for p in "$@"; do
  echo "slice $p"
  if [ $v = 2 ]; then
    d=$root/$p
    [ -d "$d" ] || continue
    echo "exists"
    show cpu.max "$d/cpu.max"
    show memory.max "$d/memory.max"
    show pids.max "$d/pids.max"
    show cpuset.cpus "$d/cpuset.cpus"
    echo "members $(procs "$d" | sort -u | grep -c .)"
  else
    seen=""; dirs=""
    for c in cpu memory pids cpuset; do
      [ -d "$root/$c/$p" ] || continue
      seen=1; dirs="$dirs $root/$c/$p"
    done
    n=$(procs $dirs | sort -u | grep -c .)
    [ -n "$seen" ] || continue
    echo "exists"
    show cpu.cfs_quota_us "$root/cpu/$p/cpu.cfs_quota_us"
    show cpu.cfs_period_us "$root/cpu/$p/cpu.cfs_period_us"
    show memory.max "$root/memory/$p/memory.limit_in_bytes"
    show pids.max "$root/pids/$p/pids.max"
    show cpuset.cpus "$root/cpuset/$p/cpuset.cpus"
    echo "members $n"
  fi
done
"""

# $1 path, $2 cpu quota ("" = unset, "max"), $3 memory, $4 pids, $5 cpuset
_APPLY_SCRIPT = r"""
set -e
root=${PROVISION_CGROUP_ROOT:-/sys/fs/cgroup}
p=$1; quota=$2; mem=$3; pids=$4; cpus=$5
put() { printf '%s' "$2" > "$1" || { echo "cannot write $2 to $1" >&2; exit 1; }; }
if [ -e "$root/cgroup.controllers" ]; then
  need=""
  [ -z "$quota" ] || need="$need cpu"
  [ -z "$mem" ] || need="$need memory"
  [ -z "$pids" ] || need="$need pids"
  [ -z "$cpus" ] || need="$need cpuset"
  for c in $need; do
    grep -qw "$c" "$root/cgroup.controllers" || {
      echo "cgroup controller '$c' is not available (cgroup v2)" >&2; exit 1; }
  done
  d=$root
  old_ifs=$IFS; IFS=/; set -- $p; IFS=$old_ifs
  for part in "$@"; do
    for c in $need; do
      grep -qw "$c" "$d/cgroup.subtree_control" || put "$d/cgroup.subtree_control" "+$c"
    done
    d=$d/$part
    [ -d "$d" ] || mkdir "$d"
  done
  [ -z "$quota" ] || put "$d/cpu.max" "$quota 100000"
  [ -z "$mem" ] || put "$d/memory.max" "$mem"
  [ -z "$pids" ] || put "$d/pids.max" "$pids"
  [ -z "$cpus" ] || put "$d/cpuset.cpus" "$cpus"
else
  for c in cpu memory pids cpuset; do
    [ -d "$root/$c" ] || continue
    d=$root/$c
    old_ifs=$IFS; IFS=/; set -- $p; IFS=$old_ifs
    for part in "$@"; do
      parent=$d; d=$d/$part
      [ -d "$d" ] || mkdir "$d"
      if [ $c = cpuset ]; then
        [ -n "$(cat "$d/cpuset.cpus")" ] || put "$d/cpuset.cpus" "$(cat "$parent/cpuset.cpus")"
        [ -n "$(cat "$d/cpuset.mems")" ] || put "$d/cpuset.mems" "$(cat "$parent/cpuset.mems")"
      fi
    done
  done
  v1=$root
  if [ -n "$quota" ]; then
    put "$v1/cpu/$p/cpu.cfs_period_us" 100000
    if [ "$quota" = max ]; then quota=-1; fi
    put "$v1/cpu/$p/cpu.cfs_quota_us" "$quota"
  fi
  if [ -n "$mem" ]; then
    if [ "$mem" = max ]; then mem=-1; fi
    put "$v1/memory/$p/memory.limit_in_bytes" "$mem"
  fi
  [ -z "$pids" ] || put "$v1/pids/$p/pids.max" "$pids"
  [ -z "$cpus" ] || put "$v1/cpuset/$p/cpuset.cpus" "$cpus"
fi
"""

_RM_SCRIPT = r"""
root=${PROVISION_CGROUP_ROOT:-/sys/fs/cgroup}
p=$1
if [ -e "$root/cgroup.controllers" ]; then dirs=$root/$p; else
  dirs=""; for h in "$root"/*; do [ -d "$h/$p" ] && dirs="$dirs $h/$p"; done
fi
n=$(for d in $dirs; do [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} +; done |
   sort -u | grep -c .)
if [ $n -gt 0 ]; then echo "slice '$p' has $n member processes; not removing it" >&2; exit 3; fi
# empty child cgroups (left by a container or a VM) go first
for d in $dirs; do [ -d "$d" ] && find "$d" -depth -mindepth 1 -type d -exec rmdir {} +; done
for d in $dirs; do [ -d "$d" ] && rmdir "$d"; done
exit 0
"""


def slice_path(name: str) -> str:
    return f"{SLICE_PARENT}/{name}"


def _cpu_list(text: Any) -> frozenset[int] | None:
    """The set of CPUs in a list such as "0-3,6"; None if it does not parse."""
    cpus: set[int] = set()
    try:
        for part in str(text).replace(" ", "").split(","):
            if not part:
                continue
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        return None
    return frozenset(cpus)


def _limit(value: Any) -> int | str | None:
    if value is None or value == "max":
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class SliceModule(Module):
    kind = "slice"
    schema = {
        "name": s.string(required=True, empty=False, regex=_NAME_RE),
        "cpus": s.number(min=0.01, nullable=True),
        "memory": s.size(min=1 << 20, nullable=True),
        "pids": s.integer(min=0, nullable=True),
        "cpuset": s.string(regex=r"[0-9][0-9,\-]*\Z", nullable=True),
        "state": s.one_of("present", "absent", default="present"),
    }
    uses_api = True

    # -- spec time ---------------------------------------------------------------
    def normalize(self, fields: dict[str, Any], ctx: Any = None, *,
                  base_dir: str | None = None) -> dict[str, Any]:
        # ctx: the spec loader's SpecContext (Module.normalize); base_dir: older callers
        out = dict(fields)
        if out.get("memory") is not None:
            out["memory"] = parse_size(out["memory"])
        if out.get("cpus") is not None:
            out["cpus"] = float(out["cpus"])
        if out.get("pids") is not None:
            out["pids"] = int(out["pids"])
        out.setdefault("state", "present")
        return out

    # -- reading -------------------------------------------------------------------
    def read_many(
        self, conn: Connection, resources: Sequence[Resource]
    ) -> dict[str, dict[str, Any] | None]:
        paths = {res.address: slice_path(res.fields["name"]) for res in resources}
        if not paths:
            return {}
        helper = ensure_helper(conn)
        if helper is not None:
            shown = helper.slice_show_many(list(paths.values()))
            observed = {p: (_from_helper(d) if d else None) for p, d in shown.items()}
        else:
            observed = _read_fallback(conn, list(paths.values()))
        return {addr: observed.get(path) for addr, path in paths.items()}

    # -- deciding ------------------------------------------------------------------
    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        changed = []
        for key, want in desired.items():
            if key in self.control_fields or want is None or key == "name":
                continue
            have = observed.get(key)
            if key == "memory":
                same = isinstance(have, int) and 0 <= want - have < _PAGE_SLACK
            elif key == "cpus":
                same = isinstance(have, (int, float)) and abs(have - want) < 1e-6
            elif key == "cpuset":
                same = have is not None and _cpu_list(have) == _cpu_list(want)
            else:
                same = have == want
            if not same:
                changed.append(key)
        return changed

    def notes(
        self, desired: dict[str, Any], observed: dict[str, Any] | None, changed: list[str]
    ) -> list[str]:
        out = []
        if observed and observed.get("_via") == "cgroupfs":
            out.append(FALLBACK_NOTE)
        if observed and self.wants_absent(desired) and observed.get("members"):
            out.append(f"slice has {observed['members']} member process(es): removing it will fail")
        return out

    # -- acting ----------------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: "Change") -> None:
        fields = res.fields
        path = slice_path(fields["name"])
        helper = ensure_helper(conn)
        if self.wants_absent(fields):
            if helper is None:
                _rm_fallback(conn, path)
                return
            try:
                helper.slice_rm(path)
            except HelperError as err:
                raise HostError(conn.host, f"slice {fields['name']}: {err.message}") from err
            return
        limits = {
            "cpus": fields.get("cpus"),
            "memory.max": fields.get("memory"),
            "pids.max": fields.get("pids"),
            "cpuset.cpus": fields.get("cpuset"),
        }
        if helper is None:
            _apply_fallback(conn, path, limits)
            return
        try:
            helper.slice_apply(path, limits)
        except HelperError as err:
            raise HostError(conn.host, f"slice {fields['name']}: {err.message}") from err


def _from_helper(data: dict[str, Any]) -> dict[str, Any]:
    limits = data.get("limits", {})
    return {
        "name": data["path"].split("/", 1)[-1],
        "cpus": limits.get("cpus"),
        "memory": _limit(limits.get("memory.max")),
        "pids": _limit(limits.get("pids.max")),
        "cpuset": limits.get("cpuset.cpus"),
        "members": data.get("members", 0),
        "cgroup_version": data.get("version"),
        "state": "present",
        "_via": "helper",
    }


def _read_fallback(conn: Connection, paths: list[str]) -> dict[str, dict[str, Any] | None]:
    res = conn.run(["sh", "-c", _READ_SCRIPT, "sh", *paths])
    if not res.ok:
        raise HostError(conn.host, f"reading cgroups failed: {res.err.strip() or res.rc}")
    version = None
    raw: dict[str, dict[str, str] | None] = {}
    current: str | None = None
    for line in res.out.splitlines():
        key, _, value = line.partition(" ")
        if key == "version":
            version = int(value)
        elif key == "slice":
            current = value
            raw[current] = None
        elif current is not None and key == "exists":
            raw[current] = {}
        elif current is not None and raw.get(current) is not None:
            raw[current][key] = value.strip()
    out: dict[str, dict[str, Any] | None] = {}
    for path in paths:
        files = raw.get(path)
        if files is None:
            out[path] = None
            continue
        cpus: Any = None
        if "cpu.max" in files:  # v2: "max 100000" / "150000 100000"
            quota, _, period = files["cpu.max"].partition(" ")
            cpus = "max" if quota == "max" else int(quota) / int(period or 100000)
        elif "cpu.cfs_quota_us" in files:
            quota, period = (
                int(files["cpu.cfs_quota_us"]),
                int(files.get("cpu.cfs_period_us") or 100000),
            )
            cpus = "max" if quota < 0 else quota / period
        memory = _limit(files.get("memory.max"))
        if isinstance(memory, int) and memory >= 1 << 62:  # v1's "unlimited"
            memory = "max"
        out[path] = {
            "name": path.split("/", 1)[-1],
            "cpus": cpus,
            "memory": memory,
            "pids": _limit(files.get("pids.max")),
            "cpuset": files.get("cpuset.cpus"),
            "members": int(files.get("members") or 0),
            "cgroup_version": version,
            "state": "present",
            "_via": "cgroupfs",
        }
    return out


def _apply_fallback(conn: Connection, path: str, limits: dict[str, Any]) -> None:
    cpus = limits.get("cpus")
    quota = "" if cpus is None else str(round(float(cpus) * 100000))
    args = [
        path,
        quota,
        "" if limits.get("memory.max") is None else str(limits["memory.max"]),
        "" if limits.get("pids.max") is None else str(limits["pids.max"]),
        limits.get("cpuset.cpus") or "",
    ]
    res = conn.run(["sh", "-c", _APPLY_SCRIPT, "sh", *args])
    if not res.ok:
        detail = res.err.strip().splitlines()[-1] if res.err.strip() else f"exit {res.rc}"
        raise HostError(conn.host, f"slice {path}: {detail} ({unavailable_reason(conn)})")


def _rm_fallback(conn: Connection, path: str) -> None:
    res = conn.run(["sh", "-c", _RM_SCRIPT, "sh", path])
    if not res.ok:
        detail = res.err.strip().splitlines()[-1] if res.err.strip() else f"exit {res.rc}"
        raise HostError(conn.host, f"slice {path}: {detail}")
