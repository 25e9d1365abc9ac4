"""Benchmark: 20 containers, provision vs Ansible's community.docker.docker_container.

Same spec for both, same private dockerd (started here with tests/harness),
in one run: the first converge (20 creates) and the no-op rerun, each as a
fresh CLI process, as a person would run them. provision runs twice: on a
local connection (like Ansible's `connection: local`) and over SSH to a
loopback sshd (the daemon's socket forwarded over that one SSH connection).

Ansible is installed into its own venv at run time (not a dependency of the
project): ansible-core plus the `ansible` package, which ships
community.docker, and the Docker SDK it needs.

    python3 bench/containers.py [--containers 20] [--runs 3] [--venv /tmp/provision-bench-venv]

Targets (issue 4): provision's no-op rerun <= 0.1x Ansible's, and < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.dockerd import PrivateDockerd  # noqa: E402
from tests.harness.images import DockerImages  # noqa: E402
from tests.harness.sshd import SshFleet  # noqa: E402
from tests.harness.util import make_run_dir  # noqa: E402

COMMAND = "trap 'exit 0' TERM INT; sleep 86400 & wait"


def ensure_venv(venv: Path) -> Path:
    """A venv with ansible-core + community.docker + the Docker SDK."""
    python = venv / "bin" / "python"
    playbook = venv / "bin" / "ansible-playbook"
    probe = [str(python), "-c", "import docker, ansible_collections.community.docker"]
    if playbook.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return venv
    print(f"installing ansible + community.docker into {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "ansible-core", "ansible",
                    "docker", "requests"], check=True)
    return venv


def provision_files(work: Path, n: int, image: str, inventory_hosts: dict) -> tuple[Path, Path]:
    inventory = work / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": inventory_hosts}}))
    resources = []
    for i in range(n):
        resources.append({"container": {
            "name": f"prov-{i:02d}", "image": image, "command": ["sh", "-c", COMMAND],
            "network_mode": "none", "env": {"APP_ID": str(i), "MODE": "bench"},
            "labels": {"bench": "containers"}, "restart": "unless-stopped",
            "limits": {"memory": "32MiB"}, "stop_timeout": 2}})
    playbook = work / "containers.yml"
    playbook.write_text(json.dumps([{"name": "bench", "hosts": "all",
                                     "resources": resources}], indent=1))
    return playbook, inventory


def ansible_files(work: Path, n: int, image: str, docker_host: str) -> Path:
    playbook = work / "ansible.yml"
    tasks = [{
        "name": "containers",
        "community.docker.docker_container": {
            "name": "ans-{{ item }}", "image": image, "command": ["sh", "-c", COMMAND],
            "network_mode": "none", "env": {"APP_ID": "{{ item }}", "MODE": "bench"},
            "labels": {"bench": "containers"}, "restart_policy": "unless-stopped",
            "memory": "32m", "state": "started", "docker_host": docker_host,
            "stop_timeout": 2,
        },
        "loop": [f"{i:02d}" for i in range(n)],
    }]
    playbook.write_text(json.dumps([{"hosts": "localhost", "connection": "local",
                                     "gather_facts": False, "tasks": tasks}], indent=1))
    return playbook


CPU: dict[str, float] = {}  # CPU seconds (user+sys, the process and its children) of the last run


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    c0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - t0
    CPU["last"] = _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def provision_run(playbook: Path, inventory: Path, env: dict, work: Path) -> tuple[float, dict]:
    elapsed, out = timed([sys.executable, "-m", "provisioner", "apply", str(playbook),
                          "-i", str(inventory), "--json"], env, work)
    return elapsed, json.loads(out)


def changed_count(report: dict) -> int:
    hosts = report.get("hosts", report)
    total = 0
    for h in hosts.values() if isinstance(hosts, dict) else hosts:
        if isinstance(h, dict):
            total += int(h.get("changed", 0) or 0)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3, help="no-op reruns per tool (median)")
    ap.add_argument("--venv", default="/tmp/provision-bench-venv")
    ap.add_argument("--skip-ansible", action="store_true")
    args = ap.parse_args()
    n = args.containers

    # a SIGTERM (timeout, CI) still stops the daemons we started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    venv = None if args.skip_ansible else ensure_venv(Path(args.venv))
    run_dir = make_run_dir("bench-ct-")
    work = Path(tempfile.mkdtemp(prefix="bench-ct-work-"))
    dockerd = PrivateDockerd(run_dir / "docker")
    fleet = None
    try:
        images = DockerImages(dockerd, run_dir / "images")
        sock = str(dockerd.socket)
        fleet = SshFleet(1, run_dir / "ssh")
        h = fleet.hosts[0]
        # bytecode caching on, as on a user's machine (this CI-like environment sets
        # PYTHONDONTWRITEBYTECODE, which makes every CLI start recompile): both tools
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=str(REPO), NO_COLOR="1")
        results: dict[str, dict[str, object]] = {}

        for label, hosts in (
            ("provision (local)", {"h1": {"ansible_connection": "local",
                                          "provision_docker_socket": sock}}),
            ("provision (ssh)", {"h1": {"ansible_host": h["address"], "ansible_port": h["port"],
                                        "ansible_user": h["user"],
                                        "ansible_ssh_private_key_file": h["key_file"],
                                        "provision_known_hosts": str(fleet.known_hosts),
                                        "provision_docker_socket": sock}}),
        ):
            sub = work / label.split()[1].strip("()")
            sub.mkdir()
            playbook, inventory = provision_files(sub, n, images.healthcheck, hosts)
            first, rep = provision_run(playbook, inventory, env, sub)
            first_cpu = CPU["last"]
            print(f"{label}: first converge {first:.2f}s", flush=True)
            noops, cpus = [], []
            for _ in range(args.runs):
                t, rep2 = provision_run(playbook, inventory, env, sub)
                assert changed_count(rep2) == 0, f"{label}: the rerun changed something: {rep2}"
                noops.append(t)
                cpus.append(CPU["last"])
                print(f"{label}: no-op rerun {t:.2f}s (cpu {CPU['last']:.2f}s)", flush=True)
            results[label] = {"first": first, "noop": statistics.median(noops),
                              "first_cpu": first_cpu, "noop_cpu": statistics.median(cpus)}
            # remove them so the next variant creates again
            client = dockerd.client()
            for c in client.containers.list(all=True, filters={"name": "prov-"}):
                c.remove(force=True)
            client.close()

        if venv is not None:
            playbook = ansible_files(work, n, images.healthcheck, dockerd.url)
            aenv = {**{k: v for k, v in env.items() if k != "PYTHONPATH"},
                    "ANSIBLE_PYTHON_INTERPRETER": str(venv / "bin" / "python"),
                    "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING":
                    "false", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(work / "ans-tmp"),
                    "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
            argv = [str(venv / "bin" / "ansible-playbook"), "-i", "localhost,", str(playbook)]
            first, out = timed(argv, aenv, work)
            first_cpu = CPU["last"]
            print(f"ansible: first converge {first:.2f}s", flush=True)
            noops, cpus = [], []
            for _ in range(args.runs):
                t, out = timed(argv, aenv, work)
                recap = out[out.rfind("PLAY RECAP"):]
                assert "changed=0" in recap, f"ansible's rerun changed something:\n{recap}"
                noops.append(t)
                cpus.append(CPU["last"])
                print(f"ansible: no-op rerun {t:.2f}s (cpu {CPU['last']:.2f}s)", flush=True)
            results["ansible community.docker"] = {
                "first": first, "noop": statistics.median(noops),
                "first_cpu": first_cpu, "noop_cpu": statistics.median(cpus)}

        print(f"\n{n} containers, dockerd {dockerd.docker('version', '--format', '{{.Server.Version}}').stdout.strip()}, "
              f"no-op = median of {args.runs}; wall seconds per CLI process\n")
        print(f"{'tool':28} {'first converge':>15} {'no-op rerun':>12} {'first cpu':>10} "
              f"{'no-op cpu':>10}")
        for label, r in results.items():
            print(f"{label:28} {r['first']:15.2f} {r['noop']:12.2f} {r['first_cpu']:10.2f} "
                  f"{r['noop_cpu']:10.2f}")
        print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        ans = results.get("ansible community.docker")
        if ans:
            print()
            for label in ("provision (local)", "provision (ssh)"):
                r = results[label]
                print(f"{label}: first {r['first'] / ans['first']:.3f}x Ansible's, "
                      f"no-op {r['noop'] / ans['noop']:.3f}x Ansible's wall, "
                      f"{r['noop_cpu'] / ans['noop_cpu']:.3f}x its CPU "
                      f"(target <= 0.1x and < 1 s: "
                      f"{'met' if r['noop'] <= 0.1 * ans['noop'] and r['noop'] < 1 else 'NOT met'})")
    finally:
        if fleet is not None:
            fleet.stop_all()
        dockerd.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
