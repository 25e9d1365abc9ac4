"""Getting the native `provision-helper` onto a host, and calling it.

The helper (native/src/*.c) does what plain commands do badly: copy-on-write
clones with an atomic rename, and cgroup slices on v1 and v2 hosts. It is
optional: `ensure_helper(conn)` returns None when it cannot be had, and callers
fall back to plain commands (`cp --reflink=auto`, cgroupfs writes) and say so
in the plan.

How it gets there, cheapest first:
1. already cached on the host: `~/.cache/provision/helper-<hash>/provision-helper`
   or `/var/cache/provision/helper-<hash>/provision-helper` (one `run`);
2. the host has a C compiler: upload the sources and compile them there;
3. the host's `uname -m` matches the controller's and a locally built binary
   exists: upload that;
4. otherwise None.

<hash> is a content hash of the C sources and the compile flags, so a changed
helper is never mistaken for an old one. The result is cached per connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import posixpath
import shutil
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError

HELPER_NAME = "provision-helper"
NATIVE_DIR = Path(
    os.environ.get("PROVISION_NATIVE_DIR") or Path(__file__).resolve().parent.parent / "native"
)
# flags for compiling on a host; part of the hash. No -Werror there: another
# compiler version may warn where ours does not.
COMPILE_FLAGS = ("-std=c11", "-O2")
COMPILE_TIMEOUT = 180.0

# One round trip: is a cached helper there; else what would it take.
_PROBE = r"""
h=$1
for d in "$HOME/.cache/provision/helper-$h" "/var/cache/provision/helper-$h"; do
  if [ -x "$d/provision-helper" ]; then echo "found=$d/provision-helper"; break; fi
done
echo "home=$HOME"
echo "arch=$(uname -m)"
for c in cc gcc clang; do
  if p=$(command -v "$c" 2>/dev/null); then echo "cc=$p"; break; fi
done
"""

_COMPILE = r"""
set -e
d=$1; cc=$2; shift 2
cd "$d"
"$cc" "$@" -o provision-helper.new
./provision-helper.new version >/dev/null
mv -f provision-helper.new provision-helper
"""

_INSTALL = r"""
set -e
cd "$1"
chmod 0755 provision-helper.new
./provision-helper.new version >/dev/null
mv -f provision-helper.new provision-helper
"""

# Fallback clone without the helper: cp into a temp name, grow, rename.
# $5 "always": a reflink or nothing (cp takes no --sparse then; a clone is
# as sparse as its source anyway).
_PLAIN_CLONE = r"""
set -e
src=$1; tmp=$2; dst=$3; size=$4; reflink=$5
if [ -n "$size" ] && [ "$(stat -c %s -- "$src")" -gt "$size" ]; then
  echo "refusing to shrink: size $size is smaller than $src" >&2; exit 1
fi
trap 'rm -f -- "$tmp"' EXIT INT TERM HUP
if [ "$reflink" = always ]; then
  cp --reflink=always -- "$src" "$tmp"
else
  cp --reflink=auto --sparse=always -- "$src" "$tmp"
