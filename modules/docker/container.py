"""`container`: a Docker container, compared field by field with `docker inspect`.

    - container:
        name: web
        image: registry.example/web:1.4       # compared by image ID: a moved tag recreates
        command: ["web", "--port", "8080"]    # or a string, split like a shell would
        env: {MODE: prod, DB_PASSWORD: "{{ db_password }}"}   # secret values stay redacted
        ports: ["8080:80", "127.0.0.1:9090:9090/udp"]
        volumes: ["data:/var/lib/web", "/srv/web/conf:/etc/web:ro"]
        network_mode: host                    # none | host | bridge | <docker_network name>
        restart: unless-stopped               # no | always | unless-stopped | on-failure[:N]
        healthcheck: {test: "wget -q -O- localhost:8080/health", interval: 10s, retries: 3}
        user: "1000:1000"
        working_dir: /srv
        limits: {memory: 512MiB, cpus: 1.5, pids: 200}
        slice: tenant-a                       # cgroup parent /provision/tenant-a (a `slice` resource)
        labels: {team: web}
        state: running                        # running | stopped | absent
        wait: healthy                         # after starting, wait for the healthcheck to pass
        wait_timeout: 60
        remove_volumes: false                 # on absent: also remove its named volumes
        adopt: false                          # take over a same-named container provision did not create

Undeclared fields mean "the default": the image's command, entrypoint, user,
working directory and healthcheck; no extra env or labels; no ports,
volumes or limits; restart "no". So removing a line from the spec converges
back to the default. network_mode alone is compared only when declared.

restart, memory, cpus and pids change in place (POST /containers/{id}/update)
and state by start/stop; every other difference recreates the container
(create the new one first, so a bad spec leaves the old one running).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from modules.docker import _normalize as n
from modules.docker._client import OWNER_LABEL, client, full_ref, refuse_unowned, unowned_note
from provisioner.connection.base import Connection
from provisioner.errors import HostError
from provisioner.module import Module
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.secret import REGISTRY, reveal
from provisioner.spec import schema as s

SLICE_ROOT = "/provision"  # the slice kind's cgroup: provision/<name>

COMPARED = ("image", "state", "command", "entrypoint", "env", "ports", "volumes",
            "network_mode", "restart", "healthcheck", "user", "working_dir", "memory", "cpus",
            "pids", "cgroup_parent", "labels")
IN_PLACE = frozenset({"state", "restart", "memory", "cpus", "pids"})
# fields where None in the spec means "whatever the image says"
IMAGE_DEFAULTS = ("command", "entrypoint", "user", "working_dir", "healthcheck")
# fields compared only when declared (their default is the daemon's choice)
ONLY_DECLARED = ("network_mode",)


class ContainerModule(Module):
    kind = "container"
    uses_kinds = frozenset({"docker_image", "docker_network", "docker_volume", "slice"})
    uses_api = True
    schema = {
        "name": s.string(required=True, empty=False, regex=n.NAME_RE),
        "image": s.string(empty=False),
        "state": s.one_of("running", "stopped", "absent", default="running"),
        "command": {"type": ["string", "list"], "nullable": True},
        "entrypoint": {"type": ["string", "list"], "nullable": True},
        "env": {"type": ["dict", "list"], "nullable": True},
        "ports": {"type": "list", "nullable": True},
        "volumes": {"type": "list", "nullable": True},
        "network_mode": s.string(empty=False, nullable=True),
        "restart": {"type": ["string", "dict", "boolean"], "nullable": True},
        "healthcheck": {"type": ["dict", "string", "boolean"], "nullable": True},
        "user": s.string(nullable=True),
        "working_dir": s.string(nullable=True),
        "limits": {"type": "dict", "nullable": True, "schema": {
            "memory": s.size(nullable=True),
            "cpus": s.number(min=0.0, nullable=True),
            "pids": s.integer(min=0, nullable=True),
        }},
        "slice": s.string(empty=False, nullable=True),
        "cgroup_parent": s.string(nullable=True),
        "labels": {"type": "dict", "nullable": True},
        "wait": s.one_of("healthy", nullable=True),
        "wait_timeout": s.number(min=0.0, default=60.0),
        "stop_timeout": s.integer(min=0, default=10),
        "remove_volumes": s.boolean(default=False),
        "adopt": s.boolean(default=False),
    }
    control_fields = frozenset({"state", "wait", "wait_timeout", "stop_timeout",
                                "remove_volumes", "adopt", "slice"})

    # -- spec time -------------------------------------------------------------
    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        control = {"stop_timeout": fields["stop_timeout"],
                   "remove_volumes": fields["remove_volumes"], "adopt": fields["adopt"]}
        if fields["state"] == "absent":
            return {"name": fields["name"], "state": "absent", **control}
        if not fields.get("image"):
            ctx.fail("image", "a container needs an image")

        def parsed(field: str, fn: Any, value: Any) -> Any:
            try:
                return fn(value)
            except ValueError as exc:
                ctx.fail(field, str(exc))

        limits = fields.get("limits") or {}
        memory = parsed("limits.memory", n.parse_memory, limits.get("memory") or 0)
        cpus = parsed("limits.cpus", n.parse_cpus, limits.get("cpus") or 0)
        if fields.get("slice") and fields.get("cgroup_parent"):
            ctx.fail("cgroup_parent", "give slice or cgroup_parent, not both")
        cgroup_parent = fields.get("cgroup_parent") or ""
        if fields.get("slice"):
            cgroup_parent = f"{SLICE_ROOT}/{fields['slice']}"
        if fields.get("wait") and fields["state"] != "running":
            ctx.fail("wait", "only a running container can be waited for")
        hc = parsed("healthcheck", n.parse_healthcheck, fields.get("healthcheck"))
        if fields.get("wait") == "healthy" and hc and hc.get("test") == ["NONE"]:
            ctx.fail("wait", "wait: healthy needs a healthcheck, and this one is disabled")
        entrypoint = parsed("entrypoint", n.parse_argv, fields.get("entrypoint"))
        return {
            "name": fields["name"],
            "image": full_ref(fields["image"]),
            "state": fields["state"],
            "command": parsed("command", n.parse_argv, fields.get("command")),
            "entrypoint": entrypoint,
            "env": parsed("env", n.parse_env, fields.get("env")),
            "ports": parsed("ports", n.parse_ports, fields.get("ports")),
            "volumes": parsed("volumes", n.parse_volumes, fields.get("volumes")),
            "network_mode": fields.get("network_mode"),
            "restart": parsed("restart", n.parse_restart, fields.get("restart")),
            "healthcheck": hc,
            "user": fields.get("user"),
            "working_dir": fields.get("working_dir"),
            "memory": memory,
            "cpus": cpus,
            "pids": int(limits.get("pids") or 0),
            "cgroup_parent": cgroup_parent,
            "slice": fields.get("slice"),
            "labels": parsed("labels", n.parse_labels, fields.get("labels")),
            "wait": fields.get("wait"),
            "wait_timeout": fields["wait_timeout"],
            **control,
        }

    def implicit_deps(self, res: Resource, others: Sequence[Resource]) -> list[str]:
        d = res.fields
        wanted = set()
        if d.get("image"):
            wanted.add(("docker_image", d["image"]))
        for vol in n.named_volumes(d.get("volumes") or []):
            wanted.add(("docker_volume", vol))
        if d.get("network_mode"):
            wanted.add(("docker_network", d["network_mode"]))
        if d.get("slice"):
            wanted.add(("slice", d["slice"]))
        return [o.address for o in others
                if o.host == res.host and (o.kind, o.name) in wanted]

    # -- reading ---------------------------------------------------------------
    def read_many(self, conn: Connection, resources: Sequence[Resource]
                  ) -> dict[str, dict[str, Any] | None]:
        """One inspect per declared container, one per distinct image (the
        declared refs, plus the image of a container whose tag moved)."""
        dk = client(conn)
        images: dict[str, dict[str, Any] | None] = {}  # ref or id -> inspect

        def image(ref: str) -> dict[str, Any] | None:
            if ref not in images:
                images[ref] = _inspect(dk, "image", ref)
                if images[ref] is not None:
                    images[images[ref]["Id"]] = images[ref]
            return images[ref]

        out: dict[str, dict[str, Any] | None] = {}
        for res in resources:
            inspect = _inspect(dk, "container", res.name)
            if inspect is None:
                out[res.address] = None
                continue
            want = image(res.fields["image"]) if res.fields.get("image") else None
            have = image(inspect.get("Image") or "") if inspect.get("Image") else None
            out[res.address] = n.container_observed(inspect, have, res.fields,
                                                    want["Id"] if want else None)
        return out

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        dk = client(conn)
        found = dk.get("/containers/json", {"all": "1", "filters": json.dumps(
            {"label": [f"{OWNER_LABEL}={owner}"]})}, doing="list containers") or []
        out = {}
        for c in found:
            name = (c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/")
            out[name] = {"name": name, "image": c.get("Image"), "image_id": c.get("ImageID"),
                         "state": "running" if c.get("State") == "running" else "stopped",
                         "owner": owner}
        return out

    # -- deciding --------------------------------------------------------------
    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        changed = []
        for key in COMPARED:
            want, have = desired.get(key), observed.get(key)
            if key == "image":
                wanted_id = observed.get("declared_image_id")
                if not wanted_id or wanted_id != observed.get("image_id"):
                    changed.append(key)
                continue
            if key in ONLY_DECLARED and want is None:
                continue
            if key == "network_mode" and want == "default":
                want = "bridge"
            if want != have:
                changed.append(key)
        return changed

    def forces_replace(self, desired: dict[str, Any], observed: dict[str, Any],
                       changed: list[str]) -> list[str]:
        forcing = [f for f in changed if f not in IN_PLACE]
        # Docker cannot lift a memory or CPU limit in place (0 means "leave as is")
        forcing += [f for f in ("memory", "cpus") if f in changed and not desired.get(f)]
        return forcing

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        out = []
        if observed is None:
            return out
        if "image" in changed:
            old, new = observed.get("image_id"), observed.get("declared_image_id")
            if not new:
                out.append(f"image {desired['image']} is not on the host: apply needs it "
                           "(declare a docker_image resource to pull, build or load it)")
            elif observed.get("image", "").split(" (")[0] == desired.get("image"):
                out.append(f"image: {n.short_id(old)} → {n.short_id(new)} (tag moved)")
            else:
                out.append(f"image: {observed.get('image')} → "
                           f"{desired['image']} ({n.short_id(new)})")
        return out + unowned_note("container", desired, observed, changed,
                                  self.wants_absent(desired))

    # -- acting ----------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        dk = client(conn)
        d = res.fields
        name = res.name
        before = change.before or {}
        if change.action is not Action.CREATE:
            _check_owner(conn, res, before)
        if change.action is Action.DELETE:
            self._remove(dk, name, d, stop_timeout=d["stop_timeout"])
            return
        if change.action is Action.CREATE:
            self._create(dk, res, name)
            if d["state"] == "running":
                self._start(dk, name, d)
            return
        if change.action is Action.REPLACE:
            temp = f"{name}.provision-new"
            leftover = _inspect(dk, "container", temp)
            if leftover is not None:
                with dk.errors(f"remove the leftover container {temp}"):
                    dk.api.remove_container(temp, force=True)
            self._create(dk, res, temp)  # a bad spec fails here; the old one keeps running
            with dk.errors(f"stop container {name}"):
                dk.api.stop(name, timeout=d["stop_timeout"])
            with dk.errors(f"remove container {name}"):
                dk.api.remove_container(name, v=False)
            with dk.errors(f"rename container {temp} to {name}"):
                dk.api.rename(temp, name)
            if d["state"] == "running":
                self._start(dk, name, d)
            return
        # UPDATE: only in-place fields changed
        fields = set(change.changed_fields)
        body: dict[str, Any] = {}
        if "restart" in fields:
            body["RestartPolicy"] = n.restart_for_api(d["restart"])
        if "memory" in fields:
            body["Memory"] = d["memory"]
            body["MemorySwap"] = 2 * d["memory"]  # what the daemon picks at create
        if "cpus" in fields:
            body["NanoCpus"] = int(round(d["cpus"] * n.NANO))
        if "pids" in fields:
            body["PidsLimit"] = d["pids"] or -1
        if body:
            dk.post_json(dk.container_path(name, "update"), body,
                         f"update container {name} in place")
        if "state" in fields:
            if d["state"] == "running":
                self._start(dk, name, d)
            else:
                with dk.errors(f"stop container {name}"):
                    dk.api.stop(name, timeout=d["stop_timeout"])

    def _create(self, dk: Any, res: Resource, name: str) -> None:
        d = res.fields
        api = dk.api
        if d["cgroup_parent"] and d.get("slice"):
            driver = dk.info().get("CgroupDriver")
            if driver == "systemd":
                raise HostError(dk.host, f"container {res.name}: slice {d['slice']} needs the "
                                "cgroupfs cgroup driver (this dockerd uses systemd); give "
                                "cgroup_parent: <name>.slice instead")
        exposed, bindings = n.ports_for_api(d["ports"])
        host_config = api.create_host_config(
            binds=d["volumes"] or None,
            port_bindings=bindings or None,
            network_mode=d["network_mode"],
            restart_policy=n.restart_for_api(d["restart"]) if d["restart"] != "no" else None,
            mem_limit=d["memory"] or None,
            nano_cpus=int(round(d["cpus"] * n.NANO)) or None,
            pids_limit=d["pids"] or None,
            cgroup_parent=d["cgroup_parent"] or None,
        )
        labels = {**d["labels"], OWNER_LABEL: res.owner or "provision"}
        kwargs: dict[str, Any] = dict(
            image=d["image"], name=name, detach=True, labels=labels,
            environment=reveal(d["env"]) or None, ports=exposed or None,
            host_config=host_config, user=d["user"], working_dir=d["working_dir"],
            healthcheck=n.healthcheck_for_api(d["healthcheck"]) if d["healthcheck"] else None,
        )
        if d["command"] is not None:
            kwargs["command"] = d["command"]
        if d["entrypoint"] is not None:
            kwargs["entrypoint"] = d["entrypoint"]
        try:
            with dk.errors(f"create container {res.name}"):
                api.create_container(**kwargs)
        except HostError as exc:
            if "No such image" in exc.message:
                raise HostError(dk.host, f"cannot create container {res.name}: image "
                                f"{d['image']} is not on the host (declare a docker_image "
                                "resource to pull, build or load it)") from None
            raise

    def _start(self, dk: Any, name: str, d: dict[str, Any]) -> None:
        with dk.errors(f"start container {name}"):
            dk.api.start(name)
        deadline = time.monotonic() + float(d.get("wait_timeout") or 0)
        while True:
            inspect = _inspect(dk, "container", name) or {}
            st = inspect.get("State") or {}
            if not st.get("Running") and not st.get("Restarting"):
                raise HostError(dk.host, f"container {name} exited right after starting "
                                f"(exit code {st.get('ExitCode')}){_logs(dk, name)}")
            if d.get("wait") != "healthy":
                return
            health = st.get("Health")
            if not health:
                raise HostError(dk.host, f"container {name}: wait: healthy, but neither the "
                                "spec nor the image defines a healthcheck")
            if health.get("Status") == "healthy":
                return
            if health.get("Status") == "unhealthy":
                raise HostError(dk.host, f"container {name} is unhealthy"
                                f"{_health_output(health)}")
            if time.monotonic() >= deadline:
                raise HostError(dk.host, f"container {name} not healthy after "
                                f"{d['wait_timeout']:g}s (health: {health.get('Status')})"
                                f"{_health_output(health)}")
            time.sleep(0.1)

    def _remove(self, dk: Any, name: str, d: dict[str, Any], stop_timeout: int) -> None:
        inspect = _inspect(dk, "container", name)
        if inspect is None:
            return
        binds = n.binds_from_inspect((inspect.get("HostConfig") or {}).get("Binds"))
        if (inspect.get("State") or {}).get("Running"):
            with dk.errors(f"stop container {name}"):
                dk.api.stop(name, timeout=stop_timeout)
        # v=True removes anonymous volumes only; named volumes survive unless asked
        with dk.errors(f"remove container {name}"):
            dk.api.remove_container(name, v=bool(d.get("remove_volumes")))
        if d.get("remove_volumes"):
            for vol in n.named_volumes(binds):
                with dk.errors(f"remove volume {vol} of container {name}"):
                    dk.api.remove_volume(vol)


def _check_owner(conn: Connection, res: Resource, observed: dict[str, Any]) -> None:
    refuse_unowned(conn, "container", res.name, res.fields, observed)


def _inspect(dk: Any, what: str, ref: str) -> dict[str, Any] | None:
    """inspect a container or an image; None when it does not exist."""
    return dk.inspect(what + "s", ref)


def _logs(dk: Any, name: str) -> str:
    try:
        raw = dk.api.logs(name, tail=5)
    except Exception:
        return ""
    text = " | ".join(line for line in raw.decode("utf-8", "replace").splitlines() if line)
    return f": {REGISTRY.scrub(text)[-300:]}" if text else ""


def _health_output(health: dict[str, Any]) -> str:
    log = health.get("Log") or []
    if not log:
        return ""
    last = log[-1]
    output = " ".join(str(last.get("Output") or "").split())
    return f" (last check exited {last.get('ExitCode')}{': ' + REGISTRY.scrub(output)[:200] if output else ''})"
