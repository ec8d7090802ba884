"""Static trees given as rank paths, and EAGLE-1's tree: one rule for every policy whose tree is
a fixed list of rank paths (EAGLE-static here, Sequoia's DP-optimal tree in ``sequoia.py``).

A rank path is the tuple of a node's 0-based candidate ranks from the root, e.g. (0, 1) = the
top-1 child's second child (EAGLE's choice-list notation). With sampled children, rank r is
the r-th draw.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..checks import check_int
from ..grow import GrowthRule, TreeBuilder
from ..syncs import to_device
from .base import GrowthPolicy

RankPath = tuple[int, ...]

# EAGLE's own ``mc_sim_7b_63`` (SafeAILab/EAGLE, eagle/model/choices.py): 25 rank paths in
# breadth-first order. Not Medusa's 63-node list of the same name (docs/architecture.md, "Traps").
EAGLE_TREE: tuple[RankPath, ...] = (
    (0,), (1,), (2,), (3,),
    (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0),
    (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 0, 0),
    (0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2),
    (0, 0, 0, 0, 0), (0, 0, 0, 0, 1),
)


def _needs(paths: Iterable[RankPath]) -> dict[RankPath, int]:
    """Rank path → 1 + its largest listed child rank (the nodes that have children)."""
    needs: dict[RankPath, int] = {}
    for path in paths:
        needs[path[:-1]] = max(needs.get(path[:-1], 0), path[-1] + 1)
    return needs


PlanLayer = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]  # frontier, rows, cols (device), k


@lru_cache(maxsize=64)
def static_plan(paths: tuple[RankPath, ...], width: int | None, vocab: int, device: str) -> tuple[PlanLayer, ...]:
    """The whole shape of a rank-path tree with top-k children, worked out once on the host: per
    layer, the builder indices of the nodes expanded, which of their top-k candidates join
    (``TreeBuilder.add_at``'s rows and cols) and k. With top-k children every listed node is
    drafted (a rank past the vocabulary excepted), so node indices are known before drafting and
    a step builds the tree without one host read or per-node Python loop. Cached per device."""
    listed, needs = set(paths), _needs(paths)
    layers, level, size = [], [(0, ())], 1  # level: (builder index, rank path) of the newest layer
    while expanding := [(i, p) for i, p in level if p in needs]:
        k = min(width or max(needs[p] for _, p in expanding), vocab)
        rows, cols, level = [], [], []
        for row, (_, path) in enumerate(expanding):
            for rank in range(k):
                if path + (rank,) in listed:
                    level.append((size + len(level), path + (rank,)))
                    rows.append(row)
                    cols.append(rank)
        size += len(level)
        dev = torch.device(device)
        layers.append((to_device([i for i, _ in expanding], dev), to_device(rows, dev), to_device(cols, dev), k))
    return tuple(layers)


class RankPathRule(GrowthRule):
    """Layer by layer, every node with listed children gets exactly the listed ranks of its
    candidates; a listed node whose parent could not be drafted (fewer draws than ranks) is
    skipped with its subtree. ``width``: candidates each node is offered (None: per layer, the
    most any frontier node needs). With top-k children the tree follows ``static_plan``; with
    sampled children (draws may be missing) it is worked out layer by layer on the host."""

    def __init__(self, paths: Iterable[RankPath], width: int | None = None):
        self.paths = tuple(paths)
        self.listed, self.needs = set(self.paths), _needs(self.paths)
        self.width, self.path_of = width, {0: ()}  # builder node → its rank path (sampled children)
        self.plan: tuple[PlanLayer, ...] | None = None

    @property
    def depth(self) -> int:
        return max(map(len, self.listed), default=0)

    def capacity(self, max_depth: int) -> int:
        return 1 + len(self.listed)

    def add_layer(self, tree: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if tree.children is None:
            if self.plan is None:
                self.plan = static_plan(self.paths, self.width, probs.shape[1], str(tree.device))
            _, rows, cols, k = self.plan[len(tree.layers) - 1]
            return tree.add_at(frontier, probs, rows, cols, k)
        paths = [self.path_of[f] for f in frontier.tolist()]
        width = self.width or max(self.needs[p] for p in paths)
        keep = torch.tensor([[p + (r,) in self.listed for r in range(width)] for p in paths], dtype=torch.bool,
                            device=tree.device)  # (n_frontier, width)
        layer = tree.add_ranks(frontier, probs, keep)
        for node, parent, rank in zip(layer.tolist(), tree.parents[layer].tolist(), tree.rank[layer].tolist()):
            self.path_of[node] = self.path_of[parent] + (rank,)
        return layer

    def frontier(self, tree: TreeBuilder, layer: torch.Tensor) -> torch.Tensor:
        if self.plan is not None:
            depth = len(tree.layers) - 1
            return self.plan[depth][0] if depth < len(self.plan) else layer[:0]
        expand = [self.path_of[n] in self.needs for n in layer.tolist()]
        return layer[torch.tensor(expand, dtype=torch.bool, device=tree.device)]


@dataclass(frozen=True)
class EagleStaticConfig:
    """EAGLE-1's static tree. nodes: how many entries of the 25-entry list to use, in list order
    (every prefix of the list is closed under parents). ``for_budget(n)``: the first min(n, 25)
    entries — the tree has 25 nodes, so budgets above 25 still draft 25."""

    nodes: int = len(EAGLE_TREE)

    @classmethod
    def for_budget(cls, nodes: int) -> EagleStaticConfig:
        check_int(nodes, "node budget")
        return cls(nodes=min(nodes, len(EAGLE_TREE)))

    def __post_init__(self):
        check_int(self.nodes, f"nodes (EAGLE's static tree has {len(EAGLE_TREE)})", 1, len(EAGLE_TREE))

    @property
    def choices(self) -> tuple[RankPath, ...]:
        return EAGLE_TREE[: self.nodes]

    @property
    def depth(self) -> int:
        return max(map(len, self.choices))


class EagleStaticPolicy(GrowthPolicy):
    """EAGLE-1 (arXiv 2401.15077): the fixed tree ``EAGLE_TREE`` through ``RankPathRule``; entries
    deeper than the step's depth cap are dropped. Parameter: nodes (``EagleStaticConfig``)."""

    name, config_class, rule_class = "eagle-static", EagleStaticConfig, RankPathRule
    depth_field = "depth"

    def rule(self) -> RankPathRule:
        # Every node is offered as many candidates as the widest node of the list (4 for the full
        # tree; with sampled children every node makes that many draws, all walked by verification).
        return RankPathRule(self.config.choices, width=1 + max(path[-1] for path in self.config.choices))