fi
if [ -n "$size" ]; then truncate -s "$size" -- "$tmp"; fi
mv -f -- "$tmp" "$dst"
trap - EXIT
stat -c %s -- "$dst"
"""


# Fallback reflink check without the helper, like `reflink-probe --nearest`:
# two hidden temp files (removed on exit) and `cp --reflink=always` between them.
_PLAIN_REFLINK_PROBE = r"""
set -e
a=$1; b=$2
while [ ! -d "$a" ] && [ "$a" != / ]; do a=$(dirname -- "$a"); done
while [ ! -d "$b" ] && [ "$b" != / ]; do b=$(dirname -- "$b"); done
s=""; d=""
trap 'rm -f -- ${s:+"$s"} ${d:+"$d"}' EXIT INT TERM HUP
s=$(mktemp "$a/.provision-probe.XXXXXX")
d=$(mktemp "$b/.provision-probe.XXXXXX")
head -c 65536 /dev/urandom > "$s"
printf 'src_dir=%s\ndst_dir=%s\n' "$a" "$b"
printf 'src_fs=%s\ndst_fs=%s\n' "$(stat -f -c %T -- "$a")" "$(stat -f -c %T -- "$b")"
printf 'same_dev=%s\n' "$([ "$(stat -c %d -- "$a")" = "$(stat -c %d -- "$b")" ] && echo 1)"
if cp --reflink=always -- "$s" "$d" 2>/dev/null; then echo reflink=1; else echo reflink=; fi
"""


class HelperError(HostError):
    """provision-helper ran and reported an error (its JSON `error`)."""

    def __init__(
        self, host: str, argv: Sequence[str], rc: int, message: str, data: dict[str, Any] | None
    ) -> None:
        self.argv = list(argv)
        self.rc = rc
        self.data = data or {}
        sub = " ".join(self.argv[:2])
        super().__init__(host, f"{HELPER_NAME} {sub}: {message}")


# -- the sources and the local build ----------------------------------------


def source_files() -> list[Path]:
    src = NATIVE_DIR / "src"
    return sorted(p for p in src.iterdir() if p.suffix in (".c", ".h")) if src.is_dir() else []


_hash_cache: dict[tuple[tuple[str, float], ...], str] = {}


def source_hash() -> str:
    """16 hex digits of sha256 over the sources' names and bytes and the flags."""
    files = source_files()
    key = tuple((str(p), p.stat().st_mtime) for p in files)
    cached = _hash_cache.get(key)
    if cached:
        return cached
    h = hashlib.sha256()
    h.update(" ".join(COMPILE_FLAGS).encode() + b"\0")
    for p in files:
        h.update(p.name.encode() + b"\0")
        data = p.read_bytes()
        h.update(str(len(data)).encode() + b"\0" + data)
    digest = h.hexdigest()[:16]
    _hash_cache[key] = digest
    return digest


def controller_arch() -> str:
    return platform.machine()


_local_lock = threading.Lock()
_local_build_tried = False


