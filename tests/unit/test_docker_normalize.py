"""The Docker normaliser as data: spec forms → canonical desired state, and
`docker inspect` JSON (trimmed from dockerd 20.10) → observed state, so an
unchanged spec compares equal and real differences do not."""

from __future__ import annotations

import copy

import pytest

from modules import get_module
from modules.docker import _normalize as n
from modules.docker._client import OWNER_LABEL, full_ref, split_ref
from provisioner.errors import SpecError
from provisioner.plan import codec
from provisioner.plan.diff import diff
from provisioner.plan.model import Action
from provisioner.resource import Origin, Resource
from provisioner.secret import REDACTED, Secret
from provisioner.spec.context import SpecContext
from provisioner.spec.schema import ValidationFailure, validate

IMAGE_ID = "sha256:b6bb1d25ca0231953bba6cc1e44b5b9ebb1faa04fc3f7c013f58d6fa582c3bdd"
NEW_ID = "sha256:9f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100"

IMAGE = {
    "Id": IMAGE_ID,
    "RepoTags": ["provision-test/healthcheck:1"],
    "Config": {
        "User": "",
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh", "-c", "trap 'exit 0' TERM INT; sleep 86400 & wait"],
        "Healthcheck": {"Test": ["CMD-SHELL", "[ ! -e /tmp/unhealthy ]"],
                        "Interval": 500000000, "Timeout": 2000000000, "Retries": 2},
        "WorkingDir": "",
        "Entrypoint": None,
        "ExposedPorts": None,
        "Labels": {"org.provision-test.version": "1"},
    },
}

CONTAINER = {
    "Name": "/web",
    "Image": IMAGE_ID,
    "State": {"Status": "running", "Running": True, "Restarting": False,
              "Health": {"Status": "healthy"}},
    "Config": {
        "User": "",
        "ExposedPorts": {"80/tcp": {}},
        "Env": ["A=1", "PW=hunter22", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh", "-c", "trap 'exit 0' TERM INT; sleep 86400 & wait"],
        "Healthcheck": {"Test": ["CMD-SHELL", "[ ! -e /tmp/unhealthy ]"],
                        "Interval": 500000000, "Timeout": 2000000000, "Retries": 2},
        "Image": "provision-test/healthcheck:1",
        "WorkingDir": "",
        "Entrypoint": None,
        "Labels": {"org.provision-test.version": "1", "team": "web", OWNER_LABEL: "site"},
    },
    "HostConfig": {
        "Binds": ["/tmp:/mnt/t:ro", "vol1:/data"],
        "NetworkMode": "none",
        "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "Memory": 67108864,
        "MemorySwap": 134217728,
        "NanoCpus": 500000000,
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "PidsLimit": 50,
        "CgroupParent": "/provision/web",
    },
}


def ctx() -> SpecContext:
    return SpecContext(file="/tmp/spec.yml", line=3, field_prefix="resources[0].container",
                       field_lines={}, variables={}, host="h1")


def resource(kind: str, fields: dict, owner: str = "site") -> Resource:
    module = get_module(kind)
    desired = module.normalize(validate(fields, module.schema), ctx())
    return Resource("h1", kind, desired[module.name_field], desired, Origin("spec.yml", 3),
                    owner=owner)


SPEC = {
    "name": "web", "image": "provision-test/healthcheck:1", "network_mode": "none",
    "env": {"A": 1, "PW": Secret("hunter22")},
    "ports": ["8080:80"], "volumes": ["vol1:/data", "/tmp/:/mnt/t:ro"],
    "restart": {"name": "on-failure", "maximum_retry_count": 3},
    "limits": {"memory": "64M", "cpus": 0.5, "pids": 50}, "slice": "web",
    "labels": {"team": "web"},
}


def observed_for(res: Resource, inspect: dict = CONTAINER, image: dict = IMAGE,
                 want: str | None = IMAGE_ID) -> dict:
    return n.container_observed(inspect, image, res.fields, want)


# -- spec forms --------------------------------------------------------------
@pytest.mark.parametrize("given,canonical", [
    ("8080:80", "8080:80/tcp"),
    ("0.0.0.0:8080:80", "8080:80/tcp"),
    ("127.0.0.1:8080:80/udp", "127.0.0.1:8080:80/udp"),
    ("80", "80/tcp"),
    (80, "80/tcp"),
    ({"container": 80, "host": 8080}, "8080:80/tcp"),
    ({"container": 53, "host": 53, "protocol": "udp", "host_ip": "127.0.0.1"},
     "127.0.0.1:53:53/udp"),
])
def test_port_forms(given, canonical):
    assert n.parse_port(given) == canonical


@pytest.mark.parametrize("bad", ["80:99999", "web", "8080:80/icmp", True, {"host": 1}])
def test_bad_ports(bad):
    with pytest.raises(ValueError):
        n.parse_port(bad)


def test_ports_from_inspect_matches_spec_forms():
    bindings = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "53"}]}
    assert n.ports_from_inspect(bindings, {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}}) == \
        n.parse_ports(["8080:80", "127.0.0.1:53:53/udp", 9000])
    # a port the image exposes is not "declared" unless the spec says so
    assert n.ports_from_inspect({}, {"9000/tcp": {}}, {"9000/tcp": {}}) == []
    assert n.ports_from_inspect({}, {"9000/tcp": {}}, {"9000/tcp": {}}, ["9000/tcp"]) == \
        ["9000/tcp"]


