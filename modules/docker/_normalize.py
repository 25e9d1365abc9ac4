"""Pure translations between what people write, what the Docker API takes,
and what `docker inspect` returns. No I/O: unit-tested as data.

The rule that keeps an unchanged spec a no-op: desired and observed are put
in the same canonical form, and observed values the image or the daemon
supplies by default are reported as "default" (None / absent) unless the
spec declares that field or key itself.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from modules.docker._client import LABEL_PREFIX, OWNER_LABEL
from provisioner.secret import Secret
from provisioner.spec.units import parse_size

NANO = 1_000_000_000

# -- ports --------------------------------------------------------------------
_PORT_RE = re.compile(
    r"^(?:(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]*):)?(?P<host>\d*):)?"
    r"(?P<container>\d+)(?:/(?P<proto>tcp|udp|sctp))?$")


def parse_port(item: Any) -> str:
    """One port mapping → canonical "[ip:]host:container/proto".

    Accepts "8080:80", "127.0.0.1:8080:80/udp", "80" (container port only:
    exposed, no host port), 80, and {container, host, protocol, host_ip}."""
    if isinstance(item, bool):
        raise ValueError(f"{item!r} is not a port mapping")
    if isinstance(item, int):
        item = str(item)
    if isinstance(item, dict):
        unknown = set(item) - {"container", "host", "protocol", "host_ip"}
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} in a port mapping "
                             "(allowed: container, host, protocol, host_ip)")
        if "container" not in item:
            raise ValueError("a port mapping needs `container`")
        ip = str(item.get("host_ip") or "")
        host = "" if item.get("host") is None else str(item["host"])
        text = f"{ip}:{host}:{item['container']}" if ip else f"{host}:{item['container']}"
        if host == "" and not ip:
            text = str(item["container"])
        item = text + f"/{item.get('protocol') or 'tcp'}"
    if not isinstance(item, str):
        raise ValueError(f"{item!r} is not a port mapping like \"8080:80\"")
    m = _PORT_RE.match(item.strip())
    if not m:
        raise ValueError(f"{item!r} is not a port mapping like \"8080:80\" or "
                         "\"127.0.0.1:8080:80/udp\"")
    return canonical_port(m["ip"] or "", m["host"] or "", m["container"], m["proto"] or "tcp")


def canonical_port(ip: str, host: str, container: str, proto: str) -> str:
    if ip in ("0.0.0.0", "::", "[::]"):
        ip = ""
    for value, what in ((host, "host"), (container, "container")):
        if value and not 0 < int(value) < 65536:
            raise ValueError(f"{what} port {value} is out of range")
    if not host and not ip:
        return f"{int(container)}/{proto}"
    head = f"{ip}:" if ip else ""
    return f"{head}{int(host) if host else ''}:{int(container)}/{proto}"


def parse_ports(items: list[Any] | None) -> list[str]:
    return sorted({parse_port(i) for i in items or []})


def ports_from_inspect(port_bindings: dict[str, Any] | None,
                       exposed: dict[str, Any] | None = None,
                       image_exposed: dict[str, Any] | None = None,
                       desired: list[str] | None = None) -> list[str]:
    """HostConfig.PortBindings {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    → ["8080:80/tcp"]; ports exposed without a binding (declared as "80")
    count too, unless the image exposes them itself and the spec does not."""
    out: set[str] = set()
    for key, binds in (port_bindings or {}).items():
        container, _, proto = key.partition("/")
        for b in binds or [{}]:
            out.add(canonical_port(b.get("HostIp") or "", b.get("HostPort") or "",
                                   container, proto or "tcp"))
    bound = {k for k in (port_bindings or {})}
    for key in exposed or {}:
        if key in bound:
            continue
        container, _, proto = key.partition("/")
        bare = f"{int(container)}/{proto or 'tcp'}"
        if key in (image_exposed or {}) and bare not in (desired or []):
            continue
        out.add(bare)
    return sorted(out)


def ports_for_api(ports: list[str]) -> tuple[list[Any], dict[Any, Any]]:
    """Canonical ports → (ports=, port_bindings=) for the SDK."""
    exposed: list[Any] = []
    bindings: dict[Any, list[Any]] = {}
    for p in ports:
        spec, _, proto = p.partition("/")
        parts = spec.split(":")
        container = int(parts[-1])
        key = (container, proto) if proto != "tcp" else container
        if key not in exposed:
            exposed.append(key)
        if len(parts) == 1:
            continue
        host = parts[-2]
        ip = ":".join(parts[:-2])
        bind: Any = (ip, int(host) if host else None) if ip else (int(host) if host else None)
        bindings.setdefault(f"{container}/{proto}", []).append(bind)
    return exposed, {k: (v if len(v) > 1 else v[0]) for k, v in bindings.items()}


# -- volumes / bind mounts -----------------------------------------------------
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BIND_OPTS = {"ro", "rw", "z", "Z", "nocopy", "shared", "rshared", "slave", "rslave",
              "private", "rprivate", "consistent", "cached", "delegated"}


def parse_volume(item: Any) -> str:
    """"src:dst[:opts]" or {source, target, read_only} → canonical "src:dst[:opts]"
    (rw dropped, options sorted). An absolute source is a bind mount, a name
    a named volume."""
    if isinstance(item, dict):
        unknown = set(item) - {"source", "target", "read_only"}
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} in a volume "
                             "(allowed: source, target, read_only)")
        if not item.get("source") or not item.get("target"):
            raise ValueError("a volume needs `source` and `target`")
        item = f"{item['source']}:{item['target']}" + (":ro" if item.get("read_only") else "")
    if not isinstance(item, str):
        raise ValueError(f"{item!r} is not a volume like \"data:/var/lib/app\"")
    parts = item.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"{item!r} is not a volume like \"data:/var/lib/app\" or "
                         "\"/srv/conf:/etc/app:ro\" (anonymous volumes are not supported)")
    source, target = parts[0], parts[1]
    if not target.startswith("/"):
        raise ValueError(f"{item!r}: the mount point {target!r} must be an absolute path")
    if not source.startswith("/") and not _VOLUME_NAME.match(source):
        raise ValueError(f"{item!r}: {source!r} is neither an absolute path nor a volume name")
    opts: list[str] = []
    if len(parts) == 3:
        opts = [o for o in parts[2].split(",") if o]
        bad = [o for o in opts if o not in _BIND_OPTS]
        if bad:
            raise ValueError(f"{item!r}: unknown mount option {bad[0]!r}")
    return canonical_bind(source, target, opts)


def canonical_bind(source: str, target: str, opts: list[str]) -> str:
    if len(source) > 1:
        source = source.rstrip("/")
    if len(target) > 1:
        target = target.rstrip("/")
    opts = sorted(o for o in set(opts) if o != "rw")
    return f"{source}:{target}" + (":" + ",".join(opts) if opts else "")


def parse_volumes(items: list[Any] | None) -> list[str]:
    out = [parse_volume(i) for i in items or []]
    targets = [v.split(":")[1] for v in out]
    dup = {t for t in targets if targets.count(t) > 1}
    if dup:
        raise ValueError(f"two volumes mount at {sorted(dup)[0]}")
    return sorted(out)


def binds_from_inspect(binds: list[str] | None) -> list[str]:
    out = []
    for b in binds or []:
        parts = b.split(":")
        if len(parts) < 2:
            continue
        opts = parts[2].split(",") if len(parts) > 2 else []
        out.append(canonical_bind(parts[0], parts[1], opts))
    return sorted(out)


def named_volumes(volumes: list[str]) -> list[str]:
    return [v.split(":")[0] for v in volumes if not v.startswith("/")]


# -- env and labels -------------------------------------------------------------
def parse_env(value: Any) -> dict[str, Any]:
    """{K: V} or ["K=V"] → {K: str | Secret}; numbers and booleans as Docker
    would see them ("1", "true")."""
    if value is None:
        return {}
    items: list[tuple[Any, Any]]
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = []
        for entry in value:
            if isinstance(entry, Secret):
                k, sep, v = entry.reveal().partition("=")
                items.append((k, Secret(v)))
                continue
            if not isinstance(entry, str) or "=" not in entry:
                raise ValueError(f"{entry!r} is not an environment entry like KEY=value")
            k, _, v = entry.partition("=")
            items.append((k, v))
    else:
        raise ValueError("env is a mapping of names to values (or a list of KEY=value)")
    out: dict[str, Any] = {}
    for k, v in items:
        k = str(k)
        if not k or "=" in k:
            raise ValueError(f"{k!r} is not an environment variable name")
        out[k] = _scalar(v)
    return dict(sorted(out.items()))


def _scalar(v: Any) -> Any:
    if isinstance(v, Secret):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        raise ValueError(f"{v!r} is not a scalar value")
    return str(v)


def env_list(env: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in env or []:
        k, _, v = entry.partition("=")
        out[k] = v
    return out


def env_from_inspect(container_env: list[str] | None, image_env: list[str] | None,
                     desired: dict[str, Any]) -> dict[str, Any]:
    """The container's environment minus what the image sets (unless the spec
    names that key); values are Secrets where the spec's value is secret, so
    neither the old nor the new value is ever shown."""
    have = env_list(container_env)
    inherited = env_list(image_env)
    out: dict[str, Any] = {}
    for k, v in have.items():
        if k not in desired and inherited.get(k) == v:
            continue
        out[k] = Secret(v) if isinstance(desired.get(k), Secret) else v
    return dict(sorted(out.items()))


def parse_labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("labels is a mapping of names to values")
    out = {str(k): _scalar(v) for k, v in value.items()}
    for k in out:
        if k.startswith(LABEL_PREFIX):
            raise ValueError(f"label {k!r}: the {LABEL_PREFIX} prefix is reserved for provision")
        if isinstance(out[k], Secret):
            raise ValueError(f"label {k!r} cannot be secret (labels are public metadata)")
    return dict(sorted(out.items()))


def labels_from_inspect(labels: dict[str, str] | None, image_labels: dict[str, str] | None,
                        desired: dict[str, Any]) -> dict[str, str]:
    inherited = image_labels or {}
    return dict(sorted(
        (k, v) for k, v in (labels or {}).items()
        if not k.startswith(LABEL_PREFIX) and (k in desired or inherited.get(k) != v)))


def owner_of(labels: dict[str, str] | None) -> str | None:
    return (labels or {}).get(OWNER_LABEL)


# -- command / entrypoint ---------------------------------------------------------
def parse_argv(value: Any) -> list[str] | None:
    """A list as given; a string is split like a shell would (no shell runs)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split {value!r}: {exc}") from None
    if isinstance(value, list):
        return [str(v) for v in value]
    raise ValueError("must be a list of arguments or a string")


