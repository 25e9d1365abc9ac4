"""Inventory: formats, precedence, connection vars, patterns, ranges, Ansible parity."""

from __future__ import annotations

import json
import os
import textwrap
import time

import pytest

from provisioner.errors import SpecError
from provisioner.inventory import (
    Host,
    Inventory,
    expand_host_pattern,
    expand_host_range,
    load_inventory,
    split_host_pattern,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "inventory_fixtures")
with open(os.path.join(FIXTURES, "cases.json")) as _fh:
    CASES: dict = json.load(_fh)


def fixture(*parts: str) -> str:
    return os.path.join(FIXTURES, *parts)


def sources_of(case: str) -> list[str]:
    out = []
    for src in CASES[case]["sources"]:
        path = fixture(src)
        out.append(path if os.path.exists(path) else src)
    return out


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def names(hosts: list[Host]) -> list[str]:
    return [h.name for h in hosts]


# ---------------------------------------------------------------------------------------------
# parity with ansible-inventory / ansible --list-hosts (expected files made by regenerate.py)


@pytest.mark.parametrize("case", sorted(CASES))
def test_list_equals_ansible_inventory(case):
    inv = load_inventory(sources_of(case))
    with open(fixture(f"{case}.expected.json")) as fh:
        expected_text = fh.read()
    assert inv.to_ansible_list() == json.loads(expected_text)
    assert inv.to_ansible_json() + "\n" == expected_text


@pytest.mark.parametrize("case", sorted(CASES))
def test_graph_equals_ansible_inventory(case):
    inv = load_inventory(sources_of(case))
    with open(fixture(f"{case}.graph.txt")) as fh:
        assert inv.graph() + "\n" == fh.read()


@pytest.mark.parametrize("case", sorted(CASES))
def test_patterns_and_host_info_equal_ansible(case):
    inv = load_inventory(sources_of(case))
    with open(fixture(f"{case}.patterns.json")) as fh:
        expected = json.load(fh)
    for pattern, hosts in expected["patterns"].items():
        assert names(inv.select(pattern)) == hosts, pattern
    for host, info in expected["host"].items():
        assert inv.host_info(host) == info, host


def test_every_example_is_a_parity_case():
    examples = os.path.join(os.path.dirname(__file__), "..", "..", "inventory_examples")
    covered = {os.path.normpath(fixture(s)) for c in CASES.values() for s in c["sources"]}
    for entry in os.listdir(examples):
        full = os.path.normpath(os.path.join(examples, entry))
        if os.path.isdir(full):
            inside = {p for p in covered if p == full or p.startswith(full + os.sep)}
            assert inside, f"inventory_examples/{entry} has no parity case in cases.json"


# ---------------------------------------------------------------------------------------------
# formats


def test_implicit_localhost_when_no_sources():
    for sources in (None, []):
        inv = load_inventory(sources)
        (host,) = inv.select("all")
        assert host.name == "localhost"
        assert host.connection == "local"
        assert host.vars["group_names"] == ["ungrouped"]


def test_host_list_string():
    inv = load_inventory(["web1, web2:2222,[fe80::1]:2200,fe80::2,"])
    assert names(inv.select("all")) == ["web1", "web2", "fe80::1", "fe80::2"]
    assert inv.get_host("web2").port == 2222
    assert inv.get_host("fe80::1").port == 2200
    assert inv.get_host("fe80::2").port == 22
    assert inv.groups["ungrouped"].hosts == ["web1", "web2", "fe80::1", "fe80::2"]


def test_single_string_source_is_a_path():
    inv = load_inventory(fixture("noext_yaml"))
    assert names(inv.select("g")) == ["a", "b"]


def test_yaml_inventory_structure():
    inv = load_inventory([fixture("yaml_basic", "hosts.yml")])
    assert inv.groups["web"].children == ["web_canary"]
    assert inv.groups["staging"].children == ["web", "db"]
    assert inv.groups["all"].children[0] == "ungrouped"
    assert names(inv.select("web")) == [
        "web01.example.com",
        "web02.example.com",
        "web03.example.com",
        "web-extra",
    ]
    assert names(inv.select("numbered")) == ["n1", "n4", "n7", "n10", "n08", "n09"]
    bastion = inv.get_host("bastion.example.com")
    assert (bastion.address, bastion.user, bastion.port) == ("203.0.113.10", "ops", 22)
    assert inv.get_host("10.0.0.5").port == 2222
    assert inv.get_host("db-b").port == 5432
    assert inv.get_host("db-z").port == 2200
    canary = inv.get_host("web01.example.com")
    assert canary.vars["canary"] is True
    assert canary.vars["group_names"] == ["staging", "web", "web_canary"]
    assert inv.get_host("web02.example.com").vars["group_names"] == ["prod", "staging", "web"]
    assert canary.vars["inventory_hostname"] == "web01.example.com"
    assert canary.vars["inventory_hostname_short"] == "web01"
    assert inv.get_host("10.0.0.5").vars["inventory_hostname_short"] == "10.0.0.5"
    # hosts only listed under all: end up in ungrouped
    assert inv.groups["ungrouped"].hosts == ["bastion.example.com", "10.0.0.5"]


