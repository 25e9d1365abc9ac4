#!/bin/sh
# Tests of provision-helper's CLI contract; run by `make test` against the
# ASan+UBSan build (HELPER=path).  Needs python3 to validate JSON output.
# Real-cgroup checks run only as root on a cgroup v1 machine.
set -u
HELPER=${HELPER:?set HELPER to the binary under test}
# the system python starts fastest (a pyenv shim costs ~0.2 s per call)
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi
T=$(mktemp -d "${TMPDIR:-/tmp}/helper-tests.XXXXXX")
V1_SLICE="provision-helper-test-$$"
cleanup() {
    if [ -d /sys/fs/cgroup/memory/$V1_SLICE ]; then
        PROVISION_CGROUP_ROOT= "$HELPER" slice rm "$V1_SLICE" >/dev/null 2>&1
    fi
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); }
bad() { FAIL=$((FAIL + 1)); echo "FAIL: $*" >&2; }

# run EXPECTED_RC ARGS... : runs the helper, checks rc, JSON and stderr shape
run() {
    want=$1
    shift
    "$HELPER" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        bad "helper $* exited $rc, want $want: $(cat "$T/out") $(cat "$T/err")"
        return 1
    fi
    if ! "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert isinstance(d, dict)' "$T/out" 2>/dev/null; then
        bad "helper $*: stdout is not one JSON object: $(cat "$T/out")"
        return 1
    fi
    if [ "$rc" -ne 0 ]; then
        if [ "$(wc -l <"$T/err")" -ne 1 ] || ! grep -q '"error"' "$T/out"; then
            bad "helper $*: failure needs {\"error\"} and one stderr line: $(cat "$T/err")"
            return 1
        fi
    elif [ -s "$T/err" ]; then
        bad "helper $*: unexpected stderr: $(cat "$T/err")"
        return 1
    fi
    ok
}

# jq-lite: field KEY.PATH of the last output
field() {
    "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("|"):
    d = d[int(k)] if isinstance(d, list) else d[k]
print(json.dumps(d) if not isinstance(d, str) else d)' "$T/out" "$1"
}

expect() { # expect DESCRIPTION ACTUAL WANTED
    if [ "$2" = "$3" ]; then ok; else bad "$1: got '$2', want '$3'"; fi
}

contains() { # contains DESCRIPTION HAYSTACK NEEDLE
    case $2 in *"$3"*) ok ;; *) bad "$1: '$2' does not contain '$3'" ;; esac
}

# ---- CLI basics -------------------------------------------------------------
run 0 version && contains "features" "$(field features)" '"slice"'
run 2
run 2 frobnicate
run 2 version extra
run 2 clone
run 2 clone onlyone
run 2 clone a b c
run 2 clone --method bogus a b
run 2 clone --size 12Q a b
run 2 clone --size
run 2 clone --frob a b
run 2 slice
run 2 slice apply
run 2 slice frob x
run 2 slice apply ../escape cpus=1
run 2 slice apply /abs cpus=1
run 2 slice apply a//b cpus=1
run 2 slice apply 'a b' cpus=1
run 2 slice apply ok nokey
run 2 slice apply ok bogus.key=1 && contains "unknown key" "$(field error)" "bogus.key"
run 2 slice apply ok cpus=0
run 2 slice apply ok cpus=abc
run 2 slice apply ok cpu.weight=0
run 2 slice apply ok cpu.weight=10001
run 2 slice apply ok memory.max=12X
run 2 slice apply ok pids.max=-3
run 2 slice apply ok cpuset.cpus='0;1'
run 2 slice apply ok cpu.max=10/5
run 2 slice rm a b

# ---- clone: errors ----------------------------------------------------------
mkdir -p "$T/d"
run 1 clone "$T/missing" "$T/d/x" && contains "missing src" "$(field error)" "$T/missing"
printf 'hello\n' >"$T/small"
run 1 clone "$T/small" "$T/nodir/x" && contains "missing dir" "$(field error)" "$T/nodir"
run 1 clone "$T/small" "$T/d" && contains "dst is dir" "$(field error)" "directory"
run 2 clone "$T/small" "$T/d/"
run 1 clone "$T/d" "$T/d/x" && contains "src is dir" "$(field error)" "not a regular file"
run 1 clone "$T/small" "$T/small" && contains "same file" "$(field error)" "same file"

