"""A level-wise beam by cumulative log-probability (beam search over the draft, kept as a tree)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..checks import check_int
from .base import GrowthPolicy
from .kary import CappedWidthRule


@dataclass(frozen=True)
class CumLogProbConfig:
    """Level-wise beam by cumulative log-probability. max_nodes_per_level: nodes kept per level
    (and candidates each node proposes). max_total_nodes: drafted nodes in all. ``for_budget(n)``:
    max_total_nodes = n, max_nodes_per_level = ceil(√n) (a tree about as deep as it is wide)."""

    max_nodes_per_level: int = 4
    max_total_nodes: int = 16

    @classmethod
    def for_budget(cls, nodes: int) -> CumLogProbConfig:
        check_int(nodes, "node budget")
        return cls(max_nodes_per_level=math.isqrt(nodes - 1) + 1, max_total_nodes=nodes)

    def __post_init__(self):
        check_int(self.max_nodes_per_level, "cum-logprob max_nodes_per_level")
        check_int(self.max_total_nodes, "cum-logprob max_total_nodes")


class CumLogProbPolicy(GrowthPolicy):
    """Every node of the current level proposes its candidates, each scored by Σ log q along its
    path (the same order as p̂); the best ``max_nodes_per_level`` form the next level, until
    ``max_total_nodes`` are drafted (the last level is cut to fit): ``CappedWidthRule`` with
    per_node = width. Parameters: max_nodes_per_level, max_total_nodes (``CumLogProbConfig``)."""

    name, config_class, rule_class = "cum-logprob", CumLogProbConfig, CappedWidthRule
    depth_field = max_nodes_field = "max_total_nodes"  # every level adds at least one node

    def rule(self) -> CappedWidthRule:
        width = self.config.max_nodes_per_level
        return CappedWidthRule(width, width, self.config.max_total_nodes)
