"""EAGLE-2's dynamic tree (arXiv 2406.16858; ``topK_genrate`` in SafeAILab/EAGLE's
``eagle/model/cnets.py``): expand the top-k nodes of each layer, then rerank globally.

Parameters and EAGLE's: our ``depth D, top_k k, total_tokens N`` is EAGLE's ``depth D − 1,
top_k k, total_token N + 1`` (EAGLE counts the first layer apart and the root in
``total_token``). EAGLE's release default (``eagle/evaluation/gen_ea_answer_*.py``: total_token
60, depth 5, top_k 10) drafts 59 nodes in 6 layers, which is ``Eagle2Config()``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_int
from ..grow import GrowthRule, TreeBuilder
from .base import GrowthPolicy


@dataclass(frozen=True)
class Eagle2Config:
    """EAGLE-2's dynamic tree. depth: drafted layers (the paper's "depth 6"; EAGLE's code counts
    the first layer apart, its ``depth=5``). top_k: nodes expanded per layer and candidates per
    node. total_tokens: nodes kept after the global rerank (EAGLE's ``total_token`` counts the
    root too). ``for_budget(n)``: total_tokens = n with depth = min(6, n) and top_k = min(10, n):
    the same tree as depth 6, top_k 10 (a node in the top n has fewer than n nodes above it, in
    its layer and among its siblings), less work."""

    depth: int = 6
    top_k: int = 10
    total_tokens: int = 59  # EAGLE's release: --total-token 60 --depth 5 --top-k 10

    @classmethod
    def for_budget(cls, nodes: int) -> Eagle2Config:
        check_int(nodes, "node budget")
        return cls(depth=min(6, nodes), top_k=min(10, nodes), total_tokens=nodes)

    def __post_init__(self):
        check_int(self.depth, "EAGLE-2 depth")
        check_int(self.top_k, "EAGLE-2 top_k")
        check_int(self.total_tokens, "EAGLE-2 total_tokens")

    @property
    def max_nodes(self) -> int:
        return min(self.total_tokens, self.top_k + (self.depth - 1) * self.top_k ** 2)


class Eagle2Rule(GrowthRule):
    """The root's top_k children form layer 1; at each further depth the top_k nodes of the last
    layer by p̂ each propose top_k children, all kept as candidates (as EAGLE's code does); after
    the last layer the top ``total`` candidates by p̂ are kept (connected: a child never outranks
    its parent, ties go to the shallower node)."""

    def __init__(self, top_k: int, total: int):
        self.top_k, self.total = top_k, total

    def add_layer(self, tree: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return tree.add_best(frontier, probs, per_node=self.top_k, budget=self.top_k * len(frontier))

    def frontier(self, tree: TreeBuilder, layer: torch.Tensor) -> torch.Tensor:
        return tree.best(layer, self.top_k)

    def capacity(self, max_depth: int) -> int:
        return 1 + self.top_k + (max_depth - 1) * self.top_k ** 2  # top_k expanded nodes × top_k candidates a layer

    def keep(self, tree: TreeBuilder) -> torch.Tensor:
        return tree.ranking()[: self.total]


class Eagle2Policy(GrowthPolicy):
    """EAGLE-2. Parameters: depth, top_k, total_tokens (``Eagle2Config``)."""

    name, config_class, rule_class = "eagle2", Eagle2Config, Eagle2Rule
    depth_field, max_nodes_field = "depth", "max_nodes"

    def rule(self) -> Eagle2Rule:
        return Eagle2Rule(self.config.top_k, self.config.total_tokens)
