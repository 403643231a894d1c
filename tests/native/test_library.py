"""The shape of libparekit_ort.so itself: what it links and exports (ELF dynamic section, via readelf)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", *args], capture_output=True, text=True, check=True).stdout


def test_no_link_time_dependency_on_onnxruntime(native_library):
    """The ORT API comes from the OrtApiBase passed to RegisterCustomOps: no NEEDED libonnxruntime (whose
    OrtGetApiBase is symbol-versioned per release, so a link would tie the library to one ORT)."""
    needed = [line for line in _readelf("-d", str(native_library)).splitlines() if "(NEEDED)" in line]
    assert needed, "readelf found no NEEDED entries at all"
    assert not any("onnxruntime" in line for line in needed), needed


def test_exports_only_the_entry_points(native_library):
    exported = set()
    for line in _readelf("--dyn-syms", "-W", str(native_library)).splitlines():
        parts = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(parts) >= 8 and parts[3] in ("FUNC", "OBJECT") and parts[6] != "UND" and parts[4] != "LOCAL":
            exported.add(parts[7].split("@")[0])
    assert exported == {"RegisterCustomOps", "ParekitDescribeOps", "ParekitOrtApiVersion"}
