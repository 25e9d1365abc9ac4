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

Ownership: cgroupfs holds no files of ours, so the mark lives beside it, in
`<provision_run_dir>/slices/<name>.owner` (host variable, default
/run/provision: runtime state, gone with the cgroups at a reboot), one JSON
line `{"owner": "<provision_owner>"}`. apply writes it (temp file + rename)
when it creates a slice or changes one that has no mark, and removes it with
the slice; each such write also drops marks whose cgroup is gone (removed by
hand). The marks are read in the same round trip as the cgroups, so the
observed state carries `owner` (the mark's, or null) and `marked`.
`list_owned` (prune, one command) lists the slices whose mark names the
owner and whose cgroup exists: a mark without its cgroup is never a delete.
A slice without a mark (made by hand, by Docker for a member container, or
by a provision without marks) is never pruned; declared, it plans as an
update `marked: false -> true` with a note, and apply marks it: /provision/
is provision's own namespace, so it is taken over rather than refused (no
`adopt`). A slice carrying another spec's mark keeps that mark (shared
slices do not change hands back and forth); only that spec prunes it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
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
# where the ownership marks live: <provision_run_dir>/slices/<name>.owner
DEFAULT_RUN_DIR = "/run/provision"
UNMARKED_NOTE = ("slice carries no provision ownership mark: apply marks it as this spec's "
                 "(prune and destroy may then delete it)")

# Fixed scripts: every value is a positional argument. The cgroup root
# honours $PROVISION_CGROUP_ROOT like the helper.
#
# Reading, one round trip: $1 the helper's path ("" = plain cgroupfs reads),
# $2 the marks directory, $3 a per-call separator, $4 "names" (the slice
# names follow) or "marked" (every slice that has a mark). Prints the
# helper's JSON (or the plain reads' lines), then "\n<sep> <rc>", then one
# "mark <name> <first line of its mark>" per mark found.
_READ_SCRIPT = r"""
root=${PROVISION_CGROUP_ROOT:-/sys/fs/cgroup}
helper=$1; marks=$2; sep=$3; mode=$4; shift 4
if [ "$mode" = marked ]; then
  for f in "$marks"/*.owner; do
    [ -f "$f" ] || continue
    n=${f##*/}; n=${n%.owner}
    # only names the schema allows (no '.', '..', nothing hidden, no temp files)
    case $n in ""|.*|*[!A-Za-z0-9_.@:+-]*) continue;; esac
    [ ${#n} -le 128 ] || continue
    set -- "$@" "$n"
  done
fi
count=$#
for s in "$@"; do set -- "$@" "provision/$s"; done
shift $count
rc=0
if [ $# -eq 0 ]; then
  :
elif [ -n "$helper" ]; then
  "$helper" slice show "$@"; rc=$?
else
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
fi
printf '\n%s %s\n' "$sep" "$rc"
for p in "$@"; do
  s=${p#provision/}
  [ -f "$marks/$s.owner" ] || continue
  line=""
  { IFS= read -r line < "$marks/$s.owner"; } 2>/dev/null || [ -n "$line" ] || continue
  printf 'mark %s %s\n' "$s" "$line"
done
exit 0
"""

# Writing or removing one mark: $1 the marks directory, $2 the slice name,
# $3 the mark's text ("" = remove it). Then drops every mark whose cgroup is
# gone (a slice removed by hand), so a stale mark never names a new cgroup.
_MARK_SCRIPT = r"""
set -e
root=${PROVISION_CGROUP_ROOT:-/sys/fs/cgroup}
marks=$1; name=$2; mark=$3
exists() {
  if [ -e "$root/cgroup.controllers" ]; then [ -d "$root/provision/$1" ]; return; fi
  for h in "$root"/*; do [ -d "$h/provision/$1" ] && return 0; done
  return 1
}
if [ -n "$mark" ]; then
  mkdir -p -- "$marks"
  tmp=$(mktemp "$marks/.$name.XXXXXX")
  trap 'rm -f -- "$tmp"' EXIT
  printf '%s\n' "$mark" > "$tmp"
  chmod 0644 "$tmp"
  mv -f -- "$tmp" "$marks/$name.owner"
  trap - EXIT
else
  rm -f -- "$marks/$name.owner"
fi
for f in "$marks"/*.owner; do
  [ -f "$f" ] || continue
  n=${f##*/}; n=${n%.owner}
  exists "$n" || rm -f -- "$f"
done
"""

