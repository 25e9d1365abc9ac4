"""Pure tests of the libvirt XML build/parse/normalise code and the seed ISO writer."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from modules.libvirt import _xml as X
from modules.libvirt.cloudinit import build_iso, read_iso, seed_digest, seed_files

LIBVIRT_REPORTED = """<domain type='qemu' id='4'>
  <name>web1</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <metadata>
    <provision:resource xmlns:provision="https://provision.dev/xmlns/1">
      <provision:owner>site</provision:owner>
      <provision:image>base.qcow2</provision:image>
      <provision:cloud-init>abc123</provision:cloud-init>
    </provision:resource>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <currentMemory unit='KiB'>131072</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource><partition>/machine/tenant-a</partition></resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/boot/vmlinuz</kernel>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='vms' volume='web1.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <disk type='volume' device='cdrom'>
      <source pool='vms' volume='web1-cidata.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='lab'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='/tmp/web1.log'/>
      <target type='isa-serial' port='0'/>
    </serial>
  </devices>
</domain>"""


def test_parse_domain_normalises_units_and_ignores_generated_details():
    info = X.parse_domain(LIBVIRT_REPORTED)
    assert info["memory"] == 128 * 1024 * 1024  # KiB -> bytes
    assert info["vcpus"] == 2
    assert info["virt_type"] == "qemu"
    assert info["firmware"] == "bios"
    assert info["slice"] == "tenant-a"
    assert info["network"] == "lab" and info["bridge"] is None
    assert info["console_log"] == "/tmp/web1.log"
    assert info["kernel"] == "/boot/vmlinuz" and info["initrd"] is None
    assert info["disks"]["vda"]["volume"] == "web1.qcow2"
    assert info["seed"]["volume"] == "web1-cidata.iso"
    assert info["meta"] == {"owner": "site", "image": "base.qcow2", "cloud-init": "abc123"}


def test_memory_units_all_normalise_to_bytes():
    for text, expected in (("<memory unit='MiB'>128</memory>", 128 << 20),
                           ("<memory>131072</memory>", 128 << 20),  # default KiB
                           ("<memory unit='GiB'>1</memory>", 1 << 30),
                           ("<memory unit='bytes'>134217728</memory>", 128 << 20)):
        xml = f"<domain type='kvm'><name>x</name>{text}<vcpu>1</vcpu><os/><devices/></domain>"
        assert X.parse_domain(xml)["memory"] == expected


def test_unmarked_domain_has_no_metadata():
    xml = "<domain type='kvm'><name>x</name><memory>1024</memory><vcpu>1</vcpu><devices/></domain>"
    assert X.parse_domain(xml)["meta"] is None


def test_efi_firmware_detected_both_ways():
    auto = "<domain type='kvm'><name>x</name><os firmware='efi'><type>hvm</type></os><devices/></domain>"
    loader = ("<domain type='kvm'><name>x</name><os><type>hvm</type>"
              "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>"
              "<nvram>/var/lib/libvirt/qemu/nvram/x_VARS.fd</nvram></os><devices/></domain>")
    assert X.parse_domain(auto)["firmware"] == "efi"
    assert X.parse_domain(loader)["firmware"] == "efi"


def test_build_then_parse_round_trips():
    spec = {"name": "vm1", "vcpus": 3, "memory": 300 * 1024 * 1024, "virt_type": "qemu",
            "root": {"pool": "p", "volume": "vm1.qcow2", "format": "qcow2"},
            "extra": [{"pool": "p", "volume": "vm1-data.qcow2"}],
            "seed": {"pool": "p", "volume": "vm1-cidata.iso"},
            "bridge": "br0", "kernel": "/k", "initrd": "/i", "cmdline": "console=ttyS0",
            "firmware": "efi", "slice": "tenants.slice", "console_log": "/tmp/c.log"}
    xml = X.domain_xml(spec, {"owner": "o", "image": "base", "cloud-init": None})
    info = X.parse_domain(xml)
    assert info["memory"] == 300 * 1024 * 1024 and info["vcpus"] == 3
    assert info["bridge"] == "br0" and info["network"] is None
    assert info["firmware"] == "efi" and info["slice"] == "tenants"
    assert info["disks"]["vdb"]["volume"] == "vm1-data.qcow2"
    assert info["seed"]["volume"] == "vm1-cidata.iso"
    assert info["meta"] == {"owner": "o", "image": "base"}
    assert "<features>" in xml and "<acpi" in xml  # ACPI shutdown needs it


def test_update_keeps_uuid_mac_and_devices():
    new = X.update_domain(LIBVIRT_REPORTED, {"memory": 256 << 20, "vcpus": 4,
                                             "network": None, "bridge": "br1",
                                             "meta": {"owner": "site", "image": "other"}})
    info = X.parse_domain(new)
    assert info["memory"] == 256 << 20 and info["vcpus"] == 4
    assert info["uuid"] == "6695eb01-f6a4-8304-79aa-97f2502e193f"
    assert "52:54:00:12:34:56" in new
    assert info["bridge"] == "br1" and info["network"] is None
    assert info["meta"] == {"owner": "site", "image": "other"}
    assert new.count("provision:resource") == 2  # one element (open + close tag), replaced


def test_set_metadata_on_unmarked_domain_goes_after_name():
    xml = ("<domain type='kvm'><name>x</name><uuid>u</uuid><memory>1024</memory>"
           "<vcpu>1</vcpu><devices/></domain>")
    out = X.update_domain(xml, {"meta": {"owner": "me"}})
    root = X.ET.fromstring(out)
    assert [c.tag for c in root][:3] == ["name", "uuid", "metadata"]
    assert X.read_metadata(root) == {"owner": "me"}


def test_slice_partition():
    assert X.slice_partition("tenant") == "/machine/tenant"
    assert X.slice_partition("tenant.slice") == "/machine/tenant"
    assert X.slice_partition("/custom/part/") == "/custom/part"


def test_network_xml_and_parse():
    xml = X.network_xml({"name": "lab", "forward": "none", "bridge": "virbr-lab",
                         "ip": "10.9.0.1", "prefix": 24}, {"owner": "o"})
    info = X.parse_network(xml)
    assert info == {"name": "lab", "forward": "none", "bridge": "virbr-lab",
                    "ip": "10.9.0.1", "prefix": 24, "meta": {"owner": "o"}}
    netmask = ("<network><name>n</name><forward mode='nat'/>"
               "<ip address='192.168.1.1' netmask='255.255.255.0'/></network>")
    assert X.parse_network(netmask)["prefix"] == 24
    assert X.parse_network(netmask)["forward"] == "nat"
    bridged = X.network_xml({"name": "b", "forward": "bridge", "bridge": "br0"}, {"owner": "o"})
    assert "stp" not in bridged and X.parse_network(bridged)["forward"] == "bridge"


def test_volume_xml_overlay_and_parse():
    xml = X.volume_xml("vm.qcow2", 2 << 30, "qcow2", backing="/p/base.qcow2",
                       backing_format="qcow2")
    info = X.parse_volume(xml.replace("<volume>", "<volume><key>k</key>", 1))
    assert info["capacity"] == 2 << 30 and info["format"] == "qcow2"
    assert info["backing"] == "/p/base.qcow2"


def test_seed_iso_round_trip_and_deterministic():
    files = seed_files({"user_data": "#cloud-config\nhostname: a\n"}, "vm1")
    assert set(files) == {"user-data", "meta-data"}
    assert b"instance-id: vm1-" in files["meta-data"]
    iso = build_iso(files)
    assert iso == build_iso(files)  # no timestamps: same seed, same bytes
    assert len(iso) % 2048 == 0
    label, read = read_iso(iso)
    assert label == "cidata" and read == files


def test_seed_digest_follows_content():
    a = seed_digest({"user_data": "x"}, "vm")
    assert a == seed_digest({"user_data": "x"}, "vm")
    assert a != seed_digest({"user_data": "y"}, "vm")
    assert a != seed_digest({"user_data": "x", "meta_data": "instance-id: 1\n"}, "vm")


@pytest.mark.skipif(not shutil.which("blkid"), reason="blkid not installed")
def test_seed_iso_is_recognised_as_cidata(tmp_path):
    path = tmp_path / "seed.iso"
    path.write_bytes(build_iso(seed_files({"user_data": "#cloud-config\n"}, "v")))
    out = subprocess.run(["blkid", "-p", "-o", "export", str(path)], capture_output=True,
                         text=True, check=False).stdout
    assert "TYPE=iso9660" in out and "LABEL=cidata" in out


@pytest.mark.skipif(not shutil.which("xorriso"), reason="xorriso not installed")
def test_seed_iso_reads_back_with_xorriso(tmp_path):
    path = tmp_path / "seed.iso"
    files = seed_files({"user_data": "#cloud-config\nhostname: z\n"}, "v")
    path.write_bytes(build_iso(files))
    out = tmp_path / "x"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(path), "-extract", "/", str(out)],
                   capture_output=True, check=True)
    got = {p.name.lower(): p.read_bytes() for p in out.iterdir()}
    assert got == files


def test_importing_the_modules_does_not_import_libvirt():
    code = ("import sys, modules.libvirt.vm, modules.libvirt.image, modules.libvirt.pool, "
            "modules.libvirt.network; assert 'libvirt' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