def test_ports_for_api():
    exposed, bindings = n.ports_for_api(["8080:80/tcp", "127.0.0.1:53:53/udp", "9000/tcp"])
    assert exposed == [80, (53, "udp"), 9000]
    assert bindings == {"80/tcp": 8080, "53/udp": ("127.0.0.1", 53)}


@pytest.mark.parametrize("given,canonical", [
    ("data:/var/lib/app", "data:/var/lib/app"),
    ("/srv/conf/:/etc/app:ro", "/srv/conf:/etc/app:ro"),
    ("/srv/x:/x:rw", "/srv/x:/x"),
    ({"source": "data", "target": "/d", "read_only": True}, "data:/d:ro"),
])
def test_volume_forms(given, canonical):
    assert n.parse_volume(given) == canonical


@pytest.mark.parametrize("bad", ["/only", "data:relative", "bad name:/x", "/a:/b:bogus"])
def test_bad_volumes(bad):
    with pytest.raises(ValueError):
        n.parse_volume(bad)


@pytest.mark.parametrize("given,canonical", [
    (None, "no"), (False, "no"), ("no", "no"), ("always", "always"),
    ("on-failure", "on-failure"), ("on-failure:3", "on-failure:3"),
    ({"name": "on-failure", "maximum_retry_count": 3}, "on-failure:3"),
    ({"name": "unless-stopped"}, "unless-stopped"),
])
def test_restart_forms(given, canonical):
    assert n.parse_restart(given) == canonical


def test_restart_inspect_forms():
    assert n.restart_from_inspect({"Name": "", "MaximumRetryCount": 0}) == "no"
    assert n.restart_from_inspect({"Name": "on-failure", "MaximumRetryCount": 3}) == "on-failure:3"
    assert n.restart_for_api("on-failure:3") == {"Name": "on-failure", "MaximumRetryCount": 3}
    with pytest.raises(ValueError):
        n.parse_restart("sometimes")
    with pytest.raises(ValueError):
        n.parse_restart("always:3")


@pytest.mark.parametrize("given,ns", [
    ("30s", 30 * 10**9), ("1m30s", 90 * 10**9), ("500ms", 5 * 10**8), (2, 2 * 10**9),
    ("1.5", 15 * 10**8), ("1h", 3600 * 10**9),
])
def test_durations(given, ns):
    assert n.parse_duration(given) == ns


def test_healthcheck_forms():
    assert n.parse_healthcheck({"test": "curl -f localhost", "interval": "10s"}) == \
        {"interval": 10**10, "test": ["CMD-SHELL", "curl -f localhost"]}
    assert n.parse_healthcheck({"test": ["/bin/check", "-q"]})["test"] == \
        ["CMD", "/bin/check", "-q"]
    assert n.parse_healthcheck("none") == {"test": ["NONE"]}
    with pytest.raises(ValueError):
        n.parse_healthcheck({"tset": "x"})


def test_env_forms_and_inheritance():
    assert n.parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    assert n.parse_env({"N": 3, "T": True}) == {"N": "3", "T": "true"}
    # PATH comes from the image: not reported unless declared
    have = n.env_from_inspect(["A=1", "PATH=/bin"], ["PATH=/bin"], {"A": "1"})
    assert have == {"A": "1"}
    assert n.env_from_inspect(["A=1", "PATH=/bin"], ["PATH=/bin"], {"PATH": "/bin"}) == \
        {"A": "1", "PATH": "/bin"}
    # an image variable overridden outside the spec shows up as a difference
    assert n.env_from_inspect(["PATH=/opt"], ["PATH=/bin"], {}) == {"PATH": "/opt"}


def test_observed_secret_env_is_masked_per_key():
    have = n.env_from_inspect(["PW=old-secret", "A=1"], [], {"PW": Secret("new"), "A": "1"})
    assert isinstance(have["PW"], Secret) and have["A"] == "1"
    assert codec._clean(have) == {"PW": REDACTED, "A": "1"}


