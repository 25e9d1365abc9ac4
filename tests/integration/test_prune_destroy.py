"""prune and destroy through the CLI, over SSH, on the harness dockerd:
only resources carrying this spec's ownership label are ever deleted."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(ssh_fleet, dockerd, docker_images, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISION_STATE_DIR", str(tmp_path / "state"))
    tag = "pr" + uuid.uuid4().hex[:6]
    doc = yaml.safe_load(Path(ssh_fleet.inventory).read_text())
    doc["all"]["hosts"] = {"h1": dict(doc["all"]["hosts"]["h1"],
                                      provision_docker_socket=str(dockerd.socket))}
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump(doc))
    client = dockerd.client()
    # a container this tool did not create, with a name like ours
    client.containers.create(docker_images.busybox, ["sleep", "600"], name=f"{tag}-unowned",
                             network_mode="none")
    yield tag, inv, client, docker_images.busybox
    for c in client.containers.list(all=True, filters={"name": tag}):
        c.remove(force=True)
    client.close()


def _playbook(tmp_path: Path, tag: str, image: str, names: list[str], prune: bool) -> Path:
    pb = tmp_path / "site.yml"
    pb.write_text(yaml.safe_dump([{
        "name": "apps", "hosts": "h1", "prune": prune,
        "vars": {"provision_owner": f"owner-{tag}"},
        "resources": [{"container": {"name": f"{tag}-{n}", "image": image, "network_mode": "none",
                                     "command": ["sleep", "600"]}} for n in names],
    }]))
    return pb


def _names(client, tag: str) -> set[str]:
    return {c.name for c in client.containers.list(all=True, filters={"name": tag})}


def test_prune_deletes_only_owned_resources_that_left_the_spec(setup, tmp_path):
    tag, inv, client, image = setup
    pb = _playbook(tmp_path, tag, image, ["a", "b"], prune=True)
    r = CliRunner().invoke(main, ["apply", str(pb), "-i", str(inv)])
    assert r.exit_code == 0, r.output
    assert _names(client, tag) == {f"{tag}-a", f"{tag}-b", f"{tag}-unowned"}
    # b leaves the spec
    pb = _playbook(tmp_path, tag, image, ["a"], prune=True)
    r = CliRunner().invoke(main, ["plan", str(pb), "-i", str(inv), "--json"])
    assert r.exit_code == 0, r.output
    changes = [c for c in json.loads(r.stdout)["hosts"]["h1"]["changes"] if c["action"] != "no-op"]
    assert [(c["name"], c["action"], c["reason"]) for c in changes] == [
        (f"{tag}-b", "delete", "no longer declared")]
    r = CliRunner().invoke(main, ["apply", str(pb), "-i", str(inv)])
    assert r.exit_code == 0, r.output
    assert _names(client, tag) == {f"{tag}-a", f"{tag}-unowned"}
    r = CliRunner().invoke(main, ["plan", str(pb), "-i", str(inv), "--detailed-exitcode"])
    assert r.exit_code == 0, r.output
    # without prune, a container that left the spec is left alone
    pb = _playbook(tmp_path, tag, image, [], prune=False)
    r = CliRunner().invoke(main, ["plan", str(pb), "-i", str(inv), "--detailed-exitcode"])
    assert r.exit_code == 0, r.output


def test_destroy_deletes_what_the_spec_declares_and_nothing_unowned(setup, tmp_path):
    tag, inv, client, image = setup
    pb = _playbook(tmp_path, tag, image, ["a", "b"], prune=False)
    assert CliRunner().invoke(main, ["apply", str(pb), "-i", str(inv)]).exit_code == 0
    r = CliRunner().invoke(main, ["destroy", str(pb), "-i", str(inv)])
    assert r.exit_code == 1 and "--yes" in r.output  # not a terminal: needs --yes
    assert _names(client, tag) == {f"{tag}-a", f"{tag}-b", f"{tag}-unowned"}
    r = CliRunner().invoke(main, ["destroy", str(pb), "-i", str(inv), "--yes"])
    assert r.exit_code == 0, r.output
    assert "2 to delete" in r.output
    assert _names(client, tag) == {f"{tag}-unowned"}
