"""Sequoia's acceptance vector, measured: ``rank_counts`` / ``acceptance_vector``, and the command
line that measures one and prints an optimal tree (``policies/sequoia.py`` holds the DP).

    python -m opttree_core sequoia measure --target smollm2-135m --draft eagle-smollm2 --prompts 8 --k 8 --out vec.json
    python -m opttree_core sequoia tree --acceptance vec.json --nodes 16 --max-depth 6
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..api import encode_prompt
from ..drafters.registry import load_drafter
from ..decoding import DecodeConfig, generate
from ..errors import OptTreeError, report_errors
from ..models import load_model
from ..policies.sequoia import (
    MAX_RANKS,
    SequoiaConfig,
    expected_accepted,
    load_acceptance,
    optimal_tree,
    save_acceptance,
)
from ..tree import DraftTree
from .datasets import DEFAULT_SPEC_BENCH, spec_bench


@dataclass(frozen=True)
class RankCounts:
    """How often the target's next token was the draft's rank-i candidate (i = 0..k-1)."""

    counts: tuple[int, ...]  # (k,)
    positions: int  # tokens measured (a target token outside the draft's top-k counts here only)

    @property
    def acceptance(self) -> list[float]:
        """p_i = counts[i] / positions: the acceptance vector."""
        return [c / self.positions for c in self.counts] if self.positions else [0.0] * len(self.counts)


class _RootRanking:
    """A probe policy: every step it reads the drafter's top-k at the root and drafts nothing, so
    the step verifies the root alone and commits exactly one token, the target's own next one."""

    name = "sequoia-probe"
    max_nodes = 0

    def __init__(self, k: int):
        self.k, self.rankings, self.targets = k, [], []

    def on_step(self, record) -> None:
        """``generate``'s step callback: the token the target committed after the root."""
        self.targets.append(record.new_tokens[0])

    def build(self, drafter, root_token: int, depth_cap: int, device, children=None, stop=None) -> DraftTree:
        probs = drafter.root_probs()  # (V,)
        self.rankings.append(probs.topk(min(self.k, probs.shape[0])).indices.tolist())
        return DraftTree.root_only(root_token, device)

    def reset(self) -> None:
        pass

    def observe(self, record) -> None:
        pass


def rank_counts(target_model, drafter, prompts, k: int = 8, max_new_tokens: int = 64,
                temperature: float = 0.0, seed: int = 0) -> RankCounts:
    """Count, at every position of the target's own continuation of each prompt, the draft rank of
    the target's next token (greedy: its argmax; temperature > 0: its sample).

    Runs ``generate`` with a probe policy that drafts nothing: each step feeds the drafter the
    true prefix (with the target's true features, for EAGLE-style drafters, exactly as in
    decoding), reads the drafter's ranking at the root and commits the target's next token.
    So every position is measured with the drafter state real decoding gives a tree's root.
    """
    if not (isinstance(k, int) and 1 <= k <= MAX_RANKS):
        raise OptTreeError(f"k must be an integer in 1..{MAX_RANKS}, got {k!r}")
    counts, positions = Counter(), 0
    for i, prompt in enumerate(prompts):
        probe = _RootRanking(k)
        config = DecodeConfig(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + i)
        generate(target_model, drafter, probe, prompt, config, on_step=probe.on_step)
        for ranking, token in zip(probe.rankings, probe.targets, strict=True):
            positions += 1
            if token in ranking:
                counts[ranking.index(token)] += 1
    return RankCounts(tuple(counts[i] for i in range(k)), positions)


def acceptance_vector(target_model, drafter, prompts, k: int = 8, max_new_tokens: int = 64,
                      temperature: float = 0.0, seed: int = 0) -> list[float]:
    """Sequoia's acceptance vector p_1..p_k of a target/draft pair, measured along the target's
    own continuation of ``prompts`` (1-D token tensors): see ``rank_counts``."""
    return rank_counts(target_model, drafter, prompts, k, max_new_tokens, temperature, seed).acceptance



# ----------------------------------------------------------------------------- the command line

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
                           "along the target's own continuation (opttree_core.tools.sequoia_measure.rank_counts)")
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
    parser = argparse.ArgumentParser(prog="python -m opttree_core sequoia", description=__doc__.split("\n")[0])
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
