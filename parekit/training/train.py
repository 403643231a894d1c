"""Train an exit adapter on dumped states, through the frozen model's own head.

    states at layer l ──► adapter (trains) ──► own head (frozen, torch) ──► exit output
                                                                             │
        decoders: KL(teacher top-k ‖ softmax(exit logits))  ◄───────────────┤   teacher = the full model
        encoders: 1 − cos(exit embedding, final embedding)  ◄───────────────┘

AdamW (weight decay on matrices only), linear warm-up then cosine decay, seeded (``torch.manual_seed``
for the initial weights, a seeded generator for the shuffles, fixed thread count), evaluated on the
held-out split after every epoch (epoch 0 = the untrained adapter = the model's own head), stopped
when the held-out metric has not improved for ``patience`` epochs; the best epoch's weights are kept.
Everything the run did goes into the adapter's record (``Adapter.record``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from parekit.errors import PassNotApplicableError
from parekit.passes.exit_adapter import Adapter
from parekit.training.adapters import make_adapter, to_adapter
from parekit.training.dump import ExitDump
from parekit.training.head import HeadProgram
from parekit.training.torch_extra import torch

__all__ = ["GATE_THRESHOLDS", "TrainOptions", "TrainResult", "check_head", "train_exit"]

logger = logging.getLogger(__name__)

GATE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Confidence thresholds at which the record lists held-out coverage × agreement (decoders)."""
_EVAL_ROWS = 1024


@dataclass(frozen=True)
class TrainOptions:
    """How to train.

    Attributes:
        kind: adapter kind, ``linear`` or ``mlp``.
        ffn: the mlp adapter's inner width.
        epochs: most passes over the training rows.
        lr: peak learning rate.
        batch: rows per step (decoders: tokens, default 512; encoders: paragraphs, default 16).
        weight_decay: AdamW weight decay of the matrices.
        warmup: fraction of the planned steps with a linear warm-up.
        final_lr: learning rate at the end of the cosine decay, as a fraction of ``lr``.
        patience: epochs without a held-out gain above ``min_delta`` before stopping.
        min_delta: smallest held-out gain that counts.
        seed: seed of the initial weights and of the shuffles.
        threads: torch CPU threads (``None``: every core).
        progress: show a progress bar.
    """

    kind: str = "mlp"
    ffn: int = 1024
    epochs: int = 30
    lr: float = 1e-3
    batch: int | None = None
    weight_decay: float = 0.01
    warmup: float = 0.05
    final_lr: float = 0.1
    patience: int = 3
    min_delta: float = 1e-3
    seed: int = 0
    threads: int | None = None
    progress: bool = False


@dataclass
class TrainResult:
    """A trained adapter and what its training measured (all of it is also in ``adapter.record``)."""

    adapter: Adapter
    own_head: float
    held_out: float
    record: dict[str, Any]


def check_head(dump: ExitDump, head: HeadProgram) -> float:
    """Refuse a torch head that does not reproduce the model's own output on the dumped final state.

    Returns:
        The largest absolute difference found.

    Raises:
        PassNotApplicableError: the head re-run in torch differs from the model (beyond float noise).
    """
    assert dump.final is not None and dump.check_output is not None
    with torch.no_grad():
        got = head(torch.from_numpy(dump.final), _head_inputs(dump, head, None, dump.final.shape)).numpy()
    ref = dump.check_output
    if got.shape != ref.shape:
        raise PassNotApplicableError(
            f"train-exit: the head re-run in torch gives {list(got.shape)} for {dump.output}, the model {list(ref.shape)}"
        )
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not diff <= 1e-3 * max(1.0, float(np.max(np.abs(ref)))):
        raise PassNotApplicableError(
            f"train-exit: the head re-run in torch differs from the model's {dump.output} by {diff:.3g}",
            note="the head's graph pattern is not reproduced faithfully; this model cannot be trained",
        )
    return diff


