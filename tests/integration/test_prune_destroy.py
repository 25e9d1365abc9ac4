"""prune and destroy through the CLI, over SSH, on the harness dockerd:
only resources carrying this spec's ownership label are ever deleted."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

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


# -- slices: the ownership mark lives beside cgroupfs -------------------------------------

CG = Path("/sys/fs/cgroup")
CORE = ("cpu", "memory", "pids", "cpuset")
needs_v1 = pytest.mark.skipif(
    os.geteuid() != 0 or not (CG / "memory" / "cgroup.procs").exists()
    or (CG / "cgroup.controllers").exists(), reason="needs root and the real cgroup v1")


def _slice_dirs(name: str) -> list[Path]:
    return [p for p in CG.glob(f"*/provision/{name}") if p.is_dir()]


def _slice_marks(run_dir: Path) -> dict[str, str]:
    return {p.name[: -len(".owner")]: json.loads(p.read_text())["owner"]
            for p in (run_dir / "slices").glob("*.owner")}


def _slice_playbook(path: Path, owner: str, slices: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump([{
        "name": "budgets", "hosts": "h1", "prune": True, "vars": {"provision_owner": owner},
        "resources": [{"slice": {"name": name, **limits}} for name, limits in slices.items()],
    }]))
    return path


@pytest.fixture
def slice_setup(ssh_fleet, tmp_path, monkeypatch):
    """h1 over SSH with its own marks directory; every <tag>-* slice removed after."""
    monkeypatch.setenv("PROVISION_STATE_DIR", str(tmp_path / "state"))
    tag = "ps" + uuid.uuid4().hex[:6]
    run_dir = tmp_path / "run"
    doc = yaml.safe_load(Path(ssh_fleet.inventory).read_text())
    doc["all"]["hosts"] = {"h1": dict(doc["all"]["hosts"]["h1"], provision_run_dir=str(run_dir))}
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump(doc))
    yield tag, inv, run_dir
    for top in CG.glob(f"*/provision/{tag}-*"):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            d.rmdir()
        top.rmdir()


@needs_v1
def test_prune_deletes_an_owned_slice_that_left_the_spec_and_nothing_else(slice_setup,
                                                                          tmp_path):
    tag, inv, run_dir = slice_setup
    a, b, theirs, byhand = (f"{tag}-{n}" for n in ("a", "b", "theirs", "byhand"))
    owner = f"owner-{tag}"
    site = tmp_path / "site.yml"

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, [*args, "-i", str(inv)])

    _slice_playbook(site, owner, {a: {"cpus": 0.5, "pids": 64}, b: {"memory": "64MiB"}})
    r = cli("apply", str(site))
    assert r.exit_code == 0, r.output
    # another spec's slice, and one made by hand under /provision
    other = _slice_playbook(tmp_path / "other.yml", f"other-{tag}", {theirs: {"pids": 32}})
    r = cli("apply", str(other))
    assert r.exit_code == 0, r.output
    for c in ("cpu", "memory", "pids"):
        (CG / c / "provision" / byhand).mkdir()
    assert _slice_marks(run_dir) == {a: owner, b: owner, theirs: f"other-{tag}"}
    assert len(_slice_dirs(b)) == len(CORE)

    # b leaves the spec: exactly its delete, for the reason prune gives
    _slice_playbook(site, owner, {a: {"cpus": 0.5, "pids": 64}})
    r = cli("plan", str(site), "--json")
    assert r.exit_code == 0, r.output
    changes = json.loads(r.stdout)["hosts"]["h1"]["changes"]
    moving = [(c["kind"], c["name"], c["action"], c["reason"])
              for c in changes if c["action"] != "no-op"]
    assert moving == [("slice", b, "delete", "no longer declared")]
    assert {c["name"] for c in changes} == {a, b}  # theirs and byhand are not even listed
    # applied as a saved plan: the prune delete is re-read and must match
    plan_file = tmp_path / "plan.json"
    r = cli("plan", str(site), "-o", str(plan_file))
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["apply", str(plan_file)])
    assert r.exit_code == 0, r.output
    assert _slice_dirs(b) == []
    assert _slice_marks(run_dir) == {a: owner, theirs: f"other-{tag}"}
    assert len(_slice_dirs(a)) == len(_slice_dirs(theirs)) == len(CORE)
    assert len(_slice_dirs(byhand)) == 3
    r = cli("plan", str(site), "--detailed-exitcode")
    assert r.exit_code == 0, r.output

    # destroy: what the spec declares, with its mark; never the others
    r = cli("destroy", str(site), "--yes")
    assert r.exit_code == 0, r.output
    assert _slice_dirs(a) == [] and _slice_marks(run_dir) == {theirs: f"other-{tag}"}
    assert len(_slice_dirs(theirs)) == len(CORE) and len(_slice_dirs(byhand)) == 3


@needs_v1
def test_prune_removes_a_container_before_the_slice_it_was_in(setup, slice_setup, dockerd,
                                                              tmp_path):
    """Both dropped at once: one apply deletes the member first, then its slice."""
    tag, _, client, image = setup
    stag, inv, run_dir = slice_setup
    doc = yaml.safe_load(inv.read_text())
    doc["all"]["hosts"]["h1"]["provision_docker_socket"] = str(dockerd.socket)
    inv.write_text(yaml.safe_dump(doc))
    tenant, keep = f"{stag}-tenant", f"{stag}-keep"
    site = tmp_path / "site.yml"

    def write(with_tenant: bool) -> None:
        resources: list[dict] = [{"slice": {"name": keep, "pids": 16}}]
        if with_tenant:
            resources += [{"slice": {"name": tenant, "pids": 64}},
                          {"container": {"name": f"{tag}-member", "image": image,
                                         "network_mode": "none", "command": ["sleep", "600"],
                                         "slice": tenant, "stop_timeout": 1}}]
        # prune: true would cover only the kinds still declared (no container)
        site.write_text(yaml.safe_dump([{"name": "t", "hosts": "h1",
                                         "prune": ["slice", "container"],
                                         "vars": {"provision_owner": f"owner-{stag}"},
                                         "resources": resources}]))

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, [*args, "-i", str(inv)])

    write(True)
    r = cli("apply", str(site))
    assert r.exit_code == 0, r.output
    assert f"{tag}-member" in _names(client, tag) and _slice_dirs(tenant)
    write(False)
    r = cli("apply", str(site))
    assert r.exit_code == 0, r.output
    assert f"{tag}-member" not in _names(client, tag)
    assert _slice_dirs(tenant) == [] and tenant not in _slice_marks(run_dir)
    r = cli("plan", str(site), "--detailed-exitcode")
    assert r.exit_code == 0, r.output