def test_ini_value_parsing():
    inv = load_inventory([fixture("ini_basic", "hosts")])
    web1 = inv.get_host("web1").vars
    assert web1["http_port"] == 80 and web1["maxRequestsPerChild"] == 808
    assert web1["flag"] is True and web1["sflag"] == "true"  # only Python literals convert
    assert web1["empty"] == "" and web1["list"] == [1, 2]
    assert web1["quoted_str"] == "a b"  # group vars: quotes are Python string syntax
    assert web1["commented"] == "value # not a comment in vars"
    web4 = inv.get_host("web4")
    assert (web4.address, web4.port, web4.vars["quoted"]) == ("198.51.100.4", 2200, "hello world")
    db2 = inv.get_host("db2").vars
    assert (db2["x"], db2["y"], db2["z"], db2["t"]) == (1.5, 16, None, [1, 2])
    assert inv.get_host("loose2").port == 2022
    assert inv.get_host("web1").become is True  # [web:vars] ansible_become = True
    assert inv.get_host("db1").user == "postgres"
    # loose1 got a group later in the file, so it left 'ungrouped'
    assert inv.groups["ungrouped"].hosts == ["loose2"]
    assert inv.groups["web"].priority == 10
    assert "ansible_group_priority" not in inv.get_host("web1").vars


def test_extensionless_file_detection(tmp_path):
    ini = write(tmp_path, "a/hosts", "[web]\nw1\n")
    yml = write(tmp_path, "b/hosts", "web:\n  hosts:\n    w1:\n")
    for path in (ini, yml):
        assert names(load_inventory([path]).select("web")) == ["w1"]


def test_directory_source_skips_ignored_files():
    inv = load_inventory([fixture("dir_source")])
    assert names(inv.select("all")) == ["s1", "w1", "w2", "w3", "d1"]
    assert inv.get_host("w3").vars["from_dir_group_vars"] is True


def test_empty_yaml_file_is_empty_inventory(tmp_path):
    inv = load_inventory([write(tmp_path, "empty.yml", "# nothing yet\n")])
    assert inv.select("all") == []
    assert inv.to_ansible_list()["all"] == {"children": ["ungrouped"]}


# ---------------------------------------------------------------------------------------------
# precedence


def test_group_depth_priority_and_name_order():
    inv = load_inventory([fixture("precedence", "hosts.yml")])
    # h1 is in z_child and m_child (same depth): name order, z_child last wins
    h1 = inv.get_host("h1").vars
    assert (h1["v"], h1["m"]) == ("z_child", "m")
    assert inv.get_host("h2").vars["v"] == "host"  # inventory host var beats groups
    # same depth: higher ansible_group_priority wins; in group_vars it is a plain variable
    h3 = inv.get_host("h3").vars
    assert h3["v"] == "b_high" and h3["file_prio"] == "b_high"
    assert h3["ansible_group_priority"] == 99
    # deeper group wins over a shallow one regardless of name
    assert inv.get_host("h4").vars["v"] == "deep3"
    # Ansible's default order: group_vars/all beats the inventory's vars of *every* group
    assert inv.get_host("h1").vars["a"] == "all-file"
    assert h1["p"] == "all-file"


def test_group_vars_and_host_vars_files():
    inv = load_inventory([fixture("vars_dirs", "inventory.ini")])
    web1, web2, db1 = (inv.get_host(n).vars for n in ("web1", "web2", "db1"))
    assert web1["where"] == "group_vars-web"  # group_vars/web beats group_vars/prod (deeper)
    assert web1["from_inventory"] == "all-file"  # group_vars/all beats [web:vars]
    assert web1["web_only"] == [1, 2, 3] and "ignored" not in web1  # .yaml found before .json
    assert web1["env"] == "production"  # extension-less group_vars file
    assert web2["from_inventory"] == "host_vars" and web2["where"] == "host_vars-web2"
    assert inv.get_host("web2").address == "10.1.1.2"
    assert db1["db_port"] == 6432 and db1["replicas"] == 2  # directory, files in order
    assert db1["where"] == "group_vars-db-main"
    assert "never" not in db1 and "ignored" not in db1


