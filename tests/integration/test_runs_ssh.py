"""Running for real: host locks, the apply journal after a killed run,
Ctrl-C, and the plan JSON against its published schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.connection.ssh import SshConnection, SshOptions
from provisioner.engine.journal import summarize
from provisioner.engine.lock import HostLock
from tests.harness.sshd import SshFleet

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

if not os.path.exists("/usr/sbin/sshd"):
    pytest.skip("openssh-server is not installed (run .ci/install.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with SshFleet(3, tmp_path_factory.mktemp("runs")) as f:
        f.write_inventory()
        yield f


@pytest.fixture
def root():
    path = Path(f"/tmp/provision-runs-{uuid.uuid4().hex[:10]}")
    path.mkdir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _playbook(tmp_path: Path, root: Path, extra: list | None = None) -> Path:
    pb = tmp_path / "site.yml"
    resources = [
        {"directory": {"path": f"{root}/{{{{ inventory_hostname }}}}"}},
        {"file": {"path": f"{root}/{{{{ inventory_hostname }}}}/motd", "content": "hi\n"}},
    ] + (extra or [])
    pb.write_text(yaml.safe_dump([{"name": "runs", "hosts": "all", "resources": resources}]))
    return pb


def _connect(fleet: SshFleet, name: str) -> SshConnection:
    h = fleet.host(name)
    inv = yaml.safe_load(Path(fleet.inventory).read_text())["all"]["hosts"][name]
    conn = SshConnection(name, h["address"], port=h["port"], user=h["user"],
                         key_file=h["key_file"], known_hosts=str(fleet.known_hosts),
                         options=SshOptions())
    conn.vars = {"provision_lock_path": inv["provision_lock_path"]}
    conn.connect()
    return conn


def test_second_apply_on_a_locked_host_fails_naming_the_holder(fleet, root, tmp_path):
    pb = _playbook(tmp_path, root)
    conn = _connect(fleet, "h2")
    try:
        with HostLock(conn):
            r = CliRunner().invoke(main, ["apply", str(pb), "-i", str(fleet.inventory)])
        assert r.exit_code == 1, r.output
        assert "h2  locked" in r.output and "another apply holds the lock" in r.output
        assert f"pid {os.getpid()}" in r.output  # who holds it
        assert not (root / "h2").exists()
        assert (root / "h1" / "motd").exists() and (root / "h3" / "motd").exists()
    finally:
        conn.close()


def test_apply_waits_for_the_lock_when_asked(fleet, root, tmp_path):
    pb = _playbook(tmp_path, root)
    conn = _connect(fleet, "h1")
    lock = HostLock(conn)
    lock.acquire()
    threading.Timer(1.0, lock.release).start()
    try:
        r = CliRunner().invoke(main, ["apply", str(pb), "-i", str(fleet.inventory),
                                      "--lock-wait", "20"])
        assert r.exit_code == 0, r.output
        assert (root / "h1" / "motd").read_text() == "hi\n"
    finally:
        conn.close()


def test_lock_is_released_when_the_holder_dies(fleet):
    # a controller killed with SIGKILL: its SSH session drops, so does the lock
    inv = yaml.safe_load(Path(fleet.inventory).read_text())["all"]["hosts"]["h3"]
    code = (
        "import sys, time; sys.path.insert(0, {!r})\n"
        "from tests.integration.test_runs_ssh import _connect_args\n"
        "from provisioner.engine.lock import HostLock\n"
        "conn = _connect_args({!r})\n"
        "HostLock(conn).acquire(); print('held', flush=True); time.sleep(60)\n"
    ).format(str(REPO), json.dumps([fleet.host("h3"), str(fleet.known_hosts), inv["provision_lock_path"]]))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    conn = _connect(fleet, "h3")
    try:
        with pytest.raises(Exception, match="another apply holds the lock"):
            HostLock(conn).acquire()
        proc.kill()
        proc.wait()
        lock = HostLock(conn, wait=10)
        lock.acquire()  # released by the dead session, within the wait
        lock.release()
    finally:
        conn.close()


def _connect_args(args_json: str) -> SshConnection:
    host, known_hosts, lock_path = json.loads(args_json)
    conn = SshConnection(host["name"], host["address"], port=host["port"], user=host["user"],
                         key_file=host["key_file"], known_hosts=known_hosts)
    conn.vars = {"provision_lock_path": lock_path}
    conn.connect()
    return conn


def _slow_playbook(tmp_path: Path, root: Path) -> Path:
    marker = f"{root}/{{{{ inventory_hostname }}}}/slow-done"
    return _playbook(tmp_path, root, extra=[
        {"command": {"name": "slow step", "argv": ["sh", "-c", 'sleep 8; touch "$1"', "sh", marker],
                     "creates": marker}},
        {"file": {"path": f"{root}/{{{{ inventory_hostname }}}}/after", "content": "x\n",
                  "depends_on": ["command/slow step"]}},
    ])


def _start_apply(pb: Path, inventory: Path, state: Path) -> subprocess.Popen:
    env = dict(os.environ, PROVISION_STATE_DIR=str(state))
    return subprocess.Popen([sys.executable, "-m", "provisioner", "apply", str(pb), "-i",
                             str(inventory), "-v"], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 30) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not seen in: {seen}")


def test_killed_apply_is_reported_exactly_and_next_apply_converges(fleet, root, tmp_path):
    pb = _slow_playbook(tmp_path, root)
    state = tmp_path / "state"
    proc = _start_apply(pb, fleet.inventory, state)
    _wait_for(proc, "create command slow step")
    time.sleep(0.5)
    proc.kill()  # SIGKILL: no chance to write anything more
    proc.wait()
    journals = list((state / "journal").glob("*.jsonl"))
    assert len(journals) == 1
    info = summarize(str(journals[0]))
    assert not info["ended"]
    for host in fleet.names:
        h = info["hosts"][host]
        assert f"{host}/command/slow step" in h["in_flight"]
        assert f"{host}/file/{root}/{host}/after" in h["not_started"]
        assert f"{host}/file/{root}/{host}/motd" in h["done"]
    # the next apply reports the interrupted run, then converges from there
    env = dict(os.environ, PROVISION_STATE_DIR=str(state))
    r = subprocess.run([sys.executable, "-m", "provisioner", "apply", str(pb), "-i",
                        str(fleet.inventory)], cwd=str(REPO), env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "was interrupted" in r.stderr and "in flight (may be partly applied)" in r.stderr
    assert "not started" in r.stderr
    for host in fleet.names:
        assert (root / host / "after").read_text() == "x\n"
    assert not list((state / "journal").glob("*.jsonl"))[0:0]  # reported ones renamed
    assert list((state / "journal").glob("*.interrupted"))


def test_ctrl_c_finishes_in_flight_and_starts_nothing_new(fleet, root, tmp_path):
    pb = _slow_playbook(tmp_path, root)
    proc = _start_apply(pb, fleet.inventory, tmp_path / "state")
    seen = ""
    while not all(f"{h}: [3/4] create command slow step" in seen for h in fleet.names):
        seen += _wait_for(proc, "create command slow step")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    for host in fleet.names:
        assert (root / host / "slow-done").exists()  # in flight: finished
        assert not (root / host / "after").exists()  # not started


def test_plan_json_matches_published_schema(fleet, root, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "docs" / "plan.schema.json").read_text())
    pb = _playbook(tmp_path, root)
    r = CliRunner().invoke(main, ["plan", str(pb), "-i", str(fleet.inventory), "--json"])
    assert r.exit_code == 0, r.output
    jsonschema.validate(json.loads(r.stdout), schema)
    bad = json.loads(r.stdout)
    bad["hosts"]["h1"]["changes"][0]["action"] = "explode"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
