"""The plan says how a VM's root disk is made: the pure part (decide, planned, Absent).

The real filesystems are in tests/integration/test_libvirt_reflink.py; here, what the
planner and the renderer do with the facts a read returned.
"""

from __future__ import annotations

import io

from modules import get_module
from modules.libvirt._clone import decide, reflink_obstacle
from provisioner.module import Absent, Module
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource
from provisioner.ui.console import Console
from provisioner.ui.render import change_lines

XFS_YES = {"image": "base.qcow2", "dst_dir": "/srv/vms",
           "probe": {"reflink": True, "src_fs": "xfs", "dst_fs": "xfs", "same_fs": True}}
EXT4_NO = {"image": "base.qcow2", "dst_dir": "/var/lib/vms",
           "probe": {"reflink": False, "src_fs": "ext4", "dst_fs": "ext4", "same_fs": True,
                     "reason": "ext4 has no reflink"}}


def vm(**fields) -> Resource:
    base = {"name": "web1", "image": "base.qcow2", "clone": "auto", "state": "running",
            "vcpus": 1}
    return Resource(host="h1", kind="vm", name="web1", fields={**base, **fields},
                    origin=Origin("spec.yml", 3))


def test_decide_follows_the_kernels_answer():
    assert decide("auto", XFS_YES)[0] == "reflink"
    method, why = decide("auto", EXT4_NO)
    assert method == "overlay" and "ext4 has no reflink" in why
    assert decide("overlay", XFS_YES) == ("overlay",
                                          "qcow2 overlay backed by base.qcow2 (clone: overlay)")
    assert decide("auto", {**XFS_YES, "existing": "web1.qcow2"})[0] == "kept"
    method, why = decide("auto", {"image": "x", "unchecked": "no compiler on the host"})
    assert method == "overlay" and "no compiler on the host" in why
    assert decide("auto", None)[0] == "overlay"  # nothing read: never a promise of reflink


def test_reflink_obstacle_names_the_reason():
    assert reflink_obstacle(XFS_YES) is None
    assert reflink_obstacle(EXT4_NO) == "ext4 has no reflink"
    assert "cannot find" in reflink_obstacle({"unchecked": "cannot find /x on the host"})


def test_a_create_carries_the_choice_in_after_and_notes():
    change = diff(get_module("vm"), vm(), Absent(disk_facts=XFS_YES))
    assert change.action is Action.CREATE and change.before is None
    assert change.after["disk_clone"] == "reflink"
    assert any(n.startswith("root disk: reflink clone of base.qcow2 on xfs") for n in change.notes)
    other = diff(get_module("vm"), vm(), Absent(disk_facts=EXT4_NO))
    assert other.after["disk_clone"] == "overlay"
    # the facts are part of what was observed: a saved plan goes stale when they change
    assert change.fingerprint != other.fingerprint


def test_a_replace_decides_again_an_update_does_not():
    observed = {"name": "web1", "image": "old.qcow2", "vcpus": 1, "state": "running",
                "managed": True, "owner": None, "disk_facts": XFS_YES}
    change = diff(get_module("vm"), vm(), observed)
    assert change.action is Action.REPLACE and change.after["disk_clone"] == "reflink"
    update = diff(get_module("vm"), vm(vcpus=2), {**observed, "image": "base.qcow2"})
    assert update.action is Action.UPDATE and "disk_clone" not in update.after


def test_a_diskless_vm_has_no_disk_choice():
    change = diff(get_module("vm"), vm(image=None, kernel="/boot/vmlinuz"), Absent())
    assert change.action is Action.CREATE and "disk_clone" not in change.after


def test_absent_is_does_not_exist_for_every_module():
    class Plain(Module):
        kind = "plain"

    res = Resource(host="h1", kind="plain", name="x", fields={"name": "x", "state": "present"},
                   origin=Origin("s.yml", 1))
    assert diff(Plain(), res, Absent(anything=1)).action is Action.CREATE
    gone = Resource(host="h1", kind="plain", name="x", fields={"name": "x", "state": "absent"},
                    origin=Origin("s.yml", 1))
    assert diff(Plain(), gone, Absent(anything=1)).action is Action.NOOP


def test_the_rendered_plan_shows_the_choice_once():
    change = diff(get_module("vm"), vm(layout={"pool": "vms"}), Absent(disk_facts=XFS_YES))
    out = io.StringIO()
    change_lines(Console(out, color=False), change)
    text = out.getvalue()
    assert 'disk_clone: "reflink"' in text
    assert "! root disk: reflink clone of base.qcow2 on xfs" in text
    assert "disk_clone_why" not in text and "layout" not in text
