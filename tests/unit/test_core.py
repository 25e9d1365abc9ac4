"""Pure core: YAML marks, templating with secrets, sizes, diff, graph, batch framing, codec."""

from __future__ import annotations

import subprocess

import pytest

from modules import get_module
from provisioner.engine.batch import build_script, parse_output
from provisioner.errors import SpecError
from provisioner.plan import codec
from provisioner.plan.diff import diff
from provisioner.plan.graph import order
from provisioner.plan.model import Action, HostPlan, Plan
from provisioner.resource import Origin, Resource, split_address
from provisioner.secret import REDACTED, Secret
from provisioner.spec.templating import render_string
from provisioner.spec.units import format_size, parse_mode, parse_size
from provisioner.spec.yaml_loader import load_yaml_text


def test_yaml_marks_lines_and_tags():
    doc = load_yaml_text("- a: 1\n  b:\n    - x\n    - !secret pw\n", "f.yml")
    assert doc[0].line_of("b") == 2
    assert doc[0]["b"].line_of(1) == 4
    assert isinstance(doc[0]["b"][1], Secret)
    assert str(doc[0]["b"][1]) == REDACTED


@pytest.mark.parametrize("text,expected", [
    ("2GiB", 2 * 1024**3), ("512M", 512 * 1024**2), ("1G", 1024**3), ("1GB", 10**9),
    (4096, 4096), ("1.5KiB", 1536), ("100", 100),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1G", "2 GiBs", True, [1]])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_modes_and_format():
    assert parse_mode("0644") == 0o644 and parse_mode("755") == 0o755 and parse_mode(0o600) == 0o600
    with pytest.raises(ValueError):
        parse_mode("rwx")
    assert format_size(2 * 1024**3) == "2GiB" and format_size(1000) == "1000"


def test_template_with_secret_is_secret():
    out = render_string("postgres://app:{{ pw }}@db", {"pw": Secret("hunter22")})
    assert isinstance(out, Secret) and out.reveal() == "postgres://app:hunter22@db"
    plain = render_string("hi {{ name }}", {"name": "bob", "pw": Secret("x")})
    assert plain == "hi bob"


def _file(path, content="x", host="h1", deps=()):
    module = get_module("file")
    import hashlib
    fields = {"path": path, "state": "present", "content": content,
              "sha256": hashlib.sha256(content.encode()).hexdigest(),
              "mode": None, "owner": None, "group": None}
    return module, Resource(host, "file", path, fields, Origin("pb.yml", 1), list(deps))


def test_diff_actions():
    module, res = _file("/etc/motd", "hello\n")
    assert diff(module, res, None).action is Action.CREATE
    same = {"path": "/etc/motd", "type": "regular file", "sha256": res.fields["sha256"],
            "mode": 0o644, "owner": "root", "group": "root", "content": "hello\n"}
    assert diff(module, res, same).action is Action.NOOP
    drift = dict(same, sha256="0" * 64, content="bye\n")
    change = diff(module, res, drift)
    assert change.action is Action.UPDATE and change.changed_fields == ["content"]
    res.fields["state"] = "absent"
    assert diff(module, res, same).action is Action.DELETE
    assert diff(module, res, None).action is Action.NOOP


def test_diff_masks_observed_secret():
    module, res = _file("/etc/pw", "new")
    res.fields["content"] = Secret("new")
    change = diff(module, res, {"path": "/etc/pw", "type": "regular file", "sha256": "0",
                                "content": "old-password"})
    assert isinstance(change.before["content"], Secret)
    text = codec.dumps(Plan(hosts={"h1": HostPlan("h1", [change])}))
    assert "old-password" not in text and "new" not in text.replace("new\"", "")


def test_graph_orders_and_rejects_cycles():
    _, a = _file("/a", deps=["h1/file//b"])
    _, b = _file("/b")
    assert [r.name for r in order([a, b])] == ["/b", "/a"]
    _, c = _file("/c", deps=["h1/file//d"])
    _, d = _file("/d", deps=["h1/file//c"])
    with pytest.raises(SpecError, match="dependency cycle"):
        order([c, d])


def test_graph_deep_chain_is_not_recursive():
    resources = []
    for i in range(3000):
        deps = [f"h1/file//f{i + 1}"] if i < 2999 else []
        resources.append(_file(f"/f{i}", deps=deps)[1])
    ordered = order(resources)
    assert ordered[0].name == "/f2999" and ordered[-1].name == "/f0"


def test_batch_framing_survives_hostile_output():
    probes = [["printf", "%s", "@@fake@@ 1 o\n"], ["sh", "-c", "echo out; echo err >&2; exit 4"],
              ["echo", "a; rm -rf /tmp/nothing"]]
    nonce = "n0nce"
    proc = subprocess.run(["sh", "-c", build_script(probes, nonce)], capture_output=True)
    results = parse_output(proc.stdout, proc.stderr, 3, nonce)
    assert results[0].stdout == b"@@fake@@ 1 o\n"
    assert (results[1].rc, results[1].stdout, results[1].stderr) == (4, b"out\n", b"err\n")
    assert results[2].stdout == b"a; rm -rf /tmp/nothing\n"


def test_address_split():
    assert split_address("web1/file//etc/motd") == ("web1", "file", "/etc/motd")


def test_codec_round_trip():
    module, res = _file("/etc/motd", "hello\n")
    change = diff(module, res, None)
    plan = Plan(hosts={"h1": HostPlan("h1", [change]), "h2": HostPlan("h2", [], error="down")},
                spec_path="pb.yml", spec_digest="abc")
    again = codec.loads(codec.dumps(plan))
    assert again.hosts["h2"].error == "down"
    c = again.hosts["h1"].changes[0]
    assert c.action is Action.CREATE and c.address == change.address
    assert c.fingerprint == change.fingerprint


def test_codec_rejects_other_versions():
    from provisioner.errors import ProvisionError
    with pytest.raises(ProvisionError, match="format 99"):
        codec.loads('{"format_version": 99}', "p.json")
    with pytest.raises(ProvisionError, match="not a plan file"):
        codec.loads("{nope", "p.json")