def default_command(desired_entrypoint: list[str] | None, image_cmd: list[str] | None,
                    ) -> list[str]:
    """The daemon's rule: a container that sets its own entrypoint does not
    inherit the image's CMD."""
    if desired_entrypoint:
        return []
    return list(image_cmd or [])


# -- restart policy ---------------------------------------------------------------
_RESTART = ("no", "always", "unless-stopped", "on-failure")


def parse_restart(value: Any) -> str:
    """"no" | "always" | "unless-stopped" | "on-failure[:N]" | {name,
    maximum_retry_count} | false → canonical string."""
    if value is None or value is False:
        return "no"
    if isinstance(value, dict):
        name = str(value.get("name") or "no")
        retries = int(value.get("maximum_retry_count") or 0)
    else:
        name, _, count = str(value).partition(":")
        if count and not count.isdigit():
            raise ValueError(f"{value!r}: the retry count must be a number")
        retries = int(count or 0)
    if name == "" or name == "none":
        name = "no"
    if name not in _RESTART:
        raise ValueError(f"{value!r} is not a restart policy ({', '.join(_RESTART)}[:N])")
    if retries and name != "on-failure":
        raise ValueError(f"{value!r}: only on-failure takes a retry count")
    return f"on-failure:{retries}" if name == "on-failure" and retries else name


