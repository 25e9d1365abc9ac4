"""The C build itself: warnings are errors, and the sanitizer build passes
native/tests under ASan+UBSan (`make -C native test`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"


def test_release_build_is_warning_free(helper_bin):
    assert helper_bin.is_file()


@pytest.mark.slow
def test_sanitizer_build_and_native_tests():
    proc = subprocess.run(
        ["make", "-C", str(NATIVE), "test"], capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "0 failed" in out
    assert "runtime error" not in out and "AddressSanitizer" not in out
