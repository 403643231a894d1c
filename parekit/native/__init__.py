"""parekit's native libraries: where they are, whether they are built, and building them.

``libparekit_ort.so`` (sources in the repository's ``native/`` folder, built with CMake) holds one C++
kernel per parekit op and registers them with ONNX Runtime as custom ops of the ``parekit`` domain. A
session that registers it runs the kernels; one that does not runs the ops' function bodies. The same
``.onnx`` file serves both.

* :func:`library_path` / :func:`require_library` / :func:`resolve_library`: find the library
  (``$PAREKIT_ORT_LIBRARY``, else the build folder);
* :func:`build`: configure and build with CMake, :func:`run_tests`: its ctest suite
  (:mod:`parekit.native.build`);
* :func:`status`: what is built and which toolchains and runtimes are present
  (:mod:`parekit.native.status`).
"""

from __future__ import annotations

from parekit.native.build import build, build_dir, run_tests, sanitizer_build_dir, source_dir
from parekit.native.paths import (
    BUILD_HINT,
    LIBRARY_FILES,
    TRT_BUILD_HINT,
    NativeError,
    describe_library,
    is_sanitized,
    library_path,
    require_library,
    resolve_library,
)
from parekit.native.status import status

__all__ = [
    "BUILD_HINT",
    "LIBRARY_FILES",
    "NativeError",
    "TRT_BUILD_HINT",
    "build",
    "build_dir",
    "describe_library",
    "is_sanitized",
    "library_path",
    "require_library",
    "resolve_library",
    "run_tests",
    "sanitizer_build_dir",
    "source_dir",
    "status",
]
