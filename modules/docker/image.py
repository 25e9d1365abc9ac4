"""`docker_image`: an image present on the host under a name:tag.

    - docker_image: {name: registry.example/web:1.4}                  # pull when missing
    - docker_image: {name: registry.example/web:latest, pull: always,  # re-check the registry
                     auth: {username: ci, password: "{{ registry_token }}"}}
    - docker_image: {name: app:dev, build: {context: ./app, dockerfile: Dockerfile,
                                            args: {VERSION: "1.4"}, target: prod}}
    - docker_image: {name: base:1, load: images/base.tar}      # a `docker save` tarball
    - docker_image: {name: rootfs:1, import: rootfs.tar,       # a root filesystem tarball
                     changes: ['CMD ["/bin/sh"]']}
    - docker_image: {name: old:1, state: absent}

Identity: an image is compared by what it is, not by its tag.
- build / import: the hash of the build context (files, modes, Dockerfile,
  build args; .dockerignore honoured) or of the tarball is computed on the
  controller at plan time and stored on the image as the label
  dev.provision.source; a different hash rebuilds.
- load: the image ID is read from the tarball's manifest at plan time and
  compared with the ID the tag points to.
- pull: present is enough (`pull: missing`, the default); `pull: always`
  asks the registry for the tag's current digest (one distribution call, no
  download) and pulls when it moved.

Build contexts and tarballs are sent to the daemon through the API, over the
same forwarded socket as everything else: nothing is copied to the host's disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Sequence
from typing import Any

from modules.docker._client import (
    OWNER_LABEL,
    SOURCE_LABEL,
    api_message,
    client,
    docker_sdk,
    full_ref,
    split_ref,
)
from provisioner.connection.base import Connection
from provisioner.errors import HostError
from provisioner.module import Module
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.secret import REGISTRY, Secret, reveal
from provisioner.spec import schema as s


def context_digest(context: str, dockerfile: str, args: dict[str, str],
                   target: str | None) -> str:
    """sha256 over what `docker build` would send: every file the
    .dockerignore keeps (path, mode, content), the Dockerfile, args, target."""
    from docker.utils.build import exclude_paths

    ignore_file = os.path.join(context, ".dockerignore")
    patterns: list[str] = []
    if os.path.exists(ignore_file):
        with open(ignore_file) as fh:
            patterns = [line.strip() for line in fh
                        if line.strip() and not line.startswith("#")]
    h = hashlib.sha256()
    for rel in sorted(exclude_paths(context, patterns, dockerfile=dockerfile)):
        full = os.path.join(context, rel)
        st = os.lstat(full)
        h.update(f"{rel}\0{st.st_mode:o}\0".encode())
        if os.path.islink(full):
            h.update(os.readlink(full).encode())
        elif os.path.isfile(full):
            with open(full, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\0")
    h.update(json.dumps({"dockerfile": dockerfile, "args": args, "target": target},
                        sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def saved_image_id(path: str) -> str:
    """The image ID inside a `docker save` tarball (its config blob's digest)."""
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise ValueError("no manifest.json: not a `docker save` tarball")
        manifest = json.load(member)
    if not manifest or "Config" not in manifest[0]:
        raise ValueError("manifest.json names no image config")
    config = manifest[0]["Config"]  # "<hex>.json" or "blobs/sha256/<hex>"
    digest = os.path.basename(config).removesuffix(".json")
    return "sha256:" + digest


class DockerImageModule(Module):
    kind = "docker_image"
    uses_api = True
    schema = {
        "name": s.string(required=True, empty=False),
        "state": s.one_of("present", "absent", default="present"),
        "pull": s.one_of("missing", "always", default="missing"),
        "auth": {"type": "dict", "nullable": True, "schema": {
            "username": s.string(required=True),
            "password": s.text(required=True),
            "registry": s.string(nullable=True),
        }},
        "build": {"type": "dict", "nullable": True, "schema": {
            "context": s.string(required=True, empty=False),
            "dockerfile": s.string(default="Dockerfile"),
            "args": {"type": "dict", "nullable": True},
            "target": s.string(nullable=True),
        }},
        "load": s.string(empty=False, nullable=True),
        "import": s.string(empty=False, nullable=True),
        "changes": {"type": "list", "nullable": True, "schema": {"type": "string"}},
    }
    control_fields = frozenset({"state", "pull", "auth", "build", "load", "import", "changes",
                                "source", "context"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        name = full_ref(fields["name"])
        if split_ref(name)[1].startswith("@"):
            ctx.fail("name", "give a name:tag (a digest cannot be built or loaded as a tag)")
        if fields["state"] == "absent":
            return {"name": name, "state": "absent"}
        given = [k for k in ("build", "load", "import") if fields.get(k)]
        if len(given) > 1:
            ctx.fail(given[1], f"give only one of build, load, import (also {given[0]})")
        if fields.get("changes") and given != ["import"]:
            ctx.fail("changes", "changes apply to import only")
        out: dict[str, Any] = {"name": name, "state": "present",
                               "source": given[0] if given else "pull"}
        if fields.get("build"):
            b = fields["build"]
            context = ctx.resolve_path(b["context"])
            if not os.path.isdir(context):
                ctx.fail("build.context", f"{b['context']} is not a directory")
            if not os.path.isfile(os.path.join(context, b["dockerfile"])):
                ctx.fail("build.dockerfile", f"no {b['dockerfile']} in {b['context']}")
            args = {str(k): str(v) for k, v in sorted((b.get("args") or {}).items())}
            out["build"] = {"context": context, "dockerfile": b["dockerfile"], "args": args,
                            "target": b.get("target")}
            out["source_digest"] = context_digest(context, b["dockerfile"], args, b.get("target"))
        for key in ("load", "import"):
            if fields.get(key):
                path = ctx.resolve_path(fields[key])
                if not os.path.isfile(path):
                    ctx.fail(key, f"{fields[key]}: no such file")
                out[key] = path
                if key == "load":
                    try:
                        out["id"] = saved_image_id(path)
                    except (ValueError, tarfile.TarError, KeyError, OSError) as exc:
                        ctx.fail(key, f"{fields[key]}: {exc}")
                else:
                    out["source_digest"] = file_digest(path)
                    out["changes"] = list(fields.get("changes") or [])
        if out["source"] == "pull":
            out["pull"] = fields["pull"]
            if fields.get("auth"):
                out["auth"] = dict(fields["auth"])
        return out

    # -- reading ---------------------------------------------------------------
    def read_many(self, conn: Connection, resources: Sequence[Resource]
                  ) -> dict[str, dict[str, Any] | None]:
        dk = client(conn)
        out: dict[str, dict[str, Any] | None] = {}
        for res in resources:
            inspect = dk.inspect("images", res.name)
            if inspect is None:
                out[res.address] = None
                continue
            observed = _observed(inspect, res.name)
            if res.fields.get("pull") == "always":
                observed["registry_digest"] = self._registry_digest(dk, res)
                if observed["registry_digest"] in observed["digests"]:
                    observed["registry_digest"] = None  # the local image is current
            out[res.address] = observed
        return out

    def _registry_digest(self, dk: Any, res: Resource) -> str | None:
        auth = _auth_config(res.fields)
        with dk.errors(f"ask the registry about {res.name}"):
            try:
                data = dk.api.inspect_distribution(res.name, auth_config=auth)
            except docker_sdk().errors.APIError as exc:
                raise HostError(dk.host, REGISTRY.scrub(
                    f"cannot ask the registry about {res.name}: {api_message(exc)}")) from None
        return (data.get("Descriptor") or {}).get("digest")

    def list_owned(self, conn: Connection, owner: str) -> dict[str, dict[str, Any]]:
        dk = client(conn)
        found = dk.get("/images/json", {"filters": json.dumps(
            {"label": [f"{OWNER_LABEL}={owner}"]})}, doing="list images") or []
        out = {}
        for img in found:
            for tag in img.get("RepoTags") or []:
                out[tag] = {"name": tag, "id": img["Id"], "state": "present", "owner": owner}
        return out

    # -- deciding --------------------------------------------------------------
    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        source = desired.get("source")
        if source in ("build", "import"):
            return [] if observed.get("source_digest") == desired["source_digest"] \
                else ["source_digest"]
        if source == "load":
            return [] if observed.get("id") == desired["id"] else ["id"]
        if desired.get("pull") == "always" and observed.get("registry_digest"):
            return ["registry_digest"]
        return []

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        if not observed or not changed:
            return []
        what = {"source_digest": "the build context changed" if desired.get("source") == "build"
                else "the tarball changed", "id": "the tarball holds another image",
                "registry_digest": "the registry has a newer image for this tag"}
        return [f"{what[c]}: containers using {desired['name']} are read again after it "
                "and recreated in the same apply" for c in changed if c in what]

    # -- acting ----------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        dk = client(conn)
        d = res.fields
        if change.action is Action.DELETE:
            with dk.errors(f"remove image {res.name}"):
                dk.api.remove_image(res.name)
            return
        labels = {OWNER_LABEL: res.owner or "provision"}
        source = d["source"]
        if source == "pull":
            self._pull(dk, res)
        elif source == "build":
            self._build(dk, res, {**labels, SOURCE_LABEL: d["source_digest"]})
        elif source == "load":
            self._load(dk, res)
        else:
            repo, tag = split_ref(res.name)
            changes = [*d["changes"], f"LABEL {OWNER_LABEL}={json.dumps(labels[OWNER_LABEL])}",
                       f"LABEL {SOURCE_LABEL}={d['source_digest']}"]
            with dk.errors(f"import {d['import']} as {res.name}"):
                out = dk.api.import_image(src=d["import"], repository=repo, tag=tag,
                                          changes=changes)
            _raise_stream_error(dk, res, _json_lines(out))

    def _pull(self, dk: Any, res: Resource) -> None:
        repo, tag = split_ref(res.name)
        with dk.errors(f"pull {res.name}"):
            stream = dk.api.pull(repo, tag=tag, stream=True, decode=True,
                                 auth_config=_auth_config(res.fields))
            _raise_stream_error(dk, res, stream)

    def _build(self, dk: Any, res: Resource, labels: dict[str, str]) -> None:
        b = res.fields["build"]
        with dk.errors(f"build {res.name}"):
            stream = dk.api.build(path=b["context"], tag=res.name, dockerfile=b["dockerfile"],
                                  buildargs=b["args"] or None, target=b.get("target"),
                                  labels=labels, rm=True, forcerm=True, decode=True)
            _raise_stream_error(dk, res, stream)

    def _load(self, dk: Any, res: Resource) -> None:
        want = res.fields["id"]
        with dk.errors(f"load {res.fields['load']}"), open(res.fields["load"], "rb") as fh:
            _raise_stream_error(dk, res, dk.api.load_image(fh))
        repo, tag = split_ref(res.name)
        with dk.errors(f"tag {want} as {res.name}"):
            dk.api.tag(want, repo, tag=tag, force=True)


def _observed(inspect: dict[str, Any], name: str) -> dict[str, Any]:
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    return {"name": name, "state": "present", "id": inspect["Id"],
            "digests": sorted(d.split("@", 1)[-1] for d in inspect.get("RepoDigests") or []),
            "source_digest": labels.get(SOURCE_LABEL), "owner": labels.get(OWNER_LABEL)}


def _auth_config(fields: dict[str, Any]) -> dict[str, str] | None:
    auth = fields.get("auth")
    if not auth:
        return None
    out = {"username": auth["username"], "password": reveal(auth["password"])}
    if isinstance(auth["password"], Secret):
        REGISTRY.add(auth["password"].reveal())
    if auth.get("registry"):
        out["serveraddress"] = auth["registry"]
    return out


def _json_lines(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, (bytes, str)):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
    return list(raw or [])


def _raise_stream_error(dk: Any, res: Resource, stream: Any) -> None:
    """Build, pull and load report failure inside their progress stream."""
    for item in stream or []:
        if isinstance(item, dict) and (item.get("error") or item.get("errorDetail")):
            message = item.get("error") or (item.get("errorDetail") or {}).get("message")
            raise HostError(dk.host, REGISTRY.scrub(
                f"docker_image {res.name}: {' '.join(str(message).split())}"))
