"""docker_image (build / import / load), docker_volume and docker_network
against the harness's dockerd, through an SSH connection: build contexts
and tarballs travel as API request bodies over the forwarded socket."""

from __future__ import annotations

import pytest

from modules import get_module
from provisioner.plan.model import Action

pytest.importorskip("tests.harness.fixtures", reason="tests/harness/fixtures.py not there yet")
pytest.importorskip("docker", reason="the Docker SDK is not installed (pip install docker)")

from tests.harness.images import busybox_rootfs, tar_directory  # noqa: E402
from tests.integration import test_docker_containers as base  # noqa: E402
from tests.integration.test_docker_containers import (  # noqa: E402
    assert_noop,
    by_name,
    converge,
    make,
    plan,
)

# the same fixtures as the container tests (their own instances here)
conn, docker_cli, owner = base.conn, base.docker_cli, base.owner

pytestmark = pytest.mark.integration


def test_build_from_controller_context(conn, docker_cli, docker_images, owner, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {docker_images.busybox}\nARG V=0\n"
                                    "COPY msg /msg\nRUN echo $V > /v\n")
    (ctx / "msg").write_text("one\n")
    (ctx / ".dockerignore").write_text("junk\n")
    tag = f"provision-test/{owner}-built:1"
    image = {"name": tag, "build": {"context": str(ctx), "args": {"V": "1"}}}
    app = {"name": f"{owner}-built", "image": tag, "network_mode": "none",
           "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]}
    spec = lambda: [make("docker_image", image, owner), make("container", app, owner)]  # noqa: E731
    changes, _ = converge(conn, spec())
    assert by_name(changes, tag).action is Action.CREATE
    first = docker_cli.images.get(tag)
    assert first.labels["dev.provision.owner"] == owner
    assert_noop(conn, spec())
    (ctx / "junk").write_text("ignored by .dockerignore")
    assert_noop(conn, spec())
    # the context changes: rebuilt, and the container on it is re-read and
    # recreated in the same apply (it was a no-op when the plan was made)
    (ctx / "msg").write_text("two\n")
    changes, _ = converge(conn, spec())
    assert by_name(changes, tag).action is Action.UPDATE
    assert by_name(changes, app["name"]).action is Action.NOOP
    assert "build context changed" in by_name(changes, tag).notes[0]
    second = docker_cli.images.get(tag)
    assert second.id != first.id
    assert docker_cli.containers.get(app["name"]).image.id == second.id
    assert_noop(conn, spec())
    assert tag in get_module("docker_image").list_owned(conn, owner)
    # a build that fails says why
    (ctx / "Dockerfile").write_text(f"FROM {docker_images.busybox}\nRUN exit 3\n")
    converge(conn, [make("docker_image", image, owner)], expect_failure="returned a non-zero")
    docker_cli.containers.get(app["name"]).remove(force=True)
    docker_cli.images.remove(tag, force=True)


def test_import_and_load_tarballs(conn, docker_cli, docker_images, owner, tmp_path):
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    tar = tar_directory(rootfs, tmp_path / "rootfs.tar")
    imported = {"name": f"provision-test/{owner}-imp:1", "import": str(tar),
                "changes": ['CMD ["/bin/sh"]']}
    converge(conn, [make("docker_image", imported, owner)])
    img = docker_cli.images.get(imported["name"])
    assert img.attrs["Config"]["Cmd"] == ["/bin/sh"]
    assert_noop(conn, [make("docker_image", imported, owner)])

    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as fh:
        for chunk in docker_cli.images.get(docker_images.busybox).save():
            fh.write(chunk)
    loaded = {"name": f"provision-test/{owner}-load:2", "load": str(saved)}
    converge(conn, [make("docker_image", loaded, owner)])
    assert docker_cli.images.get(loaded["name"]).id == docker_images.busybox_id
    assert_noop(conn, [make("docker_image", loaded, owner)])

    gone = [make("docker_image", {"name": n, "state": "absent"}, owner)
            for n in (imported["name"], loaded["name"])]
    converge(conn, gone)
    assert_noop(conn, gone)
    assert docker_cli.images.get(docker_images.busybox).id == docker_images.busybox_id


def test_unknown_pull_fails_clearly(conn, owner):
    # no registry is reachable here: the error names the image and says why
    spec = [make("docker_image", {"name": f"localhost:1/{owner}:1"}, owner)]
    converge(conn, spec, expect_failure=f"localhost:1/{owner}:1")


def test_volume_and_network(conn, docker_cli, owner):
    vol, net = f"{owner}-vol", f"{owner}-net"
    spec = [make("docker_volume", {"name": vol, "labels": {"app": "a"}}, owner),
            make("docker_network", {"name": net, "internal": True, "labels": {"app": "a"}},
                 owner)]
    changes, _ = converge(conn, spec)
    assert {c.action for c in changes} == {Action.CREATE}
    assert_noop(conn, spec)
    assert vol in get_module("docker_volume").list_owned(conn, owner)
    assert net in get_module("docker_network").list_owned(conn, owner)
    # a volume cannot change in place: refused unless recreate: true
    relabel = [make("docker_volume", {"name": vol, "labels": {"app": "b"}}, owner)]
    _, changes = plan(conn, relabel)
    assert changes[0].action is Action.REPLACE
    converge(conn, relabel, expect_failure="loses its data")
    assert docker_cli.volumes.get(vol).attrs["Labels"]["app"] == "a"
    relabel = [make("docker_volume", {"name": vol, "labels": {"app": "b"}, "recreate": True},
                    owner)]
    converge(conn, relabel)
    assert_noop(conn, relabel)
    # a network: replaced when it differs, deleted when absent
    changed = [make("docker_network", {"name": net, "internal": False}, owner)]
    changes, _ = converge(conn, changed)
    assert changes[0].action is Action.REPLACE
    assert docker_cli.networks.get(net).attrs["Internal"] is False
    gone = [make("docker_network", {"name": net, "state": "absent"}, owner),
            make("docker_volume", {"name": vol, "state": "absent"}, owner)]
    converge(conn, gone)
    assert_noop(conn, gone)
    assert not docker_cli.networks.list(names=[net])
