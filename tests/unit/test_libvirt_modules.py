"""pool/network/image/vm on libvirt's in-memory test driver (test:///default): plan,
apply, re-plan, through the real engine, no daemon."""

from __future__ import annotations

import textwrap
import uuid

import pytest

pytest.importorskip("libvirt")

from modules import get_module  # noqa: E402
from provisioner.connection.local import LocalConnection  # noqa: E402
from provisioner.engine.executor import apply_host  # noqa: E402
from provisioner.engine.observe import observe  # noqa: E402
from provisioner.engine.runner import ordered_resources, plan_changes  # noqa: E402
from provisioner.errors import HostError, SpecError  # noqa: E402
from provisioner.inventory import load_inventory  # noqa: E402
from provisioner.plan.model import Action  # noqa: E402
from provisioner.spec.loader import load_spec  # noqa: E402

TEST_URI = "test:///default"


@pytest.fixture
def conn():
    c = LocalConnection("localhost")
    c.vars = {"provision_libvirt_uri": TEST_URI}
    yield c
    c.close()


@pytest.fixture
def ns():
    """A unique prefix per test (the test driver's state is shared in-process),
    and everything carrying it removed afterwards."""
    prefix = "t" + uuid.uuid4().hex[:6]
    yield prefix
    import libvirt

    virt = libvirt.open(TEST_URI)
    for dom in virt.listAllDomains(0):
        if dom.name().startswith(prefix):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for net in virt.listAllNetworks(0):
        if net.name().startswith(prefix):
            if net.isActive():
                net.destroy()
            net.undefine()
    for pool in virt.listAllStoragePools(0):
        if pool.name().startswith(prefix):
            if pool.isActive():
                for vol in pool.listAllVolumes(0):
                    vol.delete(0)
                pool.destroy()
            pool.undefine()
    virt.close()


@pytest.fixture
def base_image(tmp_path):
    """A tiny qcow2 on the controller: a header claiming 64 MiB (enough for sniffing)."""
    import struct

    path = tmp_path / "base.qcow2"
    header = b"QFI\xfb" + struct.pack(">I", 3) + b"\0" * 16 + struct.pack(">Q", 64 << 20)
    path.write_bytes(header.ljust(4096, b"\0"))
    return path


def load(tmp_path, body: str, name="spec"):
    spec_file = tmp_path / f"{name}.yml"
    spec_file.write_text(textwrap.dedent(body))
    spec = load_spec(str(spec_file), load_inventory(None))
    return ordered_resources(spec)["localhost"]


def plan(conn, resources):
    return plan_changes(resources, observe(conn, resources))


def converge(conn, resources):
    changes = plan(conn, resources)
    report = apply_host(conn, resources, changes)
    assert report.failed == 0, [(o.address, o.status, o.message) for o in report.outcomes]
    assert not any(o.status == "not converged" for o in report.outcomes)
    return changes, report


def by_name(changes):
    return {f"{c.kind}/{c.name}": c for c in changes}


def spec_text(ns, base, **vm):
    web1 = {"name": f"{ns}-web1", "image": "base.qcow2", "pool": f"{ns}-p", "vcpus": 1,
            "memory": "128MiB", "disk": "1GiB", "virt_type": "test"}
    web1.update(vm)
    fields = ", ".join(f"{k}: {v!r}" if isinstance(v, str) and not v.startswith("{")
                       else f"{k}: {v}"
                       for k, v in web1.items() if v is not None)
    return f"""
    - name: vms
      hosts: localhost
      resources:
        - pool: {{name: {ns}-p, path: /{ns}/pool}}
        - image: {{name: base.qcow2, pool: {ns}-p, source: {base}}}
        - vm: {{{fields}}}
        - vm: {{name: {ns}-web2, image: base.qcow2, pool: {ns}-p, memory: 256MiB, virt_type: test,
                state: stopped, extra_disks: [{{name: data, size: 1GiB}}]}}
    """


def test_create_then_noop_every_run(conn, ns, base_image, tmp_path):
    resources = load(tmp_path, spec_text(ns, base_image))
    changes, report = converge(conn, resources)
    assert [c.action for c in changes] == [Action.CREATE] * 4
    assert report.changed == 4
    for _ in range(2):
        again = plan(conn, resources)
        assert all(c.action is Action.NOOP for c in again), \
            [(c.address, c.changed_fields) for c in again if c.action.changes]
    import libvirt

    virt = libvirt.open(TEST_URI)
    pool = virt.storagePoolLookupByName(f"{ns}-p")
    vols = {v.name() for v in pool.listAllVolumes(0)}
    assert {"base.qcow2", f"{ns}-web1.qcow2", f"{ns}-web2.qcow2", f"{ns}-web2-data.qcow2"} <= vols
    overlay = pool.storageVolLookupByName(f"{ns}-web1.qcow2").XMLDesc(0)
    assert "<backingStore>" in overlay and "base.qcow2" in overlay  # a clone, not a copy
    dom = virt.lookupByName(f"{ns}-web1")
    assert dom.isActive() and not virt.lookupByName(f"{ns}-web2").isActive()
    assert "https://provision.dev/xmlns/1" in dom.XMLDesc(0)


