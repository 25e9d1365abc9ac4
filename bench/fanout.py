#!/usr/bin/env python3
"""Fan-out bench: the same small change on N loopback SSH hosts with provision,
pyinfra and ansible-playbook; wall time and controller memory, first run and no-op.

    python bench/fanout.py [--hosts 20] [--repeat 3] [--tools provision,pyinfra,ansible]

Per host, with each tool: a directory, a templated file holding a host variable
(mode 0644) and a line in a config file (created if missing), under
/tmp/provision-bench-fanout/<tool>/<host>/. The hosts are OpenSSH servers on
127.0.0.1 (tests/harness/sshd.py) and every tool checks host keys strictly
against the fleet's known_hosts.

For each tool and repeat: clean its tree, a first run (changes), a second run
(no-op); tools interleave within a repeat (order rotates) so machine noise hits
all of them alike. Wall time is the whole command, process start to exit; memory
is the peak of the summed RSS of the command's whole process tree (the tool and
every process it forks, sampled every ~10 ms from /proc). Each first run is checked on
disk on every host; provision's second run must report no changes, and
`provision plan --detailed-exitcode` must then exit 0.

pyinfra and ansible-core are installed into their own virtualenv (--venv,
created if missing). Targets (from the issue) are printed as met / NOT met;
nothing is asserted. Exit status: 0 if every tool ran and verified, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    REPO,
    Measured,
    Series,
    clean_tree,
    ensure_venv,
    log,
    mb,
    pip_version,
    ratio,
    run_measured,
    table,
)
from tests.harness.sshd import SshFleet  # noqa: E402

ROOT = Path("/tmp/provision-bench-fanout")
VENV = Path("/tmp/provision-bench-venv")
PEER_PACKAGES = ["pyinfra>=3,<4", "ansible-core"]
ANSIBLE_FORKS = 20  # at least the host count is used (see AnsibleTool)
REMOTE_PYTHON = "/usr/bin/python3"  # ansible's interpreter on the hosts (no discovery round trip)

TEMPLATE = """\
# managed by the fanout bench
host = {{ inventory_hostname }}
port = {{ bench_port }}
"""
LINE_REGEXP = "^BENCH_HOST="


def bench_port(index: int) -> int:
    """The host variable the template renders: distinct per host."""
    return 8000 + index


def expected_conf(name: str, index: int) -> str:
    return f"# managed by the fanout bench\nhost = {name}\nport = {bench_port(index)}\n"


def expected_line(name: str) -> str:
    return f"BENCH_HOST={name}"


# -- tools ------------------------------------------------------------------------------

class Tool:
    """One tool's files for this bench and its two commands."""

    name = ""
    #: note printed under the table
    note = ""

    def __init__(self, work: Path, fleet: SshFleet) -> None:
        self.dir = work / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "templates").mkdir(exist_ok=True)
        (self.dir / "templates" / "app.conf.j2").write_text(TEMPLATE)
        self.fleet = fleet
        self.root = ROOT / self.name
        self.hosts = fleet.hosts
        self.version = "?"

    def paths(self, host: str) -> tuple[Path, Path, Path]:
        base = self.root / host / "etc"
        return base, base / "app.conf", base / "bench.env"

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def command(self) -> list[str]:
        raise NotImplementedError

    def markers(self) -> list[str]:
        """Command-line substrings of this run's processes that leave the tree (daemons)."""
        return []

    def run(self) -> Measured:
        env = self.env()
        return run_measured(self.command(), env=env, cwd=self.dir, markers=self.markers())

    def after_run(self) -> None:
        """Called after every measured run (outside the measurement)."""

    def clean(self) -> None:
        clean_tree(self.root)

    def verify(self) -> list[str]:
        """Problems on disk after a first run, [] if every host has the three things."""
        problems = []
        for i, h in enumerate(self.hosts, start=1):
            name = h["name"]
            directory, conf, env_file = self.paths(name)
            if not directory.is_dir():
                problems.append(f"{name}: no directory {directory}")
                continue
            try:
                text = conf.read_text()
                mode = conf.stat().st_mode & 0o7777
            except OSError as e:
                problems.append(f"{name}: {conf}: {e.strerror}")
            else:
                if text.rstrip("\n") != expected_conf(name, i).rstrip("\n"):
                    problems.append(f"{name}: {conf} has {text!r}")
                if mode != 0o644:
                    problems.append(f"{name}: {conf} mode {mode:04o}, want 0644")
            try:
                lines = env_file.read_text().splitlines()
            except OSError as e:
                problems.append(f"{name}: {env_file}: {e.strerror}")
            else:
                if lines.count(expected_line(name)) != 1:
                    problems.append(f"{name}: {env_file} has {lines!r}")
        return problems

    def noop_problems(self, m: Measured) -> list[str]:
        """Whether a second run says it changed something ([] if it reports none)."""
        return []