def _head_inputs(dump: ExitDump, head: HeadProgram, rows: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    """The graph inputs ``head`` reads, for ``rows`` of the dump laid out as ``shape[:-1]``."""
    out: dict[str, Any] = {}
    if rows is not None and not isinstance(rows, np.ndarray):
        rows = rows.numpy()
    for name in head.graph_inputs:
        if dump.kind == "encoder" and rows is not None:
            out[name] = torch.from_numpy(dump.inputs[name][rows])
        elif dump.kind == "encoder":
            out[name] = torch.from_numpy(dump.inputs[name])
        elif name == "input_ids":
            ids = dump.inputs["input_ids"]
            out[name] = torch.from_numpy(ids[rows] if rows is not None else ids[: math.prod(shape[:-1])]).reshape(shape[:-1])
        elif name in ("attention_mask", "position_ids"):
            n = math.prod(shape[:-1])
            base = torch.ones(n, dtype=torch.int64) if name == "attention_mask" else torch.arange(n, dtype=torch.int64)
            out[name] = base.reshape(shape[:-1])
        else:
            raise PassNotApplicableError(
                f"train-exit: the decoder head reads graph input {name!r}; only input_ids, attention_mask "
                "and position_ids are supported"
            )
    return out


class _Task:
    """Loss and held-out metric of one kind of model, over dump rows."""

    def __init__(self, dump: ExitDump, head: HeadProgram) -> None:
        self.dump, self.head = dump, head
        self.states = torch.from_numpy(dump.states)
        if dump.kind == "decoder":
            assert dump.top_idx is not None and dump.top_p is not None
            self.idx = torch.from_numpy(dump.top_idx.astype(np.int64))
            self.p = torch.from_numpy(dump.top_p)
            p64 = dump.top_p.astype(np.float64)
            self.entropy = -(p64 * np.log(np.maximum(p64, 1e-30))).sum(1)  # teacher's: loss − entropy = KL
        else:
            assert dump.target is not None
            self.target = torch.from_numpy(dump.target)

    def exit_output(self, adapter: Any, rows: Any) -> Any:
        x = self.states[rows]
        if self.dump.kind == "decoder":
            y = adapter(x)[None]
            return self.head(y, _head_inputs(self.dump, self.head, rows, tuple(y.shape)))[0]
        y = adapter(x)
        return self.head(y, _head_inputs(self.dump, self.head, rows, tuple(y.shape)))

    def loss(self, out: Any, rows: Any) -> Any:
        if self.dump.kind == "decoder":
            logq = torch.log_softmax(out, dim=-1)
            return -(self.p[rows] * logq.gather(1, self.idx[rows])).sum(1).mean()
        return 1.0 - torch.nn.functional.cosine_similarity(out, self.target[rows], dim=-1).mean()

    def reported(self, loss: float, rows: np.ndarray) -> float:
        """Training loss as reported: KL (decoders, CE minus the teacher entropy) or 1 − cosine."""
        return loss - float(self.entropy[rows].mean()) if self.dump.kind == "decoder" else loss

    def evaluate(self, adapter: Any, rows: np.ndarray) -> dict[str, Any]:
        agree, maxprob, margin, cos = [], [], [], []
        step = _EVAL_ROWS if self.dump.kind == "decoder" else 64
        with torch.no_grad():
            for lo in range(0, len(rows), step):
                r = torch.from_numpy(rows[lo : lo + step])
                out = self.exit_output(adapter, r)
                if self.dump.kind == "decoder":
                    top2 = torch.softmax(out, dim=-1).topk(2, dim=-1)
                    agree.append((out.argmax(-1) == self.idx[r, 0]).numpy())
                    maxprob.append(top2.values[:, 0].numpy())
                    margin.append((top2.values[:, 0] - top2.values[:, 1]).numpy())
                else:
                    cos.append(torch.nn.functional.cosine_similarity(out, self.target[r], dim=-1).numpy())
        if self.dump.kind == "encoder":
            c = np.concatenate(cos)
            return {"metric": float(c.mean()), "cosine": float(c.mean()), "cosine_min": float(c.min())}
        a, mp, mg = np.concatenate(agree), np.concatenate(maxprob), np.concatenate(margin)
        gate = {
            name: [[t, float((s >= t).mean()), float(a[s >= t].mean()) if (s >= t).any() else None] for t in GATE_THRESHOLDS]
            for name, s in (("margin", mg), ("maxprob", mp))
        }
        return {"metric": float(a.mean()), "top1_agreement": float(a.mean()), "gate": gate}


def _schedule(total: int, options: TrainOptions) -> Any:
    warm = max(1, int(options.warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return options.final_lr + (1 - options.final_lr) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def train_exit(dump: ExitDump, head: HeadProgram, options: TrainOptions, *, model_params: int = 0) -> TrainResult:
    """Train an adapter of ``options.kind`` for ``dump.layer`` through ``head``.

    Args:
        dump: the dumped states and teacher targets.
        head: the model's own head in torch (see :func:`parekit.training.head.build_head`).
        options: how to train.
        model_params: the model's parameter count, for the record (0: unknown).

    Returns:
        The adapter (best held-out epoch) and its record.
    """
    check_head(dump, head)
    threads_before = torch.get_num_threads()
    threads = options.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    try:
        return _train(dump, head, options, model_params, threads)
    finally:
        torch.set_num_threads(threads_before)


def _train(dump: ExitDump, head: HeadProgram, options: TrainOptions, model_params: int, threads: int) -> TrainResult:
    start = time.perf_counter()
    task = _Task(dump, head)
    hidden = dump.states.shape[-1]
    torch.manual_seed(options.seed)
    adapter = make_adapter(options.kind, hidden, options.ffn)
    decay = [p for p in adapter.parameters() if p.dim() >= 2]
    rest = [p for p in adapter.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=options.lr
    )
    batch = options.batch or (512 if dump.kind == "decoder" else 16)
    train_rows = dump.train
    steps_per_epoch = max(1, math.ceil(len(train_rows) / batch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(steps_per_epoch * options.epochs, options))
    gen = torch.Generator().manual_seed(options.seed)
    first = task.evaluate(adapter, dump.held_out)
    curve, losses = [first["metric"]], []
    best, best_eval, best_epoch, bad = first["metric"], first, 0, 0
    best_state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
    bar = _bar(options.progress, steps_per_epoch * options.epochs)
    epoch = 0
    try:
        for epoch in range(1, options.epochs + 1):
            order = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
            total = 0.0
            for lo in range(0, len(order), batch):
                rows = torch.from_numpy(order[lo : lo + batch])
                loss = task.loss(task.exit_output(adapter, rows), rows)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(rows)
                if bar is not None:
                    bar.advance(bar.task_ids[0])
            losses.append(task.reported(total / len(order), order))
            result = task.evaluate(adapter, dump.held_out)
            curve.append(result["metric"])
            logger.info("epoch %d: loss %.4f, held-out %.4f", epoch, losses[-1], result["metric"])
            if bar is not None:
                bar.update(bar.task_ids[0], description=f"epoch {epoch}: loss {losses[-1]:.3f}, held-out {result['metric']:.3f}")
            if result["metric"] > best + options.min_delta:
                best, best_eval, best_epoch, bad = result["metric"], result, epoch, 0
                best_state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
            else:
                bad += 1
                if bad >= options.patience:
                    break
    finally:
        if bar is not None:
            bar.stop()
    adapter.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    decoder = dump.kind == "decoder"
    params = sum(int(p.numel()) for p in adapter.parameters())
    record: dict[str, Any] = {
        "method": "trained in torch (AdamW) through the frozen head: " + (
            f"KL to the full model's top-{dump.top_idx.shape[1]} next-token distribution"
            if decoder and dump.top_idx is not None
            else f"1 - cosine to the final {dump.output}"
        ),
        "kind": options.kind,
        "layer": dump.layer,
        "ffn": options.ffn if options.kind == "mlp" else None,
        "params": params,
        "model_params": model_params or None,
        "params_fraction": params / model_params if model_params else None,
        "output": dump.output,
        "data": dump.source,
        "tokens": dump.tokens(dump.train),
        "held_out_tokens": dump.tokens(dump.held_out),
        "epochs": epoch,
        "best_epoch": best_epoch,
        "steps": epoch * steps_per_epoch,
        "batch": batch,
        "lr": options.lr,
        "schedule": f"linear warm-up {options.warmup:g}, cosine to {options.final_lr:g} x lr over {options.epochs} epochs",
        "weight_decay": options.weight_decay,
        "patience": options.patience,
        "seed": options.seed,
        "threads": threads,
        "loss_curve": [round(v, 5) for v in losses],
        "held_out_curve": [round(v, 5) for v in curve],
        ("held_out_top1_agreement" if decoder else "held_out_cosine"): best,
        ("own_head_top1_agreement" if decoder else "own_head_cosine"): first["metric"],
        "seconds": round(seconds, 2),
        "dump_seconds": round(dump.seconds, 2),
        "torch": str(torch.__version__),
    }
    if decoder:
        record["gate"] = best_eval["gate"]
        record["own_head_gate"] = first["gate"]
    else:
        record["held_out_cosine_min"] = best_eval["cosine_min"]
    return TrainResult(to_adapter(adapter, dump.layer, record), first["metric"], best, record)


def _bar(progress: bool, total: int) -> Any:
    if not progress:
        return None
    from parekit.progress import progress_bar

    bar = progress_bar()
    bar.start()
    bar.add_task("training", total=total)
    return bar
