"""Benchmark: 10 VMs cloned from one base image, provision vs the plain floor.

On a private libvirtd (tests/harness/libvirtd.py, started here and stopped at the
end), in the same run:

- floor: for each VM `qemu-img create -f qcow2 -b base` + `virsh define` +
  `virsh start` (the least a script can do; no reading, no checking);
- provision: plan (observe + diff) + apply of the same 10 VMs (the pool and the
  base image exist already on both sides), through an SshConnection to a local
  sshd with the libvirt socket forwarded over it (--local: a LocalConnection);
- the no-op re-plan of the 10 VMs (target < 1 s).

Prints the ratio provision / floor (target <= 1.5x). The guests have no kernel
and an empty disk (SeaBIOS finds nothing to boot and idles): the bench measures
the provisioning, not TCG.

Usage: python bench/vms.py [--vms 10] [--rounds 3] [--local]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.libvirtd import PrivateLibvirtd  # noqa: E402

MEMORY_MIB = 64


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def floor_xml(name: str, disk: Path) -> str:
    return textwrap.dedent(f"""\
    <domain type='qemu'>
      <name>{name}</name>
      <memory unit='MiB'>{MEMORY_MIB}</memory>
      <vcpu>1</vcpu>
      <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
      <features><acpi/></features>
      <devices>
        <disk type='file' device='disk'>
          <driver name='qemu' type='qcow2'/>
          <source file='{disk}'/>
          <target dev='vda' bus='virtio'/>
        </disk>
        <serial type='pty'><target port='0'/></serial>
        <controller type='usb' model='none'/>
      </devices>
    </domain>
    """)


def run_floor(lv: PrivateLibvirtd, base: Path, pool_dir: Path, n: int, tag: str,
              start: bool = True) -> float:
    virsh = ["virsh", "-q", "-c", lv.uri]
    t0 = time.perf_counter()
    for i in range(n):
        name = f"{tag}-{i}"
        disk = pool_dir / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                        str(disk), "1G"], check=True)
        xml = pool_dir.parent / f"{name}.xml"
        xml.write_text(floor_xml(name, disk))
        subprocess.run([*virsh, "define", str(xml)], check=True, stdout=subprocess.DEVNULL)
        if start:
            subprocess.run([*virsh, "start", name], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def remove_domains(lv: PrivateLibvirtd, prefix: str, pool_dir: Path) -> None:
    import libvirt

    virt = lv.open()
    try:
        for dom in virt.listAllDomains(0):
            if dom.name().startswith(prefix):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        virt.close()
    for f in pool_dir.glob(f"{prefix}*"):
        f.unlink()
    for f in pool_dir.parent.glob(f"{prefix}*.xml"):
        f.unlink()
    virt = lv.open()
    try:
        for pool in virt.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            pool.refresh(0)
    finally:
        virt.close()


def spec_file(work: Path, pool_dir: Path, base: Path, n: int, tag: str,
              state: str = "running") -> Path:
    vms = "\n".join(
        f"    - vm: {{name: {tag}-{i}, image: base.qcow2, memory: {MEMORY_MIB}MiB, disk: 1GiB, "
        f"virt_type: qemu, state: {state}}}" for i in range(n))
    text = (f"- name: bench\n  hosts: localhost\n  resources:\n"
            f"    - pool: {{name: bench, path: {pool_dir}}}\n"
            f"    - image: {{name: base.qcow2, pool: bench, source: {base}}}\n{vms}\n")
    path = work / f"{tag}.yml"
    path.write_text(text)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local", action="store_true", help="LocalConnection instead of SSH")
    ap.add_argument("--no-start", action="store_true",
                    help="define the VMs without starting them (isolates provisioning from "
                         "QEMU start-up, which dominates on a loaded machine)")
    args = ap.parse_args()

    from provisioner.engine.executor import apply_host
    from provisioner.engine.observe import observe
    from provisioner.engine.runner import ordered_resources, plan_changes
    from provisioner.inventory import load_inventory
    from provisioner.spec.loader import load_spec

    work = Path(tempfile.mkdtemp(prefix="bench-vms-"))
    work.chmod(0o711)
    log("starting a private libvirtd")
    lv = PrivateLibvirtd(work / "lv")
    fleet = None
    try:
        pool_dir = Path(lv.guest_dir) / "pool"
        base = work / "base.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "256M"], check=True)
        if args.local:
            from provisioner.connection.local import LocalConnection

            def connect():
                c = LocalConnection("localhost")
                c.vars = {"provision_libvirt_socket": str(lv.socket_path)}
                return c
        else:
            from provisioner.connection.ssh import SshConnection
            from tests.harness.sshd import SshFleet

            fleet = SshFleet(1, work / "ssh")
            host = fleet.hosts[0]

            def connect():
                c = SshConnection(host["name"], host["address"], port=host["port"],
                                  user=host["user"], key_file=host["key_file"],
                                  known_hosts=str(fleet.known_hosts))
                c.vars = {"provision_libvirt_socket": str(lv.socket_path)}
                return c

        # the pool and the base image, once (not timed: the floor has them too)
        setup = ordered_resources(load_spec(str(spec_file(work, pool_dir, base, 0, "setup")),
                                            load_inventory(None)))["localhost"]
        conn = connect()
        report = apply_host(conn, setup, plan_changes(setup, observe(conn, setup)))
        assert report.failed == 0, report.error
        conn.close()
        pool_base = pool_dir / "base.qcow2"

        state = "stopped" if args.no_start else "running"
        floors, provs, noops, plans, applies = [], [], [], [], []
        for r in range(args.rounds):
            tag = f"fl{r}"
            log(f"round {r + 1}: floor (qemu-img + virsh define/start) x{args.vms}")
            floors.append(run_floor(lv, pool_base, pool_dir, args.vms, tag,
                                    start=not args.no_start))
            remove_domains(lv, tag, pool_dir)

            tag = f"pv{r}"
            log(f"round {r + 1}: provision plan + apply x{args.vms}")
            # the spec is loaded before the clock starts, as the floor's XML is written
            path = spec_file(work, pool_dir, base, args.vms, tag, state)
            resources = ordered_resources(load_spec(str(path), load_inventory(None)))["localhost"]
            t0 = time.perf_counter()
            conn = connect()
            changes = plan_changes(resources, observe(conn, resources))
            t1 = time.perf_counter()
            report = apply_host(conn, resources, changes)
            t2 = time.perf_counter()
            assert report.failed == 0, report.error
            provs.append(t2 - t0)
            plans.append(t1 - t0)
            applies.append(t2 - t1)
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                again = plan_changes(resources, observe(conn, resources))
                runs.append(time.perf_counter() - t0)
                assert not any(c.action.changes for c in again), "re-plan is not a no-op"
            noops.append(statistics.median(runs))
            cold = connect()  # a fresh connection: SSH handshake + libvirt open included
            t0 = time.perf_counter()
            plan_changes(resources, observe(cold, resources))
            cold_noop = time.perf_counter() - t0
            cold.close()
            conn.close()
            remove_domains(lv, tag, pool_dir)

        f, p = statistics.median(floors), statistics.median(provs)
        via = "LocalConnection" if args.local else "SSH (libvirt socket forwarded)"
        what = "define" if args.no_start else "define + start"
        print(f"{args.vms}-VM bench, {args.rounds} rounds, medians; provision via {via}")
        print(f"  floor  qemu-img create -b + virsh {what:<15}: {f:6.3f} s  "
              f"(all: {', '.join(f'{x:.3f}' for x in floors)})")
        print(f"  provision plan + apply                         : {p:6.3f} s  "
              f"(plan {statistics.median(plans):.3f} + apply {statistics.median(applies):.3f}; "
              f"all: {', '.join(f'{x:.3f}' for x in provs)})")
        print(f"  ratio provision / floor                         : {p / f:6.2f}x  "
              f"(target <= 1.5x)")
        print(f"  no-op re-plan of {args.vms} VMs (open connection)     : "
              f"{statistics.median(noops) * 1000:6.1f} ms (target < 1 s)")
        print(f"  no-op re-plan, new connection (last round)      : {cold_noop * 1000:6.1f} ms")
        return 0
    finally:
        lv.stop()
        if fleet is not None:
            for name in fleet.names:
                fleet.stop(name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
