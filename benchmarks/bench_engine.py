"""Engine benchmark: AR vs OPT-Tree at several node budgets (one with and without TreeLog),
interleaved over the same prompts in one run.

Prints tokens/s of each method and their ratios to AR, MAL, the cost of logging, the size
of a 1000-step × 500-node TreeLog, and peak resident memory (this process and a
`make demo` run). Ratios only compare numbers measured here, in this process.

    .venv/bin/python benchmarks/bench_engine.py [--draft eagle-smollm2] [--budgets 4 8 16]
        [--max-new-tokens N] [--repeats N]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

from opttree_core import encode_prompt, load_drafter
from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive
from opttree_core.tools.demo import PROMPTS
from opttree_core.metrics import mean_acceptance_length, speedup
from opttree_core.models import load_model
from opttree_core.policies import OptTreeConfig, OptTreePolicy
from opttree_core.records import StepRecord
from opttree_core.tree import DraftTree
from opttree_core.treelog import TreeLog


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the prompts")
    p.add_argument("--draft", default="eagle-smollm2")
    p.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16], help="node budgets n to compare")
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--max-depth", type=int, default=6)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-demo", action="store_true", help="don't measure the peak memory of `make demo`")
    return p.parse_args()


def interleaved_runs(target, drafter, policies: dict, prompts, config, repeats):
    """Seconds, tokens and step lengths per method, methods interleaved prompt by prompt.

    ``policies`` maps a method name to a policy; the first one also runs with a TreeLog.
    """
    device = target.model.get_input_embeddings().weight.device
    first = next(iter(policies))
    runs = {"ar": lambda prompt: generate_autoregressive(target.model, prompt, config)}
    for name, policy in policies.items():
        runs[name] = lambda prompt, policy=policy: generate(target.model, drafter, policy, prompt, config)
    runs[f"{first}+log"] = lambda prompt: generate(
        target.model, drafter, policies[first], prompt, config,
        log=TreeLog(config.max_new_tokens, policies[first].max_nodes + 1, device))
    totals = {m: {"seconds": 0.0, "tokens": 0, "lengths": []} for m in runs}
    for _ in range(repeats):
        for prompt in prompts:
            for method, run in runs.items():
                result = run(prompt)
                totals[method]["seconds"] += result.seconds
                totals[method]["tokens"] += len(result.token_ids)
                totals[method]["lengths"] += result.accept_lengths
    return totals


def synthetic_tree(n_nodes: int, device) -> DraftTree:
    """A complete 4-ary tree of ``n_nodes`` nodes (root included)."""
    parents = torch.cat([torch.tensor([-1]), torch.arange(n_nodes - 1) // 4])
    depth = torch.zeros(n_nodes, dtype=torch.long)
    for i in range(1, n_nodes):
        depth[i] = depth[parents[i]] + 1
    ones, zeros = torch.ones(n_nodes), torch.zeros(n_nodes, dtype=torch.long)
    return DraftTree(*(t.to(device) for t in (torch.arange(n_nodes), parents, depth, ones, ones.clone(), zeros)))


def treelog_footprint(device) -> dict:
    """A 1000-step run of 500-node trees: on-device bytes, record cost per step, Parquet export."""
    steps, nodes = 1000, 500
    tree = synthetic_tree(nodes + 1, device)
    log = TreeLog(max_steps=steps, max_nodes=nodes + 1, device=device)
    accepted = torch.zeros(nodes + 1, dtype=torch.bool, device=device)
    record = StepRecord(0, tree, tree.tokens, accepted, [1, 2])
    start = time.perf_counter()
    for _ in range(steps):
        log.record(record)
    if device.type == "cuda":
        torch.cuda.synchronize()
    record_us = (time.perf_counter() - start) / steps * 1e6
    out = Path("out/bench/treelog_1000x500")
    start = time.perf_counter()
    log.save(out)
    export_s = time.perf_counter() - start
    parquet_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    return {"device_mb": log.nbytes() / 2**20, "record_us": record_us, "export_s": export_s, "parquet_mb": parquet_mb}


def demo_peak_rss_mb() -> float:
    """Peak resident memory of `python -m opttree_core demo` run as a child process."""
    subprocess.run([sys.executable, "-m", "opttree_core", "demo", "--out", "out/bench/demo"], check=True,
                   stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    args = parse_args()
    transformers.utils.logging.disable_progress_bar()
    device = torch.device(args.device)
    target = load_model("smollm2-135m", device=device)
    drafter = load_drafter(args.draft, target)
    policies = {f"n={n}": OptTreePolicy(OptTreeConfig(nodes=n, threshold=args.threshold, max_depth=args.max_depth))
                for n in args.budgets}
    config = DecodeConfig(max_new_tokens=args.max_new_tokens, timing=False)
    prompts = [encode_prompt(target.tokenizer, text, chat=True).to(device) for text in PROMPTS.values()]
    generate(target.model, drafter, next(iter(policies.values())), prompts[0], DecodeConfig(max_new_tokens=8))  # warm-up
    totals = interleaved_runs(target, drafter, policies, prompts, config, args.repeats)
    tps = {m: t["tokens"] / t["seconds"] for m, t in totals.items()}
    print(f"device {device} | target smollm2-135m | draft {args.draft} | opt-tree delta {args.threshold}, "
          f"depth {args.max_depth} | {len(prompts)} prompts x {args.repeats} rounds x {args.max_new_tokens} tokens, "
          f"interleaved")
    for method in totals:
        print(f"  {method:<9} {tps[method]:8.2f} tok/s   MAL {mean_acceptance_length(totals[method]['lengths']):.2f}"
              f"   speedup over AR {speedup(tps[method], tps['ar']):.3f}x")
    first = next(iter(policies))
    print(f"logging cost ({first} / {first}+log) {tps[first] / tps[first + '+log']:.3f}x  (goal <= 1.03)")
    footprint = treelog_footprint(device)
    print(f"TreeLog 1000 steps x 500 nodes: {footprint['device_mb']:.1f} MB on device (goal < 64), "
          f"{footprint['record_us']:.0f} us/step to record, Parquet {footprint['parquet_mb']:.1f} MB "
          f"written in {footprint['export_s']:.2f} s")
    print(f"peak RSS of this benchmark   {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if not args.skip_demo:
        print(f"peak RSS of `make demo`      {demo_peak_rss_mb():.0f} MB  (goal < 2048)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
