"""How provision scales: hosts over SSH, and the planner alone.

    python bench/scale.py [--hosts 25,50,100] [--resources 2500,5000,10000]

Part 1: N loopback sshd hosts (tests/harness/sshd.py) x 10 resources each
(a directory and nine files with a host variable). For each N: the first
apply (changes), then a no-op `plan` and a no-op `apply`: wall time and the
controller's peak memory (RSS of the whole process tree), and how time grows
from the smallest N.

Part 2: the pure planner (spec load + dependency order + diff) on R
resources with the observed state given (no I/O): CPU seconds of each stage
and the growth from the smallest R. Target: linear, a 10,000-resource plan
(the diff) under 1 s of CPU.

Prints ratios against the smallest size measured in the same run; asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import clean_tree, log, mb, run_measured, table  # noqa: E402

RESOURCES_PER_HOST = 10


def playbook(path: Path, root: str, files: int) -> None:
    lines = ["- name: scale", "  hosts: all", "  resources:",
             f'    - directory: {{path: "{root}/{{{{ inventory_hostname }}}}"}}']
    for i in range(files):
        lines.append(f'    - file: {{path: "{root}/{{{{ inventory_hostname }}}}/f{i}", '
                     f'content: "file {i} on {{{{ inventory_hostname }}}}\\n", mode: "0644"}}')
    path.write_text("\n".join(lines) + "\n")


def part_hosts(sizes: list[int], workdir: Path) -> None:
    from tests.harness.sshd import SshFleet

    biggest = max(sizes)
    log(f"starting {biggest} sshd hosts")
    fleet = SshFleet(biggest, workdir / "fleet")
    try:
        rows = []
        base: dict[str, float] = {}
        for n in sizes:
            inv = workdir / f"inv-{n}.yml"
            import yaml

            doc = yaml.safe_load(fleet.write_inventory(workdir / "inv-all.yml").read_text())
            hosts = doc["all"]["hosts"]
            doc["all"]["hosts"] = {k: hosts[k] for k in list(hosts)[:n]}
            inv.write_text(yaml.safe_dump(doc))
            root = f"/tmp/provision-bench-scale/{n}"
            clean_tree(root)
            pb = workdir / f"scale-{n}.yml"
            playbook(pb, root, RESOURCES_PER_HOST - 1)
            cmd = [sys.executable, "-m", "provisioner"]
            env = dict(os.environ, PROVISION_STATE_DIR=str(workdir / "state"))
            log(f"{n} hosts: first apply")
            first = run_measured(cmd + ["apply", str(pb), "-i", str(inv)], env=env)
            log(f"{n} hosts: no-op plan / apply")
            plan = run_measured(cmd + ["plan", str(pb), "-i", str(inv), "--detailed-exitcode"], env=env)
            noop = run_measured(cmd + ["apply", str(pb), "-i", str(inv)], env=env)
            for m, what in ((first, "first apply"), (plan, "no-op plan"), (noop, "no-op apply")):
                if m.returncode != 0:
                    print(f"!! {what} on {n} hosts exited {m.returncode}:\n{m.tail()}")
            base.setdefault("plan", plan.wall)
            base.setdefault("noop", noop.wall)
            base.setdefault("n", n)
            rows.append([str(n), str(n * RESOURCES_PER_HOST), f"{first.wall:.2f}", f"{plan.wall:.2f}",
                         f"{noop.wall:.2f}", f"{mb(max(plan.peak_rss, noop.peak_rss)):.0f}",
                         f"{plan.wall / base['plan']:.2f}x", f"{n / base['n']:.1f}x"])
            clean_tree(root)
        print("\n== hosts over SSH (loopback sshd), 10 resources per host")
        print(table(["hosts", "resources", "first apply s", "no-op plan s", "no-op apply s",
                     "peak MB", "plan time vs smallest", "hosts vs smallest"], rows))
    finally:
        fleet.stop_all()


PLANNER_CODE = r'''
import sys, time, json, resource
sys.path.insert(0, {repo!r})
from provisioner.inventory import load_inventory
from provisioner.spec.loader import load_spec
from provisioner.engine.runner import ordered_resources, plan_changes
n_hosts = {hosts}
t0 = time.process_time()
inv = load_inventory([{inv!r}])
t1 = time.process_time()
spec = load_spec({pb!r}, inv)
t2 = time.process_time()
ordered = ordered_resources(spec)
t3 = time.process_time()
def observed(r):
    if r.kind == "file":
        return {{"path": r.name, "type": "regular file", "sha256": r.fields["sha256"],
                "mode": 0o644, "owner": "root", "group": "root", "content": r.fields["content"]}}
    return {{"path": r.name, "type": "directory", "mode": 0o755, "owner": "root", "group": "root"}}
facts = {{h: {{r.address: observed(r) for r in rs}} for h, rs in ordered.items()}}
t4 = time.process_time()
changes = [c for h, rs in ordered.items() for c in plan_changes(rs, facts[h])]
t5 = time.process_time()
assert len(changes) == len(spec.resources) and not any(c.action.changes for c in changes)
print(json.dumps({{"resources": len(changes), "inventory": t1 - t0, "load": t2 - t1,
                  "order": t3 - t2, "diff": t5 - t4,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
'''


def part_planner(sizes: list[int], workdir: Path) -> None:
    import json
    import subprocess

    rows = []
    base = None
    for total in sizes:
        hosts = total // RESOURCES_PER_HOST
        inv = workdir / f"planner-{total}.ini"
        inv.write_text("[all]\n" + "".join(f"h{i} ansible_connection=local\n" for i in range(hosts)))
        pb = workdir / f"planner-{total}.yml"
        playbook(pb, "/srv/bench", RESOURCES_PER_HOST - 1)
        code = PLANNER_CODE.format(repo=str(Path(__file__).resolve().parents[1]), hosts=hosts,
                                   inv=str(inv), pb=str(pb))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        base = base or r
        rows.append([str(r["resources"]), f"{r['load']:.3f}", f"{r['order']:.3f}",
                     f"{r['diff']:.3f}", f"{r['load'] + r['order'] + r['diff']:.3f}",
                     f"{r['peak_mb']:.0f}", f"{r['diff'] / base['diff']:.2f}x",
                     f"{(r['load'] + r['diff']) / (base['load'] + base['diff']):.2f}x",
                     f"{r['resources'] / base['resources']:.1f}x"])
    print("\n== the planner alone, observed state given (CPU seconds)")
    print(table(["resources", "load+validate", "order", "diff", "total", "peak MB",
                 "diff vs smallest", "total vs smallest", "size vs smallest"], rows))
    last = rows[-1]
    print(f"target: diff of {last[0]} resources under 1 s of CPU: {last[3]} s "
          f"({'met' if float(last[3]) < 1 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="25,50,100")
    parser.add_argument("--resources", default="2500,5000,10000")
    parser.add_argument("--skip-hosts", action="store_true", help="planner part only")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="provision-bench-scale-") as tmp:
        workdir = Path(tmp)
        part_planner([int(x) for x in args.resources.split(",")], workdir)
        if not args.skip_hosts:
            part_hosts([int(x) for x in args.hosts.split(",")], workdir)
    print(f"\n(bench took {time.monotonic() - started:.0f}s; load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: compare ratios, not absolutes)")


if __name__ == "__main__":
    main()