def test_memory_and_vcpus_change_in_place(conn, ns, base_image, tmp_path):
    converge(conn, load(tmp_path, spec_text(ns, base_image)))
    resources = load(tmp_path, spec_text(ns, base_image, memory="256MiB", vcpus=2), "v2")
    changes, _ = converge(conn, resources)
    web1 = by_name(changes)[f"vm/{ns}-web1"]
    assert web1.action is Action.UPDATE
    assert sorted(web1.changed_fields) == ["memory", "vcpus"]
    assert any("takes effect after restart" in n for n in web1.notes)
    assert all(c.action is Action.NOOP for c in plan(conn, resources))


def test_image_change_replaces_and_says_why(conn, ns, base_image, tmp_path):
    converge(conn, load(tmp_path, spec_text(ns, base_image)))
    other = tmp_path / "other.qcow2"
    other.write_bytes(base_image.read_bytes() + b"x")
    text = spec_text(ns, base_image, image="other.qcow2").replace(
        "- vm:", f"- image: {{name: other.qcow2, pool: {ns}-p, source: {other}}}\n        - vm:", 1)
    resources = load(tmp_path, text, "v2")
    changes = plan(conn, resources)
    web1 = by_name(changes)[f"vm/{ns}-web1"]
    assert web1.action is Action.REPLACE and web1.replace_fields == ["image"]
    assert any("shut down" in n for n in web1.notes)
    converge(conn, resources)
    assert all(c.action is Action.NOOP for c in plan(conn, resources))


def test_disk_grow_in_place_shrink_replaces(conn, ns, base_image, tmp_path):
    converge(conn, load(tmp_path, spec_text(ns, base_image)))
    grow = load(tmp_path, spec_text(ns, base_image, disk="2GiB"), "grow")
    change = by_name(plan(conn, grow))[f"vm/{ns}-web1"]
    assert change.action is Action.UPDATE and change.changed_fields == ["disk"]
    assert any("grows from 1GiB to 2GiB" in n for n in change.notes)
    # (the test driver cannot resize volumes: the integration test grows one for real)
    shrink = load(tmp_path, spec_text(ns, base_image, disk="512MiB"), "shrink")
    change = by_name(plan(conn, shrink))[f"vm/{ns}-web1"]
    assert change.action is Action.REPLACE and change.replace_fields == ["disk"]


def test_state_autostart_and_cloud_init_in_place(conn, ns, base_image, tmp_path):
    converge(conn, load(tmp_path, spec_text(ns, base_image)))
    resources = load(tmp_path, spec_text(ns, base_image, state="stopped", autostart="true",
                                         cloud_init='{user_data: "#cloud-config\\n"}'), "v2")
    change = by_name(plan(conn, resources))[f"vm/{ns}-web1"]
    assert change.action is Action.UPDATE
    assert sorted(change.changed_fields) == ["autostart", "cloud_init_sha", "state"]
    converge(conn, resources)
    assert all(c.action is Action.NOOP for c in plan(conn, resources))
    edited = load(tmp_path, spec_text(ns, base_image, state="stopped", autostart="true",
                                      cloud_init='{user_data: "#cloud-config\\nx: 1\\n"}'), "v3")
    change = by_name(plan(conn, edited))[f"vm/{ns}-web1"]
    assert change.changed_fields == ["cloud_init_sha"]  # a user-data edit is seen
    converge(conn, edited)


def test_absent_keeps_disks_unless_asked(conn, ns, base_image, tmp_path):
    converge(conn, load(tmp_path, spec_text(ns, base_image)))
    gone = load(tmp_path, spec_text(ns, base_image, state="absent", image=None, vcpus=None,
                                    memory=None, disk=None, virt_type=None), "gone")
    change = by_name(plan(conn, gone))[f"vm/{ns}-web1"]
    assert change.action is Action.DELETE
    assert any("disks are kept" in n for n in change.notes)
    converge(conn, gone)
    import libvirt

    virt = libvirt.open(TEST_URI)
    pool = virt.storagePoolLookupByName(f"{ns}-p")
    assert f"{ns}-web1.qcow2" in {v.name() for v in pool.listAllVolumes(0)}
    # declared again: the kept disk is used again
    converge(conn, load(tmp_path, spec_text(ns, base_image), "back"))
    purge = load(tmp_path, spec_text(ns, base_image, state="absent", delete_disks="true",
                                     image=None, vcpus=None, memory=None, disk=None,
                                     virt_type=None), "purge")
    converge(conn, purge)
    assert f"{ns}-web1.qcow2" not in {v.name() for v in pool.listAllVolumes(0)}