# ---- clone: sparse copy -----------------------------------------------------
src="$T/sparse.img"
truncate -s 64M "$src"
dd if=/dev/urandom of="$src" bs=1M count=1 conv=notrunc status=none
dd if=/dev/urandom of="$src" bs=1M count=2 seek=40 conv=notrunc status=none
run 0 clone --method copy "$src" "$T/d/copy.img"
expect "copy method" "$(field method)" "copy"
expect "copy size" "$(field size)" "67108864"
expect "bytes written (data only)" "$(field bytes_written)" "3145728"
cmp -s "$src" "$T/d/copy.img" && ok || bad "copy differs from source"
sb=$(stat -c %b "$src"); db=$(stat -c %b "$T/d/copy.img")
[ "$db" -le $((sb + 64)) ] && ok || bad "holes not kept: src $sb blocks, copy $db"
expect "mode kept" "$(stat -c %a "$T/d/copy.img")" "$(stat -c %a "$src")"

# auto falls back to a copy when reflink is unsupported (or reflinks)
run 0 clone "$src" "$T/d/auto.img"
cmp -s "$src" "$T/d/auto.img" && ok || bad "auto clone differs"

# overwrite an existing destination
run 0 clone --method copy "$T/small" "$T/d/copy.img"
cmp -s "$T/small" "$T/d/copy.img" && ok || bad "overwrite failed"

# --size grows; shrinking is refused and leaves nothing behind
run 0 clone --method copy --size 128M "$src" "$T/d/grown.img"
expect "grown size" "$(stat -c %s "$T/d/grown.img")" "134217728"
expect "reported size" "$(field size)" "134217728"
cmp -s -n 67108864 "$src" "$T/d/grown.img" && ok || bad "grown clone prefix differs"
run 0 clone --size=64M "$src" "$T/d/same.img"
run 1 clone --size 1M "$src" "$T/d/shrunk.img" && contains "shrink" "$(field error)" "shrink"
[ ! -e "$T/d/shrunk.img" ] && ok || bad "refused clone left a file"

# empty source
: >"$T/empty"
run 0 clone --method copy "$T/empty" "$T/d/empty2"
expect "empty size" "$(stat -c %s "$T/d/empty2")" "0"

# a file of zeros written as data becomes holes under read/write, stays equal
dd if=/dev/zero of="$T/zeros" bs=1M count=4 status=none
run 0 clone --method copy "$T/zeros" "$T/d/zeros2"
cmp -s "$T/zeros" "$T/d/zeros2" && ok || bad "zeros copy differs"

# stale temp files of dead pids are removed; live ones are kept
deadpid=$(sh -c 'echo $$')
: >"$T/d/.target.provision-tmp.$deadpid"
: >"$T/d/.target.provision-tmp.$$"
run 0 clone --method copy "$T/small" "$T/d/target"
expect "stale removed" "$(field stale_temps_removed)" "1"
[ ! -e "$T/d/.target.provision-tmp.$deadpid" ] && ok || bad "stale temp left"
[ -e "$T/d/.target.provision-tmp.$$" ] && ok || bad "live temp removed"
rm -f "$T/d/.target.provision-tmp.$$"
leftover=$(ls -A "$T/d" | grep provision-tmp || true)
expect "no temp files left" "$leftover" ""

# reflink where unsupported is a clear runtime error (when it is supported, fine)
"$HELPER" clone --method reflink "$T/small" "$T/d/rl" >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 1 ]; then contains "reflink error" "$(field error)" "reflink"; else expect "reflink rc" "$rc" "0"; fi

