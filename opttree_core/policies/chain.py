"""The chain: classic speculative decoding's linear draft, as a growth rule."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_int
from ..grow import GrowthRule, TreeBuilder
from .base import GrowthPolicy


@dataclass(frozen=True)
class ChainConfig:
    """A chain of ``length`` tokens: the draft's greedy continuation (classic speculative decoding)."""

    length: int = 4

    @classmethod
    def for_budget(cls, nodes: int) -> ChainConfig:
        return cls(length=nodes)

    def __post_init__(self):
        check_int(self.length, "chain length")


class ChainRule(GrowthRule):
    """Each layer is the previous node's top-1 candidate."""

    def add_layer(self, tree: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return tree.add_best(frontier, probs, per_node=1, budget=1)

    def capacity(self, max_depth: int) -> int:
        return 1 + max_depth


class ChainPolicy(GrowthPolicy):
    """Linear draft of ``length`` tokens, each the draft's top-1 below the previous one."""

    name, config_class, rule_class = "chain", ChainConfig, ChainRule
    depth_field = max_nodes_field = "length"

    def rule(self) -> ChainRule:
        return ChainRule()
