"""The ``parekit`` command line: the group, its global options and :func:`main`.

Each command family lives in its own module (:mod:`~parekit.cli.samples`, :mod:`~parekit.cli.inspect_cmd`,
:mod:`~parekit.cli.passes_cmd`, :mod:`~parekit.cli.optimize`, :mod:`~parekit.cli.check`,
:mod:`~parekit.cli.bench`, :mod:`~parekit.cli.decode`, :mod:`~parekit.cli.native_cmd`, :mod:`~parekit.cli.split_cmd`); what they share is in :mod:`~parekit.cli.common`.
Heavy packages (onnxruntime, torch) are imported inside the commands, so ``parekit --help`` works
without them. Every :class:`~parekit.errors.ParekitError` becomes ``error: <one line>`` (plus a
``Note:`` line) on stderr and exit status 2; nothing is written to an output path on failure.
"""

from __future__ import annotations

import click

from parekit import __version__
from parekit.cli.bench import bench
from parekit.cli.bench_decode import bench_decode_cmd  # early exit part 2: speculative decoding
from parekit.cli.build_cmd import build_cmd  # lowering (issue 14): TensorRT / TensorRT-RTX plans
from parekit.cli.check import check
from parekit.cli.common import Group, setup_logging
from parekit.cli.decode import eval_cmd, generate_cmd
from parekit.cli.export_cmd import export_cmd  # serving (issue 15): Triton model repositories
from parekit.cli.inspect_cmd import inspect
from parekit.cli.native_cmd import native_cmd
from parekit.cli.optimize import optimize
from parekit.cli.passes_cmd import passes_cmd
from parekit.cli.samples import samples
from parekit.cli.split_cmd import split  # early exit (issue 11): segments

# early exit (issue 11): trained exit adapters
from parekit.cli.train_cmd import train_exit_cmd

__all__ = ["cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="parekit")
@click.option("-v", "--verbose", count=True, help="more logging (-v info and third-party logs, -vv debug)")
def cli(verbose: int) -> None:
    """parekit: rewrite transformer ONNX graphs (drop layers; prune or merge tokens; bound, evict or
    quantize the KV cache), check output parity, and measure the speed-up.

    \b
    Typical flow:
      parekit samples export minilm -o minilm.onnx
      parekit inspect minilm.onnx
      parekit optimize minilm.onnx --passes "drop-layers{layers=[4,5]}" -o minilm.d.onnx
      parekit check minilm.onnx minilm.d.onnx --data text
      parekit bench minilm.onnx minilm.d.onnx
      parekit native build                 (C++ kernels for the parekit ops; --native/--no-native)
      parekit build minilm.d.onnx -o minilm.plan --backend tensorrt-rtx   (a TensorRT engine plan)
      parekit export triton minilm.d.onnx -o repo   (a Triton Inference Server model repository)
    """
    setup_logging(verbose)


for command in (samples, inspect, passes_cmd, optimize, check, bench, generate_cmd, eval_cmd, native_cmd):
    cli.add_command(command)
cli.add_command(split)  # early exit (issue 11)
cli.add_command(bench_decode_cmd)  # early exit part 2 (issue 12)
cli.add_command(build_cmd)  # lowering (issue 14)
cli.add_command(export_cmd)  # serving (issue 15)

# early exit (issue 11): trained exit adapters
cli.add_command(train_exit_cmd)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="parekit")


if __name__ == "__main__":  # pragma: no cover
    main()
