"""Parses an ONNX file and builds a serialized TensorRT / TensorRT-RTX engine, in a process of its own.

``python -m parekit.engines.trt_builder`` reads one JSON request on stdin and prints one JSON answer as
the last line of stdout. It imports nothing from parekit (only the TensorRT module the request names), so
a parser that aborts (TensorRT-RTX does, on a node that maps to a registered plugin) or a builder that
crashes takes only this process down; :func:`parekit.engines.build.build_engine` is the caller.

Request: ``module`` (``tensorrt`` or ``tensorrt_rtx``), ``onnx`` (path), ``plan`` (path to write),
``profile`` (input name → ``[min, opt, max]`` shapes; inputs not named keep their static shapes),
``plugins`` (a plugin library path or ``null``; never with ``tensorrt_rtx``), ``plugin_override``
(set the parser's ``ENABLE_PLUGIN_OVERRIDE`` flag where it exists), ``decomposable_attention`` (mark
every ``IAttention`` decomposable), ``plugin_namespace`` (the namespace whose creators are listed),
``progress`` (report build phases on stderr as ``@progress {"phase", "step", "steps"}`` lines).

Answer: ``ok``; ``stage`` (where it stopped: ``import``, ``plugins``, ``parse``, ``profile``, ``build``,
``write``); ``version``; ``parse_errors`` (``node``, ``name``, ``op``, ``desc``, ``function_stack``);
``layers`` (count), ``layer_types`` (type → count), ``plugin_layers`` (layer names), ``attention_layers``
(how many ``IAttention`` were marked decomposable), ``creators`` (``[name, version]`` in the namespace),
``plan_bytes``, ``parse_s``, ``build_s``, ``log`` (warnings and errors TensorRT logged), ``error``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

__all__ = ["main"]

_KEPT_LOG = 200  # messages kept per severity class: a model with thousands of warnings stays readable


def _logger(trt: Any, log: list[dict[str, str]]) -> Any:
    class Collect(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.WARNING and len(log) < _KEPT_LOG:
                level = "warning" if severity == trt.ILogger.Severity.WARNING else "error"
                log.append({"level": level, "message": str(msg)})

    return Collect()


def _parse_errors(parser: Any) -> list[dict[str, Any]]:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        entry: dict[str, Any] = {"node": int(err.node()), "desc": str(err.desc())}
        for key, getter in (("name", "node_name"), ("op", "node_operator")):
            try:
                entry[key] = str(getattr(err, getter)())
            except Exception:  # older parsers lack the getter
                entry[key] = ""
        try:
            entry["function_stack"] = [str(f) for f in err.local_function_stack()]
        except Exception:
            entry["function_stack"] = []
        errors.append(entry)
    return errors


def _mark_attention(trt: Any, network: Any) -> int:
    """Marks every IAttention decomposable (TensorRT-RTX 1.7 has no fused float32 kernel for it)."""
    marked = 0
    boundary = {getattr(trt.LayerType, n) for n in ("ATTENTION_INPUT", "ATTENTION_OUTPUT") if hasattr(trt.LayerType, n)}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in boundary:
            layer.__class__ = trt.IAttentionBoundaryLayer
            layer.attention.decomposable = True
            marked += layer.type == trt.LayerType.ATTENTION_INPUT
    return marked


def _monitor(trt: Any) -> Any:
    """Reports TensorRT's build phases on stderr as ``@progress {json}`` lines (the caller shows them)."""

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def _say(self, **fields: Any) -> None:
            sys.stderr.write("@progress " + json.dumps(fields) + "\n")
            sys.stderr.flush()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = int(num_steps)
            self._say(phase=phase_name, parent=parent_phase, step=0, steps=int(num_steps))

        def step_complete(self, phase_name: str, step: int) -> bool:
            self._say(phase=phase_name, step=int(step) + 1, steps=self.steps.get(phase_name, 0))
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            self._say(phase=phase_name, done=True)

    return Monitor()


def _creators(trt: Any, namespace: str) -> list[list[str]]:
    registry = trt.get_plugin_registry()
    found = []
    for creator in getattr(registry, "all_creators", []):
        if getattr(creator, "plugin_namespace", None) == namespace:
            found.append([str(creator.name), str(creator.plugin_version)])
    return sorted(found)


def build(request: dict[str, Any]) -> dict[str, Any]:
    """Does the work of one request; never raises (errors are in the answer)."""
    answer: dict[str, Any] = {"ok": False, "stage": "import", "log": [], "parse_errors": []}
    try:
        trt = __import__(request["module"])
    except ImportError as exc:
        answer["error"] = f"cannot import {request['module']}: {exc}"
        return answer
    answer["version"] = str(getattr(trt, "__version__", "unknown"))
    logger = _logger(trt, answer["log"])
    answer["stage"] = "plugins"
    if request.get("plugins"):
        handle = trt.get_plugin_registry().load_library(request["plugins"])
        if handle is None:
            answer["error"] = "the plugin registry refused the library"
            return answer
        answer["creators"] = _creators(trt, request.get("plugin_namespace", ""))
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if request.get("plugin_override") and hasattr(trt.OnnxParserFlag, "ENABLE_PLUGIN_OVERRIDE"):
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)
    answer["stage"] = "parse"
    start = time.perf_counter()
    parsed = parser.parse_from_file(request["onnx"])
    answer["parse_s"] = time.perf_counter() - start
    if not parsed:
        answer["parse_errors"] = _parse_errors(parser)
        answer["error"] = "the ONNX parser rejected the model"
        return answer
    types: dict[str, int] = {}
    plugin_layers = []
    plugin_types = {getattr(trt.LayerType, n) for n in ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3") if hasattr(trt.LayerType, n)}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = str(layer.type).rsplit(".", 1)[-1]
        types[kind] = types.get(kind, 0) + 1
        if layer.type in plugin_types:
            plugin_layers.append(str(layer.name))
    answer.update(layers=network.num_layers, layer_types=dict(sorted(types.items())), plugin_layers=plugin_layers)
    answer["attention_layers"] = _mark_attention(trt, network) if request.get("decomposable_attention") else 0
    answer["stage"] = "profile"
    config = builder.create_builder_config()
    shapes = request.get("profile") or {}
    if shapes:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if tensor.name in shapes:
                low, opt, high = shapes[tensor.name]
                profile.set_shape(tensor.name, low, opt, high)
        config.add_optimization_profile(profile)
    monitor = None
    if request.get("progress") and hasattr(trt, "IProgressMonitor"):
        monitor = _monitor(trt)
        config.progress_monitor = monitor
    answer["stage"] = "build"
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    answer["build_s"] = time.perf_counter() - start
    if plan is None:
        answer["error"] = "buildSerializedNetwork returned no engine"
        return answer
    answer["stage"] = "write"
    data = memoryview(plan)
    with open(request["plan"], "wb") as handle:
        handle.write(data)
    answer.update(ok=True, plan_bytes=len(data))
    return answer


def main() -> None:
    """Reads the request from stdin, prints the answer as the last stdout line."""
    try:
        request = json.loads(sys.stdin.read())
        answer = build(request)
    except Exception as exc:  # anything else: still one answer the caller can read
        answer = {"ok": False, "stage": "internal", "error": f"{type(exc).__name__}: {exc}", "log": []}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
