"""The TensorRT plugin library ``libparekit_trt_plugins.so`` (sources in ``plugins_trt/``): checking it.

The library holds one IPluginV3 creator per parekit op (name = op type, version = ``OpDef.plugin_version``,
namespace ``parekit``); TensorRT's ONNX parser uses a creator for a parekit node when the library is
loaded (``IPluginRegistry::loadLibrary``, ``trtexec --dynamicPlugins``) - see docs/tensorrt.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from parekit.native.paths import NativeError

__all__ = ["probe_library"]


def probe_library(path: Path, *, timeout: float = 120.0) -> dict[str, Any]:
    """Loads the library into the TensorRT lean runtime's plugin registry in a subprocess and checks
    every op's creator against its OpDef (:mod:`parekit.native.trt_probe`).

    Returns: ``{"library", "tensorrt_lean", "creators", "namespaces", "ops": [{"op", "problems",
    "created", "refused"}, ...]}``.

    Raises:
        NativeError: ``tensorrt_lean`` is missing, the subprocess failed (e.g. the library crashed it)
            or did not answer with a report.
    """
    command = [sys.executable, "-m", "parekit.native.trt_probe", str(Path(path).resolve())]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NativeError(f"checking {path} in the TensorRT lean registry timed out after {timeout:.0f} s") from exc
    if "No module named 'tensorrt_lean'" in done.stderr:
        raise NativeError("checking the plugin library needs tensorrt_lean",
                          note="pip install tensorrt-lean-cu13==11.4.0.106 (no GPU needed)")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise NativeError(f"checking {path} in the TensorRT lean registry failed: {last[:300]}")
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise NativeError(f"checking {path}: the probe printed no report") from exc
    if "error" in report:
        raise NativeError(f"{path}: {report['error']}")
    return dict(report)
