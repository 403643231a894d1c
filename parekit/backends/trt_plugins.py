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

__all__ = ["PLUGIN_OVERRIDE_MIN", "plugin_nodes", "probe_library"]


def probe_library(path: Path, *, timeout: float = 120.0) -> dict[str, Any]:
    """Loads the library into the TensorRT lean runtime's plugin registry in a subprocess and checks
    every op's creator against its OpDef (:mod:`parekit.backends.trt_probe`).

    Returns: ``{"library", "tensorrt_lean", "creators", "namespaces", "ops": [{"op", "problems",
    "created", "refused"}, ...]}``.

    Raises:
        NativeError: ``tensorrt_lean`` is missing, the subprocess failed (e.g. the library crashed it)
            or did not answer with a report.
    """
    command = [sys.executable, "-m", "parekit.backends.trt_probe", str(Path(path).resolve())]
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


PLUGIN_OVERRIDE_MIN: tuple[int, int] = (10, 15)
"""The first TensorRT whose ONNX parser prefers a registered plugin over a same-named model-local
function when the node carries ``plugin_namespace`` (older parsers inline the function)."""


def plugin_nodes(model: Any, plugin_ops: set[str], tensorrt_version: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Which parekit nodes of a model TensorRT's parser turns into plugin layers, and why the others not.

    Args:
        model: An ``onnx_ir.Model``.
        plugin_ops: Op types whose creators the loaded library holds (``probe_library``'s clean ops).
        tensorrt_version: (major, minor) of the TensorRT that parses the model; ``None``: assume one that
            honours ``plugin_namespace`` (>= 10.15).

    Returns: one entry per ``parekit``-domain node (subgraphs included): ``node``, ``op_type``,
    ``plugin_version``, ``plugin_namespace``, ``becomes`` (``"plugin"`` or ``"function body"``) and
    ``reason`` for a function body.
    """
    import onnx_ir as ir

    from parekit.ops import PAREKIT_DOMAIN, PLUGIN_NAMESPACE, PLUGIN_NAMESPACE_ATTR, PLUGIN_VERSION_ATTR

    override = tensorrt_version is None or tuple(tensorrt_version) >= PLUGIN_OVERRIDE_MIN
    out: list[dict[str, Any]] = []
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain != PAREKIT_DOMAIN:
            continue
        attrs = node.attributes
        version = attrs[PLUGIN_VERSION_ATTR].as_string() if PLUGIN_VERSION_ATTR in attrs else None
        namespace = attrs[PLUGIN_NAMESPACE_ATTR].as_string() if PLUGIN_NAMESPACE_ATTR in attrs else None
        entry: dict[str, Any] = {"node": node.name, "op_type": node.op_type, "plugin_version": version,
                                 "plugin_namespace": namespace, "becomes": "plugin", "reason": None}
        if node.op_type not in plugin_ops:
            entry.update(becomes="function body", reason="no creator for this op in the plugin library")
        elif namespace != PLUGIN_NAMESPACE:
            entry.update(becomes="function body", reason="the node carries no plugin_namespace=parekit")
        elif not override:
            entry.update(becomes="function body",
                         reason=f"TensorRT {tensorrt_version[0]}.{tensorrt_version[1]} parsers prefer model-local "
                                "functions (plugins win from 10.15)" if tensorrt_version else None)
        out.append(entry)
    return out
