"""How much of a model's run time its parekit ops take, with the native kernels and with the function bodies.

    python bench/op_share.py [--model minilm] [--config "token-prune{keep=0.5,layers=[2]}"] [--runs 20]

Applies the pipeline to the sample, then runs the optimized model in two ONNX Runtime sessions (library
registered / not) with ORT's profiler on and sums the kernel times of the parekit ops: with the library,
the parekit nodes themselves; without it, the inlined bodies' nodes, which ORT names
``_inlfunc_<OpType>_...`` after the function they came from. Reported per session: total node time per run,
time in the inserted ops, and their share. MiniLM runs on batch 8 x 128 real prose tokens (as in
bench/token_reduction.py); ViT on batch 8 seeded-noise images (only the shapes matter for time).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from parekit.backends.ort import check_loads
from parekit.backends.save import save_model
from parekit.frontends import zoo
from parekit.frontends.onnx_file import load_model
from parekit.native import require_library
from parekit.ops import PAREKIT_DOMAIN, op_names
from parekit.passes import PassContext, run_pipeline


def feeds_for(name: str, model) -> dict[str, np.ndarray]:
    if name == "minilm":
        sys.path.insert(0, str(Path(__file__).parent))
        from token_reduction import prose_windows

        return prose_windows(model, count=8, seq=128, batch=8)[0]
    rng = np.random.default_rng(0)
    return {"pixel_values": rng.standard_normal((8, 3, 224, 224)).astype(np.float32)}


def profile(
    path: str, feeds: dict, library: Path | None, runs: int, threads: int, tmp: str
) -> dict[str, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tmp) / ("native" if library else "body"))
    if library is not None:
        options.register_custom_ops_library(str(library))
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(3 + runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            per_node[node].append(e["dur"] / 1e3)
            op_of[node] = e["args"].get("op_name", "")
    # the last `runs` runs of every node (the first 3 are warm-up)
    return {node: float(np.sum(times[-runs:])) / runs for node, times in per_node.items()} | {
        "__ops__": op_of  # type: ignore[dict-item]
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm", choices=["minilm", "vit"])
    ap.add_argument("--opset", type=int, default=23)
    ap.add_argument("--config", default="token-prune{keep=0.5,layers=[2]}")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    library = require_library()
    src = zoo.export_sample(args.model, opset=args.opset)
    result = run_pipeline(load_model(src), args.config, PassContext(), verifier=check_loads)
    inserted = {
        n.name
        for n in result.model.graph.all_nodes()
        if n.domain == PAREKIT_DOMAIN and "parekit.pass" in n.metadata_props
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "m.onnx")
        save_model(result.model, path)
        feeds = feeds_for(args.model, load_model(src))
        print(f"{args.model} opset {args.opset} `{args.config}`: {len(inserted)} inserted parekit nodes")
        for label, lib in (("function bodies", None), ("native kernels", library)):
            times = profile(path, feeds, lib, args.runs, args.threads, tmp)
            ops = times.pop("__ops__")
            total = sum(times.values())
            parekit_ops = set(op_names())
            mine_nodes = [
                n
                for n in times
                if ops[n] in parekit_ops or any(n.startswith(f"_inlfunc_{o}_") for o in parekit_ops)  # type: ignore[index]
            ]
            mine = sum(times[n] for n in mine_nodes)
            kinds = sorted({ops[n] for n in mine_nodes})  # type: ignore[index]
            print(
                f"  {label:16s} node time {total:8.3f} ms/run, parekit ops {mine:7.3f} ms/run "
                f"({mine / total:.2%}) in {len(mine_nodes)} nodes ({', '.join(kinds)})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
