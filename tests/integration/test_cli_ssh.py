"""The CLI end to end against real OpenSSH servers on loopback ports, with
strict host-key checking on. Every host is this machine, so every path a
playbook writes includes inventory_hostname."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.cli import main
from tests.harness.sshd import SshFleet

pytestmark = pytest.mark.integration

if not os.path.exists("/usr/sbin/sshd"):
    pytest.skip("openssh-server is not installed (run .ci/install.sh)", allow_module_level=True)

SECRET = "s3cret-Value-9f8e7d"

PLAYBOOK = """\
- name: fleet
  hosts: all
  vars:
    greeting: hello
    token: !secret {secret}
  resources:
    - directory: {{path: "{{{{ root }}}}/{{{{ inventory_hostname }}}}", mode: "0755"}}
    - file:
        path: "{{{{ root }}}}/{{{{ inventory_hostname }}}}/motd"
        content: "{{{{ greeting }}}} from {{{{ inventory_hostname }}}}\\n"
    - file:
        path: "{{{{ root }}}}/{{{{ inventory_hostname }}}}/token"
        content: "token={{{{ token }}}}\\n"
        mode: "0600"
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    with SshFleet(5, base) as f:
        f.write_inventory()
        yield f


@pytest.fixture
def root():
    path = Path(f"/tmp/provision-it-{uuid.uuid4().hex[:10]}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def playbook(tmp_path):
    path = tmp_path / "site.yml"
    path.write_text(PLAYBOOK.format(secret=SECRET))
    return path


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_plan_changes_nothing_apply_converges_second_run_noop(fleet, root, playbook):
    inv = fleet.inventory
    r = run("plan", playbook, "-i", inv, "-e", f"root={root}", "--detailed-exitcode")
    assert r.exit_code == 2, r.output
    assert "Plan: 15 to create" in r.output
    assert list(root.iterdir()) == []  # plan touched nothing
    r = run("apply", playbook, "-i", inv, "-e", f"root={root}")
    assert r.exit_code == 0, r.output
    assert "5 hosts (5 changed)" in r.output
    for name in fleet.names:
        assert (root / name / "motd").read_text() == f"hello from {name}\n"
        assert oct((root / name / "token").stat().st_mode & 0o777) == "0o600"
    r = run("plan", playbook, "-i", inv, "-e", f"root={root}", "--detailed-exitcode")
    assert r.exit_code == 0, r.output
    assert "No changes. 15 resources up to date on 5 hosts." in r.output
    # drift on one host shows up on that host only
    (root / "h3" / "motd").write_text("edited by hand\n")
    r = run("plan", playbook, "-i", inv, "-e", f"root={root}", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    changed = [c["address"] for h in doc["hosts"].values() for c in h["changes"]
               if c["action"] != "no-op"]
    assert changed == [f"h3/file/{root}/h3/motd"]


def test_limit_and_extra_vars(fleet, root, playbook):
    r = run("apply", playbook, "-i", fleet.inventory, "-e", f"root={root}",
            "-e", "greeting=bonjour", "--limit", "h1:h4")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in root.iterdir()) == ["h1", "h4"]
    assert (root / "h4" / "motd").read_text() == "bonjour from h4\n"


def test_saved_plan_round_trip_and_stale_host_refused(fleet, root, playbook, tmp_path):
    plan_file = tmp_path / "plan.json"
    r = run("plan", playbook, "-i", fleet.inventory, "-e", f"root={root}", "-o", plan_file)
    assert r.exit_code == 0, r.output
    doc = json.loads(plan_file.read_text())
    assert doc["format_version"] == 1 and doc["summary"]["create"] == 15
    r = run("show", plan_file)
    assert r.exit_code == 0 and "Plan: 15 to create" in r.output
    # the world moves on h2 after the plan was made
    (root / "h2").mkdir()
    (root / "h2" / "motd").write_text("somebody else wrote this\n")
    r = run("apply", plan_file)
    assert r.exit_code == 1, r.output
    assert "plan is stale for host h2" in r.output
    assert (root / "h2" / "motd").read_text() == "somebody else wrote this\n"
    for name in ("h1", "h3", "h4", "h5"):
        assert (root / name / "motd").read_text() == f"hello from {name}\n"
    # a fresh plan then converges h2 too
    r = run("apply", playbook, "-i", fleet.inventory, "-e", f"root={root}")
    assert r.exit_code == 0, r.output
    assert (root / "h2" / "motd").read_text() == "hello from h2\n"


def test_saved_plan_refused_when_spec_changed(fleet, root, playbook, tmp_path):
    plan_file = tmp_path / "plan.json"
    assert run("plan", playbook, "-i", fleet.inventory, "-e", f"root={root}", "-o",
               plan_file).exit_code == 0
    playbook.write_text(playbook.read_text().replace("greeting: hello", "greeting: changed"))
    r = run("apply", plan_file)
    assert r.exit_code == 1
    assert "changed since this plan was made" in r.output
    assert list(root.iterdir()) == []


def test_unreachable_host_reported_while_others_converge(fleet, root, playbook, tmp_path):
    inv = yaml.safe_load(Path(fleet.inventory).read_text())
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()
    inv["all"]["hosts"]["ghost"] = {"ansible_host": "127.0.0.1", "ansible_port": closed_port}
    inv_file = tmp_path / "inv.yml"
    inv_file.write_text(yaml.safe_dump(inv))
    r = run("apply", playbook, "-i", inv_file, "-e", f"root={root}", "--connect-timeout", "2")
    assert r.exit_code == 1, r.output
    assert "ghost" in r.output and "unreachable" in r.output
    assert "connection refused" in r.output.lower() or "cannot connect" in r.output
    assert sorted(p.name for p in root.iterdir()) == fleet.names


def test_changed_host_key_refused(root, playbook, tmp_path):
    with SshFleet(1, tmp_path / "keyfleet") as f:
        inv = f.write_inventory()
        assert run("plan", playbook, "-i", inv, "-e", f"root={root}").exit_code == 0
        f.regenerate_host_key("h1", update_known_hosts=False)
        r = run("apply", playbook, "-i", inv, "-e", f"root={root}")
        assert r.exit_code == 1
        assert "HOST KEY CHANGED" in r.output
        assert list(root.iterdir()) == []


def test_unknown_host_key_refused_unless_accepted(root, playbook, tmp_path):
    with SshFleet(1, tmp_path / "newfleet") as f:
        inv = f.write_inventory()
        f.known_hosts.write_text("")
        r = run("plan", playbook, "-i", inv, "-e", f"root={root}")
        assert r.exit_code == 1 and "unknown host key" in r.output
        r = run("apply", playbook, "-i", inv, "-e", f"root={root}", "--accept-new-host-keys")
        assert r.exit_code == 0, r.output
        assert "ssh-ed25519" in f.known_hosts.read_text()


def test_hostile_names_reach_the_host_intact(fleet, root, tmp_path):
    victim = root / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep me")
    hostile = f"{root}/a; rm -rf {victim}; $(touch {root}/pwned) `id`"
    pb = tmp_path / "hostile.yml"
    pb.write_text(yaml.safe_dump([{
        "name": "hostile", "hosts": "h1",
        "resources": [
            {"directory": {"path": hostile}},
            {"file": {"path": hostile + "/-rf", "content": "$(touch x)\n; rm -rf /\n"}},
        ],
    }]))
    r = run("apply", pb, "-i", fleet.inventory)
    assert r.exit_code == 0, r.output
    assert (victim / "keep").read_text() == "keep me"
    assert not (root / "pwned").exists()
    assert Path(hostile, "-rf").read_text() == "$(touch x)\n; rm -rf /\n"
    r = run("plan", pb, "-i", fleet.inventory, "--detailed-exitcode")
    assert r.exit_code == 0, r.output


def test_secret_never_in_output(fleet, root, playbook, tmp_path):
    plan_file = tmp_path / "plan.json"
    outputs = []
    for args in (["plan", playbook, "-o", plan_file, "-v"], ["plan", playbook, "--json"],
                 ["apply", playbook, "-v"], ["apply", playbook, "--json"]):
        r = run(*args, "-i", fleet.inventory, "-e", f"root={root}")
        assert r.exit_code == 0, r.output
        outputs.append(r.output)
    # change the secret-bearing file by hand: the diff must not show old or new value
    (root / "h1" / "token").write_text(f"token={SECRET}-old\n")
    r = run("plan", playbook, "-i", fleet.inventory, "-e", f"root={root}", "-v")
    outputs.append(r.output)
    assert "(sensitive)" in r.output
    for text in outputs + [plan_file.read_text()]:
        assert SECRET not in text
    assert (root / "h2" / "token").read_text() == f"token={SECRET}\n"


def test_facts_over_ssh(fleet):
    r = run("facts", "h2", "-i", fleet.inventory)
    assert r.exit_code == 0, r.output
    facts = json.loads(r.stdout)["h2"]["host"]
    assert facts["user"] == "root" and facts["arch"] and facts["cpus"] >= 1


def test_target_takes_one_resource_and_what_it_depends_on(fleet, root, playbook):
    address = f"h2/file/{root}/h2/motd"
    r = run("plan", playbook, "-i", fleet.inventory, "-e", f"root={root}", "--json",
            "--target", address)
    assert r.exit_code == 0, r.output
    planned = [c["address"] for h in json.loads(r.stdout)["hosts"].values() for c in h["changes"]]
    # the file and, through the implicit edge, its directory; not the token file
    assert planned == [f"h2/directory/{root}/h2", address]
    r = run("apply", playbook, "-i", fleet.inventory, "-e", f"root={root}", "-t", address)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in root.iterdir()) == ["h2"]
    assert sorted(p.name for p in (root / "h2").iterdir()) == ["motd"]
    r = run("plan", playbook, "-i", fleet.inventory, "-e", f"root={root}",
            "-t", f"h2/file/{root}/h2/motdd")
    assert r.exit_code == 1 and "did you mean" in r.output