def test_limits_units():
    assert n.parse_memory("64M") == 64 * 1024**2 and n.parse_memory("1GB") == 10**9
    with pytest.raises(ValueError):
        n.parse_memory("1M")  # below Docker's minimum
    assert n.cpus_from_inspect({"NanoCpus": 1500000000}) == 1.5
    assert n.cpus_from_inspect({"CpuQuota": 50000, "CpuPeriod": 100000}) == 0.5
    assert n.pids_from_inspect({"PidsLimit": -1}) == 0
    assert n.pids_from_inspect({"PidsLimit": None}) == 0


def test_refs():
    assert full_ref("busybox") == "busybox:latest"
    assert full_ref("localhost:5000/app") == "localhost:5000/app:latest"
    assert split_ref("localhost:5000/app:2") == ("localhost:5000/app", "2")


# -- whole containers ---------------------------------------------------------
def test_unchanged_spec_is_noop():
    res = resource("container", SPEC)
    observed = observed_for(res)
    assert observed["env"] == {"A": "1", "PW": Secret("hunter22")}
    assert observed["command"] is None and observed["healthcheck"] is None  # image defaults
    change = diff(get_module("container"), res, observed)
    assert change.action is Action.NOOP, (change.changed_fields, observed)


def test_entrypoint_without_command_does_not_inherit_cmd():
    res = resource("container", {"name": "e", "image": "provision-test/healthcheck:1",
                                 "entrypoint": ["sleep"], "network_mode": "none"})
    inspect = copy.deepcopy(CONTAINER)
    inspect["Config"].update(Entrypoint=["sleep"], Cmd=None,
                             Env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                             Labels={"org.provision-test.version": "1", OWNER_LABEL: "site"})
    inspect["HostConfig"].update(Binds=None, PortBindings={}, Memory=0, NanoCpus=0,
                                 PidsLimit=None, CgroupParent="",
                                 RestartPolicy={"Name": "", "MaximumRetryCount": 0})
    inspect["Config"]["ExposedPorts"] = None
    change = diff(get_module("container"), res, observed_for(res, inspect))
    assert change.action is Action.NOOP, change.changed_fields


def test_env_change_replaces_and_is_named():
    res = resource("container", dict(SPEC, env={"A": 2, "PW": Secret("hunter22")}))
    change = diff(get_module("container"), res, observed_for(res))
    assert change.action is Action.REPLACE
    assert change.replace_fields == ["env"]


def test_secret_change_is_seen_but_never_shown():
    res = resource("container", dict(SPEC, env={"A": 1, "PW": Secret("hunter23")}))
    change = diff(get_module("container"), res, observed_for(res))
    assert change.action is Action.REPLACE and change.changed_fields == ["env"]
    text = str(codec.change_to_dict(change))
    assert "hunter22" not in text and "hunter23" not in text


def test_limit_and_restart_change_in_place():
    res = resource("container", dict(SPEC, limits={"memory": "128M", "cpus": 1, "pids": 60},
                                     restart="always"))
    change = diff(get_module("container"), res, observed_for(res))
    assert change.action is Action.UPDATE
    assert set(change.changed_fields) == {"memory", "cpus", "pids", "restart"}


def test_lifting_a_memory_limit_replaces():
    res = resource("container", dict(SPEC, limits={"cpus": 0.5, "pids": 50}))
    change = diff(get_module("container"), res, observed_for(res))
    assert change.action is Action.REPLACE and change.replace_fields == ["memory"]


def test_moved_tag_replaces_with_both_ids_in_the_plan():
    res = resource("container", SPEC)
    change = diff(get_module("container"), res, observed_for(res, want=NEW_ID))
    assert change.action is Action.REPLACE and change.replace_fields == ["image"]
    assert change.notes[0] == f"image: {IMAGE_ID[7:19]} → {NEW_ID[7:19]} (tag moved)"


def test_missing_image_is_a_change():
    res = resource("container", SPEC)
    change = diff(get_module("container"), res, observed_for(res, want=None))
    assert change.action is Action.REPLACE and "is not on the host" in change.notes[0]


def test_removed_field_converges_to_default():
    spec = dict(SPEC)
    del spec["labels"]
    res = resource("container", spec)
    change = diff(get_module("container"), res, observed_for(res))
    assert change.changed_fields == ["labels"]  # the extra label goes


def test_state_stop_is_in_place():
    res = resource("container", dict(SPEC, state="stopped"))
    change = diff(get_module("container"), res, observed_for(res))
    assert change.action is Action.UPDATE and change.changed_fields == ["state"]


def test_unowned_container_note():
    res = resource("container", dict(SPEC, restart="always"))
    inspect = copy.deepcopy(CONTAINER)
    del inspect["Config"]["Labels"][OWNER_LABEL]
    change = diff(get_module("container"), res, observed_for(res, inspect))
    assert any("not created by provision" in note for note in change.notes)