def inventory_doc(fleet: SshFleet, extra_all_vars: dict | None = None) -> dict:
    """The fleet's Ansible-style inventory plus the per-host variable `bench_port`."""
    doc = yaml.safe_load(Path(fleet.write_inventory()).read_text())
    for i, (_name, hv) in enumerate(doc["all"]["hosts"].items(), start=1):
        hv["bench_port"] = bench_port(i)
    doc["all"].setdefault("vars", {}).update(extra_all_vars or {})
    return doc


class ProvisionTool(Tool):
    name = "provision"

    def __init__(self, work: Path, fleet: SshFleet) -> None:
        super().__init__(work, fleet)
        self.inventory = self.dir / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump(inventory_doc(fleet), sort_keys=False))
        self.playbook = self.dir / "site.yml"
        base = f"{self.root}/{{{{ inventory_hostname }}}}/etc"
        self.playbook.write_text(yaml.safe_dump([{
            "name": "fanout bench",
            "hosts": "all",
            "resources": [
                {"directory": {"path": base, "mode": "0755"}},
                {"file": {"path": f"{base}/app.conf", "template": "templates/app.conf.j2",
                          "mode": "0644"}},
                {"line": {"path": f"{base}/bench.env", "regexp": LINE_REGEXP,
                          "line": "BENCH_HOST={{ inventory_hostname }}", "create": True}},
            ],
        }], sort_keys=False))
        # The console script next to this interpreter (not a pyenv shim, which is a
        # bash script costing tens of ms), else `python -m provisioner`.
        script = Path(sys.executable).parent / "provision"
        self.base_cmd = [str(script)] if script.exists() else [sys.executable, "-m", "provisioner"]
        out = subprocess.run([*self.base_cmd, "--version"], capture_output=True, text=True,
                             env=self.env())
        self.version = (out.stdout.strip().split() or ["?"])[-1]
        self.note = (f"provision {self.version}: `{' '.join(self.base_cmd)} apply` "
                     f"(default --forks), --known-hosts {fleet.known_hosts}")

    def env(self) -> dict[str, str]:
        # This repo first on sys.path: the editable install's finder may map
        # `provisioner` to a namespace package when run outside the checkout.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def common_args(self) -> list[str]:
        return [str(self.playbook), "-i", str(self.inventory), "--known-hosts",
                str(self.fleet.known_hosts)]

    def command(self) -> list[str]:
        return [*self.base_cmd, "apply", *self.common_args()]

    def validate(self) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base_cmd, "validate", *self.common_args()],
                              capture_output=True, text=True, cwd=self.dir, env=self.env())

    def plan_exitcode(self) -> tuple[int, str]:
        p = subprocess.run([*self.base_cmd, "plan", *self.common_args(), "--detailed-exitcode"],
                           capture_output=True, text=True, cwd=self.dir, env=self.env())
        return p.returncode, (p.stdout + p.stderr).strip()

    def noop_problems(self, m: Measured) -> list[str]:
        text = m.stdout + m.stderr
        # apply prints a plan summary; on a converged fleet it must not plan to change anything
        if re.search(r"\b[1-9]\d* to (create|change|update|delete|destroy)", text):
            return [f"second apply reported changes: {m.tail(5)}"]
        code, out = self.plan_exitcode()
        if code != 0:
            return [f"plan --detailed-exitcode exited {code} after the second apply: "
                    + "\n".join(out.splitlines()[-10:])]
        return []


