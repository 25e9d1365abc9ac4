"""Test harness: real servers for the test suite, each under one private directory per run.

- sshd.SshFleet: n OpenSSH servers on 127.0.0.1 free ports, strict known_hosts, inventory.
- netns.NetnsHosts: hosts in network namespaces (own address, hostname, sshd);
  netns.connect_socket() reaches them from the root namespace.
- dockerd.PrivateDockerd, images.DockerImages: a private dockerd and locally made images.
- libvirtd.PrivateLibvirtd: virtlogd + libvirtd in a private mount namespace.
- guest: a QEMU guest that boots (Debian kernel + busybox initramfs) and prints a marker.
- aptrepo.AptRepo: a local apt repository with a test package in two versions.
- fixtures: the pytest fixtures over all of these (import * in tests/conftest.py).

The daemons need root; install everything with .ci/install.sh.
"""
