"""Trees for serving engines, chosen from logged runs (``serve_tree.py`` is the command).

From tree logs (``records.read_log``) this measures, per step, the draft ranks along the accepted path
and which ranks each accepted node's children had, and from those:

- the acceptance vector p (p_r: the accepted child of an accepted node is its rank-r child), a
  Kaplan–Meier estimate: a node whose children were ranks 0..c-1 and none was accepted says only
  "rank ≥ c" (censored), so p_r = h_r Π_{s<r} (1 − h_s) with h_r = (accepted at rank r) / (nodes
  whose rank-r child was there and no lower one accepted). Σ p ≤ 1 by construction;
- vLLM's static tree: Sequoia's DP restricted to level-uniform trees (``policies/sequoia.py``), and
  vLLM's own validity rule for it (``vllm_tree_problem``);
- SGLang's flags: the EAGLE-2 tree its (steps, topk, num_draft_tokens) build, under the same
  positional model, grown by our own EAGLE-2 rule (``policies/eagle2.py``);
- a replay: each logged step through a static tree T accepts the longest prefix of the logged
  accepted rank path that T holds, plus the bonus token. Exact when T's children at the last
  accepted node are among the logged ones (they were all rejected); otherwise the step is
  *censored* (its replayed A is a lower bound), and counted.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import OptTreeError
from ..policies.eagle2 import Eagle2Config, Eagle2Policy
from ..policies.rank_paths import RankPath
from ..policies.sequoia import MAX_RANKS, expected_accepted
from ..records import LOG_FILES, LogData


@dataclass(frozen=True)
class LoggedStep:
    """One logged step: the draft ranks of its accepted path (shallow to deep) and, for the root and each
    accepted node, the ranks its children in the logged tree had."""

    ranks: tuple[int, ...]
    children: tuple[frozenset[int], ...]  # len(ranks) + 1


def find_logs(paths) -> list[Path]:
    """Tree-log directories: each path is one, or a folder (a bench run) searched for them."""
    found = []
    for path in map(Path, paths):
        if all((path / f).is_file() for f in LOG_FILES):
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob("meta.json") if all((p.parent / f).is_file() for f in LOG_FILES))
        else:
            raise OptTreeError(f"{path} is neither a tree log nor a folder of them")
    if not found:
        raise OptTreeError(f"no tree logs under {', '.join(map(str, paths))}")
    return found


def logged_steps(data: LogData) -> list[LoggedStep]:
    """Every step of one log as a ``LoggedStep``."""
    steps = []
    nodes = data.nodes.sort_values(["step", "node"])
    for _, g in nodes.groupby("step", sort=True):
        node, parent = g["node"].to_numpy(), g["parent"].to_numpy()
        rank, depth, accepted = g["rank"].to_numpy(), g["depth"].to_numpy(), g["accepted"].to_numpy()
        path = sorted((int(depth[i]), int(node[i])) for i in np.flatnonzero(accepted & (depth > 0)))
        chain = [0] + [n for _, n in path]
        rank_of = dict(zip(node.tolist(), rank.tolist()))
        children = tuple(frozenset(int(r) for r in rank[parent == u]) for u in chain)
        steps.append(LoggedStep(tuple(int(rank_of[n]) for n in chain[1:]), children))
    return steps


def acceptance_from_logs(steps: list[LoggedStep], k: int = MAX_RANKS) -> list[float]:
    """The Kaplan–Meier acceptance vector p_1..p_k (see the module docstring), trailing zeros cut."""
    events, at_risk = rank_events(steps, k)
    hazard = np.divide(events, at_risk, out=np.zeros(k), where=at_risk > 0)
    survival = np.concatenate([[1.0], np.cumprod(1.0 - hazard)[:-1]])
    p = (hazard * survival).tolist()
    while len(p) > 1 and p[-1] == 0.0:
        p.pop()
    return p


def rank_events(steps: list[LoggedStep], k: int = MAX_RANKS) -> tuple[np.ndarray, np.ndarray]:
    """(accepted at rank r, at risk at rank r) for r < k: the counts the acceptance vector rests on."""
    at_risk, events = np.zeros(k), np.zeros(k)
    for step in steps:
        for i, ranks in enumerate(step.children):
            if not ranks:
                continue  # a leaf: nothing was drafted below it
            if i < len(step.ranks):  # its rank-ρ child was accepted
                rho = step.ranks[i]
                at_risk[: min(rho + 1, k)] += 1
                if rho < k:
                    events[rho] += 1
            else:  # none of its children was: censored at the first rank missing from 0, 1, ...
                c = next(r for r in range(len(ranks) + 1) if r not in ranks)
                at_risk[: min(c, k)] += 1
    return events, at_risk


@dataclass(frozen=True)
class Replay:
    mal: float  # mean accepted tokens per step through the tree, the bonus token included
    steps: int
    censored: int  # steps whose replayed A is a lower bound (the tree offered children the log never drafted)


def replay(steps: list[LoggedStep], paths: list[RankPath]) -> Replay:
    """Each logged step through the static tree ``paths`` (see the module docstring)."""
    tree = set(paths)
    below: dict[RankPath, set[int]] = {}
    for path in tree:
        below.setdefault(path[:-1], set()).add(path[-1])
    total, censored = 0, 0
    for step in steps:
        depth = 0
        while depth < len(step.ranks) and step.ranks[: depth + 1] in tree:
            depth += 1
        total += depth + 1
        if depth == len(step.ranks) and not below.get(step.ranks, set()) <= step.children[-1]:
            censored += 1
    return Replay(total / len(steps) if steps else 0.0, len(steps), censored)


def vllm_tree_problem(choices) -> str | None:
    """Why vLLM would not draft the tree ``choices`` (a list of rank tuples) as given, or None.

    vLLM's rule, from its source: ``SpeculativeConfig.__post_init__`` (vllm/config/speculative.py) sorts the
    tuples by (length, tuple); ``EagleProposer.__init__`` (vllm/v1/spec_decode/eagle.py) counts the nodes
    per level and gives every node of level d the same number of children, n_d // n_{d-1};
    ``propose_tree`` drafts each level as that many top-k children of every node of the level above, in
    order. So the sorted level d must be exactly (parent + (i,)) for each level-(d-1) parent and i below
    that count, and ``num_speculative_tokens`` must be the number of tuples (the proposer returns them all).
    """
    if not isinstance(choices, (list, tuple)) or not choices:
        return "the tree must be a non-empty list of tuples"
    if not all(isinstance(c, tuple) and c and all(isinstance(r, int) and r >= 0 for r in c) for c in choices):
        return "every node must be a non-empty tuple of ranks >= 0"
    ordered = sorted(choices, key=lambda t: (len(t), t))
    if len(set(ordered)) != len(ordered):
        return "a node is listed twice"
    levels: list[list[tuple]] = [[()]]
    for depth in range(1, len(ordered[-1]) + 1):
        level = [c for c in ordered if len(c) == depth]
        if not level or len(level) % len(levels[-1]):
            return f"level {depth} has {len(level)} nodes, not a multiple of level {depth - 1}'s {len(levels[-1])}"
        width = len(level) // len(levels[-1])
        if level != [parent + (i,) for parent in levels[-1] for i in range(width)]:
            return f"level {depth} does not give every node the ranks 0..{width - 1} as children"
        levels.append(level)
    return None


def vllm_config(paths: list[RankPath]) -> dict:
    """The ``speculative_config`` entries for a static tree (``speculative_token_tree`` is a string vLLM parses
    with ``ast.literal_eval``)."""
    tree = str(sorted(paths, key=lambda t: (len(t), t)))
    problem = vllm_tree_problem(ast.literal_eval(tree))
    if problem is not None:
        raise OptTreeError(f"internal: the tree for vLLM breaks its rule: {problem}")
    return {"speculative_token_tree": tree, "num_speculative_tokens": len(paths)}


class _PositionalDrafter:
    """A drafter whose q below every node is the acceptance vector (token id = rank): under Sequoia's
    positional model, the tree a dynamic policy grows with it is the tree it grows on average."""

    name = "positional"

    def __init__(self, acceptance: list[float], width: int):
        q = torch.zeros(max(width, len(acceptance)))
        q[: len(acceptance)] = torch.tensor(acceptance)
        self.q, self.vocab_size = q, q.numel()

    def root_probs(self) -> torch.Tensor:
        return self.q

    def expand(self, layer) -> torch.Tensor:
        return self.q.expand(layer.size, -1)


def sglang_tree(acceptance: list[float], steps: int, topk: int, draft_tokens: int) -> list[RankPath]:
    """The tree SGLang's EAGLE worker verifies for (--speculative-num-steps, --speculative-eagle-topk,
    --speculative-num-draft-tokens) under the positional model: ``steps`` layers, the first the root's top
    ``topk``, each later one the ``topk`` children of the layer's ``topk`` best nodes (``select_top_k_tokens``
    in sglang/srt/speculative/eagle_utils.py), then the best ``draft_tokens − 1`` by p̂ (``organize_draft_results``:
    ``torch.topk(score_list, num_draft_token - 1)``; the root is the one verified token it counts).
    That is our EAGLE-2 rule with depth = steps, top_k = topk, total_tokens = draft_tokens − 1."""
    policy = Eagle2Policy(Eagle2Config(depth=steps, top_k=topk, total_tokens=draft_tokens - 1))
    tree = policy.build(_PositionalDrafter(acceptance, topk), 0, steps, "cpu")
    parents, ranks = tree.parents.tolist(), tree.rank.tolist()
    paths: list[RankPath] = [()] * tree.n_nodes
    for i in range(1, tree.n_nodes):
        paths[i] = paths[parents[i]] + (ranks[i],)
    return sorted(paths[1:], key=lambda t: (len(t), t))


def _candidate_values(acceptance: list[float], steps: int, topk: int) -> np.ndarray:
    """p̂ of every candidate SGLang's tree for (steps, topk) picks from, best first: its tree for
    num_draft_tokens N is the first N − 1 of them, so its F(T) is a prefix sum."""
    cap = topk + (steps - 1) * topk * topk
    policy = Eagle2Policy(Eagle2Config(depth=steps, top_k=topk, total_tokens=cap))
    tree = policy.build(_PositionalDrafter(acceptance, topk), 0, steps, "cpu")
    return np.sort(tree.p_hat[1:].numpy().astype(np.float64))[::-1]


def best_sglang_flags(acceptance: list[float], nodes: int, max_depth: int, max_topk: int = 10) -> dict:
    """The (steps, topk, draft_tokens) with the largest expected acceptance within ``nodes`` drafted tokens and
    ``max_depth`` steps (ties: fewer draft tokens, then fewer steps); with topk 1 SGLang sets draft_tokens to
    steps + 1 (``ServerArgs``' speculative checks in sglang/srt/server_args.py)."""
    best = None
    for steps in range(1, max_depth + 1):
        for topk in range(1, max_topk + 1):
            sums = np.cumsum(_candidate_values(acceptance, steps, topk))  # F for 1, 2, ... drafted nodes
            counts = [steps] if topk == 1 else range(1, min(nodes, len(sums)) + 1)
            for drafted in counts:
                if drafted > nodes:
                    continue
                key = (round(float(sums[drafted - 1]), 9), -drafted, -steps)
                if best is None or key > best[0]:
                    best = (key, (steps, topk, drafted + 1))
    steps, topk, draft_tokens = best[1]
    paths = sglang_tree(acceptance, steps, topk, draft_tokens)
    return {"steps": steps, "topk": topk, "draft_tokens": draft_tokens, "paths": paths,
            "expected_mal": 1.0 + expected_accepted(acceptance, paths)}
