"""Broken inventories: each must give one SpecError line naming file and line."""

from __future__ import annotations

import os
import textwrap

import pytest

from provisioner.errors import SpecError
from provisioner.inventory import load_inventory


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def error_of(sources) -> str:
    with pytest.raises(SpecError) as info:
        load_inventory(sources)
    message = str(info.value)
    assert "\n" not in message
    return message


BROKEN = [
    # (file name, content, line, message fragment)
    (
        "bad_yaml.yml",
        """
        all:
          hosts:
            a:
           b:
        """,
        4,
        "invalid YAML",
    ),
    (
        "unknown_key.yml",
        """
        all:
          children:
            web:
              hots:
                w1:
        """,
        4,
        "unknown key 'hots' in group 'web': expected hosts, vars or children (did you mean 'hosts'?)",
    ),
    (
        "cycle.yml",
        """
        all:
          children:
            a:
              children:
                b:
                  children:
                    a:
        """,
        5,
        "group 'b' would be its own ancestor (b -> a -> b)",
    ),
    (
        "self_child.yml",
        """
        loop:
          children:
            loop:
        """,
        3,
        "group 'loop' cannot be a child of itself",
    ),
    (
        "bad_range.yml",
        """
        web:
          hosts:
            ok1:
            web[1:]:
        """,
        4,
        "host range [1:] must specify an end value",
    ),
    (
        "group_list.yml",
        """
        all:
          children:
            web: [w1, w2]
        """,
        3,
        "group 'web' must be a mapping with hosts, vars and/or children",
    ),
    (
        "host_vars_scalar.yml",
        """
        web:
          hosts:
            w1: just-a-string
        """,
        3,
        "variables of host 'w1' must be a mapping",
    ),
    (
        "int_host.yml",
        """
        web:
          hosts:
            10:
        """,
        3,
        "host name 10 must be a non-empty string (quote numbers)",
    ),
    (
        "plugin.yml",
        """
        # a dynamic inventory plugin config, not an inventory
        plugin: amazon.aws.aws_ec2
        """,
        2,
        "inventory plugin configuration files are not supported",
    ),
    (
        "vars_list.yml",
        """
        web:
          vars:
            - a
        """,
        3,
        "'vars' of group 'web' must be a mapping",
    ),
    (
        "bad_line.ini",
        """
        [web]
        web1 http_port=80
        web2 novalue
        """,
        3,
        "expected key=value host variable, got 'novalue'",
    ),
    (
        "bad_section.ini",
        """
        # header with a space
        [web servers]
        w1
        """,
        2,
        "invalid section header '[web servers]'",
    ),
    (
        "bad_type.ini",
        """
        [web]
        w1
        [web:hosts_and_more]
        """,
        3,
        "section [web:hosts_and_more] has unknown type 'hosts_and_more'",
    ),
    (
        "cycle.ini",
        """
        [a:children]
        b
        [b:children]
        c
        [c:children]
        a
        """,
        6,
        "group 'a' would be its own ancestor (a -> b -> c -> a)",
    ),
    (
        "vars_undefined.ini",
        """
        [web]
        w1

        [dbs:vars]
        port=5432
        """,
        4,
        "section [dbs:vars] is for a group that is defined nowhere",
    ),
    (
        "children_undefined.ini",
        """
        [prod:children]
        web
        nosuch
        [web]
        w1
        """,
        3,
        "section [prod:children] names group 'nosuch', which is defined nowhere",
    ),
    (
        "bad_range.ini",
        """
        [web]
        web[03:5]
        """,
        2,
        "host range [03:5] must use equal-length begin and end",
    ),
    (
        "bad_quote.ini",
        """
        [web]
        w1 motd="unterminated
        """,
        2,
        "bad host line",
    ),
    (
        "port_colon.ini",
        """
        w1:
        """,
        1,
        "host 'w1:' ends with ':'",
    ),
    (
        "bad_port.ini",
        """
        [web]
        w1
        w2 ansible_port=http
        """,
        3,
        "w2: ansible_port must be a port number, got 'http'",
    ),
    (
        "bad_connection.yml",
        """
        all:
          hosts:
            win1:
              ansible_connection: winrm
        """,
        3,
        "win1: ansible_connection: unsupported connection 'winrm'",
    ),
    (
        "bad_become.ini",
        """
        w1 provision_become=perhaps
        """,
        1,
        "w1: provision_become must be a boolean, got 'perhaps'",
    ),
]


@pytest.mark.parametrize("name,text,line,fragment", BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_inventory(tmp_path, name, text, line, fragment):
    path = write(tmp_path, name, text)
    message = error_of([path])
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yml")
    assert error_of([path]) == f"{path}: inventory source not found"


def test_group_vars_bad_yaml(tmp_path):
    inv = write(tmp_path, "hosts.ini", "[web]\nw1\n")
    gv = write(tmp_path, "group_vars/web.yml", "a: 1\nb: [1, 2\nc: 3\n")
    message = error_of([inv])
    assert message.startswith(f"{gv}:3: invalid YAML"), message


def test_group_vars_not_a_mapping(tmp_path):
    inv = write(tmp_path, "hosts.ini", "[web]\nw1\n")
    gv = write(tmp_path, "group_vars/web/main.yml", "- a\n- b\n")
    assert error_of([inv]) == f"{gv}:1: a vars file must hold a mapping of variables"


def test_unknown_yaml_tag(tmp_path):
    path = write(tmp_path, "vault.yml", "all:\n  vars:\n    secret: !vault |\n      abc\n")
    message = error_of([path])
    assert message.startswith(f"{path}:3: "), message
    assert "!vault" in message


def test_error_in_directory_source_names_the_file(tmp_path):
    write(tmp_path, "inv/01-good.yml", "web:\n  hosts:\n    w1:\n")
    bad = write(tmp_path, "inv/02-bad.ini", "[db]\nd1 oops\n")
    message = error_of([str(tmp_path / "inv")])
    assert message.startswith(f"{bad}:2: ")


def test_bad_extensionless_file_is_reported_as_ini(tmp_path):
    path = write(tmp_path, "hosts", "[web]\nw1 a=1 junk\n")
    assert error_of([path]).startswith(f"{path}:2: expected key=value")


def test_messages_are_one_line(tmp_path):
    path = write(tmp_path, "multi.yml", "all:\n  hosts: {a: 1\n")
    message = error_of([path])
    assert "\n" not in message and message.startswith(path + ":")
    assert os.path.basename(path) in message
