"""The verifier run after each pass (``--verify-each``): the ONNX checker, then an ONNX Runtime session."""

from __future__ import annotations

from typing import TYPE_CHECKING

from parekit.backends.ort_native import register_native
from parekit.backends.ort_options import Optimization, session_options
from parekit.backends.ort_source import model_name, serialized
from parekit.errors import VerificationError, one_line

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

__all__ = ["check_loads"]


def check_loads(model: ir.Model, *, optimization: Optimization = "basic", native: bool | None = False) -> None:
    """Verify a model: the full ONNX checker, then an ONNX Runtime (CPU) session.

    Models whose weights exceed :data:`PROTO_LIMIT_BYTES`, or that read external data, are
    checked by path from a temporary copy (:mod:`parekit.backends.ort_source`).

    Args:
        model: The model to verify.
        optimization: ORT optimization level used for the test session (``"basic"`` also runs
            constant folding, which catches more type errors than ``"disabled"``).
        native: Register parekit's native library in the test session (``None``: when built). Default
            ``False``: the portable form every optimized model must load in, the ops' function bodies
            (ORT type-checks each inlined body); with the library, nodes with a kernel are checked
            against the kernel's dtype bindings instead.

    Raises:
        VerificationError: The checker or ORT rejects the model; the message is one line.
        NativeError: ``native=True`` without a built library, or ORT cannot load it.
    """
    import onnx
    import onnxruntime as ort

    options = session_options(optimization, None)
    register_native(options, native)
    with serialized(model, options) as (source, proto):
        try:
            onnx.checker.check_model(_checkable(proto) if proto is not None else source, full_check=True)
        except Exception as exc:
            raise VerificationError(
                f"model '{model_name(model)}' fails the ONNX checker: {one_line(exc)}"
            ) from exc
        try:
            ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise VerificationError(
                f"model '{model_name(model)}' does not load in ONNX Runtime: {one_line(exc)}"
            ) from exc


def _checkable(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` that the checker can take from memory.

    The checker resolves external data relative to a model *path*, which an in-memory proto does
    not have; external initializers are turned into graph inputs of the same type and shape for
    the check (their files were checked at load time and ORT reads them right after).
    """
    import onnx

    graph = proto.graph
    external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    names = {t.name for t in external}
    kept = [t for t in copy.graph.initializer if t.name not in names]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    input_names = {i.name for i in copy.graph.input}
    for tensor in external:
        if tensor.name not in input_names:
            copy.graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
    return copy
