"""apt installs the test package from the local repository, and only from there."""

from __future__ import annotations

import subprocess


def test_install_upgrade_and_remove(apt_repo):
    pkg = apt_repo.package
    assert apt_repo.installed_version() is None
    apt_repo.add_source()
    try:
        update = apt_repo.apt_get("update")
        assert "http" not in update.stdout  # no network source is read
        apt_repo.apt_get("install", f"{pkg}=1.0")
        assert apt_repo.installed_version() == "1.0"
        assert (
            subprocess.run([pkg], capture_output=True, text=True, check=True).stdout
            == f"{pkg} 1.0\n"
        )
        apt_repo.apt_get("install", pkg)
        assert apt_repo.installed_version() == "1.1"
    finally:
        apt_repo.apt_get("purge", pkg, check=False)
        apt_repo.remove_source()
    assert apt_repo.installed_version() is None
    apt_repo.apt_get("update")
    assert apt_repo.apt_get("install", pkg, check=False).returncode != 0
