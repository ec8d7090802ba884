"""MAL (and optionally speed) of trained drafts on Spec-Bench, greedy, chat template on.

    .venv/bin/python benchmarks/eval_drafts.py --drafts eagle-smollm2 tiny-smollm2 \
        [--spec-bench ../shared/data/spec_bench/question.jsonl] [--nodes 50] [--speed]

Prompts: the 80 MT-Bench first turns plus the first 20 of each other Spec-Bench task
(none of them is used in training). With --speed, autoregressive decoding runs
interleaved with each draft over the same prompts, and speedups are ratios of
throughputs measured in this one process.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm

from opttree_core import encode_prompt, load_drafter
from opttree_core.atomic import write_atomic
from opttree_core.tools.datasets import DEFAULT_SPEC_BENCH, spec_bench
from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive
from opttree_core.draft_vocab import draft_vocab_size
from opttree_core.metrics import mean_acceptance_length, speedup
from opttree_core.models import load_model
from opttree_core.policies import OptTreeConfig, OptTreePolicy


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="smollm2-135m")
    p.add_argument("--drafts", nargs="+", default=["eagle-smollm2", "tiny-smollm2"])
    p.add_argument("--spec-bench", default=str(DEFAULT_SPEC_BENCH))
    p.add_argument("--per-task", type=int, default=20)
    p.add_argument("--mt-bench-per-category", type=int, default=10, help="MT-Bench prompts per category (10 = all)")
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--draft-vocab", type=int, default=None, help="draft vocabulary size K (0: all; default: the draft's)")
    p.add_argument("--threshold", type=float, default=OptTreeConfig.threshold)
    p.add_argument("--max-depth", type=int, default=OptTreeConfig.max_depth)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--speed", action="store_true", help="also run AR interleaved and report speedups")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="out/eval/drafts.json")
    p.add_argument("--shard", default="0/1", help="I/K: evaluate prompts I, I+K, ... (run K processes, then --merge)")
    p.add_argument("--merge", nargs="+", default=None, help="combine the JSON reports of shards and exit")
    return p.parse_args()


def evaluate(args) -> dict:
    target = load_model(args.target, device=args.device)
    drafters = {name: load_drafter(name, target, draft_vocab=args.draft_vocab) for name in args.drafts}
    policy = OptTreePolicy(OptTreeConfig(nodes=args.nodes, threshold=args.threshold, max_depth=args.max_depth))
    config = DecodeConfig(max_new_tokens=args.max_new_tokens)
    index, count = map(int, args.shard.split("/"))
    prompts = spec_bench(args.spec_bench, args.per_task, args.mt_bench_per_category)[index::count]
    lengths = {name: defaultdict(list) for name in drafters}
    depths = {name: defaultdict(list) for name in drafters}  # per step: the drafted tree's depth
    totals = defaultdict(lambda: {"tokens": 0, "seconds": 0.0})
    for prompt in tqdm(prompts, desc="spec-bench", unit="prompt"):
        ids = encode_prompt(target.tokenizer, prompt.text, chat=True).to(target.model.device)
        group = prompt.category.split("/")[0]
        if args.speed:
            ar = generate_autoregressive(target.model, ids, config)
            totals["ar"]["tokens"] += len(ar.token_ids)
            totals["ar"]["seconds"] += ar.seconds
        for name, drafter in drafters.items():
            step_depths = []
            result = generate(target.model, drafter, policy, ids, config,
                              on_step=lambda record: step_depths.append(record.tree.max_depth))
            lengths[name][group] += result.accept_lengths
            depths[name][group] += step_depths
            totals[name]["tokens"] += len(result.token_ids)
            totals[name]["seconds"] += result.seconds
    report = {"target": args.target, "policy": policy.name, "policy_config": asdict(policy.config),
              "draft_vocab": {name: draft_vocab_size(d) for name, d in drafters.items()},
              "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "device": args.device,
              "raw": {"lengths": {n: dict(v) for n, v in lengths.items()}, "depths": {n: dict(v) for n, v in depths.items()},
                     "totals": dict(totals)}}
    return summarise(report)


def summarise(report: dict) -> dict:
    """MAL overall and per group, tree depth, tokens/s and speedup, from the raw per-step lengths,
    depths and totals."""
    lengths, totals = report["raw"]["lengths"], report["raw"]["totals"]
    report["drafts"] = {}
    for name, groups in lengths.items():
        entry = {"mal": mean_acceptance_length([a for group in groups.values() for a in group]),
                 "mal_by_group": {g: mean_acceptance_length(v) for g, v in sorted(groups.items())},
                 **depth_summary(report["raw"].get("depths", {}).get(name), groups),
                 "tokens_per_s": totals[name]["tokens"] / totals[name]["seconds"]}
        if "ar" in totals:
            entry["speedup"] = speedup(entry["tokens_per_s"], totals["ar"]["tokens"] / totals["ar"]["seconds"])
        report["drafts"][name] = entry
    if "ar" in totals:
        report["ar_tokens_per_s"] = totals["ar"]["tokens"] / totals["ar"]["seconds"]
    return report


def depth_summary(depths: dict[str, list[int]] | None, lengths: dict[str, list[int]]) -> dict:
    """Mean drafted tree depth, and the share of steps whose accepted path ran to the tree's deepest
    layer (A = depth + 1: only there could a deeper tree have given more). Both by group, step by step."""
    if not depths:
        return {}
    pairs = [(a, d) for group, accepted in lengths.items() for a, d in zip(accepted, depths[group], strict=True)]
    return {"mean_tree_depth": sum(d for _, d in pairs) / len(pairs),
            "deepest_path_accepted": sum(a == d + 1 for a, d in pairs) / len(pairs)}


def merge(paths: list[str]) -> dict:
    """One report from the reports of prompt shards (processes run side by side share the device,
    so merged tokens/s are per process; MAL is exact)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    merged = {k: v for k, v in parts[0].items() if k not in ("raw", "drafts", "prompts")}
    merged["prompts"] = sum(p["prompts"] for p in parts)
    lengths, depths = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))
    totals = defaultdict(lambda: {"tokens": 0, "seconds": 0.0})
    for part in parts:
        for merged_kind, kind in ((lengths, "lengths"), (depths, "depths")):
            for name, groups in part["raw"].get(kind, {}).items():
                for group, values in groups.items():
                    merged_kind[name][group] += values
        for name, t in part["raw"]["totals"].items():
            totals[name]["tokens"] += t["tokens"]
            totals[name]["seconds"] += t["seconds"]
    merged["raw"] = {"lengths": {n: dict(v) for n, v in lengths.items()},
                     "depths": {n: dict(v) for n, v in depths.items()}, "totals": dict(totals)}
    return summarise(merged)


def main() -> int:
    args = parse_args()
    transformers.utils.logging.disable_progress_bar()
    start = time.time()
    report = merge(args.merge) if args.merge else evaluate(args)
    report["wall_s"] = time.time() - start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
    print(json.dumps({k: v for k, v in report.items() if k != "raw"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