class PyinfraTool(Tool):
    name = "pyinfra"

    def __init__(self, work: Path, fleet: SshFleet, bindir: Path) -> None:
        super().__init__(work, fleet)
        self.bin = bindir / "pyinfra"
        self.version = pip_version(bindir, "pyinfra")
        hosts = [
            (h["name"], {
                "ssh_hostname": h["address"],
                "ssh_port": h["port"],
                "ssh_user": h["user"],
                "ssh_key": h["key_file"],
                "ssh_known_hosts_file": str(fleet.known_hosts),
                "ssh_strict_host_key_checking": "yes",
                "bench_port": bench_port(i),
            })
            for i, h in enumerate(fleet.hosts, start=1)
        ]
        (self.dir / "inventory.py").write_text(f"hosts = {hosts!r}\n")
        (self.dir / "deploy.py").write_text(f"""\
from pyinfra import host
from pyinfra.operations import files

base = "{self.root}/" + host.name + "/etc"
files.directory(name="directory", path=base, mode="755", present=True)
files.template(name="template", src="templates/app.conf.j2", dest=base + "/app.conf",
               mode="644", inventory_hostname=host.name, bench_port=host.data.bench_port)
files.line(name="line", path=base + "/bench.env", line="{LINE_REGEXP}.*$",
           replace="BENCH_HOST=" + host.name)
""")
        self.note = (f"pyinfra {self.version}: `pyinfra -y inventory.py deploy.py`, default "
                     "parallelism, ssh_known_hosts_file + ssh_strict_host_key_checking=yes")

    def command(self) -> list[str]:
        return [str(self.bin), "-y", "inventory.py", "deploy.py"]

    def noop_problems(self, m: Measured) -> list[str]:
        # pyinfra's results table: "Success: N Changed: M ..." per host or
        # "No changes" — be lenient, only flag an explicit non-zero change count.
        if re.search(r"Changed:\s*[1-9]", m.stdout):
            return ["second run reported changes"]
        return []


class AnsibleTool(Tool):
    name = "ansible"

    def __init__(self, work: Path, fleet: SshFleet, bindir: Path) -> None:
        super().__init__(work, fleet)
        self.bin = bindir / "ansible-playbook"
        self.version = pip_version(bindir, "ansible-core")
        self.forks = max(ANSIBLE_FORKS, len(fleet.hosts))
        self.inventory = self.dir / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump(
            inventory_doc(fleet, {"ansible_python_interpreter": REMOTE_PYTHON}), sort_keys=False))
        base = f"{self.root}/{{{{ inventory_hostname }}}}/etc"
        (self.dir / "site.yml").write_text(yaml.safe_dump([{
            "name": "fanout bench",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {"name": "directory", "ansible.builtin.file":
                    {"path": base, "state": "directory", "mode": "0755"}},
                {"name": "template", "ansible.builtin.template":
                    {"src": "templates/app.conf.j2", "dest": f"{base}/app.conf", "mode": "0644"}},
                {"name": "line", "ansible.builtin.lineinfile":
                    {"path": f"{base}/bench.env", "regexp": LINE_REGEXP,
                     "line": "BENCH_HOST={{ inventory_hostname }}", "create": True}},
            ],
        }], sort_keys=False))
        # A short, per-run ControlPath directory: ControlPersist reuses the master
        # connection across the tasks of one run, never across runs (the other tools
        # start cold every time, so must Ansible); masters are closed after each run.
        self.cp_root = Path(tempfile.mkdtemp(prefix="pbf-cp-", dir="/tmp"))
        self.cp_dir: Path | None = None
        self.runs = 0
        (self.dir / "ansible.cfg").write_text(f"""\
[defaults]
forks = {self.forks}
host_key_checking = True
interpreter_python = {REMOTE_PYTHON}
retry_files_enabled = False
deprecation_warnings = False
nocolor = True
local_tmp = {self.dir}/.ansible-local

[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes
""")
        self.note = (f"ansible-core {self.version}: forks {self.forks}, pipelining on, "
                     "ControlMaster=auto ControlPersist=60s (per run), gather_facts: false, "
                     f"ansible_python_interpreter={REMOTE_PYTHON}, "
                     "UserKnownHostsFile=<fleet> StrictHostKeyChecking=yes; memory includes "
                     "the forks and their ssh processes")

    def env(self) -> dict[str, str]:
        self.runs += 1
        self.cp_dir = self.cp_root / str(self.runs)
        self.cp_dir.mkdir()
        env = dict(os.environ)
        env.update({
            "ANSIBLE_CONFIG": str(self.dir / "ansible.cfg"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.cp_dir),
            "ANSIBLE_HOME": str(self.dir / ".ansible-home"),
            "ANSIBLE_FORCE_COLOR": "0",
        })
        return env

    def command(self) -> list[str]:
        return [str(self.bin), "-i", "inventory.yml", "site.yml"]

    def markers(self) -> list[str]:
        # ControlPersist masters daemonize out of the tree; their ControlPath names them
        return [str(self.cp_dir)] if self.cp_dir else []

    def after_run(self) -> None:
        close_control_masters(self.cp_dir)

    def noop_problems(self, m: Measured) -> list[str]:
        changed = [int(n) for n in re.findall(r"\bchanged=(\d+)", m.stdout)]
        if any(changed):
            return [f"second run reported changed={sum(changed)}"]
        return []

    def cleanup(self) -> None:
        close_control_masters(self.cp_dir)
        shutil.rmtree(self.cp_root, ignore_errors=True)


