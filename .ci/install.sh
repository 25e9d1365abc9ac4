#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine, as root.
# Idempotent: re-running it only re-checks. Nothing is fetched at test time: the
# Debian kernel package for the QEMU guest is cached here in $PROVISION_TEST_CACHE.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${PROVISION_TEST_CACHE:-/var/cache/provision-test}
export DEBIAN_FRONTEND=noninteractive

packages=(
  openssh-server openssh-client
  docker.io
  qemu-system-x86 qemu-utils
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  busybox-static cpio gzip
  xfsprogs btrfs-progs
  iproute2 util-linux procps
  gcc make dpkg-dev apt-utils sudo docker-registry
)

# Install, do not start, services (docker.io, libvirt-daemon-system, openssh-server): the
# tests start private daemons of their own. Keep a policy-rc.d that is already there.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi

echo "install.sh: apt packages"
apt-get update -qq
# No recommends: libvirt-daemon-system would pull in dnsmasq, firewalls and more.
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

echo "install.sh: Python package (editable) with test, libvirt and docker extras"
python3 -m pip install -q --root-user-action=ignore -e "${repo}[test,libvirt,docker]" \
  || python3 -m pip install -q --root-user-action=ignore --break-system-packages \
       -e "${repo}[test,libvirt,docker]"

# Debian kernel for the bootable QEMU guest: the version that linux-image-amd64 points at.
echo "install.sh: kernel package for the test guest into ${cache}"
mkdir -p "${cache}"
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "${kpkg}" ]; then
  echo "install.sh: cannot find the kernel package linux-image-amd64 depends on" >&2
  exit 1
fi
if ! ls "${cache}/${kpkg}"_*.deb >/dev/null 2>&1; then
  rm -f "${cache}"/linux-image-*.deb.partial
  (cd "${cache}" && apt-get download -qq -o APT::Sandbox::User=root "${kpkg}")
fi
# Keep only the current kernel (.deb and the vmlinuz the harness extracts from it).
find "${cache}" -maxdepth 1 -name 'linux-image-*' ! -name "${kpkg}_*" -delete
ls "${cache}/${kpkg}"_*.deb >/dev/null
echo "install.sh: done"
