"""Checks a built ``libparekit_trt_plugins.so`` in the TensorRT lean runtime's plugin registry.

Run in a subprocess (``python -m parekit.backends.trt_probe LIB``; a plugin library that misbehaves takes
only that process down); prints one JSON report on stdout. Needs ``tensorrt_lean``
(``pip install tensorrt-lean-cu13``) and no GPU: only the registry and plugin creation are used (a lean
``Runtime`` is never created). Use :func:`parekit.backends.trt_plugins.probe_library` rather than this module.

For every op of ``parekit.ops.all_ops()``: the creator is found by (name, version, namespace); its field
names and types equal ``OpDef.plugin.fields``; a plugin is created with the defaults, with every
attribute at its minimum and at its maximum (where the OpDef declares them), and its core interface
answers the same identity (clone, shapes, dtypes and enqueue: the C++ harness, plugins_trt/tests); refusals: a value below the minimum, an unknown field, a field of the wrong type.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

_TYPES = {"kINT32": "INT32", "kFLOAT32": "FLOAT32", "kCHAR": "CHAR"}


def _field(trt: Any, name: str, ftype: str, value: Any) -> Any:
    kind = getattr(trt.PluginFieldType, ftype)
    if ftype == "CHAR":
        data = np.frombuffer(str(value).encode("ascii"), dtype=np.int8).copy()
    elif ftype == "INT32":
        data = np.array([int(value)], dtype=np.int32)
    else:
        data = np.array([float(value)], dtype=np.float32)
    return trt.PluginField(name, data, kind)


def _create(trt: Any, creator: Any, fields: list[Any]) -> Any:
    return creator.create_plugin("probe", trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD)


def _check_op(trt: Any, registry: Any, op: Any) -> dict[str, Any]:
    ident = op.plugin
    entry: dict[str, Any] = {"op": op.op_type, "problems": [], "created": 0, "refused": 0}
    problems: list[str] = entry["problems"]
    creator = registry.get_creator(ident.name, ident.version, ident.namespace)
    if creator is None:
        problems.append(f"no creator for ({ident.name}, {ident.version}, {ident.namespace})")
        return entry
    if (creator.name, creator.plugin_version, creator.plugin_namespace) != (ident.name, ident.version, ident.namespace):
        problems.append("creator identity differs")
    got = [(f.name, str(f.type).rsplit(".", 1)[-1]) for f in creator.field_names]
    want = [(f.name, _TYPES[f.type]) for f in ident.fields]
    if got != want:
        problems.append(f"fields {got} != OpDef {want}")
    configs: list[dict[str, Any]] = [{}]
    for spec in op.attributes:
        for bound in (spec.minimum, spec.maximum):
            if bound is not None:
                configs.append({spec.name: bound})
    types = dict(want)
    for config in configs:
        fields = [_field(trt, name, types[name], value) for name, value in config.items()]
        plugin = _create(trt, creator, fields)
        if plugin is None:
            problems.append(f"create_plugin refused {config}")
            continue
        core = plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
        if (core.plugin_name, core.plugin_version, core.plugin_namespace) != (ident.name, ident.version, ident.namespace):
            problems.append("plugin identity differs")
        entry["created"] += 1
    refusals: list[tuple[str, list[Any]]] = [("unknown field", [_field(trt, "no_such_field", "INT32", 1)])]
    for spec in op.attributes:
        if spec.minimum is not None and spec.kind == "int":
            refusals.append((f"{spec.name} below minimum", [_field(trt, spec.name, "INT32", int(spec.minimum) - 1)]))
        if spec.kind == "int":
            refusals.append((f"{spec.name} as FLOAT32", [_field(trt, spec.name, "FLOAT32", 1.0)]))
        if spec.kind == "float":
            refusals.append((f"{spec.name} = nan", [_field(trt, spec.name, "FLOAT32", float("nan"))]))
    for what, fields in refusals:
        if _create(trt, creator, fields) is not None:
            problems.append(f"create_plugin accepted {what}")
        else:
            entry["refused"] += 1
    return entry


def probe(path: str) -> dict[str, Any]:
    import tensorrt_lean as trt

    from parekit.ops import PLUGIN_NAMESPACE, all_ops

    trt.Logger(trt.Logger.ERROR)
    registry = trt.get_plugin_registry()
    report: dict[str, Any] = {"library": path, "tensorrt_lean": trt.__version__, "ops": []}
    if registry.load_library(path) is None:
        report["error"] = "load_library failed"
        return report
    namespaces = sorted({c.plugin_namespace for c in registry.all_creators})
    report["creators"] = sum(1 for c in registry.all_creators if c.plugin_namespace == PLUGIN_NAMESPACE)
    report["namespaces"] = namespaces
    report["ops"] = [_check_op(trt, registry, op) for op in sorted(all_ops(), key=lambda o: o.op_type)]
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m parekit.backends.trt_probe LIBRARY", file=sys.stderr)
        return 2
    print(json.dumps(probe(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
