"""Property tests: generated specs and inventories, valid and broken.

Whatever the input: never a traceback, an error is one line naming the file,
and validation never opens a connection. Generated names and contents reach
the host byte for byte, never as code.
"""

from __future__ import annotations

import os
import socket
import string

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioner.cli import main

KINDS = ["file", "directory", "line", "package", "user", "group", "command", "fiel", "vm_"]
FIELDS = ["path", "content", "mode", "owner", "name", "state", "line", "regexp", "argv",
          "creates", "memory", "depends_on", "conent", "uid", "groups"]
NASTY = st.sampled_from(["; rm -rf /", "$(id)", "`id`", "a\nb", "é☃", "-rf", "{{ x }}",
                         "{{ undefined_thing }}", "{% if %}", "0644", "rwx", "2GiB", "", " ",
                         "x" * 300, "!", "--", "\\", "'", '"'])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False),
                    st.text(max_size=20), NASTY)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3)),
    max_leaves=6)
RESOURCE = st.dictionaries(st.sampled_from(KINDS),
                           st.one_of(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5),
                                     SCALARS), min_size=1, max_size=2)
PLAY = st.fixed_dictionaries(
    {"hosts": st.one_of(st.sampled_from(["all", "web", "web:!db", "nohost", "w*", "web:&db"]),
                        SCALARS)},
    optional={"name": SCALARS, "vars": st.one_of(st.dictionaries(st.sampled_from(["x", "port"]),
                                                                  SCALARS, max_size=2), SCALARS),
              "resources": st.one_of(st.lists(RESOURCE, max_size=4), SCALARS),
              "prune": st.one_of(st.booleans(), SCALARS), "resourcs": SCALARS})
PLAYBOOK = st.one_of(st.lists(PLAY, max_size=3), VALUES)
INVENTORY = st.one_of(
    st.just({"all": {"hosts": {"web1": {"ansible_connection": "local"},
                               "db1": {"ansible_connection": "local"}},
                     "children": {"web": {"hosts": {"web1": None}},
                                  "db": {"hosts": {"db1": None}}}}}),
    st.dictionaries(st.sampled_from(["all", "web", "hosts", "children", "vars"]), VALUES,
                    max_size=3),
)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation opened a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _check_outcome(result, names: list[str]) -> None:
    text = result.output
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    assert result.exit_code in (0, 1), text
    if result.exit_code == 1:
        message = text.strip()
        assert message.startswith("error: ") and "\n" not in message, message
        assert any(n in message for n in names), message


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(playbook=PLAYBOOK, inventory=INVENTORY)
def test_generated_specs_never_crash(tmp_path, no_network, playbook, inventory):
    pb = tmp_path / "pb.yml"
    inv = tmp_path / "inv.yml"
    pb.write_text(yaml.safe_dump(playbook, allow_unicode=True))
    inv.write_text(yaml.safe_dump(inventory, allow_unicode=True))
    result = CliRunner().invoke(main, ["validate", str(pb), "-i", str(inv)])
    _check_outcome(result, ["pb.yml", "inv.yml"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=string.printable + "é☃\t", max_size=200))
def test_arbitrary_text_as_playbook_never_crashes(tmp_path, no_network, text):
    pb = tmp_path / "pb.yml"
    pb.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(pb)])
    _check_outcome(result, ["pb.yml"])


NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x00")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(NAME_CHARS, min_size=1, max_size=60).filter(lambda n: n not in (".", "..")),
       content=st.text(max_size=500))
@example(name="\\", content="")  # sha256sum escapes such a name and prefixes its line with "\\"
@example(name="a\\b\\", content="x")
def test_names_and_contents_reach_the_host_intact(tmp_path, name, content):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    target = os.path.join(str(root), name)
    pb = tmp_path / "pb.yml"
    pb.write_text(yaml.safe_dump([{"name": "p", "hosts": "localhost", "resources": [
        {"file": {"path": target, "content": content.replace("{", "(")}}]}],
        allow_unicode=True))
    result = CliRunner().invoke(main, ["apply", str(pb)])
    assert result.exit_code == 0, result.output
    with open(target, encoding="utf-8", newline="") as fh:
        assert fh.read() == content.replace("{", "(")
    assert os.listdir(root) == [name]  # nothing else was created
    os.unlink(target)
