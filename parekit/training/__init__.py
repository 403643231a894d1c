"""Trained exit adapters: dump the frozen model's states and outputs, train a small adapter in torch.

    MODEL ─► dump (ORT, calibration.collect) ─► ExitDump ─► train_exit (torch, through the own head) ─► Adapter

torch comes from the ``samples`` extra; importing this package without it raises a
:class:`~parekit.errors.MissingExtraError` naming the extra. The adapter format, its NumPy reference
and its ONNX builder are :mod:`parekit.passes.exit_adapter`'s.
"""

from parekit.training.adapters import make_adapter, to_adapter
from parekit.training.dump import (
    ExitDump,
    dump_decoder,
    dump_encoder,
    second_half_paragraphs,
    training_blocks,
)
from parekit.training.head import HeadProgram, build_head, head_outputs
from parekit.training.train import TrainOptions, TrainResult, check_head, train_exit

__all__ = [
    "ExitDump",
    "HeadProgram",
    "TrainOptions",
    "TrainResult",
    "build_head",
    "check_head",
    "dump_decoder",
    "dump_encoder",
    "head_outputs",
    "make_adapter",
    "second_half_paragraphs",
    "to_adapter",
    "train_exit",
    "training_blocks",
]
