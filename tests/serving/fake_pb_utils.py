"""A stand-in for ``triton_python_backend_utils``: just what parekit's ``model.py`` files use.

It lets the tests drive a model.py's ``initialize`` / ``execute`` in-process, the way the Python backend
does (requests in, one response per request out), without a server. The served tests (test_served.py)
run the same files inside a real ``tritonserver``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    def __init__(self, message: str) -> None:
        self._message = message

    def message(self) -> str:
        return self._message


class TritonModelException(Exception):
    pass


class InferenceRequest:
    def __init__(self, **inputs: np.ndarray) -> None:
        self.inputs = {k: Tensor(k, v) for k, v in inputs.items()}


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
        self._outputs = {t.name(): t for t in output_tensors}
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def output(self, name: str) -> np.ndarray:
        return self._outputs[name].as_numpy()


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return request.inputs.get(name)


def install() -> ModuleType:
    """Put this module in ``sys.modules`` as ``triton_python_backend_utils``."""
    module = sys.modules[__name__]
    sys.modules["triton_python_backend_utils"] = module
    return module


def load_model_py(path: Path, folder: Path, config_text: str) -> object:
    """Import ``path`` (a model.py) and initialize its ``TritonPythonModel`` for the model ``folder``.

    The config handed over is ``config.pbtxt`` turned into the JSON Triton gives ``initialize``.
    """
    from google.protobuf import json_format

    from parekit.serving.model_config import parse_config

    install()
    spec = importlib.util.spec_from_file_location(f"model_py_{abs(hash(str(path)))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json_format.MessageToDict(parse_config(config_text, str(path)), preserving_proto_field_name=True)
    instance = module.TritonPythonModel()
    instance.initialize({"model_config": json.dumps(config), "model_repository": str(folder), "model_version": "1"})
    return instance
