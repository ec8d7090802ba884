"""A first look at the Qwen2.5-Coder pair: the 1.5B target (row-count-invariant kernels, so tree
decoding is exact in bf16) drafted by the 0.5B, against AR with the same kernels and AR with stock
kernels, interleaved prompt by prompt in one process; every tree run's tokens checked against AR's.

Prompts: Spec-Bench first turns of the coding, math-reasoning, writing and QA categories (every 9th)
and two short Python-function prompts. Results: benchmarks/results/qwen-pair-first-look.md.

    .venv/bin/python benchmarks/bench_pair.py [--max-new-tokens 64] [--budgets 7 15] [--spec-bench FILE]
"""
from __future__ import annotations

import argparse
import json

from opttree_core import DecodeConfig, Session, generate_autoregressive, load_drafter, load_model, make_policy
from opttree_core.invariant import use_invariant_kernels
from opttree_core.tools.datasets import DEFAULT_SPEC_BENCH

CODE_PROMPTS = ["Write a Python function that returns the n-th Fibonacci number iteratively.",
                "Write a Python function to check whether a string is a palindrome, ignoring case and spaces."]


def prompts(path) -> list[str]:
    rows = [json.loads(line) for line in open(path)]
    chosen = [r["turns"][0] for r in rows if r["category"] in ("coding", "math_reasoning", "writing", "qa")]
    return chosen[::9][:4] + CODE_PROMPTS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--budgets", type=int, nargs="+", default=[7, 15])
    p.add_argument("--spec-bench", default=str(DEFAULT_SPEC_BENCH))
    p.add_argument("--dtype", default="bfloat16")
    args = p.parse_args()
    target = load_model("qwen2.5-coder-1.5b", dtype=args.dtype, invariant=True)
    drafter = load_drafter("qwen2.5-coder-0.5b", target, dtype=args.dtype)
    config = DecodeConfig(max_new_tokens=args.max_new_tokens)
    sessions = {f"opt-tree n={n}": Session(target, drafter, make_policy("opt-tree", nodes=n, threshold=0.2,
                                                                          max_depth=6)) for n in args.budgets}
    first = next(iter(sessions.values()))
    first.run("Hi", max_new_tokens=4, chat=True)  # warm-up: no timed run pays a first call
    totals = {k: {"tokens": 0, "seconds": 0.0, "steps": 0, "differ": 0} for k in ["ar", "ar stock", *sessions]}

    def add(name, result, differs=False):
        t = totals[name]
        t["tokens"] += len(result.token_ids)
        t["seconds"] += result.seconds
        t["steps"] += result.steps
        t["differ"] += differs

    for i, text in enumerate(prompts(args.spec_bench)):
        ids = first.encode(text, chat=True)
        use_invariant_kernels(target.model, on=False)
        stock = generate_autoregressive(target.model, ids, config)
        use_invariant_kernels(target.model, on=True)
        ar = generate_autoregressive(target.model, ids, config)
        add("ar", ar)
        add("ar stock", stock, stock.token_ids != ar.token_ids)
        line = [f"p{i}: AR {ar.tokens_per_s:.2f} tok/s (stock kernels {stock.tokens_per_s:.2f})"]
        for name, session in sessions.items():
            tree = session.run(ids, config).result
            add(name, tree, tree.token_ids != ar.token_ids)
            line.append(f"{name} MAL {tree.mal:.2f} x{tree.tokens_per_s / ar.tokens_per_s:.2f}")
        print(" | ".join(line), flush=True)
    speed = {k: t["tokens"] / t["seconds"] for k, t in totals.items()}
    print(f"\n{'method':<16} {'tok/s':>6} {'x AR':>6} {'x stock AR':>11} {'MAL':>5}  prompts differing from AR")
    for name, t in totals.items():
        print(f"{name:<16} {speed[name]:>6.2f} {speed[name] / speed['ar']:>6.2f} {speed[name] / speed['ar stock']:>11.2f} "
              f"{t['tokens'] / t['steps']:>5.2f}  {t['differ']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