def restart_from_inspect(policy: dict[str, Any] | None) -> str:
    policy = policy or {}
    return parse_restart({"name": policy.get("Name") or "no",
                          "maximum_retry_count": policy.get("MaximumRetryCount") or 0})


def restart_for_api(canonical: str) -> dict[str, Any]:
    name, _, count = canonical.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


# -- healthcheck ------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": NANO, "m": 60 * NANO,
            "h": 3600 * NANO}


def parse_duration(value: Any) -> int:
    """"30s", "1m30s", "500ms", 30 (seconds) → nanoseconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return int(round(value * NANO))
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return int(round(float(text) * NANO))
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m[1]) * _UNIT_NS[m[2]]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration like 30s, 1m30s or 500ms")
    return int(round(total))


_HC_KEYS = {"test": "Test", "interval": "Interval", "timeout": "Timeout",
            "retries": "Retries", "start_period": "StartPeriod"}


def parse_healthcheck(value: Any) -> dict[str, Any] | None:
    """{test, interval, timeout, retries, start_period} → the declared keys in
    API units (ns); "none" / {test: none} / false disables the image's."""
    if value is None:
        return None
    if value is False or (isinstance(value, str) and value.lower() == "none"):
        return {"test": ["NONE"]}
    if not isinstance(value, dict):
        raise ValueError("healthcheck is a mapping (test, interval, timeout, retries, "
                         "start_period) or \"none\"")
    unknown = set(value) - set(_HC_KEYS)
    if unknown:
        raise ValueError(f"unknown healthcheck key {sorted(unknown)[0]!r} "
                         f"(allowed: {', '.join(_HC_KEYS)})")
    out: dict[str, Any] = {}
    if value.get("test") is not None:
        test = value["test"]
        if isinstance(test, str):
            test = ["NONE"] if test.lower() == "none" else ["CMD-SHELL", test]
        elif isinstance(test, list) and test:
            test = [str(t) for t in test]
            if test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                test = ["CMD", *test]
        else:
            raise ValueError("healthcheck.test is a command string or a list")
        out["test"] = test
    for key in ("interval", "timeout", "start_period"):
        if value.get(key) is not None:
            out[key] = parse_duration(value[key])
    if value.get("retries") is not None:
        retries = value["retries"]
        if isinstance(retries, bool) or not str(retries).isdigit():
            raise ValueError("healthcheck.retries must be a whole number")
        out["retries"] = int(retries)
    if not out:
        raise ValueError("healthcheck needs at least one of test, interval, timeout, "
                         "retries, start_period")
    return dict(sorted(out.items()))