def test_unmarked_vm_is_noted_and_never_touched(conn, ns, tmp_path):
    # the test driver's own domain "test" carries no ownership mark
    resources = load(tmp_path, """
    - name: x
      hosts: localhost
      resources:
        - vm: {name: test, vcpus: 1}
    """)
    change = plan(conn, resources)[0]
    assert change.action is Action.UPDATE
    assert any("no provision ownership mark" in n for n in change.notes)
    report = apply_host(conn, resources, [change])
    assert report.failed == 1 and "adopt" in report.outcomes[0].message
    import libvirt

    assert "<vcpu placement='static'>2</vcpu>" in libvirt.open(TEST_URI).lookupByName(
        "test").XMLDesc(0)
    # an unmarked VM whose declared fields already match: nothing to do, nothing said
    same = load(tmp_path, """
    - name: x
      hosts: localhost
      resources:
        - vm: {name: test, vcpus: 2}
    """, "same")
    assert plan(conn, same)[0].action is Action.NOOP


def test_list_owned_only_ours(conn, ns, base_image, tmp_path):
    resources = load(tmp_path, spec_text(ns, base_image))
    converge(conn, resources)
    owner = resources[0].owner
    vms = get_module("vm").list_owned(conn, owner)
    assert set(vms) == {f"{ns}-web1", f"{ns}-web2"}
    assert "test" not in get_module("vm").list_owned(conn, owner)
    assert f"{ns}-p" in get_module("pool").list_owned(conn, owner)
    assert "base.qcow2" in get_module("image").list_owned(conn, owner)
    assert get_module("vm").list_owned(conn, "somebody-else") == {}


def test_isolated_network(conn, ns, tmp_path):
    resources = load(tmp_path, f"""
    - name: n
      hosts: localhost
      resources:
        - network: {{name: {ns}-lab, bridge: {ns}br, ip: 10.77.0.1/24}}
    """)
    changes, _ = converge(conn, resources)
    assert changes[0].action is Action.CREATE
    assert plan(conn, resources)[0].action is Action.NOOP
    moved = load(tmp_path, f"""
    - name: n
      hosts: localhost
      resources:
        - network: {{name: {ns}-lab, bridge: {ns}br, ip: 10.78.0.1/24}}
    """, "moved")
    change = plan(conn, moved)[0]
    assert change.action is Action.REPLACE and change.replace_fields == ["ip"]
    assert get_module("network").list_owned(conn, resources[0].owner).keys() == {f"{ns}-lab"}


# -- bad inputs: one clear line, nothing changed -----------------------------------------


def test_unknown_image_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="unknown image 'nope.qcow2'"):
        load(tmp_path, """
        - name: x
          hosts: localhost
          resources:
            - vm: {name: a, image: nope.qcow2}
        """)


def test_disk_smaller_than_image_is_a_spec_error(tmp_path, base_image):
    with pytest.raises(SpecError, match="smaller than image base.qcow2"):
        load(tmp_path, f"""
        - name: x
          hosts: localhost
          resources:
            - image: {{name: base.qcow2, source: {base_image}}}
            - vm: {{name: a, image: base.qcow2, disk: 16MiB}}
        """)


def test_duplicate_vm_names_are_rejected(tmp_path):
    with pytest.raises(SpecError, match="declared twice"):
        load(tmp_path, """
        - name: x
          hosts: localhost
          resources:
            - vm: {name: a}
            - vm: {name: a, vcpus: 2}
        """)


def test_memory_beyond_the_host_fails_at_plan_time(conn, tmp_path, ns):
    resources = load(tmp_path, f"""
    - name: x
      hosts: localhost
      resources:
        - vm: {{name: {ns}-big, memory: 64TiB}}
    """)
    with pytest.raises(HostError, match="memory 64TiB is more than the host has"):
        observe(conn, resources)


def test_missing_host_volume_image_fails_at_plan_time(conn, tmp_path, ns):
    resources = load(tmp_path, f"""
    - name: x
      hosts: localhost
      resources:
        - vm: {{name: {ns}-a, image: default-pool/missing.qcow2}}
    """)
    with pytest.raises(HostError, match="image default-pool/missing.qcow2 does not exist"):
        observe(conn, resources)


def test_unreachable_libvirt_is_one_clear_line(tmp_path):
    c = LocalConnection("h1")
    c.vars = {"provision_libvirt_uri": "qemu:///system",
              "provision_libvirt_socket": str(tmp_path / "no-such.sock")}
    resources = load(tmp_path, """
    - name: x
      hosts: localhost
      resources:
        - vm: {name: a}
    """)
    with pytest.raises(HostError) as err:
        observe(c, resources)
    message = str(err.value)
    assert message.startswith("h1: libvirt at qemu:///system unreachable: ")
    assert "\n" not in message


def test_bad_fields_name_the_field(tmp_path):
    with pytest.raises(SpecError, match="network.*bridge|bridge.*network"):
        load(tmp_path, """
        - name: x
          hosts: localhost
          resources:
            - vm: {name: a, network: n, bridge: b}
        """)
    with pytest.raises(SpecError, match="must be a size"):
        load(tmp_path, """
        - name: x
          hosts: localhost
          resources:
            - vm: {name: a, memory: lots}
        """, "b")
