"""Full k-ary and binary trees: the fixed-tree baselines (SpecInfer-style; DynaTree's "fixed tree"
with branch factor B and depth D)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_int
from ..grow import GrowthRule, TreeBuilder
from .base import GrowthPolicy


def full_tree_size(k: int, depth: int) -> int:
    """Drafted nodes of the full k-ary tree of ``depth`` layers: k + k² + … + k^depth."""
    return sum(k ** d for d in range(1, depth + 1))


def capped_size(k: int, depth: int, nodes: int | None) -> int:
    """Drafted nodes of the full k-ary tree of ``depth`` layers, at most ``nodes`` (None: no cap)."""
    full = full_tree_size(k, depth)
    return full if nodes is None else min(full, nodes)


def _kary_for_budget(k: int, nodes: int) -> tuple[int, int]:
    """(depth, nodes): the largest full tree of size ≤ ``nodes``, plus one partial layer if needed."""
    check_int(nodes, "node budget")
    depth = 0
    while full_tree_size(k, depth + 1) <= nodes:
        depth += 1
    return (depth if full_tree_size(k, depth) == nodes else depth + 1), nodes


@dataclass(frozen=True)
class KAryConfig:
    """A full k-ary tree: every node's first ``k`` candidates, ``depth`` layers.

    k: children per node. depth: layers. nodes: cap on drafted nodes (None: the full
    k + … + k^depth); the layer where the cap is hit keeps its best candidates by p̂.
    ``for_budget(n)``: the deepest full tree of size ≤ n, plus one partial layer of the
    remaining nodes chosen by p̂, so exactly n nodes are drafted (default k = 3).
    """

    k: int = 3
    depth: int = 3
    nodes: int | None = None

    @classmethod
    def for_budget(cls, nodes: int) -> KAryConfig:
        k = cls.__dataclass_fields__["k"].default
        depth, nodes = _kary_for_budget(k, nodes)
        return cls(k=k, depth=depth, nodes=nodes)

    def __post_init__(self):
        check_int(self.k, "k-ary tree: k (children per node)")
        check_int(self.depth, "k-ary tree: depth")
        if self.nodes is not None:
            check_int(self.nodes, "k-ary tree: nodes (the node cap)")

    @property
    def max_nodes(self) -> int:
        return capped_size(self.k, self.depth, self.nodes)


@dataclass(frozen=True)
class BinaryTreeConfig:
    """A full binary tree (k = 2) of ``depth`` layers, ``nodes`` as in ``KAryConfig``.
    ``for_budget(n)``: the deepest full binary tree of size ≤ n, plus a partial layer by p̂."""

    depth: int = 4
    nodes: int | None = None

    @property
    def k(self) -> int:
        return 2

    @classmethod
    def for_budget(cls, nodes: int) -> BinaryTreeConfig:
        depth, nodes = _kary_for_budget(2, nodes)
        return cls(depth=depth, nodes=nodes)

    def __post_init__(self):
        check_int(self.depth, "binary tree: depth")
        if self.nodes is not None:
            check_int(self.nodes, "binary tree: nodes (the node cap)")

    @property
    def max_nodes(self) -> int:
        return capped_size(self.k, self.depth, self.nodes)


class CappedWidthRule(GrowthRule):
    """Every frontier node proposes ``per_node`` candidates; at most ``width`` of them (all, when
    None) join each layer, best by p̂, until ``cap`` nodes are drafted. The k-ary tree
    (per_node = k, no width) and the cumulative-log-prob beam (per_node = width) share it."""

    def __init__(self, per_node: int, width: int | None, cap: int):
        self.per_node, self.width, self.cap, self.drafted = per_node, width, cap, 0

    def add_layer(self, tree: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        offered = self.per_node * len(frontier) if self.width is None else self.width
        layer = tree.add_best(frontier, probs, per_node=self.per_node, budget=min(self.cap - self.drafted, offered))
        self.drafted += len(layer)
        return layer

    def frontier(self, tree: TreeBuilder, layer: torch.Tensor) -> torch.Tensor:
        return layer if self.drafted < self.cap else layer[:0]

    def capacity(self, max_depth: int) -> int:
        return 1 + self.cap


class KAryPolicy(GrowthPolicy):
    """Full k-ary tree. Parameters: k, depth, nodes (``KAryConfig``)."""

    name, config_class, rule_class = "k-ary", KAryConfig, CappedWidthRule
    depth_field, max_nodes_field = "depth", "max_nodes"

    def rule(self) -> CappedWidthRule:
        return CappedWidthRule(self.config.k, None, self.max_nodes)


class BinaryTreePolicy(KAryPolicy):
    """Full binary tree: ``KAryPolicy`` with k = 2. Parameters: depth, nodes (``BinaryTreeConfig``)."""

    name, config_class = "binary", BinaryTreeConfig