def healthcheck_from_api(hc: dict[str, Any] | None) -> dict[str, Any]:
    hc = hc or {}
    out = {}
    for key, api in _HC_KEYS.items():
        v = hc.get(api)
        if v:  # 0 / [] mean "inherit" in the API
            out[key] = list(v) if key == "test" else int(v)
    return out


def healthcheck_from_inspect(container_hc: dict[str, Any] | None,
                             image_hc: dict[str, Any] | None,
                             desired: dict[str, Any] | None) -> dict[str, Any] | None:
    have = healthcheck_from_api(container_hc)
    if desired is None:
        # the daemon merges the image's healthcheck into the container's
        return None if have == healthcheck_from_api(image_hc) else dict(sorted(have.items()))
    if desired.get("test") == ["NONE"]:
        return {"test": have.get("test", [])} if have.get("test") else {}
    return {k: have.get(k) for k in desired}


def healthcheck_for_api(hc: dict[str, Any]) -> dict[str, Any]:
    return {api: hc[key] for key, api in _HC_KEYS.items() if key in hc}


# -- limits ------------------------------------------------------------------------
def parse_cpus(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of CPUs")
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number of CPUs like 0.5 or 2") from None
    if cpus < 0:
        raise ValueError("cpus cannot be negative")
    if cpus and cpus < 0.01:
        raise ValueError("cpus must be at least 0.01")
    return round(cpus, 3)


def parse_memory(value: Any) -> int:
    mem = parse_size(value)
    if mem and mem < 6 * 1024 * 1024:
        raise ValueError("memory must be at least 6MiB (Docker's minimum)")
    return mem


def cpus_from_inspect(host_config: dict[str, Any]) -> float:
    nano = host_config.get("NanoCpus") or 0
    if nano:
        return round(nano / NANO, 3)
    quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or 0
    if quota > 0:
        return round(quota / (period or 100_000), 3)
    return 0.0


def pids_from_inspect(host_config: dict[str, Any]) -> int:
    pids = host_config.get("PidsLimit") or 0
    return pids if pids > 0 else 0  # null, 0 and -1 all mean unlimited


# -- a whole container ----------------------------------------------------------------
def state_of(inspect: dict[str, Any]) -> str:
    st = inspect.get("State") or {}
    return "running" if st.get("Running") or st.get("Restarting") else "stopped"


def container_observed(inspect: dict[str, Any], image: dict[str, Any] | None,
                       desired: dict[str, Any], want_image_id: str | None) -> dict[str, Any]:
    """`docker inspect` of a container (+ its image's inspect) → observed
    state in the desired fields' canonical form."""
    cfg = inspect.get("Config") or {}
    hc = inspect.get("HostConfig") or {}
    icfg = (image or {}).get("Config") or {}
    image_id = inspect.get("Image") or ""

    def image_default(field: str, have: Any, default: Any) -> Any:
        # undeclared and equal to the image's value → "the default" (None)
        if desired.get(field) is None and have == default:
            return None
        return have

    entrypoint = list(cfg.get("Entrypoint") or [])
    command = list(cfg.get("Cmd") or [])
    network_mode = hc.get("NetworkMode") or "default"
    if network_mode == "default":
        network_mode = "bridge"
    labels = cfg.get("Labels") or {}
    observed = {
        "name": (inspect.get("Name") or "").lstrip("/"),
        "state": state_of(inspect),
        # the ref it was created from; with the ID when that is not what the
        # declared ref points to now, so the plan line shows what moved
        "image": (cfg.get("Image") or image_id) if image_id == want_image_id
        else f"{cfg.get('Image') or '?'} ({short_id(image_id)})",
        "image_id": image_id,
        "declared_image_id": want_image_id,
        "command": image_default("command", command,
                                 default_command(desired.get("entrypoint"), icfg.get("Cmd"))),
        "entrypoint": image_default("entrypoint", entrypoint, list(icfg.get("Entrypoint") or [])),
        "env": env_from_inspect(cfg.get("Env"), icfg.get("Env"), desired.get("env") or {}),
        "ports": ports_from_inspect(hc.get("PortBindings"), cfg.get("ExposedPorts"),
                                    icfg.get("ExposedPorts"), desired.get("ports")),
        "volumes": binds_from_inspect(hc.get("Binds")),
        "network_mode": network_mode,
        "restart": restart_from_inspect(hc.get("RestartPolicy")),
        "healthcheck": healthcheck_from_inspect(cfg.get("Healthcheck"), icfg.get("Healthcheck"),
                                                desired.get("healthcheck")),
        "user": image_default("user", cfg.get("User") or "", icfg.get("User") or ""),
        "working_dir": image_default("working_dir", cfg.get("WorkingDir") or "",
                                     icfg.get("WorkingDir") or ""),
        "memory": hc.get("Memory") or 0,
        "cpus": cpus_from_inspect(hc),
        "pids": pids_from_inspect(hc),
        "cgroup_parent": hc.get("CgroupParent") or "",
        "labels": labels_from_inspect(labels, icfg.get("Labels"), desired.get("labels") or {}),
        "owner": owner_of(labels),
    }
    # health (starting/healthy) is not part of the state: it changes on its
    # own, and a saved plan must not go stale because a check ran
    return observed


def short_id(image_id: str | None) -> str:
    if not image_id:
        return "(none)"
    return image_id.split(":", 1)[-1][:12]


# Docker's own rule for container, volume and network names.
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z"  # \Z: "$" would accept a trailing newline


def str_dict(value: Any) -> dict[str, str]:
    """Options and labels as Docker stores them: strings, sorted by key."""
    return {str(k): str(v) for k, v in sorted((value or {}).items())}
