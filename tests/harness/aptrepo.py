"""A local flat apt repository with a tiny package in two versions, and an apt setup that
reads only that repository (tests never reach a network mirror).

apt installs into the real machine (its dpkg database); remove what you install.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from email.utils import formatdate
from pathlib import Path

from .util import register_cleanup, run

PACKAGE = "provision-test-hello"
VERSIONS = ("1.0", "1.1")


def build_deb(work_dir: Path, package: str, version: str, out_dir: Path) -> Path:
    """An Architecture: all .deb installing /usr/bin/<package> (prints "<package> <version>")
    and /usr/share/<package>/version."""
    root = work_dir / f"{package}_{version}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / f"usr/share/{package}").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\n"
        f"Version: {version}\n"
        "Architecture: all\n"
        "Maintainer: provision tests <tests@provision.invalid>\n"
        "Section: misc\n"
        "Priority: optional\n"
        f"Description: test package for provision ({version})\n"
        " Made by the provision test harness; safe to remove.\n"
    )
    script = root / "usr/bin" / package
    script.write_text(f'#!/bin/sh\necho "{package} {version}"\n')
    script.chmod(0o755)
    (root / f"usr/share/{package}/version").write_text(version + "\n")
    deb = out_dir / f"{package}_{version}_all.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, deb])
    deb.chmod(0o644)
    return deb


def write_release(repo: Path) -> Path:
    """A Release file with the hashes of Packages (apt then accepts the repo quietly)."""
    lines = ["Origin: provision-test", "Label: provision-test", f"Date: {formatdate(usegmt=True)}"]
    for field, algo in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{field}:")
        for name in ("Packages",):
            data = (repo / name).read_bytes()
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data)} {name}")
    release = repo / "Release"
    release.write_text("\n".join(lines) + "\n")
    return release


class AptRepo:
    """A flat repository (Packages + Release) holding PACKAGE in VERSIONS.

    Attributes: base_dir, repo_dir, package, versions, debs ({version: Path}),
    source_line ("deb [trusted=yes] file:<repo_dir> ./"), apt_config (an apt.conf that reads
    sources only from sources_list and sources_dir and keeps its package lists in
    lists_dir), env (os.environ + APT_CONFIG), sources_list, sources_dir, source_file
    (where add_source() writes source_line).
    """

    def __init__(self, base_dir: str | os.PathLike, *, package: str = PACKAGE, versions=VERSIONS):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)  # apt's download sandbox (_apt) reads the repo
        self.package = package
        self.versions = tuple(versions)
        self.repo_dir = self.base_dir / "repo"
        self.repo_dir.mkdir(exist_ok=True)
        build_dir = self.base_dir / "build"
        self.debs = {v: build_deb(build_dir, package, v, self.repo_dir) for v in self.versions}
        packages = run(
            ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=self.repo_dir
        ).stdout
        (self.repo_dir / "Packages").write_text(packages)
        write_release(self.repo_dir)
        for p in self.repo_dir.iterdir():
            p.chmod(0o644)
        self.repo_dir.chmod(0o755)
        self.source_line = f"deb [trusted=yes] file:{self.repo_dir} ./"

        apt_dir = self.base_dir / "apt"
        self.sources_list = apt_dir / "sources.list"
        self.sources_dir = apt_dir / "sources.list.d"
        self.lists_dir = apt_dir / "lists"
        self.source_file = self.sources_dir / "provision-test.list"
        for d in (self.sources_dir, self.lists_dir / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        self.sources_list.write_text("")
        self.apt_config = apt_dir / "apt.conf"
        self.apt_config.write_text(
            f'Dir::Etc::sourcelist "{self.sources_list}";\n'
            f'Dir::Etc::sourceparts "{self.sources_dir}";\n'
            f'Dir::State::lists "{self.lists_dir}/";\n'
            'Dir::Cache::pkgcache "";\n'
            'Dir::Cache::srcpkgcache "";\n'
            'Acquire::Languages "none";\n'
            'APT::Sandbox::User "root";\n'
            'DPkg::Lock::Timeout "120";\n'
        )
        self.env = {
            **os.environ,
            "APT_CONFIG": str(self.apt_config),
            "DEBIAN_FRONTEND": "noninteractive",
        }
        register_cleanup(self.cleanup)

    def add_source(self) -> Path:
        """Write source_line to source_file (the test's own sources.list.d)."""
        self.source_file.write_text(self.source_line + "\n")
        return self.source_file

    def remove_source(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.source_file.unlink()

    def apt_get(self, *args: str, check: bool = True):
        """apt-get with this repo's config (-q -y); CompletedProcess with text output."""
        return run(["apt-get", "-q", "-y", *args], env=self.env, check=check, timeout=300)

    def installed_version(self, package: str | None = None) -> str | None:
        """The version dpkg has installed, or None."""
        p = run(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", package or self.package],
            check=False,
        )
        if p.returncode != 0 or not p.stdout.startswith("ii"):
            return None
        return p.stdout[3:].strip()

    def cleanup(self) -> None:
        """Purge the test package from the machine if a test left it installed."""
        if self.installed_version() is not None:
            run(["dpkg", "--purge", self.package], check=False)