def test_declared_healthcheck_compares_declared_keys_only():
    res = resource("container", dict(SPEC, healthcheck={"interval": "500ms", "retries": 2}))
    assert diff(get_module("container"), res, observed_for(res)).action is Action.NOOP
    res = resource("container", dict(SPEC, healthcheck={"interval": "1s"}))
    assert diff(get_module("container"), res, observed_for(res)).changed_fields == ["healthcheck"]


# -- schema and spec errors ------------------------------------------------------
def test_invalid_limit_is_a_schema_error_naming_the_field():
    module = get_module("container")
    with pytest.raises(ValidationFailure) as err:
        validate({"name": "w", "image": "x", "limits": {"memory": "lots"}}, module.schema)
    assert err.value.path == ["limits", "memory"]
    with pytest.raises(ValidationFailure):
        validate({"name": "w", "image": "x", "limits": {"cpus": -1}}, module.schema)
    with pytest.raises(ValidationFailure):
        validate({"name": "w", "image": "x", "limits": {"pidz": 3}}, module.schema)


@pytest.mark.parametrize("fields,field", [
    ({"name": "w"}, "image"),
    ({"name": "w", "image": "x", "limits": {"memory": "1M"}}, "limits.memory"),
    ({"name": "w", "image": "x", "ports": ["http"]}, "ports"),
    ({"name": "w", "image": "x", "restart": "sometimes"}, "restart"),
    ({"name": "w", "image": "x", "labels": {OWNER_LABEL: "x"}}, "labels"),
    ({"name": "w", "image": "x", "state": "stopped", "wait": "healthy"}, "wait"),
])
def test_spec_errors_name_the_field(fields, field):
    module = get_module("container")
    with pytest.raises(SpecError) as err:
        module.normalize(validate(fields, module.schema), ctx())
    assert err.value.field == f"resources[0].container.{field}"


def test_implicit_dependencies():
    web = resource("container", dict(SPEC, network_mode="backend"))
    others = [resource("docker_image", {"name": "provision-test/healthcheck:1"}),
              resource("docker_volume", {"name": "vol1"}),
              resource("docker_network", {"name": "backend"}),
              Resource("h1", "slice", "web", {}, Origin("s", 1)),
              resource("docker_volume", {"name": "unrelated"})]
    deps = get_module("container").implicit_deps(web, others)
    assert deps == ["h1/docker_image/provision-test/healthcheck:1", "h1/docker_volume/vol1",
                    "h1/docker_network/backend", "h1/slice/web"]


# -- volumes, networks, images ------------------------------------------------------
def test_volume_and_network_observed_forms():
    from modules.docker import network, volume

    vres = resource("docker_volume", {"name": "data", "labels": {"app": "x"}})
    v = {"Name": "data", "Driver": "local", "Options": None,
         "Labels": {"app": "x", OWNER_LABEL: "site"}}
    assert diff(get_module("docker_volume"), vres,
                volume._observed(v, vres.fields)).action is Action.NOOP
    nres = resource("docker_network", {"name": "backend", "internal": True})
    net = {"Name": "backend", "Id": "abc", "Driver": "bridge", "Internal": True,
           "Attachable": False, "Options": {"com.docker.network.bridge.name": "br-x"},
           "IPAM": {"Config": [{"Subnet": "172.18.0.0/16"}]}, "Labels": {OWNER_LABEL: "site"}}
    assert diff(get_module("docker_network"), nres,
                network._observed(net, nres.fields)).action is Action.NOOP
    nres2 = resource("docker_network", {"name": "backend", "subnet": "10.9.0.0/24"})
    change = diff(get_module("docker_network"), nres2, network._observed(net, nres2.fields))
    assert change.action is Action.REPLACE and set(change.changed_fields) == {"internal", "subnet"}


def test_image_build_identity(tmp_path):
    from modules.docker import image

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "a.txt").write_text("1")
    res = resource("docker_image", {"name": "app:1", "build": {"context": str(tmp_path)}})
    digest = res.fields["source_digest"]
    seen = {"Id": IMAGE_ID, "Config": {"Labels": {"dev.provision.source": digest}}}
    module = get_module("docker_image")
    assert diff(module, res, image._observed(seen, "app:1")).action is Action.NOOP
    (tmp_path / "a.txt").write_text("2")
    res2 = resource("docker_image", {"name": "app:1", "build": {"context": str(tmp_path)}})
    assert res2.fields["source_digest"] != digest
    change = diff(module, res2, image._observed(seen, "app:1"))
    assert change.action is Action.UPDATE and "build context changed" in change.notes[0]
    # .dockerignore'd files do not count
    (tmp_path / ".dockerignore").write_text("ignored\n")
    res3 = resource("docker_image", {"name": "app:1", "build": {"context": str(tmp_path)}})
    (tmp_path / "ignored").write_text("x")
    res4 = resource("docker_image", {"name": "app:1", "build": {"context": str(tmp_path)}})
    assert res3.fields["source_digest"] == res4.fields["source_digest"]
