"""The roofline on the machine at hand: T(q)/T(1), the cost of verifying q tokens in one target
forward against one AR step, for SmolLM2-135M in float32 and the Qwen2.5-Coder-1.5B in float32 and
bfloat16, each with the kernels the engine gives it; and the speedup each predicts for the MAL a
logged bench run reached at each budget n.

The prediction is an upper bound: a step that verifies n + 1 tokens and accepts MAL(n) of them
costs T(n + 1) (drafting counted as free), so speedup ≤ MAL(n) · T(1) / T(n + 1). Where that bound is
below 1 no draft, however good, makes trees pay; where it is far above 1 a real draft has room.

The sizes are measured interleaved (every model at q = 1, then every model at q = 2, ...), fastest
of --repeats, at a --context-token cache, in one process. Writes JSON for
``treeviz.roofline_figure`` (notebook 06, README "A real pair"):

    .venv/bin/python benchmarks/bench_roofline.py --out benchmarks/results/roofline-epyc-zen4.json \\
        --mal smollm2-135m=figures/data/paper-fig5 --mal qwen2.5-coder-1.5b=out/bench/qwen-pair-reduced
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import pandas as pd
import torch

from opttree_core.atomic import write_text
from opttree_core.invariant import uses_invariant_kernels
from opttree_core.models import load_model
from opttree_core.machine import describe_machine
from opttree_core.profiling import verify_latencies
from opttree_core.skinny import uses_skinny_matmul

CONFIGS = (("smollm2-135m", "float32"), ("qwen2.5-coder-1.5b", "float32"), ("qwen2.5-coder-1.5b", "bfloat16"))


def kernels(model) -> str:
    return "invariant" if uses_invariant_kernels(model) else "skinny" if uses_skinny_matmul(model) else "stock"


def logged_mal(run_dir: str) -> tuple[dict[int, float], str]:
    """OPT-Tree's MAL per budget in a bench run folder (greedy rows, pooled over its prompts) and its draft."""
    summary = pd.read_parquet(Path(run_dir) / "summary.parquet")
    rows = summary[(summary["policy"] == "opt-tree") & (summary["temperature"] == 0)]
    return {int(r.budget): float(r.mal) for r in rows.itertuples()}, ", ".join(sorted(set(rows["drafter"])))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--sizes", default="1,2,4,8,16,32,64")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mal", action="append", default=[], metavar="TARGET=RUN_DIR",
                   help="a bench run whose OPT-Tree MAL per budget the target's predictions use (repeatable)")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    mal = {target: logged_mal(run) for target, run in (m.split("=", 1) for m in args.mal)}
    runs = {target: run for target, run in (m.split("=", 1) for m in args.mal)}
    models = {(name, dtype): load_model(name, dtype=dtype).model for name, dtype in CONFIGS}
    times = {key: [] for key in models}
    for size in sizes:  # interleaved: every model at this size, then the next size
        for key, model in models.items():
            times[key].append(verify_latencies(model, (size,), args.repeats, args.context)[0][0])
    record = {"machine": f"{describe_machine()}, {torch.get_num_threads()} threads",
              "date": datetime.date.today().isoformat(), "context": args.context, "repeats": args.repeats,
              "sizes": sizes, "command": "benchmarks/bench_roofline.py " + " ".join(f"--mal {m}" for m in args.mal),
              "configs": [{"target": name, "dtype": dtype, "seconds": times[(name, dtype)],
                           "kernels": kernels(models[(name, dtype)]),
                           "mal": {str(n): v for n, v in mal.get(name, ({}, None))[0].items()},
                           "mal_draft": mal.get(name, ({}, None))[1],
                           "mal_from": runs.get(name)} for name, dtype in CONFIGS]}
    write_text(args.out, json.dumps(record, indent=1))
    for config in record["configs"]:
        t = config["seconds"]
        print(f"{config['target']:<20} {config['dtype']:<9} T(1) {t[0] * 1e3:6.0f} ms   T(q)/T(1): "
              + " ".join(f"q={q}:{s / t[0]:.2f}" for q, s in zip(sizes, t)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