# ---- reflink-probe ------------------------------------------------------------
run 0 version && contains "probe feature" "$(field features)" '"reflink-probe"'
run 2 reflink-probe
run 2 reflink-probe onlyone
run 2 reflink-probe a b c
run 2 reflink-probe --frob a b
run 2 reflink-probe "" "$T"
mkdir -p "$T/ps" "$T/pd"
run 1 reflink-probe "$T/nosrc" "$T/pd" && contains "probe missing src" "$(field error)" "$T/nosrc"
expect "probe missing errno" "$(field errno)" "2"
run 1 reflink-probe "$T/ps" "$T/nodst" && contains "probe missing dst" "$(field error)" "$T/nodst"
expect "probe path field" "$(field path)" "$T/nodst"
run 1 reflink-probe "$T/small" "$T/pd" && contains "probe src not dir" "$(field error)" "not a directory"
run 0 reflink-probe --nearest "$T/nosrc/a/b/" "$T/pd"
expect "nearest src parent" "$(field src_dir)" "$T"
expect "nearest dst as given" "$(field dst_dir)" "$T/pd"
[ ! -e "$T/nosrc" ] && ok || bad "nearest created a directory"
run 0 reflink-probe --nearest nosuch/dir "$T/pd"
expect "nearest relative" "$(field src_dir)" "."
run 1 reflink-probe --nearest "$T/small/x" "$T/pd" && contains "nearest under a file" "$(field error)" "$T/small/x"
run 0 reflink-probe "$T/ps" "$T/pd"
r=$(field reflink)
case $r in true | false) ok ;; *) bad "probe reflink: got '$r'" ;; esac
expect "probe same_fs" "$(field same_fs)" "true"
expect "probe fs names agree" "$(field src_fs)" "$(field dst_fs)"
[ -n "$(field src_fs)" ] && ok || bad "probe: empty src_fs"
[ -n "$(field reason)" ] && ok || bad "probe: empty reason"
# ext2/3/4 share a magic; stat calls it ext2/ext3, the probe ext4
if [ "$(stat -f -c %T "$T")" = "ext2/ext3" ]; then
    expect "probe ext4 name" "$(field src_fs)" "ext4"
    expect "probe ext4 answer" "$r" "false"
    expect "probe ext4 reason" "$(field reason)" "ext4 has no reflink"
fi
# the probe agrees with a real reflink clone between the same directories
"$HELPER" clone --method reflink "$T/small" "$T/pd/rl" >/dev/null 2>&1
if [ $? -eq 0 ]; then expect "probe predicts clone" "$r" "true"; else expect "probe predicts clone" "$r" "false"; fi
rm -f "$T/pd/rl"
expect "probe leaves src empty" "$(ls -A "$T/ps")" ""
expect "probe leaves dst empty" "$(ls -A "$T/pd")" ""
run 0 reflink-probe -- "$T/ps" "$T/ps"
expect "probe one dir leaves it empty" "$(ls -A "$T/ps")" ""