def local_binary() -> Path | None:
    """The controller's build of the helper if it is up to date with the
    sources; tries `make -C native` once when it is missing or stale."""
    global _local_build_tried
    binary = NATIVE_DIR / "build" / HELPER_NAME

    def fresh() -> bool:
        if not binary.is_file():
            return False
        newest = max((p.stat().st_mtime for p in source_files()), default=0.0)
        return binary.stat().st_mtime >= newest

    with _local_lock:
        if fresh():
            return binary
        if not _local_build_tried and shutil.which("make") and (NATIVE_DIR / "Makefile").is_file():
            _local_build_tried = True
            subprocess.run(
                ["make", "-s", "-C", str(NATIVE_DIR)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        return binary if fresh() else None


# -- the handle ----------------------------------------------------------------


class HelperHandle:
    """The helper installed on one host, called through its connection.

    Holds the connection weakly: handles are cached per connection, and a
    strong reference would keep every connection alive forever."""

    def __init__(self, conn: Connection, path: str, how: str) -> None:
        self._conn = weakref.ref(conn)
        self.path = path
        self.how = how  # "cached" | "compiled" | "uploaded"

    def __repr__(self) -> str:
        return f"HelperHandle(path={self.path!r}, how={self.how!r})"

    @property
    def conn(self) -> Connection:
        conn = self._conn()
        if conn is None:
            raise RuntimeError("the connection of this helper handle is gone")
        return conn

    def call(self, args: Sequence[str], *, timeout: float | None = None) -> dict[str, Any]:
        argv = [self.path, *args]
        res = self.conn.run(argv, timeout=timeout)
        data = _parse_json(res)
        if res.rc != 0 or data is None or "error" in data:
            if data and "error" in data:
                message = str(data["error"])
            else:
                message = res.err.strip().splitlines()[-1] if res.err.strip() else f"exit {res.rc}"
            raise HelperError(self.conn.host, list(args), res.rc, message, data)
        return data

    def version(self) -> dict[str, Any]:
        return self.call(["version"])

    def clone(
        self, src: str, dst: str, size: int | None = None, *, method: str = "auto"
    ) -> dict[str, Any]:
        args = ["clone", "--method", method]
        if size is not None:
            args += ["--size", str(int(size))]
        return self.call([*args, "--", src, dst])

    def reflink_probe(self, src_dir: str, dst_dir: str, *, nearest: bool = False
                      ) -> dict[str, Any]:
        """Whether a file in src_dir can be reflink-cloned into dst_dir:
        {"reflink", "src_fs", "dst_fs", "same_fs", "reason"}.

        For `provision plan`, to say in advance whether a VM disk will be a
        reflink clone or a qcow2 overlay. The helper answers by really
        cloning between two anonymous O_TMPFILE files, because the filesystem
        type alone cannot tell (XFS made without reflink=1, btrfs subvolumes).
        Nothing is left in either directory. Needs write access to both
        directories; a missing one, or one that cannot be written, raises
        HelperError (rc 1) naming the path. nearest=True: a directory not made
        yet is answered for its nearest existing parent, and the answer names
        the directories probed (src_dir, dst_dir)."""
        return self.call(["reflink-probe", *(["--nearest"] if nearest else []), "--",
                          src_dir, dst_dir])

    def slice_apply(self, path: str, limits: Mapping[str, Any]) -> dict[str, Any]:
        args = ["slice", "apply", path]
        args += [f"{key}={_fmt_limit(val)}" for key, val in limits.items() if val is not None]
        return self.call(args)

    def slice_show(self, path: str) -> dict[str, Any] | None:
        data = self.call(["slice", "show", path])
        return data if data.get("exists") else None

    def slice_show_many(self, paths: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Every slice in one round trip."""
        paths = list(dict.fromkeys(paths))
        if not paths:
            return {}
        if len(paths) == 1:
            return {paths[0]: self.slice_show(paths[0])}
        slices = self.call(["slice", "show", *paths]).get("slices", {})
        return {p: (slices.get(p) if (slices.get(p) or {}).get("exists") else None) for p in paths}

    def slice_rm(self, path: str) -> dict[str, Any]:
        return self.call(["slice", "rm", path])


def _fmt_limit(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError("a slice limit cannot be a boolean")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse_json(res: Result) -> dict[str, Any] | None:
    try:
        data = json.loads(res.out)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- getting it onto a host ------------------------------------------------------


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    handle: HelperHandle | None = None
    reason: str = ""


_entries: weakref.WeakKeyDictionary[Connection, _Entry] = weakref.WeakKeyDictionary()
_entries_lock = threading.Lock()


def _entry(conn: Connection) -> _Entry:
    with _entries_lock:
        entry = _entries.get(conn)
        if entry is None:
            entry = _entries[conn] = _Entry()
        return entry


def ensure_helper(conn: Connection) -> HelperHandle | None:
    """The helper on conn's host, installing it if possible; None means
    "fall back to plain commands" (see unavailable_reason)."""
    entry = _entry(conn)
    with entry.lock:
        if not entry.done:
            entry.handle, entry.reason = _install(conn)
            entry.done = True
        return entry.handle


def unavailable_reason(conn: Connection) -> str:
    """Why ensure_helper(conn) returned None ("" when it did not)."""
    entry = _entry(conn)
    return "" if entry.handle else entry.reason


def forget(conn: Connection) -> None:
    """Drop the cached answer for conn (e.g. after the host was rebuilt)."""
    with _entries_lock:
        _entries.pop(conn, None)


def _install(conn: Connection) -> tuple[HelperHandle | None, str]:
    files = source_files()
    if not files:
        return None, f"no helper sources at {NATIVE_DIR / 'src'}"
    digest = source_hash()
    probe = conn.run(["sh", "-c", _PROBE, "sh", digest], sudo=False)
    facts: dict[str, str] = {}
    for line in probe.out.splitlines():
        key, sep, value = line.partition("=")
        if sep and key not in facts:
            facts[key] = value.strip()
    if not probe.ok and not facts:
        return None, f"probing the host failed: {probe.err.strip() or probe.rc}"
    if facts.get("found"):
        return HelperHandle(conn, facts["found"], "cached"), ""

    home = facts.get("home", "")
    if not home.startswith("/"):
        return None, "the login user has no home directory for the helper cache"
    target_dir = posixpath.join(home, ".cache", "provision", f"helper-{digest}")
    target = posixpath.join(target_dir, HELPER_NAME)
    reasons = []

    cc = facts.get("cc")
    if cc:
        mk = conn.run(["mkdir", "-p", posixpath.join(target_dir, "src")], sudo=False)
        if mk.ok:
            for path in files:
                conn.put(
                    posixpath.join(target_dir, "src", path.name), path.read_bytes(), mode=0o644
                )
            sources = [f"src/{p.name}" for p in files if p.suffix == ".c"]
            built = conn.run(
                ["sh", "-c", _COMPILE, "sh", target_dir, cc, *COMPILE_FLAGS, *sources],
                sudo=False,
                timeout=COMPILE_TIMEOUT,
            )
            if built.ok:
                return HelperHandle(conn, target, "compiled"), ""
            detail = built.err.strip().splitlines()[-1] if built.err.strip() else f"exit {built.rc}"
            reasons.append(f"compiling with {cc} failed: {detail}")
        else:
            reasons.append(f"cannot create {target_dir}: {mk.err.strip()}")
    else:
        reasons.append("no C compiler on the host")

    arch = facts.get("arch", "")
    if arch != controller_arch():
        reasons.append(f"host is {arch or 'unknown'}, controller is {controller_arch()}")
        return None, "; ".join(reasons)
    binary = local_binary()
    if binary is None:
        reasons.append("no local build of the helper to upload")
        return None, "; ".join(reasons)
    mk = conn.run(["mkdir", "-p", target_dir], sudo=False)
    if not mk.ok:
        reasons.append(f"cannot create {target_dir}: {mk.err.strip()}")
        return None, "; ".join(reasons)
    conn.put(posixpath.join(target_dir, HELPER_NAME + ".new"), binary.read_bytes(), mode=0o755)
    installed = conn.run(["sh", "-c", _INSTALL, "sh", target_dir], sudo=False)
    if installed.ok:
        return HelperHandle(conn, target, "uploaded"), ""
    reasons.append(f"the uploaded helper does not run there: {installed.err.strip()}")
    return None, "; ".join(reasons)


# -- fallbacks without the helper ---------------------------------------------------


def plain_clone(conn: Connection, src: str, dst: str, size: int | None = None, *,
                reflink_only: bool = False) -> dict[str, Any]:
    """`cp --reflink=auto` (or `always`: a reflink or an error) into a temp
    name, grow, rename: the fallback when ensure_helper(conn) is None. Same
    result shape as HelperHandle.clone."""
    directory, base = posixpath.split(dst)
    tmp = posixpath.join(directory, f".{base}.provision-tmp.cp")
    mode = "always" if reflink_only else "auto"
    argv = ["sh", "-c", _PLAIN_CLONE, "sh", src, tmp, dst,
            "" if size is None else str(int(size)), mode]
    res = conn.run(argv)
    if not res.ok:
        detail = res.err.strip().splitlines()[-1] if res.err.strip() else f"exit {res.rc}"
        raise HostError(conn.host, f"cp --reflink={mode} {src} {dst}: {detail}")
    out = res.out.strip()
    return {"method": "cp", "size": int(out) if out.isdigit() else None, "dst": dst}


def plain_reflink_probe(conn: Connection, src_dir: str, dst_dir: str) -> dict[str, Any]:
    """The fallback of `HelperHandle.reflink_probe(..., nearest=True)`, same
    answer shape, by `cp --reflink=always` between two hidden temp files that
    exist for the moment of the check."""
    res = conn.run(["sh", "-c", _PLAIN_REFLINK_PROBE, "sh", src_dir, dst_dir])
    if not res.ok:
        detail = res.err.strip().splitlines()[-1] if res.err.strip() else f"exit {res.rc}"
        raise HostError(conn.host, f"checking for reflink between {src_dir} and {dst_dir}: "
                                   f"{detail}")
    got = dict(line.partition("=")[::2] for line in res.out.splitlines() if "=" in line)
    fs = {k: "ext4" if got.get(k) == "ext2/ext3" else got.get(k) for k in ("src_fs", "dst_fs")}
    reflink = bool(got.get("reflink"))
    same = bool(got.get("same_dev")) or reflink
    reason = ("cp --reflink=always works" if reflink else
              "different filesystems" if not same else f"{fs['src_fs']} has no reflink")
    return {"reflink": reflink, **fs, "same_fs": same, "reason": reason,
            "src_dir": got.get("src_dir"), "dst_dir": got.get("dst_dir")}