def test_connection_variable_mapping(tmp_path):
    path = write(
        tmp_path,
        "hosts.yml",
        """
        all:
          hosts:
            a:
              ansible_host: 10.0.0.1
              ansible_port: "2201"
              ansible_user: alice
              ansible_ssh_private_key_file: /keys/a
              ansible_become: "yes"
              ansible_become_user: postgres
            b:
              ansible_host: 10.0.0.2
              provision_host: 10.9.9.2
              ansible_user: alice
              provision_user: bob
              ansible_port: 22
              provision_port: 2022
              provision_key_file: /keys/b
              ansible_connection: ssh
              provision_connection: local
              ansible_become: true
              provision_become: false
              provision_known_hosts: /etc/provision/known_hosts
            c:
              ansible_host: old
              ansible_ssh_host: newer
              ansible_connection: smart
        """,
    )
    inv = load_inventory([path])
    a, b, c = (inv.get_host(n) for n in "abc")
    assert (a.address, a.port, a.user, a.key_file) == ("10.0.0.1", 2201, "alice", "/keys/a")
    assert (a.connection, a.become, a.become_user, a.known_hosts) == ("ssh", True, "postgres", None)
    assert (b.address, b.port, b.user, b.key_file) == ("10.9.9.2", 2022, "bob", "/keys/b")
    assert (b.connection, b.become, b.known_hosts) == ("local", False, "/etc/provision/known_hosts")
    assert b.vars["ansible_user"] == "alice"  # vars keep the ansible_* ones too
    assert (c.address, c.connection, c.port, c.user) == ("newer", "ssh", 22, None)


# ---------------------------------------------------------------------------------------------
# patterns


@pytest.fixture(scope="module")
def yinv() -> Inventory:
    return load_inventory([fixture("yaml_basic", "hosts.yml")])


WEB = ["web01.example.com", "web02.example.com", "web03.example.com", "web-extra"]
DB = ["db-a", "db-b", "db-c", "db-z"]


def test_pattern_all_and_star(yinv):
    assert names(yinv.select("all")) == names(yinv.select("*"))
    assert len(yinv.select("all")) == len(yinv.hosts) == 17


def test_pattern_group_host_glob_regex(yinv):
    assert names(yinv.select("db")) == DB
    assert names(yinv.select("lonely")) == ["lonely"]
    assert names(yinv.select("db-[ab]")) == ["db-a", "db-b"]  # glob character class
    assert names(yinv.select("~db-[bc]")) == ["db-b", "db-c"]
    assert names(yinv.select("~^n1")) == ["n1", "n10"]
    assert names(yinv.select("web0?.example.com")) == WEB[:3]


def test_pattern_union_keeps_pattern_order(yinv):
    assert names(yinv.select("db:web")) == DB + WEB
    assert names(yinv.select("web,db")) == WEB + DB
    assert names(yinv.select(["db", "web"])) == DB + WEB
    assert names(yinv.select("web:web_canary")) == WEB  # no duplicates


def test_pattern_intersection_and_exclusion(yinv):
    assert names(yinv.select("prod:&staging")) == ["web02.example.com"]
    assert names(yinv.select("staging:!web")) == DB
    assert names(yinv.select("web:!web_canary:&staging")) == WEB[1:]
    # operators apply after all unions, whatever their position
    assert names(yinv.select("!db:web:db")) == WEB
    assert names(yinv.select("&web")) == WEB  # only modifiers: against 'all'


def test_pattern_subscripts(yinv):
    assert names(yinv.select("web[0]")) == WEB[:1]
    assert names(yinv.select("web[1:2]")) == WEB[1:3]
    assert names(yinv.select("web[-1]")) == WEB[-1:]
    assert names(yinv.select("web[2:]")) == WEB[2:]
    with pytest.raises(SpecError, match=r"no hosts match the subscripted pattern 'web\[9\]'"):
        yinv.select("web[9]")


def test_pattern_ipv6_and_ports_are_not_split():
    assert split_host_pattern("fe80::1") == ["fe80::1"]
    assert split_host_pattern("a:b:!c:&d") == ["a", "b", "!c", "&d"]
    assert split_host_pattern("web[1:2]:db") == ["web[1:2]", "db"]
    assert split_host_pattern(" a , b ,") == ["a", "b"]


