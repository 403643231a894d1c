"""``parekit check``: output parity of a candidate model against a reference (or golden outputs)."""

from __future__ import annotations

import sys
from typing import Any

import click

from parekit.cli.common import (
    check_feed_size,
    console,
    data_options,
    echo_json,
    json_options,
    json_text,
    native_line,
    native_option,
    plain,
    provider_option,
    quiet_onnxruntime,
    styled,
)
from parekit.cli.feeds import check_dims, parse_dims
from parekit.cli.load import external_files
from parekit.cli.outputs import Outputs
from parekit.cli.split_cmd import exits_option, open_model
from parekit.errors import ParekitError

__all__ = ["check"]


@click.command()
@click.argument("reference", type=click.Path())
@click.argument("candidate", type=click.Path())
@click.option("--data", default="random", show_default=True, metavar="text|random|FILE.npz", help="feeds to compare on")
@data_options
@click.option("--threshold", "thresholds", multiple=True, metavar="[OUTPUT:]METRIC=VALUE",
              help="bound on a metric, e.g. max_abs=1e-3 or sentence_embedding:cosine=0.98 (repeatable)")
@click.option("--output", "outputs", multiple=True, metavar="NAME", help="compare only this output (repeatable)")
@json_options
@click.option("--save-golden", type=click.Path(dir_okay=False), help="save the reference's outputs as .npz")
@click.option("--save-feeds", type=click.Path(dir_okay=False), help="save the feeds used as .npz (reusable with --data)")
@provider_option
@native_option
@exits_option
def check(
    reference: str,
    candidate: str,
    data: str,
    samples: int,
    batch: int,
    seq: int,
    seed: int,
    dims: tuple[str, ...],
    thresholds: tuple[str, ...],
    outputs: tuple[str, ...],
    as_json: bool,
    json_path: str | None,
    save_golden: str | None,
    save_feeds: str | None,
    providers: tuple[str, ...],
    native: bool | None,
    exits: bool,
) -> None:
    """Compare CANDIDATE's outputs with REFERENCE's on the same feeds; exit 1 if a threshold fails.

    REFERENCE is a model, or golden outputs saved earlier with --save-golden (a .npz; then --data
    must be the feeds file saved with --save-feeds). Either may be a segments directory (parekit split).
    """
    from parekit.cli.feeds import build_feeds
    from parekit.parity import Thresholds, compare_models, compare_to_golden, run_outputs
    from parekit.parity import save_golden as write_golden
    from parekit.parity.data import save_npz

    quiet_onnxruntime()
    golden_mode = reference.endswith(".npz")
    files = Outputs()
    files.add_input("REFERENCE", reference)
    files.add_input("CANDIDATE", candidate)
    if data not in ("text", "random"):
        files.add_input("--data", data)
    files.add_output("--json-file", json_path)
    files.add_output("--save-golden", save_golden)
    files.add_output("--save-feeds", save_feeds)
    files.check()
    if golden_mode and save_golden:
        raise ParekitError("--save-golden needs a reference model, not golden outputs", note="drop --save-golden")
    check_feed_size(batch, seq)
    size_of = parse_dims(dims)
    limits = Thresholds.parse(list(thresholds)) if thresholds else None
    provider_list = list(providers) or None
    opened: dict[str, Any] = {"providers": provider_list, "native": native, "exits": exits}
    cand_model, cand_run = open_model(candidate, **opened)  # fail early, with a clear message, on a bad candidate
    for path in external_files(cand_model):
        files.add_input("CANDIDATE's external data", path)
    if golden_mode:
        if not data.endswith(".npz"):
            raise ParekitError("a golden reference (.npz) needs the feeds it was made from", note="pass --data FEEDS.npz")
        check_dims(cand_model, size_of, data)
        files.check()
        feeds, source = build_feeds(cand_model, data, samples=samples, batch=batch, seq=seq)
        report = compare_to_golden(
            cand_run, feeds, reference, thresholds=limits, providers=provider_list,
            outputs=list(outputs) or None, progress=True, native=native,
        )
        golden = None
    else:
        ref_model, ref_run = open_model(reference, **opened)
        for path in external_files(ref_model):
            files.add_input("REFERENCE's external data", path)
        files.check()
        check_dims(ref_model, size_of, data)
        feeds, source = build_feeds(ref_model, data, samples=samples, batch=batch, seq=seq, seed=seed, dims=size_of)
        report = compare_models(
            ref_run, cand_run, feeds, thresholds=limits, providers=provider_list,
            outputs=list(outputs) or None, progress=True, native=native,
        )
        golden = run_outputs(ref_run, feeds, providers=provider_list, native=native) if save_golden else None
    payload = {"reference": reference, "candidate": candidate, "data": source, **report.to_dict()}
    with files:  # every output is written, or none
        if save_golden and golden is not None:
            files.stage(save_golden, lambda tmp: write_golden(tmp, golden))
        if save_feeds:
            files.stage(save_feeds, lambda tmp: save_npz(tmp, feeds))
        files.stage_text(json_path, json_text(payload))
        files.commit()
    if as_json:
        echo_json(payload)
    else:
        out = console()
        out.print(plain(f"data: {source}"))
        out.print(report.render())
        out.print(plain(native_line([report.native.get("candidate")] if golden_mode else list(report.native.values()))))
        if not report.passed:
            for line in report.failures:
                out.print(styled("red", "FAIL ", line))
        else:
            out.print(styled("green", "parity: all thresholds met"))
    if not report.passed:
        sys.exit(1)
