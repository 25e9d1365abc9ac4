"""Containers against a real dockerd (the harness's), reached the way a real
run reaches it: through an SshConnection to an ssh_fleet host, the daemon's
socket forwarded over that one SSH transport (docker system dial-stdio).

Driven through the engine: observe → plan_changes → apply_host, then a
re-plan that must be all no-op. No bridge networking here (dockerd runs with
--bridge=none, no iptables): containers use network_mode none or host.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
import uuid

import pytest

from modules import get_module
from provisioner.connection.local import LocalConnection
from provisioner.connection.ssh import SshConnection
from provisioner.engine.executor import apply_host
from provisioner.engine.observe import observe
from provisioner.engine.runner import plan_changes
from provisioner.errors import HostError, SpecError
from provisioner.plan import codec
from provisioner.plan.graph import order
from provisioner.plan.model import Action, HostPlan, Plan
from provisioner.resource import Origin, Resource
from provisioner.secret import REGISTRY, Secret
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import validate
from provisioner.ui.console import Console
from provisioner.ui.render import render_plan

pytestmark = pytest.mark.integration

# The daemons come from the shared harness (tests/harness/fixtures.py, session
# fixtures dockerd, docker_images, ssh_fleet, registered by tests/conftest.py).
pytest.importorskip("tests.harness.fixtures", reason="tests/harness/fixtures.py not there yet")
pytest.importorskip("docker", reason="the Docker SDK is not installed (pip install docker)")

OWNER_LABEL = "dev.provision.owner"


# -- helpers (shared with test_docker_images.py) -----------------------------------
def make(kind: str, fields: dict, owner: str, host: str = "h1") -> Resource:
    """A resource as the spec loader would make it: validated and normalised."""
    module = get_module(kind)
    ctx = SpecContext(file="/tmp/docker-it/spec.yml", line=1, field_prefix=f"{kind}",
                      field_lines={}, variables={}, host=host)
    desired = module.normalize(validate(fields, module.schema), ctx)
    return Resource(host, kind, desired[module.name_field], desired, Origin("spec.yml", 1),
                    owner=owner)


def with_deps(resources: list[Resource]) -> list[Resource]:
    for r in resources:
        r.depends_on = sorted(set(r.depends_on) |
                              set(get_module(r.kind).implicit_deps(r, resources)))
    return order(resources)


def plan(conn, resources):
    resources = with_deps(resources)
    return resources, plan_changes(resources, observe(conn, resources))


def converge(conn, resources, *, expect_failure: str | None = None):
    """plan + apply; asserts every change converged (or the named failure)."""
    resources, changes = plan(conn, resources)
    report = apply_host(conn, resources, changes)
    bad = [o for o in report.outcomes if o.status == "not converged"]
    assert not bad, [(o.address, o.message) for o in bad]
    if expect_failure is None:
        assert report.failed == 0, [(o.address, o.message) for o in report.outcomes]
    else:
        messages = " | ".join(o.message for o in report.outcomes if o.status == "failed")
        assert expect_failure in messages, messages
    return changes, report


def assert_noop(conn, resources):
    _, changes = plan(conn, resources)
    moving = [(c.address, c.action.value, c.changed_fields) for c in changes if c.action.changes]
    assert not moving, moving


def by_name(changes, name):
    return next(c for c in changes if c.name == name)


def ssh_connection(fleet, sock: str) -> SshConnection:
    host = fleet.hosts[0]
    conn = SshConnection("h1", host["address"], port=host["port"], user=host["user"],
                         key_file=host["key_file"], known_hosts=str(fleet.known_hosts))
    conn.connect()
    conn.vars = {"provision_docker_socket": sock}
    return conn


@pytest.fixture(scope="module")
def docker_cli(dockerd):
    return dockerd.client()


@pytest.fixture(scope="module")
def conn(ssh_fleet, dockerd):
    c = ssh_connection(ssh_fleet, str(dockerd.socket))
    yield c
    c.close()


@pytest.fixture
def owner(docker_cli):
    """A fresh owner (and name prefix) per test; its leftovers are removed after."""
    tag = f"dit{uuid.uuid4().hex[:8]}"
    yield tag
    for c in docker_cli.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={tag}"}):
        c.remove(force=True)
    for c in docker_cli.containers.list(all=True, filters={"name": tag}):
        c.remove(force=True)
    for v in docker_cli.volumes.list(filters={"name": tag}):
        v.remove(force=True)
    for net in docker_cli.networks.list(names=[tag]):
        net.remove()


# -- the core path -------------------------------------------------------------------
def test_lifecycle_over_ssh(conn, docker_cli, docker_images, owner):
    """create → no-op → limit change in place → env change recreates →
    stop/start → absent (the named volume stays)."""
    name, vol, slice_name = f"{owner}-web", f"{owner}-data", f"{owner}"
    spec = {"name": name, "image": docker_images.healthcheck, "network_mode": "none",
            "env": {"MODE": "prod"}, "volumes": [f"{vol}:/data"],
            "limits": {"memory": "64MiB", "cpus": 0.5, "pids": 64}, "slice": slice_name,
            "restart": "on-failure:2", "labels": {"team": "web"},
            "wait": "healthy", "wait_timeout": 20}
    volume = {"name": vol}

    def resources(**over):
        return [make("container", {**spec, **over}, owner), make("docker_volume", volume, owner)]

    changes, _ = converge(conn, resources())
    assert {c.action for c in changes} == {Action.CREATE}
    first = docker_cli.containers.get(name)
    assert first.attrs["Config"]["Labels"][OWNER_LABEL] == owner
    assert first.attrs["State"]["Health"]["Status"] == "healthy"
    # limits really reach the cgroup (v1 here), under the slice's cgroup parent
    cg = f"/sys/fs/cgroup/memory/provision/{slice_name}/{first.id}/memory.limit_in_bytes"
    if os.path.exists(cg):
        with open(cg) as fh:
            assert int(fh.read()) == 64 * 1024 * 1024
    assert_noop(conn, resources())

    # limits and restart policy: in place, same container
    changes, _ = converge(conn, resources(limits={"memory": "96MiB", "cpus": 1, "pids": 80},
                                          restart="always"))
    c = by_name(changes, name)
    assert c.action is Action.UPDATE and set(c.changed_fields) == {"memory", "cpus", "pids",
                                                                   "restart"}
    now = docker_cli.containers.get(name)
    assert now.id == first.id
    assert now.attrs["HostConfig"]["Memory"] == 96 * 1024 * 1024
    assert now.attrs["HostConfig"]["PidsLimit"] == 80
    spec.update(limits={"memory": "96MiB", "cpus": 1, "pids": 80}, restart="always")
    assert_noop(conn, resources())

    # env: recreate, and the plan says which field forces it
    changes, _ = converge(conn, resources(env={"MODE": "staging"}))
    c = by_name(changes, name)
    assert c.action is Action.REPLACE and c.replace_fields == ["env"]
    replaced = docker_cli.containers.get(name)
    assert replaced.id != first.id and "MODE=staging" in replaced.attrs["Config"]["Env"]
    spec["env"] = {"MODE": "staging"}
    assert_noop(conn, resources())

    # stop, then start: in place
    changes, _ = converge(conn, resources(state="stopped", wait=None))
    assert by_name(changes, name).changed_fields == ["state"]
    assert docker_cli.containers.get(name).status == "exited"
    assert_noop(conn, resources(state="stopped", wait=None))
    changes, _ = converge(conn, resources())
    assert by_name(changes, name).action is Action.UPDATE
    assert docker_cli.containers.get(name).id == replaced.id
    assert docker_cli.containers.get(name).status == "running"

    # absent: the container goes, its named volume stays
    gone = [make("container", {"name": name, "state": "absent"}, owner),
            make("docker_volume", volume, owner)]
    changes, _ = converge(conn, gone)
    assert by_name(changes, name).action is Action.DELETE
    assert not docker_cli.containers.list(all=True, filters={"name": f"^/{name}$"})
    assert docker_cli.volumes.get(vol).name == vol
    assert_noop(conn, gone)
    for d in ("memory", "cpu", "pids"):  # the parent cgroup docker made for the slice
        try:
            os.rmdir(f"/sys/fs/cgroup/{d}/provision/{slice_name}")
        except OSError:
            pass


def test_moved_tag_recreates(conn, docker_cli, docker_images, owner):
    tag = f"provision-test/{owner}:1"
    old_id = docker_images.build_healthcheck_image(tag, version=f"{owner}-1")
    name = f"{owner}-app"
    spec = [make("container", {"name": name, "image": tag, "network_mode": "none"}, owner)]
    converge(conn, spec)
    assert_noop(conn, spec)
    new_id = docker_images.build_healthcheck_image(tag, version=f"{owner}-2")
    assert new_id != old_id
    _, changes = plan(conn, spec)
    c = changes[0]
    assert c.action is Action.REPLACE and c.replace_fields == ["image"]
    assert f"image: {old_id[7:19]} → {new_id[7:19]} (tag moved)" in c.notes
    converge(conn, spec)
    assert docker_cli.containers.get(name).image.id == new_id
    assert_noop(conn, spec)
    docker_cli.containers.get(name).remove(force=True)
    docker_cli.images.remove(tag, force=True)


def test_wait_healthy_success_unhealthy_and_timeout(conn, docker_cli, docker_images, owner):
    ok = {"name": f"{owner}-ok", "image": docker_images.healthcheck, "network_mode": "none",
          "wait": "healthy", "wait_timeout": 20}
    t0 = time.monotonic()
    converge(conn, [make("container", ok, owner)])
    assert docker_cli.containers.get(ok["name"]).attrs["State"]["Health"]["Status"] == "healthy"
    assert time.monotonic() - t0 < 15
    # a check that fails: reported as unhealthy with the check's output
    sick = {"name": f"{owner}-sick", "image": docker_images.healthcheck, "network_mode": "none",
            "command": ["sh", "-c", "touch /tmp/unhealthy; trap 'exit 0' TERM; "
                        "sleep 86400 & wait"],
            "wait": "healthy", "wait_timeout": 20}
    _, report = converge(conn, [make("container", sick, owner)], expect_failure="unhealthy")
    # a check that never reports within the timeout
    slow = {"name": f"{owner}-slow", "image": docker_images.healthcheck,
            "network_mode": "none", "healthcheck": {"interval": "60s", "start_period": "60s"},
            "wait": "healthy", "wait_timeout": 1}
    t0 = time.monotonic()
    converge(conn, [make("container", slow, owner)], expect_failure="not healthy after 1s")
    assert time.monotonic() - t0 < 10


def test_secret_env_never_shown(conn, docker_cli, docker_images, owner):
    secret = f"pw-{uuid.uuid4().hex}"
    REGISTRY.add(secret)
    name = f"{owner}-sec"
    spec = {"name": name, "image": docker_images.healthcheck, "network_mode": "none",
            "env": {"USER_NAME": "app", "DB_PASSWORD": Secret(secret)}}
    converge(conn, [make("container", spec, owner)])
    assert f"DB_PASSWORD={secret}" in docker_cli.containers.get(name).attrs["Config"]["Env"]
    assert_noop(conn, [make("container", spec, owner)])
    # change the secret: the plan names env, shows neither value
    new_secret = f"pw-{uuid.uuid4().hex}"
    REGISTRY.add(new_secret)
    changed = dict(spec, env={"USER_NAME": "app", "DB_PASSWORD": Secret(new_secret)})
    resources, changes = plan(conn, [make("container", changed, owner)])
    assert changes[0].action is Action.REPLACE and changes[0].replace_fields == ["env"]
    the_plan = Plan(hosts={"h1": HostPlan("h1", changes)})
    text = codec.dumps(the_plan)
    out = io.StringIO()
    render_plan(Console(out, color=False), the_plan)
    for shown in (text, out.getvalue(), repr(changes[0].before), str(changes[0].after)):
        assert secret not in shown and new_secret not in shown
    assert json.loads(text)["hosts"]["h1"]["changes"][0]["before"]["env"]["DB_PASSWORD"] == \
        "(sensitive)"
    assert "USER_NAME" in out.getvalue()
    report = apply_host(conn, resources, changes)
    assert report.failed == 0
    assert f"DB_PASSWORD={new_secret}" in docker_cli.containers.get(name).attrs["Config"]["Env"]


def test_unowned_containers_left_alone(conn, docker_cli, docker_images, owner):
    bystander = docker_cli.containers.run(docker_images.healthcheck, name=f"{owner}-byst",
                                          network_mode="none", detach=True)
    # not in the spec: untouched, and not listed as ours (so prune never sees it)
    spec = [make("container", {"name": f"{owner}-mine", "image": docker_images.healthcheck,
                               "network_mode": "none"}, owner)]
    converge(conn, spec)
    owned = get_module("container").list_owned(conn, owner)
    assert set(owned) == {f"{owner}-mine"}
    # named in the spec with a difference: the plan warns, apply refuses, nothing changes
    named = [make("container", {"name": f"{owner}-byst", "image": docker_images.healthcheck,
                                "network_mode": "none", "restart": "always"}, owner)]
    _, changes = plan(conn, named)
    assert changes[0].action is Action.UPDATE
    assert any("not created by provision" in note for note in changes[0].notes)
    converge(conn, named, expect_failure="not created by provision")
    bystander.reload()
    assert bystander.status == "running"
    assert bystander.attrs["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
    gone = [make("container", {"name": f"{owner}-byst", "state": "absent"}, owner)]
    converge(conn, gone, expect_failure="not created by provision")
    assert docker_cli.containers.get(f"{owner}-byst").status == "running"
    # adopt: true takes it over
    adopted = [make("container", {"name": f"{owner}-byst", "image": docker_images.healthcheck,
                                  "network_mode": "none", "restart": "always", "adopt": True},
                    owner)]
    converge(conn, adopted)
    assert_noop(conn, adopted)


# -- bad inputs: clear errors, nothing changed ------------------------------------------
def test_unknown_image(conn, docker_cli, owner):
    spec = [make("container", {"name": f"{owner}-nope", "image": "no-such/image:404",
                               "network_mode": "none"}, owner)]
    converge(conn, spec, expect_failure="image no-such/image:404 is not on the host")
    assert not docker_cli.containers.list(all=True, filters={"name": owner})


def test_port_conflict_host_network(conn, docker_cli, docker_images, owner):
    port = _free_port()
    listen = ["nc", "-l", "-p", str(port)]
    first = {"name": f"{owner}-l1", "image": docker_images.busybox, "network_mode": "host",
             "command": listen, "stop_timeout": 1}
    converge(conn, [make("container", first, owner)])
    time.sleep(0.3)
    second = dict(first, name=f"{owner}-l2", wait="healthy", wait_timeout=10,
                  healthcheck={"test": "true", "interval": "200ms"})
    converge(conn, [make("container", second, owner)], expect_failure="exited")
    assert docker_cli.containers.get(f"{owner}-l1").status == "running"


def test_bad_spec_is_rejected_before_any_call(docker_images):
    with pytest.raises(SpecError) as err:
        make("container", {"name": "x", "image": docker_images.busybox,
                           "limits": {"memory": "2K"}}, "o")
    assert "limits.memory" in str(err.value)


def test_daemon_down_is_a_clear_error(ssh_fleet, tmp_path):
    # a socket file nobody listens on: what a crashed dockerd leaves behind
    dead = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(dead)
    s.close()
    spec = [make("container", {"name": "x", "image": "busybox:1", "network_mode": "none"}, "o")]
    for conn in (ssh_connection(ssh_fleet, dead), _local(dead),
                 ssh_connection(ssh_fleet, str(tmp_path / "missing.sock"))):
        with pytest.raises(HostError) as err:
            observe(conn, spec)
        assert "dockerd" in str(err.value) and ("not running" in str(err.value) or
                                                "cannot reach" in str(err.value))
        conn.close()


def test_local_connection_noop(dockerd, docker_images, owner):
    conn = _local(str(dockerd.socket))
    spec = [make("container", {"name": f"{owner}-loc", "image": docker_images.healthcheck,
                               "network_mode": "none", "command": "sh -c 'sleep 600'",
                               "stop_timeout": 1}, owner)]
    converge(conn, spec)
    assert_noop(conn, spec)
    conn.close()


def _local(sock: str) -> LocalConnection:
    conn = LocalConnection("h1")
    conn.vars = {"provision_docker_socket": sock}
    return conn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
