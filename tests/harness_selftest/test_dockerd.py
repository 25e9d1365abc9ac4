"""The private dockerd and the locally made images."""

from __future__ import annotations

import time

from tests.harness.util import wait_for


def test_runs_a_container_from_the_busybox_image(dockerd, docker_images, harness_dir):
    assert dockerd.socket.is_relative_to(harness_dir)
    out = dockerd.docker(
        "run", "--rm", "--network", "none", docker_images.busybox, "sh", "-c", "echo hello; id -u"
    )
    assert out.stdout == "hello\n0\n"


def test_healthcheck_image_turns_healthy_and_unhealthy(dockerd, docker_images):
    client = dockerd.client()
    container = client.containers.run(docker_images.healthcheck, detach=True, network_mode="none")
    try:

        def health() -> str:
            container.reload()
            return container.attrs["State"].get("Health", {}).get("Status", "")

        wait_for(lambda: health() == "healthy", 30, "healthy", interval=0.2)
        container.exec_run("touch /tmp/unhealthy")
        wait_for(lambda: health() == "unhealthy", 30, "unhealthy", interval=0.2)
        assert container.exec_run("cat /etc/provision-test-version").output == b"1\n"
        t0 = time.monotonic()
        container.stop(timeout=10)
        assert time.monotonic() - t0 < 5  # exits on SIGTERM at once
    finally:
        container.remove(force=True)
        client.close()


def test_second_version_of_a_tag_has_another_id(docker_images):
    tag = "provision-test/selftest-versions:1"
    v1 = docker_images.build_healthcheck_image(tag, version=1)
    v2 = docker_images.build_healthcheck_image(tag, version=2)
    assert v1 != v2
    assert docker_images.image_id(tag) == v2


def test_restart_keeps_images(dockerd, docker_images):
    dockerd.restart()
    assert dockerd.ping()
    assert docker_images.image_id(docker_images.busybox) == docker_images.busybox_id