# ---- slice: fake cgroup v2 tree -----------------------------------------------
mkv2() { # mkv2 ROOT CONTROLLERS : root files plus a pre-created slice (the kernel's job)
    root=$1
    mkdir -p "$root/provision/t"
    printf '%s\n' "$2" >"$root/cgroup.controllers"
    : >"$root/cgroup.subtree_control"
    : >"$root/cgroup.procs"
    : >"$root/provision/cgroup.subtree_control"
    : >"$root/provision/cgroup.procs"
    printf '%s\n' "$2" >"$root/provision/cgroup.controllers"
    d="$root/provision/t"
    printf 'max 100000\n' >"$d/cpu.max"
    printf '100\n' >"$d/cpu.weight"
    printf 'max\n' >"$d/memory.max"
    printf 'max\n' >"$d/memory.high"
    printf 'max\n' >"$d/pids.max"
    : >"$d/cpuset.cpus"
    : >"$d/cgroup.procs"
    printf '%s\n' "$2" >"$d/cgroup.controllers"
}
V2="$T/v2"
mkv2 "$V2" "cpuset cpu io memory pids"
export PROVISION_CGROUP_ROOT="$V2"
run 0 slice show provision/t
expect "v2 version" "$(field version)" "2"
expect "v2 default memory" "$(field 'limits|memory.max')" "max"
expect "v2 default cpus" "$(field 'limits|cpus')" "max"
run 0 slice apply provision/t cpus=1.5 cpu.weight=200 memory.max=64M memory.high=32MiB pids.max=10 cpuset.cpus=0-1
expect "cpu.max file" "$(cat "$V2/provision/t/cpu.max")" "150000 100000"
expect "memory.max file" "$(cat "$V2/provision/t/memory.max")" "67108864"
expect "memory.high file" "$(cat "$V2/provision/t/memory.high")" "33554432"
expect "pids.max file" "$(cat "$V2/provision/t/pids.max")" "10"
expect "cpuset file" "$(cat "$V2/provision/t/cpuset.cpus")" "0-1"
contains "root subtree_control" "$(cat "$V2/cgroup.subtree_control")" "+memory"
contains "mid subtree_control" "$(cat "$V2/provision/cgroup.subtree_control")" "+pids"
expect "applied cpus" "$(field 'limits|cpus')" "1.5"
expect "applied weight" "$(field 'limits|cpu.weight')" "200"
expect "applied pids" "$(field 'limits|pids.max')" "10"
run 0 slice apply provision/t cpu.max=max memory.max=max
expect "cpu.max unlimited" "$(cat "$V2/provision/t/cpu.max")" "max"
run 0 slice show provision/t provision/none
expect "show many" "$(field 'slices|provision/none|exists')" "false"
expect "show many v" "$(field 'slices|provision/t|limits|pids.max')" "10"
# members block removal
printf '4242\n4243\n' >"$V2/provision/t/cgroup.procs"
run 0 slice show provision/t
expect "v2 members" "$(field members)" "2"
run 1 slice rm provision/t && contains "members" "$(field error)" "member"
[ -d "$V2/provision/t" ] && ok || bad "slice with members removed"
: >"$V2/provision/t/cgroup.procs"
run 0 slice rm provision/t
expect "v2 removed" "$(field removed)" "true"
[ ! -e "$V2/provision/t" ] && ok || bad "v2 slice still there"
run 0 slice rm provision/t
expect "rm absent" "$(field existed)" "false"
# a new slice whose files the kernel did not create: controller not enabled
run 1 slice apply provision/new cpus=1 && expect "not enabled" "$(field controller)" "cpu"
# a missing controller is named
V2B="$T/v2b"
mkv2 "$V2B" "cpu pids"
PROVISION_CGROUP_ROOT="$V2B" run 1 slice apply provision/t memory.max=1G
expect "missing controller" "$(field controller)" "memory"
contains "missing controller msg" "$(field error)" "memory"
PROVISION_CGROUP_ROOT="$T/nothing" run 1 slice show x
mkdir -p "$T/empty-root"
PROVISION_CGROUP_ROOT="$T/empty-root" run 1 slice show x
unset PROVISION_CGROUP_ROOT

# ---- slice: the real cgroup v1 (root only) ----------------------------------------
if [ "$(id -u)" -eq 0 ] && [ -e /sys/fs/cgroup/memory/cgroup.procs ] && [ ! -e /sys/fs/cgroup/cgroup.controllers ]; then
    run 0 slice apply "$V1_SLICE" cpus=0.5 memory.max=32M pids.max=7 cpu.weight=50
    expect "v1 version" "$(field version)" "1"
    expect "v1 quota" "$(cat /sys/fs/cgroup/cpu/$V1_SLICE/cpu.cfs_quota_us)" "50000"
    expect "v1 shares" "$(cat /sys/fs/cgroup/cpu/$V1_SLICE/cpu.shares)" "512"
    expect "v1 weight back" "$(field 'limits|cpu.weight')" "50"
    expect "v1 memory" "$(field 'limits|memory.max')" "33554432"
    expect "v1 pids" "$(field 'limits|pids.max')" "7"
    expect "v1 soft default" "$(field 'limits|memory.high')" "max"
    run 0 slice rm "$V1_SLICE"
    [ ! -e "/sys/fs/cgroup/memory/$V1_SLICE" ] && ok || bad "v1 slice still there"
else
    echo "skip: real cgroup v1 checks (need root and a v1 machine)"
fi

echo "native tests: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
