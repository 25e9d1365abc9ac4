"""The host kinds for real, on this machine, through LocalConnection (root).

For every kind: plan shows the change and changes nothing, apply makes it,
plan again is a no-op, and a change made by hand (drift) shows up. Names are
unique per run (`prov-test-<hex>`), files live under tmp_path, and everything
created is removed at the end, pass or fail.

The package test builds two versions of a tiny .deb, serves them from a
local flat repository and points apt at it alone through APT_CONFIG (a
private apt.conf: its own sources list, lists and cache), so nothing is
downloaded and the host's apt state is left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modules import get_module
from provisioner.connection.local import LocalConnection
from provisioner.engine.executor import HostReport, apply_host
from provisioner.engine.observe import observe
from provisioner.engine.runner import plan_changes
from provisioner.plan.graph import order
from provisioner.plan.model import Action, Change
from provisioner.resource import Origin, Resource
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import validate

pytestmark = pytest.mark.integration

if os.geteuid() != 0:
    pytest.skip("the host modules' integration tests run as root", allow_module_level=True)

HOST = "localhost"
HASH_A = "$6$provtestA$" + "a" * 86
HASH_B = "$6$provtestB$" + "b" * 86


def build(kind: str, **fields: Any) -> Resource:
    module = get_module(kind)
    ctx = SpecContext(file="/spec/site.yml", line=1, field_prefix=f"resources[0].{kind}",
                      field_lines={}, variables={}, host=HOST)
    validated = validate(fields, module.schema)
    validated.pop("depends_on", None)
    desired = module.normalize(validated, ctx)
    return Resource(host=HOST, kind=kind, name=desired[module.name_field], fields=desired,
                    origin=Origin("/spec/site.yml", 1))


@pytest.fixture(params=["local", "ssh"])
def conn(request) -> Iterator[LocalConnection]:
    """Every test runs twice: through a local connection, and over real SSH
    (an sshd of the harness fleet on loopback, strict host keys)."""
    if request.param == "local":
        with LocalConnection(HOST) as c:
            yield c
        return
    from provisioner.connection.ssh import SshConnection

    fleet = request.getfixturevalue("ssh_fleet")
    h = fleet.host("h1")
    c = SshConnection(HOST, h["address"], port=h["port"], user=h["user"], key_file=h["key_file"],
                      known_hosts=str(fleet.known_hosts))
    c.connect()
    try:
        yield c
    finally:
        c.close()


def plan(conn: LocalConnection, resources: list[Resource]) -> list[Change]:
    return plan_changes(resources, observe(conn, resources))


def actions(changes: list[Change]) -> list[Action]:
    return [c.action for c in changes]


def apply(conn: LocalConnection, resources: list[Resource]) -> tuple[list[Change], HostReport]:
    """Plan, apply, and insist every change applied and converged."""
    changes = plan(conn, resources)
    report = apply_host(conn, resources, changes)
    bad = [o for o in report.outcomes if o.status != "changed"]
    assert not bad, [(o.address, o.status, o.message) for o in bad]
    assert report.status == ("changed" if any(a.changes for a in actions(changes)) else "ok")
    return changes, report


def assert_noop(conn: LocalConnection, resources: list[Resource]) -> None:
    changes = plan(conn, resources)
    assert [(c.address, c.action, c.reason) for c in changes if c.action.changes] == []


def sh(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def unique(prefix: str = "prov-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def getent(db: str, key: str) -> list[str] | None:
    out = sh("getent", db, key, check=False)
    return out.stdout.strip().split(":") if out.returncode == 0 else None


def free_id(db: str, start: int = 61000) -> int:
    for candidate in range(start, start + 2000):
        if getent(db, str(candidate)) is None:
            return candidate
    raise AssertionError(f"no free id in {db}")


# -- line ---------------------------------------------------------------------------------

def test_line(conn, tmp_path):
    path = tmp_path / "sshd_config"
    path.write_bytes(b"# comment\r\n#Port 22\nUsePAM yes")  # mixed endings, no final newline
    os.chmod(path, 0o640)
    os.chown(path, 0, 4)  # group adm exists on Debian; any non-root gid will do
    original = path.read_bytes()
    port = build("line", path=str(path), regexp=r"^#?Port\s", line="Port 2222")
    extra = build("line", path=str(path), line="PermitRootLogin no")
    gone = build("line", path=str(path), regexp="^# comment", state="absent")
    resources = [port, extra, gone]

    changes = plan(conn, resources)
    assert actions(changes) == [Action.UPDATE, Action.CREATE, Action.DELETE]
    assert changes[0].before["line"] == "#Port 22" and changes[0].changed_fields == ["line"]
    assert path.read_bytes() == original  # plan changes nothing

    apply(conn, resources)
    assert path.read_bytes() == b"Port 2222\nUsePAM yes\nPermitRootLogin no"
    st = path.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, 4)
    assert_noop(conn, resources)

    # drift: someone edits the port back and re-adds the comment
    path.write_bytes(b"# comment\nPort 22\nUsePAM yes\nPermitRootLogin no")
    assert actions(plan(conn, resources)) == [Action.UPDATE, Action.NOOP, Action.DELETE]
    apply(conn, resources)
    assert path.read_bytes() == b"Port 2222\nUsePAM yes\nPermitRootLogin no"
    assert_noop(conn, resources)


def test_line_missing_file(conn, tmp_path):
    path = tmp_path / "new.env"
    strict = build("line", path=str(path), line="A=1")
    changes = plan(conn, [strict])
    assert actions(changes) == [Action.CREATE]
    assert any("apply fails" in n for n in changes[0].notes)
    report = apply_host(conn, [strict], changes)
    assert report.status == "failed" and "create: true" in report.error
    assert not path.exists()

    lenient = build("line", path=str(path), line="A=1", create=True)
    apply(conn, [lenient])
    assert path.read_text() == "A=1\n"
    assert_noop(conn, [lenient])
    assert_noop(conn, [build("line", path=str(tmp_path / "nope"), line="x", state="absent")])


def test_line_follows_symlink(conn, tmp_path):
    real = tmp_path / "real.conf"
    real.write_text("a\n")
    link = tmp_path / "link.conf"
    link.symlink_to(real)
    res = build("line", path=str(link), line="b")
    apply(conn, [res])
    assert link.is_symlink() and real.read_text() == "a\nb\n"
    assert_noop(conn, [res])


# -- group + user ---------------------------------------------------------------------------

@pytest.fixture
def accounts() -> Iterator[dict[str, str]]:
    names = {"user": unique(), "primary": unique(), "extra": unique(), "other": unique()}
    yield names
    sh("userdel", "--", names["user"], check=False)
    sh("groupdel", "--", names["user"], check=False)
    for key in ("primary", "extra", "other"):
        sh("groupdel", "--", names[key], check=False)


def test_group(conn, accounts):
    name = accounts["primary"]
    gid = free_id("group")
    res = build("group", name=name, gid=gid)
    assert actions(plan(conn, [res])) == [Action.CREATE]
    assert getent("group", name) is None

    apply(conn, [res])
    assert getent("group", name)[2] == str(gid)
    assert_noop(conn, [res])

    other_gid = free_id("group", gid + 1)
    sh("groupmod", "-g", str(other_gid), "--", name)  # drift
    changes = plan(conn, [res])
    assert actions(changes) == [Action.UPDATE] and changes[0].changed_fields == ["gid"]
    assert changes[0].before["gid"] == other_gid
    apply(conn, [res])
    assert getent("group", name)[2] == str(gid)

    absent = build("group", name=name, state="absent")
    assert actions(plan(conn, [absent])) == [Action.DELETE]
    apply(conn, [absent])
    assert getent("group", name) is None
    assert_noop(conn, [absent])


def test_user(conn, accounts, tmp_path):
    user, primary, extra, other = (accounts[k] for k in ("user", "primary", "extra", "other"))
    uid = free_id("passwd")
    home = str(tmp_path / "home")
    spec = dict(name=user, uid=uid, group=primary, groups=[extra], home=home,
                shell="/bin/sh", password=HASH_A, create_home=True)
    resources = order([build("user", **spec), build("group", name=primary),
                       build("group", name=extra), build("group", name=other)])
    assert [r.kind for r in resources][:2] == ["group", "group"]  # user after its groups
    assert resources.index(next(r for r in resources if r.kind == "user")) > [
        r.name for r in resources].index(extra)

    changes = plan(conn, resources)
    assert all(a is Action.CREATE for a in actions(changes))
    user_change = next(c for c in changes if c.kind == "user")
    assert "password" in user_change.after and HASH_A not in repr(user_change)
    assert getent("passwd", user) is None

    apply(conn, resources)
    entry = getent("passwd", user)
    assert entry[2] == str(uid) and entry[5] == home and entry[6] == "/bin/sh"
    assert entry[3] == getent("group", primary)[2]
    assert sh("id", "-Gn", "--", user).stdout.split() == [primary, extra]
    assert getent("shadow", user)[1] == HASH_A
    assert os.path.isdir(home)
    assert_noop(conn, resources)

    # drift: shell, password and groups changed by hand
    sh("usermod", "-s", "/bin/bash", "-G", other, "--", user)
    sh("chpasswd", "-e", input=f"{user}:{HASH_B}\n")
    changes = plan(conn, resources)
    user_change = next(c for c in changes if c.kind == "user")
    assert user_change.action is Action.UPDATE
    assert user_change.changed_fields == ["shell", "password", "groups"]
    assert HASH_B not in repr(user_change.before) and HASH_A not in repr(user_change.after)
    apply(conn, resources)
    assert getent("passwd", user)[6] == "/bin/sh"
    assert getent("shadow", user)[1] == HASH_A
    assert sh("id", "-Gn", "--", user).stdout.split() == [primary, extra]
    assert_noop(conn, resources)

    # append: adds the other group, keeps the rest
    appended = order([build("user", name=user, groups=[other], append=True)])
    assert actions(plan(conn, appended)) == [Action.UPDATE]
    apply(conn, appended)
    assert sorted(sh("id", "-Gn", "--", user).stdout.split()) == sorted([primary, extra, other])
    assert_noop(conn, appended)

    gone = [build("user", name=user, state="absent")]
    assert actions(plan(conn, gone)) == [Action.DELETE]
    apply(conn, gone)
    assert getent("passwd", user) is None
    assert_noop(conn, gone)


def test_user_with_a_declared_group_of_its_own_name(conn, accounts):
    user = accounts["user"]
    resources = order([build("user", name=user), build("group", name=user)])
    assert [r.kind for r in resources] == ["group", "user"]
    apply(conn, resources)
    assert sh("id", "-gn", "--", user).stdout.strip() == user
    assert_noop(conn, resources)


# -- command ----------------------------------------------------------------------------------

def test_command_guards(conn, tmp_path):
    marker = tmp_path / "made"
    creates = build("command", name="make marker", argv=["touch", str(marker)],
                    creates=str(marker))
    flag = tmp_path / "flag"
    unless = build("command", name="flag", cmd=f"touch '{flag}'", unless=f"test -e '{flag}'")
    resources = [creates, unless]
    changes = plan(conn, resources)
    assert actions(changes) == [Action.CREATE, Action.CREATE]
    assert changes[0].notes == ["may change the host"]
    assert not marker.exists() and not flag.exists()

    apply(conn, resources)  # the converge check re-reads the guards
    assert marker.exists() and flag.exists()
    assert_noop(conn, resources)

    marker.unlink()  # drift
    assert actions(plan(conn, resources)) == [Action.CREATE, Action.NOOP]


def test_command_unguarded_runs_every_time(conn, tmp_path):
    counter = tmp_path / "count"
    res = build("command", name="count", argv=["sh", "-c", 'echo x >> "$1"', "sh",
                                                str(counter)])
    for runs in (1, 2):
        changes = plan(conn, [res])
        assert actions(changes) == [Action.CREATE]
        assert "runs on every apply (no creates/unless)" in changes[0].notes
        apply(conn, [res])  # not converged would fail here: the check skips it
        assert counter.read_text() == "x\n" * runs


def test_command_chdir_env_and_shell(conn, tmp_path):
    out = tmp_path / "out"
    res = build("command", name="env", argv=["sh", "-c", 'pwd > out; printf %s "$GREETING" >> out'],
                chdir=str(tmp_path), env={"GREETING": "hi there; $(id)"}, creates="out")
    apply(conn, [res])
    assert out.read_text() == f"{tmp_path}\nhi there; $(id)"
    shell = build("command", name="pipe", cmd=f"echo piped | tr a-z A-Z > '{tmp_path}/p'",
                  shell=True, creates=str(tmp_path / "p"))
    apply(conn, [shell])
    assert (tmp_path / "p").read_text() == "PIPED\n"


def test_command_hostile_text_is_data(conn, tmp_path):
    pwned = tmp_path / "pwned"
    hostile = f"a; touch {pwned}; $(touch {pwned}) `touch {pwned}`"
    out = tmp_path / "echoed"
    res = build("command", name=hostile, argv=["sh", "-c", 'printf %s "$1" > "$2"', "sh",
                                                hostile, str(out)],
                unless=["grep", "-qF", "--", hostile, str(out)])
    apply(conn, [res])
    assert out.read_text() == hostile
    split = build("command", name="split", cmd=f"echo {hostile}")
    apply(conn, [split])
    assert not pwned.exists()


def test_command_failure(conn, tmp_path):
    res = build("command", name="boom", argv=["sh", "-c", "echo noise; echo boom >&2; exit 3"])
    report = apply_host(conn, [res], plan(conn, [res]))
    assert report.status == "failed"
    assert "exited 3: boom" in report.error


# -- package ------------------------------------------------------------------------------------

def _build_deb(workdir: Path, name: str, version: str) -> Path:
    root = workdir / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: provision tests <tests@example.invalid>\nSection: misc\n"
        "Priority: optional\nDescription: provision test package\n"
        " Installed and removed by the provision test suite.\n")
    share = root / "usr" / "share" / name
    share.mkdir(parents=True)
    (share / "version").write_text(version + "\n")
    deb = workdir / f"{name}_{version}_all.deb"
    sh("dpkg-deb", "--root-owner-group", "--build", str(root), str(deb))
    return deb


def _local_repo(base: Path, name: str, versions: list[str]) -> Path:
    """A flat repository with the given versions; returns the APT_CONFIG file."""
    repo = base / "repo"
    repo.mkdir()
    for version in versions:
        _build_deb(repo, name, version)
    packages = sh("dpkg-scanpackages", "--multiversion", ".", "/dev/null", cwd=repo).stdout
    (repo / "Packages").write_text(packages)
    release = sh("apt-ftparchive", "release", ".", cwd=repo).stdout
    (repo / "Release").write_text(release)
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d",
                "preferences.d"):
        (base / sub).mkdir(parents=True)
    (base / "sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    conf = base / "apt.conf"
    conf.write_text(
        f'Dir::Etc::SourceList "{base}/sources.list";\n'
        f'Dir::Etc::SourceParts "{base}/sources.list.d";\n'
        f'Dir::Etc::PreferencesParts "{base}/preferences.d";\n'
        f'Dir::State::Lists "{base}/lists";\n'
        f'Dir::Cache "{base}/cache";\n'
        'APT::Sandbox::User "root";\n'
        'Acquire::Languages "none";\n')
    return conf


def _installed(name: str) -> str | None:
    out = sh("dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", "--", name, check=False)
    if out.returncode != 0 or not out.stdout.startswith("ii"):
        return None
    return out.stdout.split("|", 1)[1]


@pytest.mark.skipif(not (shutil.which("dpkg-scanpackages") and shutil.which("apt-ftparchive")),
                    reason="needs dpkg-dev and apt-utils (run .ci/install.sh)")
def test_package(conn, tmp_path, monkeypatch):
    name = unique()
    conf = _local_repo(tmp_path, name, ["1.0", "1.1"])
    # apt reads APT_CONFIG itself: the host variable provision_environment puts
    # it in every command's environment, locally and over SSH; this process's
    # own apt-get calls below get it from ours
    conn.vars = {**conn.vars, "provision_environment": {"APT_CONFIG": str(conf)}}
    monkeypatch.setenv("APT_CONFIG", str(conf))
    sh("apt-get", "update", "-qq")
    try:
        pinned = [build("package", name=name, version="1.0")]
        changes = plan(conn, pinned)
        assert actions(changes) == [Action.CREATE]
        assert _installed(name) is None

        apply(conn, pinned)
        assert _installed(name) == "1.0"
        assert_noop(conn, pinned)

        latest = [build("package", name=name, state="latest")]
        changes = plan(conn, latest)
        assert actions(changes) == [Action.UPDATE]
        assert changes[0].notes == ["upgrades 1.0 → 1.1"]
        assert_noop(conn, [build("package", name=name)])  # present: 1.0 is fine
        apply(conn, latest)
        assert _installed(name) == "1.1"
        assert_noop(conn, latest)

        changes = plan(conn, pinned)  # back down to the pinned version
        assert actions(changes) == [Action.UPDATE] and changes[0].changed_fields == ["version"]
        apply(conn, pinned)
        assert _installed(name) == "1.0"

        sh("dpkg", "--remove", name)  # drift
        assert actions(plan(conn, pinned)) == [Action.CREATE]
        apply(conn, pinned)
        assert _installed(name) == "1.0"

        gone = [build("package", name=name, state="absent")]
        assert actions(plan(conn, gone)) == [Action.DELETE]
        apply(conn, gone)
        assert _installed(name) is None
        assert_noop(conn, gone)

        missing = [build("package", name=unique())]
        report = apply_host(conn, missing, plan(conn, missing))
        assert report.status == "failed" and "Unable to locate package" in report.error
    finally:
        sh("dpkg", "--purge", name, check=False)
