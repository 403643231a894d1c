"""parekit.backends.trt_plugins.plugin_nodes: which inserted nodes TensorRT's parser makes plugins."""

from __future__ import annotations

from parekit.backends.trt_plugins import plugin_nodes
from parekit.ops.kv_window import KV_WINDOW
from parekit.ops.kv_window_mask import KV_WINDOW_MASK

from .harness import optimize


def test_plugin_nodes_after_kv_window(load_sample):
    model = load_sample("llama-tiny", 23)
    optimize(model, "kv-window{sink=2,window=6}")
    both = {KV_WINDOW.op_type, KV_WINDOW_MASK.op_type}
    nodes = plugin_nodes(model, both)
    assert len(nodes) == 5 and all(n["becomes"] == "plugin" for n in nodes)
    assert {n["plugin_namespace"] for n in nodes} == {"parekit"} and {n["plugin_version"] for n in nodes} == {"1"}
    only_window = plugin_nodes(model, {KV_WINDOW.op_type})
    bodies = [n for n in only_window if n["becomes"] == "function body"]
    assert [n["op_type"] for n in bodies] == [KV_WINDOW_MASK.op_type] and "no creator" in bodies[0]["reason"]
    old = plugin_nodes(model, both, tensorrt_version=(10, 14))
    assert all(n["becomes"] == "function body" and "10.15" in n["reason"] for n in old)
    assert all(n["becomes"] == "plugin" for n in plugin_nodes(model, both, (11, 4)))
