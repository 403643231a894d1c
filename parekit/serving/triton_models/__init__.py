"""The ``model.py`` files ``parekit export triton --backend python`` copies into a model repository.

They run inside Triton's Python backend, not inside parekit: each imports only NumPy, ONNX Runtime and
``triton_python_backend_utils`` (which the backend provides), so the server needs no parekit install.
Tests import them with a stand-in ``triton_python_backend_utils`` (``tests/serving/fake_pb_utils.py``).
"""
