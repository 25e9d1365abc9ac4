"""Every broken input is one line naming file, line and field; exit 1; nothing changed.

Each case is data: the playbook (and any extra files), and what the error
line must say. The cases run through `provision apply` against the local
machine, so "nothing changed" is checked for real: the target directory must
stay empty.
"""

from __future__ import annotations

import os
import textwrap

import pytest
from click.testing import CliRunner

from provisioner.cli import main

INVENTORY = """\
all:
  hosts:
    localhost:
      ansible_connection: local
    web1:
      ansible_connection: local
  children:
    web:
      hosts:
        web1:
"""

GOOD_FILE = '    - file: {path: "{{ target }}/a", content: "x"}\n'

# (id, playbook text, {extra file: text}, expected pieces of the message)
CASES: list[tuple[str, str, dict[str, str], list[str]]] = [
    ("yaml-syntax", "- name: x\n  hosts: all\n  resources: [\n", {}, ["pb.yml:", "YAML syntax error"]),
    ("yaml-tab", "- name: x\n\thosts: all\n", {}, ["pb.yml:2", "YAML syntax error"]),
    ("not-a-list", "name: x\nhosts: all\n", {}, ["pb.yml:1", "list of plays"]),
    ("empty", "", {}, ["pb.yml", "empty"]),
    ("play-not-mapping", "- just a string\n", {}, ["pb.yml:1", "plays[0]", "mapping"]),
    ("unknown-play-key", "- name: x\n  hosts: all\n  resourcs: []\n", {},
     ["pb.yml:3", "resourcs", "did you mean resources?"]),
    ("missing-hosts", "- name: x\n  resources: []\n", {}, ["pb.yml:1", "hosts", "missing"]),
    ("unknown-host", "- name: x\n  hosts: nosuchhost\n  resources: []\n", {},
     ["pb.yml:2", "hosts", "nosuchhost"]),
    ("unknown-kind", "- name: x\n  hosts: all\n  resources:\n    - fiel: {path: /x}\n", {},
     ["pb.yml:4", "unknown resource kind", "did you mean file?"]),
    ("unknown-field", "- name: x\n  hosts: all\n  resources:\n    - file:\n        path: /tmp/x\n        conent: hi\n", {},
     ["pb.yml:6", "resources[0].file.conent", "did you mean content?"]),
    ("wrong-type-mode", "- name: x\n  hosts: all\n  resources:\n    - file:\n        path: /tmp/x\n        content: hi\n        mode: rwx\n", {},
     ["pb.yml:7", "file.mode", "octal mode"]),
    ("wrong-type-path", "- name: x\n  hosts: all\n  resources:\n    - file: {path: [1, 2], content: x}\n", {},
     ["pb.yml:4", "file.path", "string"]),
    ("relative-path", "- name: x\n  hosts: all\n  resources:\n    - file: {path: etc/x, content: x}\n", {},
     ["pb.yml:4", "file.path", "absolute"]),
    ("bad-state", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/x, state: gone}\n", {},
     ["pb.yml:4", "file.state", "unallowed value"]),
    ("two-sources", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/x, content: a, source: b}\n", {},
     ["pb.yml:4", "file.source", "only one"]),
    ("no-content", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/x}\n", {},
     ["pb.yml:4", "file.content", "needs content"]),
    ("missing-source", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/x, source: nope.txt}\n", {},
     ["pb.yml:4", "file.source", "nope.txt"]),
    ("undefined-var", "- name: x\n  hosts: all\n  resources:\n    - file:\n        path: /tmp/x\n        content: \"{{ nosuchvar }}\"\n", {},
     ["pb.yml:6", "file.content", "undefined", "nosuchvar"]),
    ("undefined-var-in-template", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/x, template: t.j2}\n",
     {"t.j2": "line1\n{{ missing_thing }}\n"}, ["pb.yml:4", "file.template", "missing_thing"]),
    ("template-syntax", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/x, content: \"{{ a }\"}\n", {},
     ["pb.yml:4", "template syntax error"]),
    ("duplicate", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/x, content: a}\n    - file: {path: /tmp/x, content: b}\n", {},
     ["pb.yml:5", "declared twice", "pb.yml:4"]),
    ("duplicate-key", "- name: x\n  hosts: all\n  hosts: web\n", {}, ["pb.yml:3", "duplicate key"]),
    ("cycle", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/a, content: a, depends_on: ['file:/tmp/b']}\n    - file: {path: /tmp/b, content: b, depends_on: ['file:/tmp/a']}\n", {},
     ["pb.yml:", "dependency cycle", "/tmp/a", "/tmp/b"]),
    ("depends-unknown", "- name: x\n  hosts: all\n  resources:\n    - file: {path: /tmp/a, content: a, depends_on: ['file:/tmp/zz']}\n", {},
     ["pb.yml:4", "depends on", "/tmp/zz"]),
    ("include-missing", "- include: other.yml\n", {}, ["other.yml", "file not found"]),
    ("include-cycle", "- include: other.yml\n", {"other.yml": "- include: pb.yml\n"}, ["include cycle"]),
    ("resource-include-bad", "- name: x\n  hosts: all\n  resources:\n    - include: more.yml\n",
     {"more.yml": "- file: {path: /tmp/x, mode: 999999, content: a}\n"}, ["more.yml:1", "file.mode"]),
    ("vars-not-mapping", "- name: x\n  hosts: all\n  vars: [1, 2]\n  resources: []\n", {},
     ["pb.yml:3", "vars", "mapping"]),
    ("vars-file-missing", "- name: x\n  hosts: all\n  vars_files: [nope.yml]\n  resources: []\n", {},
     ["nope.yml", "file not found"]),
    ("env-missing", "- name: x\n  hosts: all\n  resources:\n    - file:\n        path: /tmp/x\n        content: !env PROVISION_TEST_SURELY_UNSET\n", {},
     ["pb.yml:6", "PROVISION_TEST_SURELY_UNSET", "not set"]),
    ("resource-not-mapping", "- name: x\n  hosts: all\n  resources:\n    - file\n", {},
     ["pb.yml:4", "resources[0]"]),
    ("two-kinds", "- name: x\n  hosts: all\n  resources:\n    - {file: {path: /tmp/x, content: a}, directory: {path: /tmp}}\n", {},
     ["pb.yml:4", "exactly one kind"]),
    ("prune-not-bool", "- name: x\n  hosts: all\n  prune: maybe\n  resources: []\n", {},
     ["pb.yml:3", "prune", "true or false"]),
    ("bad-pattern-group", "- name: x\n  hosts: 'web:&nosuchgroup'\n  resources: []\n", {},
     ["pb.yml:2", "hosts", "nosuchgroup"]),
    ("secret-name", "- name: x\n  hosts: all\n  resources:\n    - file: {path: !secret /tmp/x, content: a}\n", {},
     ["pb.yml:4", "file.path"]),
]

