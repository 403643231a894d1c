"""``parekit native [build]``: the native kernel library (``libparekit_ort.so``): status, path, build.

    parekit native                 what is built and where, its ops, ORT/TensorRT/toolchain versions (--json)
    parekit native --path ort      the library's path (exit 1 when it is not built); --path trt: the plugins
    parekit native build           CMake configure + build (-v streams the tools' output)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from parekit.cli.common import console, echo_json, plain, safe, styled, verbosity
from parekit.errors import ParekitError

__all__ = ["native_cmd"]

_KINDS = ("ort", "trt")  # parekit.native.LIBRARY_FILES (not imported at CLI start-up)


@click.group("native", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON on stdout")
@click.option("--path", "path_kind", type=click.Choice(_KINDS), default=None,
              help="print the path of that library and exit (status 1 when it is not built)")
@click.pass_context
def native_cmd(ctx: click.Context, as_json: bool, path_kind: str | None) -> None:
    """parekit's native kernels (libparekit_ort.so, sources in native/): status, path, build.

    A session that registers the library runs the C++ kernel of every parekit op it holds; without it
    the ops run as their ONNX function bodies. The same .onnx file runs either way (check, bench,
    generate and eval take --native/--no-native).
    """
    if ctx.invoked_subcommand is not None:
        if as_json or path_kind:
            raise ParekitError(f"--json and --path go with `parekit native` alone, not with `{ctx.invoked_subcommand}`")
        return
    from parekit.native import BUILD_HINT, LIBRARY_FILES, TRT_BUILD_HINT, library_path

    if path_kind is not None:
        path = library_path(path_kind)
        if path is None:
            hint = TRT_BUILD_HINT if path_kind == "trt" else BUILD_HINT
            console(stderr=True).print(plain(f"{LIBRARY_FILES[path_kind]} is not built; {hint}"))
            sys.exit(1)
        click.echo(safe(str(path)))
        return
    report = _status()
    if as_json:
        echo_json(report)
        return
    _print_status(report)


def _status() -> dict[str, Any]:
    """parekit.native.status() plus what needs the other rooms: the ops without a kernel, whether ORT loads it."""
    from parekit.backends.ort_native import library_loads
    from parekit.native import status
    from parekit.ops import all_ops

    report = status()
    op_types = sorted(op.op_type for op in all_ops())
    for kind, entry in report["libraries"].items():
        if kind == "ort" and entry["built"] and "error" not in entry:
            entry["ops_without_kernel"] = [op for op in op_types if op not in entry["ops"]]
            entry["loads"] = library_loads(Path(entry["path"])) or True
        elif kind == "trt" and entry["built"]:
            entry.update(_plugins(Path(entry["path"])))
            if "ops" in entry and "note" not in entry:
                entry["ops_without_plugin"] = [op for op in op_types if op not in entry["ops"]]
    return report


def _plugins(path: Path) -> dict[str, Any]:
    """The plugin library's ops as the TensorRT lean registry sees them (where ``tensorrt_lean`` is
    installed): ``ops`` (creators that passed every check) and ``plugin_problems``."""
    import importlib.util

    from parekit.backends.trt_plugins import probe_library
    from parekit.native import NativeError

    if importlib.util.find_spec("tensorrt_lean") is None:
        return {"note": "install tensorrt-lean-cu13 to list and check its creators"}
    try:
        report = probe_library(path)
    except NativeError as exc:
        return {"error": exc.message}
    return {
        "ops": sorted(op["op"] for op in report["ops"] if not op["problems"]),
        "plugin_problems": {op["op"]: op["problems"] for op in report["ops"] if op["problems"]},
        "tensorrt_lean": report.get("tensorrt_lean"),
    }


def _print_status(report: dict[str, Any]) -> None:
    out = console()
    for kind, entry in report["libraries"].items():
        name = entry["file"]
        if not entry["built"]:
            if "error" in entry:  # sessions refuse it: --no-native runs the bodies
                out.print(styled("red", f"{name}: error: ", entry["error"]))
            else:
                out.print(styled("yellow", f"{name}: ", f"not built (looked in {report['build_dir']}); parekit ops "
                                 "run as their function bodies"))
            continue
        out.print(styled("bold green", f"{name}: ", entry["path"]))
        if "error" in entry:
            out.print(styled("red", "  error: ", entry["error"]))
            continue
        if kind == "trt":
            _print_plugins(out, entry)
            continue
        out.print(plain(f"  kernels ({len(entry['ops'])}): {', '.join(entry['ops']) or 'none'}; "
                        f"built against ORT C API {entry.get('ort_api_version')}"))
        if entry.get("ops_without_kernel"):
            out.print(plain(f"  function bodies ({len(entry['ops_without_kernel'])}): "
                            f"{', '.join(entry['ops_without_kernel'])}"))
        loads = entry.get("loads")
        if loads is True:
            out.print(plain("  loads in this ONNX Runtime: yes"))
        else:
            out.print(styled("red", "  loads in this ONNX Runtime: no: ", loads))
    headers = report.get("headers")
    if headers:
        out.print(plain(f"ORT headers: {headers['path']} (C API {headers.get('api_version')}, {headers['source']})"))
    runtimes = report["runtimes"]
    out.print(plain("runtimes: " + (", ".join(f"{k} {v}" for k, v in runtimes.items()) or "none")))
    tools = report["tools"]
    out.print(plain("tools: " + ", ".join(
        f"{name} {info['version']}" if info else f"{name} not found" for name, info in tools.items())))
    out.print(plain(f"sources: {report['source'] or 'not available (installed without native/)'}; "
                    f"build folder: {report['build_dir']}"))


def _print_plugins(out: Any, entry: dict[str, Any]) -> None:
    if "note" in entry:
        out.print(plain(f"  {entry['note']}"))
        return
    out.print(plain(f"  plugins ({len(entry['ops'])}, checked in the TensorRT {entry.get('tensorrt_lean')} lean "
                    f"registry): {', '.join(entry['ops']) or 'none'}"))
    if entry.get("ops_without_plugin"):
        out.print(plain(f"  no plugin ({len(entry['ops_without_plugin'])}): {', '.join(entry['ops_without_plugin'])}"))
    for op, problems in entry.get("plugin_problems", {}).items():
        if op in entry.get("ops_without_plugin", []) and len(problems) == 1 and problems[0].startswith("no creator"):
            continue
        out.print(styled("red", f"  {op}: ", "; ".join(problems)))


@native_cmd.command("build")
@click.option("--build-dir", type=click.Path(file_okay=False), default=None,
              help="build folder (default build/native of the checkout; with --sanitize build/native-asan)")
@click.option("--sanitize", default=None, metavar="LIST",
              help="compile with these sanitizers, e.g. address,undefined (for ctest: such a library cannot be "
                   "loaded into Python)")
@click.option("--ort-include", type=click.Path(file_okay=False, exists=True), default=None,
              help="include folder of your ONNX Runtime SDK (default: found, else Debian's headers fetched)")
@click.option("--trt-include", type=click.Path(file_okay=False, exists=True), default=None,
              help="include folder of your TensorRT SDK for the plugin library (default: found, else the "
                   "TensorRT 10.14 headers of kernel-lens); the plugins are built where nvcc exists")
@click.option("--clean", is_flag=True, help="remove the build folder first")
@click.option("--jobs", type=click.IntRange(1, 256), default=None, help="parallel build jobs (default: CMake's)")
@click.option("--test", "run_ctest", is_flag=True, help="run the ctest suite after building")
def build_cmd(build_dir: str | None, sanitize: str | None, ort_include: str | None, trt_include: str | None, clean: bool,
              jobs: int | None, run_ctest: bool) -> None:
    """Configure and build libparekit_ort.so with CMake (incremental after the first time), and where nvcc
    and TensorRT headers are found, the CUDA kernels and libparekit_trt_plugins.so."""
    from parekit import native

    if sanitize is not None and not all(part.strip().isalnum() for part in sanitize.split(",")):
        raise ParekitError(f"--sanitize {sanitize!r}: expected sanitizer names separated by commas",
                           note="e.g. --sanitize address,undefined")
    quiet = verbosity() == 0
    err = console(stderr=True)
    start = time.perf_counter()
    kwargs: dict[str, Any] = dict(
        directory=Path(build_dir) if build_dir else None, sanitize=sanitize,
        ort_include=Path(ort_include) if ort_include else None,
        trt_include=Path(trt_include) if trt_include else None, clean=clean, jobs=jobs, quiet=quiet,
    )
    if quiet:
        with err.status("building libparekit_ort.so (CMake; the first build fetches the ORT headers)"):
            library = native.build(**kwargs)
            if run_ctest:
                native.run_tests(library.parent, quiet=True)
    else:
        library = native.build(**kwargs)
        if run_ctest:
            native.run_tests(library.parent, quiet=False)
    seconds = time.perf_counter() - start
    tested = "; ctest passed" if run_ctest else ""
    if native.is_sanitized(library):
        console().print(plain(f"built {library} with sanitizers {sanitize} in {seconds:.1f} s{tested} "
                              f"(for ctest --test-dir {library.parent}; not loadable into Python)"))
        return
    ops = sorted({op["name"] for op in native.describe_library(library)["ops"]})
    console().print(plain(f"built {library} in {seconds:.1f} s{tested}: {len(ops)} kernels ({', '.join(ops)})"))
