"""Offline validation of a Triton model repository: configs through Triton's schema, I/O against the graph.

``parse_config`` (Triton's own protobuf schema) catches unknown fields and bad enum names; it knows
nothing of the model, so every input, output, state and control the config names is checked here
against the ONNX graph: the name exists, the data type is the graph's, the dims are the graph's with the
batch dim folded into ``max_batch_size`` (``-1`` standing for a dynamic axis; a fixed axis must match).
These checks are written from the graph's side, independently of the code that builds the configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from parekit.backends.specs import TensorSpec
from parekit.errors import ParekitError
from parekit.serving.config_build import BACKENDS, DECODER_IO
from parekit.serving.model_config import data_type_name, parse_config, triton_dtype
from parekit.serving.signature import Signature, logits_output, read_signature

if TYPE_CHECKING:
    import onnx_ir as ir

__all__ = ["validate_model_dir", "validate_repository"]

_FILES = {"onnxruntime": ("model.onnx",), "tensorrt": ("model.plan",), "python": ("model.py", "model.onnx")}


def validate_repository(repo: str | Path) -> list[dict[str, Any]]:
    """Validate every model folder of a repository (a folder holding ``config.pbtxt``).

    Returns:
        One summary per model (see :func:`validate_model_dir`).

    Raises:
        ParekitError: The repository is missing or holds no model, or a model fails a check.
    """
    root = Path(repo)
    if not root.is_dir():
        raise ParekitError(f"{root}: not a folder")
    models = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = [validate_model_dir(p) for p in models if (p / "config.pbtxt").is_file()]
    if not found:
        raise ParekitError(f"{root}: no model folder with a config.pbtxt")
    return found


def validate_model_dir(folder: str | Path, model: ir.Model | None = None, name: str | None = None) -> dict[str, Any]:
    """Validate one model folder.

    Args:
        folder: The model's folder (``config.pbtxt``, ``1/``).
        model: The ONNX model to check the I/O against (default: ``1/model.onnx`` of the folder; a
            tensorrt model's folder has none, so without ``model`` its I/O is not cross-checked).
        name: The model name the config must carry (default: the folder's name).

    Returns:
        ``{"name", "backend", "kind", "checked": [...], "unchecked": [...]}``.

    Raises:
        ParekitError: The first failed check, in one line naming the file and the entry.
    """
    folder = Path(folder)
    where = folder / "config.pbtxt"
    if not where.is_file():
        raise ParekitError(f"{folder}: no config.pbtxt")
    cfg = parse_config(where.read_text(encoding="utf-8"), str(where))
    expected = name or folder.name
    if cfg.name != expected:
        raise ParekitError(f"{where}: name {cfg.name!r} is not the model folder's name {expected!r}")
    backend = cfg.backend or {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}.get(cfg.platform, "")
    if backend not in BACKENDS:
        raise ParekitError(f"{where}: backend {backend!r} is not one parekit exports ({', '.join(BACKENDS)})")
    version = folder / "1"
    for file in _FILES[backend]:
        if not (version / file).is_file() or (version / file).stat().st_size == 0:
            raise ParekitError(f"{version}: {file} is missing or empty (backend {backend})")
    checked: list[str] = ["schema", "files"]
    unchecked: list[str] = []
    if model is None and (version / "model.onnx").is_file():
        import onnx_ir as ir

        model = ir.load(version / "model.onnx")
    if model is None:
        unchecked.append("I/O against the graph (the repository holds no ONNX model; pass it at export)")
        return {"name": cfg.name, "backend": backend, "kind": "unknown", "checked": checked, "unchecked": unchecked}
    sig = read_signature(model, str(version / "model.onnx"))
    if backend == "python":
        unchecked += _model_py(version / "model.py", sig.kind)
    check = _Checker(str(where), cfg.max_batch_size)
    scheduling = cfg.WhichOneof("scheduling_choice")
    if sig.kind == "encoder":
        if scheduling == "sequence_batching":
            raise ParekitError(f"{where}: a stateless model with a sequence batcher")
        check.io(cfg.input, sig.inputs, "input")
        check.io(cfg.output, sig.outputs, "output")
    elif backend == "python":
        _python_decoder(check, cfg, sig, scheduling)
    else:
        _implicit_state(check, cfg, sig, scheduling)
    checked.append("I/O against the graph")
    return {"name": cfg.name, "backend": backend, "kind": sig.kind, "checked": checked, "unchecked": unchecked}


def _model_py(path: Path, kind: str) -> list[str]:
    """Whether ``model.py`` is parekit's own for this kind of model (another one is the user's business)."""
    from importlib import resources

    template = resources.files("parekit.serving.triton_models").joinpath(f"{kind}.py").read_text(encoding="utf-8")
    if path.read_text(encoding="utf-8", errors="replace") == template:
        return []
    other = "decoder" if kind == "encoder" else "encoder"
    ours = resources.files("parekit.serving.triton_models").joinpath(f"{other}.py").read_text(encoding="utf-8")
    if path.read_text(encoding="utf-8", errors="replace") == ours:
        raise ParekitError(f"{path}: parekit's {other} model.py serves a{'n' if kind == 'encoder' else ''} {kind}")
    return [f"{path.name}: not parekit's {kind} model.py (its behaviour is not checked)"]


class _Checker:
    def __init__(self, where: str, max_batch: int) -> None:
        self.where = where
        self.fold = max_batch > 0

    def fail(self, text: str) -> ParekitError:
        return ParekitError(f"{self.where}: {text}")

    def dims(self, what: str, dims: list[int], spec: TensorSpec, fold: bool | None = None) -> None:
        shape = list(spec.shape or ())
        if self.fold if fold is None else fold:
            if not shape or isinstance(shape[0], int):
                raise self.fail(f"{what}: max_batch_size > 0 but the graph's '{spec.name}' has no dynamic batch axis 0")
            shape = shape[1:]
        if len(dims) != len(shape):
            raise self.fail(f"{what}: dims {dims} have rank {len(dims)}, the graph's '{spec.name}' {len(shape)}")
        for axis, (got, want) in enumerate(zip(dims, shape, strict=True)):
            if isinstance(want, int) and got != want:
                raise self.fail(f"{what}: dim {axis} is {got}, the graph's '{spec.name}' has {want}")
            if not isinstance(want, int) and got != -1:
                raise self.fail(f"{what}: dim {axis} is {got}, but the graph's '{spec.name}' is dynamic there (-1)")

    def dtype(self, what: str, value: int, spec: TensorSpec) -> None:
        got, want = data_type_name(value), triton_dtype(spec.dtype, spec.name)
        if got != want:
            raise self.fail(f"{what}: data_type {got}, the graph's '{spec.name}' is {want}")

    def io(self, entries: Any, specs: tuple[TensorSpec, ...], kind: str) -> None:
        by_name = {s.name: s for s in specs}
        names = [e.name for e in entries]
        for entry in entries:
            spec = by_name.get(entry.name)
            if spec is None:
                raise self.fail(f"{kind} '{entry.name}' is not a graph {kind} ({', '.join(by_name)})")
            self.dtype(f"{kind} '{entry.name}'", entry.data_type, spec)
            self.dims(f"{kind} '{entry.name}'", list(entry.dims), spec)
        if kind == "input":
            missing = [n for n in by_name if n not in names]
            if missing:
                raise self.fail(f"graph input(s) {', '.join(missing)} are not in the config")
        if len(set(names)) != len(names):
            raise self.fail(f"a {kind} is listed twice")


def _controls(check: _Checker, seq: Any) -> dict[str, str]:
    found = {}
    for entry in seq.control_input:
        for control in entry.control:
            kind = type(seq).Control.Kind.Name(control.kind)
            if kind != "CONTROL_SEQUENCE_CORRID" and list(control.bool_false_true) != [False, True]:
                raise check.fail(f"control '{entry.name}': {kind} must send bool_false_true [false, true]")
            found[kind] = entry.name
    return found


def _python_decoder(check: _Checker, cfg: Any, sig: Signature, scheduling: str | None) -> None:
    if scheduling != "sequence_batching":
        raise check.fail("a decoder served by model.py needs sequence_batching (its state is per sequence)")
    if cfg.max_batch_size != 1:
        raise check.fail("a decoder's max_batch_size must be 1 (states of different lengths cannot share a batch)")
    controls = _controls(check, cfg.sequence_batching)
    want = {"CONTROL_SEQUENCE_START": DECODER_IO["start"], "CONTROL_SEQUENCE_END": DECODER_IO["end"],
            "CONTROL_SEQUENCE_CORRID": DECODER_IO["corrid"]}
    if controls != want:
        raise check.fail(f"controls {controls} are not the START/END/CORRID model.py reads")
    if [e.name for e in cfg.input] != [DECODER_IO["input"]] or list(cfg.input[0].dims) != [-1]:
        raise check.fail("model.py takes one input, input_ids with dims [-1]")
    check.dtype("input 'input_ids'", cfg.input[0].data_type, next(s for s in sig.inputs if s.name == "input_ids"))
    outs = {e.name: e for e in cfg.output}
    if set(outs) != {DECODER_IO["next_token"], DECODER_IO["logits"]}:
        raise check.fail(f"outputs {sorted(outs)} are not model.py's next_token and logits")
    logits = logits_output(sig)
    vocab = logits.shape[-1] if logits.shape and isinstance(logits.shape[-1], int) else -1
    if list(outs["logits"].dims) != [vocab]:
        raise check.fail(f"output 'logits': dims {list(outs['logits'].dims)}, the graph's vocabulary is [{vocab}]")


def _implicit_state(check: _Checker, cfg: Any, sig: Signature, scheduling: str | None) -> None:
    if scheduling != "sequence_batching":
        raise check.fail("a decoder on the onnxruntime/tensorrt backend needs sequence_batching with implicit state")
    if cfg.max_batch_size != 1:
        raise check.fail("a decoder's max_batch_size must be 1 (states of different lengths cannot share a batch)")
    if sig.start is None:
        raise check.fail("the graph has no 'start' input: Triton's START could not empty its past (run state-reset)")
    seq = cfg.sequence_batching
    controls = _controls(check, seq)
    if controls.get("CONTROL_SEQUENCE_START") != sig.start.name:
        raise check.fail(f"the START control must feed the graph input '{sig.start.name}'")
    check.dims(f"control '{sig.start.name}'", [1], sig.start)
    pairs = {p.name: (p, q) for p, q in sig.states}
    seen = set()
    for state in seq.state:
        if state.input_name not in pairs:
            raise check.fail(f"state input '{state.input_name}' is not a past* input of the graph")
        past, present = pairs[state.input_name]
        if state.output_name != present.name:
            raise check.fail(f"state '{past.name}' must be fed from '{present.name}', not '{state.output_name}'")
        check.dtype(f"state '{past.name}'", state.data_type, past)
        check.dims(f"state '{past.name}'", list(state.dims), past)
        for init in state.initial_state:
            fixed = [d for d in state.dims]
            if len(init.dims) != len(fixed) or any(f >= 0 and i != f for i, f in zip(init.dims, fixed, strict=True)):
                raise check.fail(f"state '{past.name}': initial_state dims {list(init.dims)} do not fit {fixed}")
        seen.add(past.name)
    if seen != set(pairs):
        raise check.fail(f"past input(s) {', '.join(sorted(set(pairs) - seen))} have no state entry")
    check.io(cfg.input, sig.inputs, "input")
    check.io(cfg.output, sig.outputs, "output")
