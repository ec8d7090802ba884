"""Command line for Sequoia (arXiv 2402.12374): measure an acceptance vector, print an optimal tree.

    python -m opttree_core.sequoia measure --target smollm2-135m --draft eagle-smollm2 --prompts 8 --k 8 --out vec.json
    python -m opttree_core.sequoia tree --acceptance vec.json --nodes 16 --max-depth 6
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..api import encode_prompt, load_drafter
from ..datasets import DEFAULT_SPEC_BENCH, spec_bench
from ..errors import OptTreeError, report_errors
from ..models import load_model
from . import (
    SequoiaConfig,
    expected_accepted,
    load_acceptance,
    optimal_tree,
    rank_counts,
    save_acceptance,
)


def _spread(items: list, n: int) -> list:
    """n items spread evenly over the list (all of them when n >= len)."""
    if n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


def _measure(args) -> dict:
    target = load_model(args.target)
    drafter = load_drafter(args.draft, target)
    encoded = [(p, encode_prompt(target.tokenizer, p.text, chat=args.chat)) for p in spec_bench(args.dataset, per_task=None)]
    short = [(p, ids) for p, ids in encoded if ids.numel() <= args.max_prompt_tokens]
    print(f"{len(short)} of {len(encoded)} Spec-Bench prompts have <= {args.max_prompt_tokens} tokens; "
          f"measuring {min(args.prompts, len(short))} spread over them")
    chosen, prompts = zip(*_spread(short, args.prompts)) if short else ((), ())
    stats = rank_counts(target.model, drafter, prompts, args.k, args.max_new_tokens, args.temperature, args.seed)
    if stats.positions == 0:
        raise OptTreeError("no positions were measured: give more prompts or max-new-tokens")
    save_acceptance(args.out, stats.acceptance, counts=list(stats.counts), positions=stats.positions,
                    target=args.target, draft=args.draft, temperature=args.temperature, k=args.k,
                    prompts=[p.id for p in chosen], max_new_tokens=args.max_new_tokens, chat=args.chat,
                    max_prompt_tokens=args.max_prompt_tokens,
                    method="rank of the target's next token among the draft's top-k at the root, "
                           "along the target's own continuation (opttree_core.sequoia.rank_counts)")
    print(f"{stats.positions} positions: p = [{', '.join(f'{x:.4f}' for x in stats.acceptance)}] "
          f"(sum {sum(stats.acceptance):.4f}) -> {args.out}")
    return {"out": str(args.out)}


def _tree(args) -> dict:
    vector = load_acceptance(args.acceptance) if args.acceptance else SequoiaConfig().acceptance
    paths = optimal_tree(vector, args.nodes, args.max_depth)
    for path in paths:
        print(" ".join(str(r) for r in path))
    print(f"F(T) = {expected_accepted(vector, paths):.4f} expected accepted tokens "
          f"(+1 bonus), depth {max(map(len, paths))}")
    return {"paths": paths}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opttree_core.sequoia", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure a target/draft pair's acceptance vector")
    m.add_argument("--target", default="smollm2-135m")
    m.add_argument("--draft", default="eagle-smollm2")
    m.add_argument("--prompts", type=int, default=8, help="Spec-Bench prompts, spread over its categories")
    m.add_argument("--dataset", default=DEFAULT_SPEC_BENCH, help="Spec-Bench's question.jsonl")
    m.add_argument("--max-prompt-tokens", type=int, default=400, help="skip longer prompts (CPU time)")
    m.add_argument("--k", type=int, default=8, help="ranks measured")
    m.add_argument("--max-new-tokens", type=int, default=64)
    m.add_argument("--temperature", type=float, default=0.0)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True)
    m.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("tree", help="print the optimal tree's rank paths")
    t.add_argument("--acceptance", default=None, help="a vector JSON (default: the shipped eagle-smollm2 one)")
    t.add_argument("--nodes", type=int, default=16)
    t.add_argument("--max-depth", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = _measure if args.command == "measure" else _tree
    return 0 if report_errors(run, args) is not None else 2


if __name__ == "__main__":
    sys.exit(main())
