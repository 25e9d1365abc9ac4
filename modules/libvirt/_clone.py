"""How a VM's root disk is made from its image: a reflink clone or a qcow2 overlay.

Read at plan time (`disk_facts`, I/O), decided by a pure function (`decide`),
so the plan says which and apply does what the plan said:

- reflink: the image file is cloned with FICLONE (provision-helper) into the
  VM's pool. Instant, shares the image's blocks until the guest writes, and has
  no backing chain: the image can later be replaced without touching the VM.
  Possible when the image's directory and the pool's share a filesystem that
  can reflink (XFS with reflink=1, btrfs); the helper checks by cloning an
  anonymous O_TMPFILE block, so the answer is the kernel's, not a guess from
  the filesystem's name. Without the helper, `cp --reflink=always` does both
  the check (two hidden temp files) and the clone, and the plan says so.
- overlay: a qcow2 file whose backing file is the image. Works anywhere; the
  image must then outlive every VM made from it.
- kept: a root volume left from before (state: absent without delete_disks)
  is used again as it is.

`clone: auto` (the default) takes reflink where the host can, `overlay` never
tries, `reflink` makes any other answer a plan-time error.
"""

from __future__ import annotations

from typing import Any

from provisioner.connection.base import Connection


def decide(setting: str, facts: dict[str, Any] | None) -> tuple[str, str]:
    """(method, why) for a root disk: method is "reflink", "overlay" or "kept".

    facts is what `disk_facts` read; None when nothing was read (a plan made
    without reading, a unit test's fake), which means an overlay."""
    facts = facts or {}
    image = facts.get("image") or "the image"
    if facts.get("existing"):
        return "kept", f"the root volume {facts['existing']} kept from before is used again"
    if setting == "overlay":
        return "overlay", f"qcow2 overlay backed by {image} (clone: overlay)"
    obstacle = reflink_obstacle(facts)
    if obstacle:
        return "overlay", f"qcow2 overlay backed by {image} ({obstacle})"
    probe = facts["probe"]
    where = facts.get("dst_dir") or "the pool"
    why = (f"reflink clone of {image} on {probe.get('dst_fs') or 'its filesystem'}"
           f" ({where}): shares the image's blocks, no backing chain")
    if facts.get("without_helper"):
        why += f"; by cp --reflink=always ({facts['without_helper']})"
    return "reflink", why


def reflink_obstacle(facts: dict[str, Any] | None) -> str | None:
    """Why the host cannot make a reflink clone; None when it can."""
    facts = facts or {}
    probe = facts.get("probe")
    if probe and probe.get("reflink"):
        return None
    if probe:
        return probe.get("reason") or "the filesystem cannot reflink"
    if facts.get("unchecked"):
        return f"no reflink check: {facts['unchecked']}"
    return "no reflink check was made"


def disk_facts(conn: Connection, *, image: str, image_path: str | None, src_dir: str,
               dst_dir: str, existing: str | None, cache: dict[tuple[str, str], Any]
               ) -> dict[str, Any]:
    """What the host says about cloning an image in src_dir into dst_dir.

    cache holds one probe per (src_dir, dst_dir) for one read, so ten VMs on
    one image cost one probe."""
    facts: dict[str, Any] = {"image": image, "image_path": image_path,
                             "src_dir": src_dir, "dst_dir": dst_dir}
    if existing:
        facts["existing"] = existing
        return facts
    key = (src_dir, dst_dir)
    if key not in cache:
        cache[key] = _probe(conn, src_dir, dst_dir)
    found = cache[key]
    facts.update(found)
    return facts


def _probe(conn: Connection, src_dir: str, dst_dir: str) -> dict[str, Any]:
    from provisioner.errors import HostError
    from provisioner.helper import ensure_helper, plain_reflink_probe, unavailable_reason

    helper = ensure_helper(conn)
    extra: dict[str, Any] = {}
    try:
        # a pool or image this apply makes has no directory yet: its
        # nearest existing parent is where it will be made
        if helper is not None:
            probe = helper.reflink_probe(src_dir, dst_dir, nearest=True)
        else:
            extra["without_helper"] = f"provision-helper unavailable: {unavailable_reason(conn)}"
            probe = plain_reflink_probe(conn, src_dir, dst_dir)
    except HostError as exc:  # HelperError included
        return {"unchecked": str(exc)}
    dirs = [probe.get("src_dir"), probe.get("dst_dir")]
    return {"probe": {k: probe.get(k) for k in ("reflink", "src_fs", "dst_fs", "same_fs",
                                                "reason")},
            **({"probed_dirs": dirs} if dirs != [src_dir, dst_dir] else {}), **extra}
