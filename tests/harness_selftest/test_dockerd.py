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


def test_a_killed_dockerd_leaves_no_mount_behind(dockerd, harness_dir):
    """dockerd mounts <exec-root>/netns/default and unmounts it when it exits
    cleanly; killed (a stop that timed out under load), it cannot, and the
    mount kept the run directory from being removed. stop() clears it.
    A second daemon of its own: the session's is not disturbed."""
    import os
    import signal

    from tests.harness.dockerd import PrivateDockerd
    from tests.harness.util import pid_alive, read_pid

    daemon = PrivateDockerd(harness_dir / "docker-killed")
    prefix = str(daemon.base_dir.resolve()) + "/"

    def mounts_below() -> list[str]:
        with open("/proc/self/mounts") as fh:
            return [line.split()[1] for line in fh if line.split()[1].startswith(prefix)]

    try:
        assert daemon.ping()
        assert mounts_below(), "expected dockerd's netns mount while it runs"
        pid = read_pid(daemon.pidfile)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 10, "dockerd to die")
        assert mounts_below(), "a SIGKILLed dockerd cannot unmount"
    finally:
        daemon.stop()
    assert mounts_below() == []
