"""provisioner.helper: getting the helper onto a host through a Connection
(cached / compiled there / uploaded / unavailable), and calling it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from provisioner import helper as helper_mod
from provisioner.helper import HelperError, ensure_helper, plain_clone, unavailable_reason
from tests.fakes import SubprocessConnection


class RecordingConnection(SubprocessConnection):
    """Runs commands locally with its own HOME and PATH; records them."""

    def __init__(self, home: Path, path: str | None = None, env: dict[str, str] | None = None):
        full = {**os.environ, "HOME": str(home), **(env or {})}
        if path is not None:
            full["PATH"] = path
        super().__init__(full)


@pytest.fixture
def no_cc_path(tmp_path) -> str:
    """A PATH with the tools the scripts need but no C compiler."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "uname", "mkdir", "mv", "chmod", "cat", "cp", "stat", "truncate", "rm"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    return str(bindir)


def test_compiles_on_host_then_cached(tmp_path, helper_bin):
    conn = RecordingConnection(tmp_path / "home")
    (tmp_path / "home").mkdir()
    handle = ensure_helper(conn)
    assert handle is not None and handle.how == "compiled"
    digest = helper_mod.source_hash()
    assert handle.path == f"{tmp_path}/home/.cache/provision/helper-{digest}/provision-helper"
    assert os.access(handle.path, os.X_OK)
    assert handle.version()["version"]
    # every command was an argv list; sources went up with put
    assert any(p.endswith("/src/clone.c") for p in conn.puts)
    # cached per connection: no more round trips
    n = len(conn.runs)
    assert ensure_helper(conn) is handle
    assert len(conn.runs) == n
    # a new connection finds it on the host with a single run
    conn2 = RecordingConnection(tmp_path / "home")
    handle2 = ensure_helper(conn2)
    assert handle2 is not None and handle2.how == "cached" and handle2.path == handle.path
    assert len(conn2.runs) == 1 and conn2.puts == []


def test_uploads_local_build_without_compiler(tmp_path, no_cc_path, helper_bin):
    (tmp_path / "home").mkdir()
    conn = RecordingConnection(tmp_path / "home", path=no_cc_path)
    handle = ensure_helper(conn)
    assert handle is not None and handle.how == "uploaded"
    assert not any("/src/" in p for p in conn.puts)
    assert handle.version()["features"]


def test_none_without_compiler_or_binary(tmp_path, no_cc_path, monkeypatch):
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(helper_mod, "local_binary", lambda: None)
    conn = RecordingConnection(tmp_path / "home", path=no_cc_path)
    assert ensure_helper(conn) is None
    reason = unavailable_reason(conn)
    assert "no C compiler" in reason and "no local build" in reason


def test_none_on_other_architecture(tmp_path, no_cc_path, monkeypatch, helper_bin):
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(helper_mod, "controller_arch", lambda: "riscv64")
    conn = RecordingConnection(tmp_path / "home", path=no_cc_path)
    assert ensure_helper(conn) is None
    assert "controller is riscv64" in unavailable_reason(conn)


def test_source_hash_is_stable_and_content_based():
    h = helper_mod.source_hash()
    assert len(h) == 16 and h == helper_mod.source_hash()


def test_handle_clone_and_errors(tmp_path, helper_bin):
    # pre-seed the host's cache with the local build: found with one run
    cache = tmp_path / "home" / ".cache" / "provision" / f"helper-{helper_mod.source_hash()}"
    cache.mkdir(parents=True)
    shutil.copy2(helper_bin, cache / "provision-helper")
    conn = RecordingConnection(tmp_path / "home")
    handle = ensure_helper(conn)
    assert handle is not None and handle.how == "cached"
    src = tmp_path / "src.img"
    src.write_bytes(b"data" * 1000)
    out = handle.clone(str(src), str(tmp_path / "dst.img"), size=1 << 20)
    assert out["size"] == 1 << 20 and (tmp_path / "dst.img").stat().st_size == 1 << 20
    # a name starting with "-" is not taken for an option
    dash = tmp_path / "-odd"
    out = handle.clone(str(src), str(dash))
    assert dash.read_bytes() == src.read_bytes()
    with pytest.raises(HelperError) as err:
        handle.clone(str(src), str(tmp_path / "small.img"), size=10)
    assert err.value.rc == 1 and "shrink" in str(err.value)
    assert str(err.value).startswith("local: provision-helper clone")
    with pytest.raises(HelperError) as err:
        handle.clone(str(tmp_path / "missing"), str(tmp_path / "x"))
    assert err.value.data["errno"] == 2


def test_plain_clone_fallback(tmp_path):
    conn = RecordingConnection(tmp_path)
    src = tmp_path / "src.img"
    src.write_bytes(b"abc" * 100)
    out = plain_clone(conn, str(src), str(tmp_path / "dst.img"), size=4096)
    assert out == {"method": "cp", "size": 4096, "dst": str(tmp_path / "dst.img")}
    assert (tmp_path / "dst.img").read_bytes()[:300] == src.read_bytes()
    with pytest.raises(Exception, match="shrink"):
        plain_clone(conn, str(src), str(tmp_path / "small.img"), size=1)
    assert not (tmp_path / "small.img").exists()
    assert [n for n in os.listdir(tmp_path) if "provision-tmp" in n] == []


def test_cache_does_not_keep_connections_alive(tmp_path, helper_bin):
    import gc
    import weakref

    cache = tmp_path / "home" / ".cache" / "provision" / f"helper-{helper_mod.source_hash()}"
    cache.mkdir(parents=True)
    shutil.copy2(helper_bin, cache / "provision-helper")
    conn = RecordingConnection(tmp_path / "home")
    assert ensure_helper(conn) is not None
    ref = weakref.ref(conn)
    del conn
    gc.collect()
    assert ref() is None