def test_unknown_pattern_is_an_error_with_suggestion(yinv):
    with pytest.raises(SpecError) as info:
        yinv.select("webb")
    assert str(info.value) == "host pattern 'webb' matches no host or group (did you mean 'web'?)"
    with pytest.raises(SpecError, match="'!stagin' matches no host or group .*'staging'"):
        yinv.select("all:!stagin")
    with pytest.raises(SpecError, match=r"^plays.yml:4: hosts: host pattern 'zzz\*' matches"):
        yinv.select("zzz*", file="plays.yml", line=4, field="hosts")
    with pytest.raises(SpecError, match="invalid host pattern"):
        yinv.select("~web(")


def test_empty_group_is_not_an_error(yinv):
    assert yinv.select("empty_group") == []
    assert yinv.select("only_vars") == []


def test_implicit_localhost_pattern(yinv):
    (local,) = yinv.select("localhost")
    assert local.connection == "local" and local.vars["ntp_server"] == "ntp.example.com"
    assert "localhost" not in names(yinv.select("all"))


def test_plain_host_name_wins_over_group(tmp_path):
    path = write(tmp_path, "h.ini", "[x]\na\n[y]\nx\n")
    inv = load_inventory([path])
    assert names(inv.select("x")) == ["x"]
    assert names(inv.select("x*")) == ["a", "x"]


# ---------------------------------------------------------------------------------------------
# ranges


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("web[1:3]", ["web1", "web2", "web3"]),
        ("web[01:03].x", ["web01.x", "web02.x", "web03.x"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("n[0:10:5]", ["n0", "n5", "n10"]),
        ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
        ("[:2]x", ["0x", "1x", "2x"]),
        ("plain", ["plain"]),
    ],
)
def test_ranges(pattern, expected):
    assert expand_host_range(pattern) == expected


@pytest.mark.parametrize("pattern", ["w[1:]", "w[1]", "w[3:1]", "w[01:100]", "w[a:1]", "w[1:2"])
def test_bad_ranges(pattern):
    with pytest.raises(ValueError):
        expand_host_range(pattern)


def test_range_with_port():
    assert expand_host_pattern("web[1:2]:2222") == (["web1", "web2"], 2222)
    assert expand_host_pattern("[fe80::1]:22") == (["fe80::1"], 22)
    assert expand_host_pattern("fe80::1") == (["fe80::1"], None)


# ---------------------------------------------------------------------------------------------
# graph / host info


def test_graph_of_a_group(yinv):
    assert yinv.graph("staging").splitlines()[:3] == [
        "@staging:",
        "  |--@web:",
        "  |  |--@web_canary:",
    ]
    with pytest.raises(SpecError, match="unknown group 'nope'"):
        yinv.graph("nope")


def test_host_info_excludes_magic_vars(yinv):
    info = yinv.host_info("lonely")
    assert info["note"] == "in prod only" and "inventory_hostname" not in info
    with pytest.raises(SpecError, match="unknown host 'lonley'.*'lonely'"):
        yinv.host_info("lonley")


# ---------------------------------------------------------------------------------------------
# performance: 5,000 hosts


def test_five_thousand_hosts_load_and_select(tmp_path):
    lines = ["all:", "  children:"]
    for g in range(50):
        lines += [f"    g{g:02d}:", f"      vars: {{role: r{g}}}", "      hosts:"]
        for h in range(100):
            lines.append(f"        h{g:02d}-{h:03d}: {{idx: {h}}}")
    lines += ["    evens:", "      children:"]
    lines += [f"        g{g:02d}:" for g in range(0, 50, 2)]
    path = write(tmp_path, "big.yml", "\n".join(lines) + "\n")
    started = time.perf_counter()
    inv = load_inventory([path])
    loaded = time.perf_counter()
    assert len(inv.select("all")) == 5000
    assert len(inv.select("evens")) == 2500
    assert len(inv.select("evens:!g00:&all")) == 2400
    assert len(inv.select("~h0[0-4]-0..:g49")) == 600
    assert len(inv.select("h1*")) == 1000
    many = ",".join(f"h{g:02d}-{h:03d}" for g in range(50) for h in range(0, 100, 2))
    assert len(inv.select(many)) == 2500
    excluded = "all:" + ":".join(f"!h{g:02d}-{h:03d}" for g in range(50) for h in range(50))
    assert len(inv.select(excluded)) == 2500
    done = time.perf_counter()
    print(f"5000 hosts: load {loaded - started:.3f}s, selects {done - loaded:.3f}s")