# Writing limits and removing without the helper.
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
    # every declared slice carries a mark (see normalize): bookkeeping, not news
    unshown_fields = frozenset({"marked"})
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
        # not a spec field: every declared slice carries an ownership mark, so
        # one that exists without a mark plans as an update that writes it
        out["marked"] = True
        return out

    # -- reading -------------------------------------------------------------------
    def read_many(
        self, conn: Connection, resources: Sequence[Resource]
    ) -> dict[str, dict[str, Any] | None]:
        names = {res.address: res.fields["name"] for res in resources}
        if not names:
            return {}
        observed = _read(conn, list(dict.fromkeys(names.values())))
        return {addr: observed.get(name) for addr, name in names.items()}

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        """Slices whose mark names owner and whose cgroup exists, in one
        command; the same observed state read_many gives (a saved plan's
        prune delete is re-read through read_many and must match)."""
        return {name: obs for name, obs in _read(conn, None).items()
                if obs is not None and obs.get("owner") == owner}

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
        if observed and "marked" in changed:
            out.append(UNMARKED_NOTE)
        return out

    # -- acting ----------------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: "Change") -> None:
        fields = res.fields
        path = slice_path(fields["name"])
        before = change.before if change is not None else None
        helper = ensure_helper(conn)
        if self.wants_absent(fields):
            if helper is None:
                _rm_fallback(conn, path)
            else:
                try:
                    helper.slice_rm(path)
                except HelperError as err:
                    raise HostError(conn.host, f"slice {fields['name']}: {err.message}") from err
            _set_mark(conn, fields["name"], None)
            return
        limits = {
            "cpus": fields.get("cpus"),
            "memory.max": fields.get("memory"),
            "pids.max": fields.get("pids"),
            "cpuset.cpus": fields.get("cpuset"),
        }
        if before is not None and change.changed_fields == ["marked"]:
            pass  # the limits are right: only the mark is missing
        elif helper is None:
            _apply_fallback(conn, path, limits)
        else:
            try:
                helper.slice_apply(path, limits)
            except HelperError as err:
                raise HostError(conn.host, f"slice {fields['name']}: {err.message}") from err
        # a slice another spec marked keeps its mark: shared slices do not
        # change hands on every run
        if not (before and before.get("marked")):
            _set_mark(conn, fields["name"], res.owner or "provision")


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


def marks_dir(conn: Connection) -> str:
    """Where the slices' ownership marks live on conn's host."""
    base = conn.vars.get("provision_run_dir") or DEFAULT_RUN_DIR
    if not isinstance(base, str) or not base.startswith("/"):
        raise HostError(conn.host, f"provision_run_dir must be an absolute path, not {base!r}")
    return posixpath.join(base, "slices")


def _read(conn: Connection, names: list[str] | None) -> dict[str, dict[str, Any] | None]:
    """Observed state of the named slices (None: not there), or with
    names=None of every slice that carries a mark and exists: cgroups and
    marks in one command, through the helper when there is one."""
    helper = ensure_helper(conn)
    sep = f"@@provision-slices-{os.urandom(8).hex()}@@"
    argv = ["sh", "-c", _READ_SCRIPT, "sh", helper.path if helper else "", marks_dir(conn),
            sep, "marked" if names is None else "names", *(names or [])]
    res = conn.run(argv)
    head, found, tail = res.out.partition(f"\n{sep} ")
    rc_text, _, mark_lines = tail.partition("\n")
    if not found or not rc_text.strip().lstrip("-").isdigit():
        detail = res.err.strip().splitlines()[-1] if res.err.strip() else f"exit {res.rc}"
        raise HostError(conn.host, f"reading cgroups failed: {detail}")
    rc = int(rc_text)
    shown = (_parse_helper(conn, head, rc, res.err) if helper is not None
             else _parse_fallback(head))
    marks = _parse_marks(mark_lines)
    out: dict[str, dict[str, Any] | None] = {}
    for name in (names if names is not None else sorted(marks)):
        observed = shown.get(slice_path(name))
        if observed is not None:
            owner = marks.get(name)
            observed["owner"] = owner
            observed["marked"] = owner is not None
        if names is not None or observed is not None:
            out[name] = observed
    return out


def _parse_helper(conn: Connection, text: str, rc: int,
                  err: str) -> dict[str, dict[str, Any] | None]:
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if rc != 0 or not isinstance(data, dict) or "error" in data:
        if isinstance(data, dict) and "error" in data:
            message = str(data["error"])
        else:
            message = err.strip().splitlines()[-1] if err.strip() else f"exit {rc}"
        raise HelperError(conn.host, ["slice", "show"], rc, message,
                          data if isinstance(data, dict) else None)
    # one path: the slice itself; several: {"slices": {path: slice}}
    slices = data["slices"] if "slices" in data else {data.get("path"): data}
    return {p: (_from_helper(d) if d and d.get("exists") else None) for p, d in slices.items()}


def _parse_marks(text: str) -> dict[str, str]:
    """slice name -> the owner its mark names; unreadable marks are left out
    (such a slice counts as unmarked: never pruned, re-marked when declared)."""
    owners = {}
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        name, _, raw = rest.partition(" ")
        if tag != "mark" or not re.match(_NAME_RE, name):
            continue
        try:
            mark = json.loads(raw)
        except ValueError:
            continue
        owner = mark.get("owner") if isinstance(mark, dict) else None
        if isinstance(owner, str) and owner:
            owners[name] = owner
    return owners


def _set_mark(conn: Connection, name: str, owner: str | None) -> None:
    """Write name's mark for owner (None: remove it), atomically."""
    text = "" if owner is None else json.dumps({"owner": owner})
    directory = marks_dir(conn)
    res = conn.run(["sh", "-c", _MARK_SCRIPT, "sh", directory, name, text])
    if not res.ok:
        detail = res.err.strip().splitlines()[-1] if res.err.strip() else f"exit {res.rc}"
        what = "remove" if owner is None else "write"
        raise HostError(conn.host, f"slice {name}: cannot {what} its ownership mark in "
                        f"{directory}: {detail}")


def _parse_fallback(text: str) -> dict[str, dict[str, Any] | None]:
    version = None
    raw: dict[str, dict[str, str] | None] = {}
    current: str | None = None
    for line in text.splitlines():
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
    for path, files in raw.items():
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
