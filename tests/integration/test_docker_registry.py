"""docker_image's pull path against a real registry: Debian's docker-registry
(distribution 2.x) on a loopback port, started by the test with its storage
in the test's directory. dockerd trusts 127.0.0.0/8 as an insecure registry,
so no TLS is needed. A tag that moves in the registry is seen by
`pull: always` and recreates the container on it in the same apply."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.harness.util import free_port, kill_pid

pytest.importorskip("tests.harness.fixtures", reason="tests/harness/fixtures.py not there yet")
pytest.importorskip("docker", reason="the Docker SDK is not installed (pip install docker)")

from provisioner.plan.model import Action  # noqa: E402
from tests.integration import test_docker_containers as base  # noqa: E402
from tests.integration.test_docker_containers import (  # noqa: E402
    assert_noop,
    by_name,
    converge,
    make,
    plan,
)

conn, docker_cli, owner = base.conn, base.docker_cli, base.owner
pytestmark = pytest.mark.integration

if not shutil.which("docker-registry"):
    pytest.skip("docker-registry is not installed (run .ci/install.sh)", allow_module_level=True)


AUTH_USER, AUTH_PASSWORD = "ci", "Registry-Secret-7f3a9c"


def _start_registry(base_dir, auth: bool):
    port = free_port()
    config = base_dir / "config.yml"
    text = (
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base_dir / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    if auth:
        import bcrypt  # paramiko's own dependency

        digest = bcrypt.hashpw(AUTH_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        (base_dir / "htpasswd").write_text(f"{AUTH_USER}:{digest}\n")
        text += f"auth:\n  htpasswd:\n    realm: test\n    path: {base_dir / 'htpasswd'}\n"
    config.write_text(text)
    log = open(base_dir / "registry.log", "w")  # noqa: SIM115 - lives with the daemon
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # it answers (401 when it wants credentials)
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((base_dir / "registry.log").read_text()) from None
            time.sleep(0.2)
    return f"127.0.0.1:{port}", proc, log


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    address, proc, log = _start_registry(tmp_path_factory.mktemp("registry"), auth=False)
    yield address
    kill_pid(proc.pid)
    log.close()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    address, proc, log = _start_registry(tmp_path_factory.mktemp("authreg"), auth=True)
    yield address
    kill_pid(proc.pid)
    log.close()


def _push(dockerd, source: str, target: str) -> None:
    dockerd.docker("tag", source, target)
    dockerd.docker("push", "-q", target)
    dockerd.docker("rmi", target)


def test_pull_and_a_moved_tag(conn, docker_cli, dockerd, docker_images, registry, owner):
    ref = f"{registry}/provision-test/{owner}:1"
    _push(dockerd, docker_images.busybox, ref)
    image = {"name": ref, "pull": "always"}
    app = {"name": f"{owner}-pulled", "image": ref, "network_mode": "none",
           "command": ["sleep", "600"]}
    spec = lambda: [make("docker_image", image, owner), make("container", app, owner)]  # noqa: E731
    changes, _ = converge(conn, spec())
    assert by_name(changes, ref).action is Action.CREATE
    first = docker_cli.images.get(ref).id
    assert_noop(conn, spec())
    # somebody pushes another image under the same tag; here the tag still
    # points at the image pulled before
    _push(dockerd, docker_images.healthcheck, ref)
    dockerd.docker("tag", first, ref)
    _, changes = plan(conn, spec())
    assert by_name(changes, ref).action is Action.UPDATE
    changes, _ = converge(conn, spec())
    second = docker_cli.images.get(ref).id
    assert second != first
    assert docker_cli.containers.get(app["name"]).image.id == second  # recreated in this apply
    assert_noop(conn, spec())


def test_pull_of_a_missing_tag_is_a_clear_error(conn, registry, owner):
    ref = f"{registry}/provision-test/{owner}:nope"
    converge(conn, [make("docker_image", {"name": ref}, owner)], expect_failure="pull")


def test_pull_with_auth_from_a_secret(conn, docker_cli, dockerd, docker_images, auth_registry,
                                      owner, tmp_path):
    from provisioner.secret import Secret

    ref = f"{auth_registry}/provision-test/{owner}:1"
    cli_config = str(tmp_path / "docker-cli")  # never root's ~/.docker
    dockerd.docker("--config", cli_config, "login", "-u", AUTH_USER, "--password-stdin",
                   auth_registry, input=AUTH_PASSWORD)
    dockerd.docker("tag", docker_images.busybox, ref)
    dockerd.docker("--config", cli_config, "push", "-q", ref)
    dockerd.docker("rmi", ref)
    wrong = {"name": ref, "auth": {"username": AUTH_USER, "password": Secret("wrong-password")}}
    _, report = converge(conn, [make("docker_image", wrong, owner)], expect_failure="pull")
    assert all("wrong-password" not in o.message for o in report.outcomes)
    good = {"name": ref, "auth": {"username": AUTH_USER, "password": Secret(AUTH_PASSWORD)}}
    changes, _ = converge(conn, [make("docker_image", good, owner)])
    assert by_name(changes, ref).action is Action.CREATE
    assert docker_cli.images.get(ref).id == docker_images.busybox_id
    assert AUTH_PASSWORD not in str(changes)
    assert_noop(conn, [make("docker_image", good, owner)])
