"""``parekit bench``: time models side by side."""

from __future__ import annotations

import click

from parekit.cli.common import (
    MAX_ITERS,
    check_feed_size,
    console,
    data_options,
    deliver_json,
    json_options,
    native_line,
    native_option,
    plain,
    provider_option,
    quiet_onnxruntime,
    threads_option,
)
from parekit.cli.feeds import check_dims, parse_dims
from parekit.cli.load import external_files
from parekit.cli.outputs import Outputs
from parekit.cli.split_cmd import exits_option, open_model

__all__ = ["bench"]


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--data", default="random", show_default=True, metavar="text|random|FILE.npz", help="feeds to time on")
@data_options
@click.option("--warmup", type=click.IntRange(0, MAX_ITERS), default=3, show_default=True)
@click.option("--iters", type=click.IntRange(1, MAX_ITERS), default=20, show_default=True)
@threads_option
@click.option("--memory/--no-memory", default=True, show_default=True, help="measure peak memory in child processes")
@json_options
@provider_option
@native_option
@exits_option
def bench(
    models: tuple[str, ...],
    data: str,
    samples: int,
    batch: int,
    seq: int,
    seed: int,
    dims: tuple[str, ...],
    warmup: int,
    iters: int,
    threads: int | None,
    memory: bool,
    as_json: bool,
    json_path: str | None,
    providers: tuple[str, ...],
    native: bool | None,
    exits: bool,
) -> None:
    """Time MODELS side by side (interleaved, after warm-up); ratios are against the first one.

    A MODEL may be a segments directory (parekit split): it runs segment by segment, rows stopping at
    their exit unless --no-exits."""
    from parekit.bench import bench_models
    from parekit.cli.feeds import build_feeds

    quiet_onnxruntime()
    files = Outputs()
    for i, m in enumerate(models):
        files.add_input(f"MODEL #{i + 1}", m)
    if data not in ("text", "random"):
        files.add_input("--data", data)
    files.add_output("--json-file", json_path)
    files.check()
    check_feed_size(batch, seq)
    size_of = parse_dims(dims)
    opened = [open_model(m, providers=list(providers) or None, native=native, threads=threads, exits=exits)
              for m in models]
    loaded = [model for model, _ in opened]
    for i, ir_model in enumerate(loaded):
        for path in external_files(ir_model):
            files.add_input(f"MODEL #{i + 1}'s external data", path)
    files.check()
    check_dims(loaded[0], size_of, data)
    feeds, source = build_feeds(loaded[0], data, samples=min(samples, batch), batch=batch, seq=seq, seed=seed,
                                dims=size_of)
    del loaded
    report = bench_models(
        [run for _, run in opened], feeds, warmup=warmup, iters=iters, providers=list(providers) or None, threads=threads,
        measure_memory=memory, progress=True, native=native,
    )
    payload = {"data": source, **report.to_dict()}
    if deliver_json(files, json_path, payload, as_json):
        return
    out = console()
    out.print(plain(f"data: {source}"))
    out.print(report.render())
    out.print(plain(native_line([m.native for m in report.models])))
