"""Docker kinds: docker_image, container, docker_volume, docker_network (see docs/containers.md)."""
