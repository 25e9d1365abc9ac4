"""Regenerate *.expected.json / *.graph.txt / *.patterns.json with real Ansible.

Development aid only (the tests never need Ansible):

    python3 -m venv /tmp/ansible-venv && /tmp/ansible-venv/bin/pip install ansible-core
    python3 tests/unit/inventory_fixtures/regenerate.py [/tmp/ansible-venv/bin [CASE...]]

Cases are listed in cases.json; the inventory_examples/ are added automatically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def resolve(src: str) -> str:
    path = os.path.join(HERE, src)
    return path if os.path.exists(path) else src


def run(bindir: str, tool: str, args: list[str], cwd: str) -> str:
    env = dict(os.environ, ANSIBLE_HOST_PATTERN_MISMATCH="error", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [os.path.join(bindir, tool), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{tool} {args} failed: {proc.stderr}")
    return proc.stdout


def main() -> None:
    bindir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/ansible-venv/bin"
    with open(os.path.join(HERE, "cases.json")) as fh:
        cases = json.load(fh)
    with tempfile.TemporaryDirectory() as cwd:  # no playbook-adjacent group_vars
        for name, case in cases.items():
            if sys.argv[2:] and name not in sys.argv[2:]:
                continue
            inv: list[str] = []
            for src in case["sources"]:
                inv += ["-i", resolve(src)]
            out = run(bindir, "ansible-inventory", [*inv, "--list"], cwd)
            with open(os.path.join(HERE, f"{name}.expected.json"), "w") as fh:
                fh.write(out)
            out = run(bindir, "ansible-inventory", [*inv, "--graph"], cwd)
            with open(os.path.join(HERE, f"{name}.graph.txt"), "w") as fh:
                fh.write(out)
            patterns = {}
            for pattern in case.get("patterns", []):
                out = run(bindir, "ansible", [*inv, pattern, "--list-hosts"], cwd)
                patterns[pattern] = [line.strip() for line in out.splitlines()[1:]]
            hostinfo = {}
            for host in json.loads(run(bindir, "ansible-inventory", [*inv, "--list"], cwd))[
                "_meta"
            ]["hostvars"]:
                hostinfo[host] = json.loads(
                    run(bindir, "ansible-inventory", [*inv, "--host", host], cwd)
                )
            with open(os.path.join(HERE, f"{name}.patterns.json"), "w") as fh:
                json.dump({"patterns": patterns, "host": hostinfo}, fh, indent=2, sort_keys=True)
                fh.write("\n")
            print("regenerated", name)


if __name__ == "__main__":
    main()
