"""Passes: graph rewrites with declared options, run as MLIR-style pipelines.

``run_pipeline(model, "drop-layers{layers=[4,5]}")`` parses the pipeline, runs every pass with a
verifier after each, and returns the rewritten model with one report per pass.
"""

from parekit.passes.base import Pass, PassContext, PassReport
from parekit.passes.manager import PipelineResult, run_pipeline
from parekit.passes.pipeline import parse_pipeline
from parekit.passes.registry import get_pass, list_passes, register

__all__ = [
    "Pass",
    "PassContext",
    "PassReport",
    "PipelineResult",
    "get_pass",
    "list_passes",
    "parse_pipeline",
    "register",
    "run_pipeline",
]