INVENTORY_CASES: list[tuple[str, str, str, list[str]]] = [
    ("inv-yaml-syntax", "inv.yml", "all:\n  hosts: [\n", ["inv.yml:", "YAML"]),
    ("inv-ini-bad-line", "inv.ini", "[web]\nweb1 ansible_port\n", ["inv.ini:2"]),
    ("inv-missing", "nope.yml", None, ["nope.yml"]),  # type: ignore[list-item]
]


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["validate", "apply"])
def test_bad_spec_is_one_line_and_changes_nothing(tmp_path, case, command):
    _, playbook, extra, expected = case
    target = tmp_path / "target"
    target.mkdir()
    inv = _write(tmp_path, "inventory.yml", INVENTORY)
    pb = _write(tmp_path, "pb.yml", playbook)
    for name, text in extra.items():
        _write(tmp_path, name, text)
    result = CliRunner().invoke(main, [command, pb, "-i", inv, "-e", f"target={target}"])
    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert message.startswith("error: "), message
    assert "\n" not in message, f"not one line: {message!r}"
    assert "Traceback" not in message
    for piece in expected:
        assert piece in message, f"{piece!r} not in {message!r}"
    assert os.listdir(target) == []


@pytest.mark.parametrize("case", INVENTORY_CASES, ids=[c[0] for c in INVENTORY_CASES])
def test_bad_inventory_is_one_line(tmp_path, case):
    _, name, text, expected = case
    inv = _write(tmp_path, name, text) if text is not None else str(tmp_path / name)
    pb = _write(tmp_path, "pb.yml", "- name: x\n  hosts: all\n  resources: []\n")
    result = CliRunner().invoke(main, ["validate", pb, "-i", inv])
    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert "\n" not in message and message.startswith("error: "), message
    for piece in expected:
        assert piece in message, f"{piece!r} not in {message!r}"


def test_good_spec_validates(tmp_path):
    inv = _write(tmp_path, "inventory.yml", INVENTORY)
    pb = _write(tmp_path, "pb.yml", "- name: x\n  hosts: all\n  resources:\n" + GOOD_FILE)
    result = CliRunner().invoke(main, ["validate", pb, "-i", inv, "-e", "target=/tmp/t"])
    assert result.exit_code == 0, result.output
    assert "valid: 2 resources on 2 hosts" in result.output