def close_control_masters(cp_dir: Path | None) -> None:
    """`ssh -O exit` every ControlPersist master whose socket is in cp_dir."""
    if cp_dir is None or not cp_dir.is_dir():
        return
    for sock in cp_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"],
                       capture_output=True, timeout=10)


# -- the bench --------------------------------------------------------------------------

def wait_for_line_module(timeout: float) -> bool:
    """modules/line.py is being written in parallel: wait for it (it is needed by provision)."""
    path = REPO / "modules" / "line.py"
    deadline = time.monotonic() + timeout
    if not path.exists():
        log(f"waiting up to {timeout:.0f} s for {path} (provision's `line` kind)")
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(5)
    return True


def measure(tools: list[Tool], repeat: int, warmup: int) -> dict:
    results: dict[str, dict] = {
        t.name: {"first": Series(), "noop": Series(), "mem_first": Series(), "mem_noop": Series(),
                 "cpu_first": Series(), "cpu_noop": Series(), "procs": Series(), "problems": []}
        for t in tools
    }
    for r in range(-warmup, repeat):
        shift = r % len(tools)
        order = tools[shift:] + tools[:shift]
        label = f"warm-up {r + warmup + 1}" if r < 0 else f"repeat {r + 1}/{repeat}"
        for tool in order:
            res = results[tool.name]
            tool.clean()
            first = tool.run()
            tool.after_run()
            if not first.ok:
                res["problems"].append(f"first run exited {first.returncode}:\n{first.tail()}")
                log(f"{label} {tool.name}: first run FAILED ({first.returncode})")
                continue
            problems = tool.verify()
            if problems:
                res["problems"].append("after the first run: " + "; ".join(problems[:5])
                                       + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
            second = tool.run()
            tool.after_run()
            if not second.ok:
                res["problems"].append(f"second run exited {second.returncode}:\n{second.tail()}")
            else:
                res["problems"].extend(tool.noop_problems(second))
            log(f"{label} {tool.name}: first {first.wall:.2f} s (cpu {first.cpu:.2f}) "
                f"{mb(first.peak_rss):.0f} MB, no-op {second.wall:.2f} s (cpu {second.cpu:.2f}) "
                f"{mb(second.peak_rss):.0f} MB "
                f"(max {max(first.peak_procs, second.peak_procs)} processes)")
            if r < 0:
                continue
            res["first"].add(first.wall)
            res["noop"].add(second.wall)
            res["mem_first"].add(first.peak_rss)
            res["mem_noop"].add(second.peak_rss)
            res["cpu_first"].add(first.cpu)
            res["cpu_noop"].add(second.cpu)
            res["procs"].add(max(first.peak_procs, second.peak_procs))
    return results


def report(tools: list[Tool], results: dict, args: argparse.Namespace) -> bool:
    rows = []
    for t in tools:
        r = results[t.name]
        rows.append([
            f"{t.name} {t.version}",
            f"{r['first'].median:.2f} ({r['first'].spread()})",
            f"{r['noop'].median:.2f} ({r['noop'].spread()})",
            f"{r['cpu_first'].median:.2f}",
            f"{r['cpu_noop'].median:.2f}",
            f"{mb(r['mem_first'].median):.0f}",
            f"{mb(r['mem_noop'].median):.0f}",
            f"{r['procs'].median:.0f}",
        ])
    print(f"\nfanout: {args.hosts} hosts (loopback sshd, strict host keys), median of "
          f"{args.repeat} runs, wall seconds (min-max), controller peak RSS summed over "
          "the process tree\n")
    print(table(["tool", "first run s", "no-op run s", "CPU s first", "CPU s no-op",
                 "peak MB first", "peak MB no-op", "max procs"], rows))
    print()
    for t in tools:
        print(f"- {t.note}")
    print("- CPU s: user+sys of the command and the descendants it reaped (wait4 rusage; "
          "ssh ControlPersist masters are not included); less sensitive to machine load than "
          "wall time")
    print("- peak MB: max over ~10 ms samples of the summed RSS of the command's process "
          "tree: its session, every descendant (also those that call setsid, like Ansible's "
          "workers and their ssh) and ssh ControlPersist masters (shared pages count once "
          "per process, so forks are over-counted)")

    by = {t.name: results[t.name] for t in tools}
    ok = True
    if "provision" in by:
        p = by["provision"]
        pmem = max(p["mem_first"].median, p["mem_noop"].median)
        lines = []
        targets = []
        for peer, noop_target in (("pyinfra", 0.5), ("ansible", 0.1)):
            if peer not in by:
                continue
            q = by[peer]
            qmem = max(q["mem_first"].median, q["mem_noop"].median)
            rf = ratio(p["first"].median, q["first"].median)
            rn = ratio(p["noop"].median, q["noop"].median)
            rm = ratio(pmem, qmem)
            lines.append(f"provision/{peer}: first run {rf:.2f}x, no-op {rn:.2f}x, "
                         f"peak memory {rm:.2f}x")
            # the same ratio per repeat (both measured minutes apart at most), then the median:
            # less exposed to load drifting across the run
            pf, pn = paired(p["first"], q["first"]), paired(p["noop"], q["noop"])
            cf, cn = ratio(p["cpu_first"].median, q["cpu_first"].median), \
                ratio(p["cpu_noop"].median, q["cpu_noop"].median)
            lines.append(f"  per-repeat wall ratios, median: first {pf:.2f}x, no-op {pn:.2f}x; "
                         f"CPU ratio: first {cf:.2f}x, no-op {cn:.2f}x")
            targets.append((f"no-op provision <= {noop_target}x {peer}", rn <= noop_target,
                            f"{rn:.2f}x"))
            if peer == "pyinfra":
                targets.append(("controller peak memory <= pyinfra's", rm <= 1.0, f"{rm:.2f}x"))
        print("\nRatios (same run):")
        for line in lines:
            print(f"  {line}")
        print("\nTargets:")
        for what, met, value in targets:
            print(f"  {what}: {'met' if met else 'NOT met'} ({value})")

    print("\nVerification:")
    for t in tools:
        problems = results[t.name]["problems"]
        if problems:
            ok = False
            print(f"  {t.name}: FAILED")
            for p in problems[:6]:
                print("    " + p.replace("\n", "\n    "))
        else:
            what = "all hosts have the directory, the file (0644) and the line after every first run"
            if t.name == "provision":
                what += "; every second apply planned no change and plan --detailed-exitcode exited 0"
            else:
                what += "; second runs reported no changes"
            print(f"  {t.name}: ok ({what})")
    return ok


def paired(a: Series, b: Series) -> float:
    """Median over repeats of a[i]/b[i]."""
    ratios = [x / y for x, y in zip(a.values, b.values, strict=False) if y]
    return Series(ratios).median


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed first+second runs per tool before measuring (bytecode, caches)")
    ap.add_argument("--tools", default="provision,pyinfra,ansible")
    ap.add_argument("--venv", default=str(VENV), help="virtualenv for pyinfra and ansible-core")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write raw results as JSON")
    ap.add_argument("--keep", action="store_true", help=f"leave {ROOT} in place at the end")
    args = ap.parse_args()
    names = [n.strip() for n in args.tools.split(",") if n.strip()]

    bindir = None
    if {"pyinfra", "ansible"} & set(names):
        bindir = ensure_venv(args.venv, PEER_PACKAGES, ["pyinfra", "ansible-playbook"])
    if "provision" in names and not wait_for_line_module(timeout=1800):
        log("modules/line.py never appeared: provision skipped")
        names.remove("provision")

    work = Path(tempfile.mkdtemp(prefix="provision-bench-fanout-"))
    fleet = None
    tools: list[Tool] = []
    try:
        log(f"starting {args.hosts} sshd under {work}")
        fleet = SshFleet(args.hosts, work / "fleet")
        for n in names:
            if n == "provision":
                tool = ProvisionTool(work, fleet)
                v = tool.validate()
                if v.returncode != 0:
                    log(f"provision validate failed:\n{(v.stdout + v.stderr).strip()}")
                    return 1
            elif n == "pyinfra":
                tool = PyinfraTool(work, fleet, bindir)
            elif n == "ansible":
                tool = AnsibleTool(work, fleet, bindir)
            else:
                ap.error(f"unknown tool {n!r}")
            tools.append(tool)
        results = measure(tools, args.repeat, args.warmup)
        ok = report(tools, results, args)
        if args.json:
            Path(args.json).write_text(json.dumps({
                t.name: {k: (v.values if isinstance(v, Series) else v)
                         for k, v in results[t.name].items()} | {"version": t.version}
                for t in tools
            }, indent=2))
        return 0 if ok else 1
    finally:
        for t in tools:
            with contextlib.suppress(Exception):
                if isinstance(t, AnsibleTool):
                    t.cleanup()
            if not args.keep:
                t.clean()
        if fleet is not None:
            fleet.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            if not args.keep:
                ROOT.rmdir()


if __name__ == "__main__":
    sys.exit(main())
