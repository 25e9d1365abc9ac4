"""The executor on fakes: dependents re-planned in the same apply, failures
skipping dependents, interruption, and the converge check catching a module
that does not do what it says."""

from __future__ import annotations

from typing import Any

import pytest

import modules
from provisioner.connection.base import Connection, Result
from provisioner.engine.executor import apply_host
from provisioner.engine.observe import observe
from provisioner.engine.runner import plan_changes
from provisioner.errors import HostError
from provisioner.module import Module
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource


class FakeConn(Connection):
    host = "h1"

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def run(self, argv, *, stdin=None, sudo=None, timeout=None) -> Result:
        return Result(0, b"", b"")

    def put(self, path, data, *, mode=None) -> None:
        pass

    def get(self, path) -> bytes:
        return b""


class FakeImage(Module):
    """An image whose version can change; containers record the version
    they were created from."""

    kind = "fakeimage"
    uses_api = True

    def read_many(self, conn, resources):
        v = conn.state.get("image")
        return {r.address: ({"name": r.name, "version": v} if v is not None else None)
                for r in resources}

    def apply(self, conn, res, change):
        conn.state["image"] = res.fields["version"]


class FakeContainer(Module):
    kind = "fakecontainer"
    uses_api = True
    replace_fields = frozenset({"image_current"})

    def read_many(self, conn, resources):
        if "container" not in conn.state:
            return {r.address: None for r in resources}
        current = conn.state["container"] == conn.state.get("image")
        return {r.address: {"name": r.name, "image_current": current} for r in resources}

    def apply(self, conn, res, change):
        if res.fields.get("fail"):
            raise HostError(conn.host, "container engine said no")
        if res.fields.get("lie"):
            return  # claims success, changes nothing
        conn.state["container"] = conn.state.get("image")


@pytest.fixture(autouse=True)
def fake_kinds():
    modules._loaded["fakeimage"] = FakeImage()
    modules._loaded["fakecontainer"] = FakeContainer()
    yield
    del modules._loaded["fakeimage"], modules._loaded["fakecontainer"]


def resources(version: int, **container: Any) -> list[Resource]:
    image = Resource("h1", "fakeimage", "app", {"name": "app", "version": version},
                     Origin("pb.yml", 1))
    ctr = Resource("h1", "fakecontainer", "web",
                   {"name": "web", "image_current": True, **container}, Origin("pb.yml", 2),
                   depends_on=[image.address])
    return [image, ctr]


def plan(conn, rs):
    return plan_changes(rs, observe(conn, rs))


def test_dependent_is_replanned_when_its_dependency_changes():
    conn = FakeConn()
    conn.state = {"image": 1, "container": 1}
    rs = resources(2)
    changes = plan(conn, rs)
    assert [c.action for c in changes] == [Action.UPDATE, Action.NOOP]
    report = apply_host(conn, rs, changes)
    assert [(o.address, o.action, o.status) for o in report.outcomes] == [
        ("h1/fakeimage/app", Action.UPDATE, "changed"),
        ("h1/fakecontainer/web", Action.REPLACE, "changed"),
    ]
    assert conn.state == {"image": 2, "container": 2}
    assert all(c.action is Action.NOOP for c in plan(conn, rs))


def test_unchanged_dependency_leaves_dependents_alone():
    conn = FakeConn()
    conn.state = {"image": 2, "container": 2}
    rs = resources(2)
    report = apply_host(conn, rs, plan(conn, rs))
    assert report.outcomes == [] and report.status == "ok"


def test_failure_skips_dependents_and_names_the_cause():
    conn = FakeConn()
    rs = resources(1, fail=True)
    extra = Resource("h1", "fakecontainer", "sidecar", {"name": "sidecar", "image_current": True},
                     Origin("pb.yml", 3), depends_on=["h1/fakecontainer/web"])
    rs.append(extra)
    report = apply_host(conn, rs, plan(conn, rs))
    statuses = {o.address: (o.status, o.message) for o in report.outcomes}
    assert statuses["h1/fakecontainer/web"] == ("failed", "container engine said no")
    assert statuses["h1/fakecontainer/sidecar"] == ("skipped",
                                                    "depends on failed h1/fakecontainer/web")
    assert report.status == "failed"


def test_converge_check_catches_a_module_that_changes_nothing():
    conn = FakeConn()
    conn.state = {"image": 1}
    rs = resources(1, lie=True)
    report = apply_host(conn, rs, plan(conn, rs))
    web = next(o for o in report.outcomes if o.address == "h1/fakecontainer/web")
    assert web.status == "not converged" and "did not converge" in web.message
    assert report.status == "failed"


def test_stop_request_starts_nothing_new():
    conn = FakeConn()
    rs = resources(1)
    report = apply_host(conn, rs, plan(conn, rs), should_stop=lambda: True)
    assert {o.status for o in report.outcomes} == {"skipped"}
    assert report.status == "interrupted" and conn.state == {}
