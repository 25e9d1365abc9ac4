"""`package`: a system package installed (a given version, or the newest) or removed.

    - package: {name: nginx}
    - package: {name: curl, version: "7.88.1-10+deb12u5"}
    - package: {name: openssl, state: latest}
    - package: {name: telnet, state: absent}

The package manager is found on the host: apt/dpkg (Debian, Ubuntu) or
dnf/rpm (Fedora, RHEL and the like; yum where dnf is missing). `latest`
compares with the candidate the host's package lists know about: refresh
them (apt-get update) separately when they may be old. apt honours
APT_CONFIG from the environment the commands run in, which is how a test (or
a host with a private configuration) points it at other sources.

A `version` on an rpm host may omit the release (`1.8.1` matches
`1.8.1-3.fc44`); on a dpkg host it is the exact Debian version.
"""

from __future__ import annotations

from typing import Any

from modules._fs import run_ok
from provisioner.connection.base import Connection, Result
from provisioner.errors import HostError
from provisioner.module import Module, Probe
from provisioner.plan.model import Action, Change
from provisioner.resource import Resource
from provisioner.spec import schema as s

# Debian (lowercase, + . -) and rpm (also _ and capitals) package names, with
# an optional dpkg architecture qualifier. No leading '-', nothing a shell or
# a glob would read.
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,199}(:[a-z0-9][a-z0-9-]{0,31})?\Z"
# [epoch:]version[-release]: digits, letters and . + ~ _ - : ^
VERSION_RE = r"^[A-Za-z0-9][A-Za-z0-9.+~_:^-]{0,199}\Z"

# A fixed script, no user text: prints the path of the first manager found.
DETECT = "command -v apt-get || command -v dnf || command -v yum || true"
DPKG_FORMAT = "${db:Status-Abbrev}|${Version}\\n"
RPM_FORMAT = "%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n"
APT_ENV = ["env", "DEBIAN_FRONTEND=noninteractive"]
# wait for another apt/dpkg (unattended-upgrades) instead of failing at once
APT_LOCK = ["-o", "DPkg::Lock::Timeout=120"]


def detect_manager(result: Result) -> str | None:
    path = result.out.strip().splitlines()
    if not path:
        return None
    tool = path[0].rsplit("/", 1)[-1]
    return {"apt-get": "apt", "dnf": "dnf", "yum": "yum"}.get(tool)


def parse_dpkg(result: Result) -> tuple[str, str] | None:
    """(status, version) of the package per dpkg; None when not installed."""
    if not result.ok:
        return None
    best: tuple[str, str] | None = None
    for row in result.out.splitlines():
        if "|" not in row:
            continue
        abbrev, version = row.split("|", 1)
        status = abbrev[1:2]
        if status in ("n", "c", ""):  # not installed / only config files left
            continue
        state = "installed" if status == "i" else "half-installed"
        if best is None or (state == "installed" and best[0] != "installed"):
            best = (state, version.strip())
    return best


def parse_rpm(result: Result) -> tuple[str, str] | None:
    if not result.ok:
        return None
    rows = [r.strip() for r in result.out.splitlines() if r.strip()]
    return ("installed", rows[0]) if rows else None


def parse_apt_candidate(result: Result) -> str | None:
    if not result.ok:
        return None
    for row in result.out.splitlines():
        row = row.strip()
        if row.startswith("Candidate:"):
            value = row.split(":", 1)[1].strip()
            return None if value in ("(none)", "") else value
    return None


def parse_dnf_update(result: Result) -> str | None:
    """`dnf check-update NAME` exits 100 and lists `name.arch version repo`
    when an update is available."""
    if result.rc != 100:
        return None
    for row in result.out.splitlines():
        cols = row.split()
        if len(cols) >= 3 and "." in cols[0]:
            return cols[1]
    return "(newer)"


