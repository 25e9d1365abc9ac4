"""The private libvirtd boots a real QEMU guest."""

from __future__ import annotations

import pytest

from tests.harness.guest import MARKER, boot_guest, domain_xml


def test_guest_boots_and_prints_the_marker(libvirtd, guest_boot_files):
    assert libvirtd.uri == f"qemu+unix:///system?socket={libvirtd.socket_path}"
    conn = libvirtd.open()
    try:
        dom, console = boot_guest(conn, "selftest-boot", guest_boot_files, libvirtd.guest_dir)
        try:
            assert MARKER in console
            assert f"kernel={guest_boot_files.kernel_version}" in console
            assert dom.isActive()
        finally:
            dom.destroy()
            dom.undefine()
        assert "selftest-boot" not in [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


def test_kvm_domains_are_refused_clearly(libvirtd, guest_boot_files):
    """No hardware virtualization here: /dev/kvm is hidden from the private libvirtd."""
    import libvirt

    conn = libvirtd.open()
    try:
        xml = domain_xml("selftest-kvm", guest_boot_files, libvirtd.guest_dir / "kvm.console")
        with pytest.raises(libvirt.libvirtError, match="kvm"):
            conn.defineXML(xml.replace("<domain type='qemu'>", "<domain type='kvm'>"))
    finally:
        conn.close()


def test_overlay_of_the_base_image(guest_boot_files, harness_dir):
    overlay = guest_boot_files.overlay(harness_dir / "selftest-overlay.qcow2")
    assert overlay.stat().st_size < 1024 * 1024
    assert overlay.stat().st_mode & 0o004  # readable by libvirt-qemu
