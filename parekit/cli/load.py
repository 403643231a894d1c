"""Loading the models a command names (lazy: the loader imports onnx-ir)."""

from __future__ import annotations

from typing import Any

__all__ = ["external_files", "load"]


def load(path: str) -> Any:
    """Load the model file ``path`` (a :class:`~parekit.errors.ModelLoadError` names it when it cannot)."""
    from parekit.frontends.onnx_file import load_model

    return load_model(path)


def external_files(model: Any) -> list[str]:
    """The external-data files a loaded model's initializers read (inputs too: outputs must not replace them)."""
    import onnx_ir as ir

    files: list[str] = []
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                path = str(tensor.path)
                if path not in files:
                    files.append(path)
    return files