def version_matches(manager: str | None, want: str, have: str | None) -> bool:
    if have is None:
        return False
    if have == want:
        return True
    if manager in ("dnf", "yum"):
        plain = have.split(":", 1)[1] if ":" in have.split("-", 1)[0] else have
        return plain == want or plain.rsplit("-", 1)[0] == want
    return False


class PackageModule(Module):
    kind = "package"
    schema = {
        "name": s.string(required=True, regex=NAME_RE),
        "version": s.string(regex=VERSION_RE, nullable=True),
        "state": s.one_of("present", "absent", "latest", default="present"),
    }
    control_fields = frozenset({"state", "name"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        if fields.get("version") is not None and fields["state"] != "present":
            ctx.fail("version", f"a version goes with state present, not {fields['state']}")
        return {"name": fields["name"], "state": fields["state"],
                "version": fields.get("version")}

    def probes(self, res: Resource) -> list[Probe]:
        name = res.fields["name"]
        probes = [
            Probe(("sh", "-c", DETECT)),
            Probe(("dpkg-query", "-W", "-f", DPKG_FORMAT, "--", name)),
            Probe(("rpm", "-q", "--qf", RPM_FORMAT, "--", name)),
        ]
        if res.fields["state"] == "latest":
            probes += [Probe(("apt-cache", "policy", "--", name)),
                       Probe(("dnf", "-q", "check-update", "--", name))]
        return probes

    def parse(self, res: Resource, results: list[Result]) -> dict[str, Any] | None:
        f = res.fields
        manager = detect_manager(results[0])
        if manager is None:
            raise ValueError("no supported package manager found (apt-get, dnf or yum)")
        found = parse_dpkg(results[1]) if manager == "apt" else parse_rpm(results[2])
        if found is None:
            return None
        status, version = found
        observed: dict[str, Any] = {"name": f["name"], "manager": manager,
                                    "version": version, "state": "present"}
        if status != "installed":
            observed["state"] = status
        elif f["state"] == "latest":
            if manager == "apt":
                candidate = parse_apt_candidate(results[3])
                newer = candidate is not None and candidate != version
            else:
                candidate = parse_dnf_update(results[4])
                newer = candidate is not None
            observed["candidate"] = candidate
            observed["state"] = "outdated" if newer else "latest"
        return observed

    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        changed = []
        if observed.get("state") != desired["state"]:
            changed.append("state")
        want = desired.get("version")
        if want is not None and not version_matches(observed.get("manager"), want,
                                                    observed.get("version")):
            changed.append("version")
        return changed

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        if observed and observed.get("state") == "outdated":
            return [f"upgrades {observed.get('version')} → {observed.get('candidate')}"]
        if observed and observed.get("state") == "half-installed":
            return ["dpkg lists it as not fully installed: apply reinstalls it"]
        return []

    # -- acting ----------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        manager = detect_manager(conn.run(["sh", "-c", DETECT]))
        if manager is None:
            raise HostError(conn.host, "no supported package manager found (apt-get, dnf "
                                       "or yum)")
        run_ok(conn, self.command(manager, res.fields, change))

    @staticmethod
    def command(manager: str, desired: dict[str, Any], change: Change) -> list[str]:
        name, version = desired["name"], desired.get("version")
        if manager == "apt":
            if change.action is Action.DELETE:
                return [*APT_ENV, "apt-get", "remove", "-y", *APT_LOCK, "--", name]
            extra = ["--allow-downgrades"] if version else []
            spec = f"{name}={version}" if version else name
            return [*APT_ENV, "apt-get", "install", "-y", "--no-install-recommends",
                    *APT_LOCK, *extra, "--", spec]
        if change.action is Action.DELETE:
            return [manager, "remove", "-y", "--", name]
        if desired["state"] == "latest" and change.before is not None:
            return [manager, "upgrade", "-y", "--", name]
        # a pinned version is installed whichever version is there (up or down)
        return [manager, "install", "-y", "--", f"{name}-{version}" if version else name]
