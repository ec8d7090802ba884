"""OPT-Tree (arXiv 2406.17276, Algorithm 1): the tree that maximises E(A) = Σ p̂ under a node
budget n, grown adaptively; and ``trace_opt_tree``, the same growth with a record per layer.

Depth convention: ``max_depth`` counts drafted layers, as the paper defines it. The authors'
code keeps at most ``max_depth − 1`` layers and drafts one more that it throws away, so their
``--max_depth M`` is our ``max_depth M − 1`` (README, "Tree policies").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_int, check_prob
from ..grow import ChildSampling, GrowthRule, TreeBuilder, grow
from ..syncs import OPT_TREE_READ, host_read
from ..tree import DraftTree
from .base import GrowthPolicy


@dataclass(frozen=True)
class OptTreeConfig:
    """OPT-Tree (arXiv 2406.17276, Algorithm 1).

    nodes: the node budget n (drafted nodes, root excluded).
    threshold: δ; stop growing when a new layer raises E_sub(T, n) by at most δ.
    max_depth: the most layers drafted.
    """

    nodes: int = 50
    threshold: float = 0.5
    max_depth: int = 10

    @classmethod
    def for_budget(cls, nodes: int) -> OptTreeConfig:
        return cls(nodes=nodes)

    def __post_init__(self):
        check_int(self.nodes, "node budget n")
        check_prob(self.threshold, "threshold delta")
        check_int(self.max_depth, "max depth")


class OptTreeRule(GrowthRule):
    """Per layer every frontier node proposes its top-n tokens and the n candidates of largest p̂
    join. After each layer, E_sub(T, n) = the sum of the n largest p̂ in T; growth stops when
    its gain is ≤ δ (``keep_growing``). The tree is the global top-n (ties to the shallower node,
    so it is connected).

    Only layer nodes inside the current top-n are expanded: a child's p̂ never exceeds its
    parent's, so children of the others can't reach the final top-n (this saves draft compute
    and changes no output, up to exact ties in p̂)."""

    host_reads = (OPT_TREE_READ,)

    def __init__(self, n: int, threshold: float):
        self.n, self.threshold, self.best = n, threshold, 0.0

    def add_layer(self, tree: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return tree.add_best(frontier, probs, per_node=self.n, budget=self.n)

    def capacity(self, max_depth: int) -> int:
        return 1 + self.n * max_depth  # every layer adds at most n nodes

    def frontier(self, tree: TreeBuilder, layer: torch.Tensor) -> torch.Tensor:
        top = tree.ranking()[: self.n]  # (≤ n,)
        in_top = torch.isin(layer, top, assume_unique=True)  # (n_layer,) inside the current top-n; unique: no sync
        in_top &= tree.open(layer)  # a stop token gets no children
        with host_read(OPT_TREE_READ, tree.device):  # whether to draft on is decided on the host, once a layer
            e_sub, count = torch.stack([tree.p_hat[top].sum(), in_top.sum().to(torch.float32)]).tolist()
        frontier = tree.compact(layer, in_top, int(count))  # (n_frontier,)
        return frontier if self.keep_growing(tree, frontier, e_sub) else frontier[:0]

    def keep_growing(self, tree: TreeBuilder, frontier: torch.Tensor, e_sub: float) -> bool:
        """The δ rule: grow on while the layer raised E_sub(T, n) (``e_sub``) by more than δ."""
        gain, self.best = e_sub - self.best, e_sub
        return gain > self.threshold

    def keep(self, tree: TreeBuilder) -> torch.Tensor:
        return tree.ranking()[: self.n]


class OptTreePolicy(GrowthPolicy):
    """OPT-Tree: ``OptTreeRule`` with n = ``nodes``, δ = ``threshold``, up to ``max_depth`` layers."""

    name, config_class, rule_class = "opt-tree", OptTreeConfig, OptTreeRule

    def rule(self) -> OptTreeRule:
        return OptTreeRule(self.config.nodes, self.config.threshold)


@dataclass(frozen=True)
class LayerState:
    """The tree after one layer of OPT-Tree's growth.

    ``tree``: every node grown so far (node i of the tree is node i of the growth);
    ``top``: the n nodes of largest p̂ (the current best tree); ``e_sub`` = Σ p̂ over them;
    ``gain``: its increase over the previous layer; ``stop``: the δ rule (or the depth cap)
    ended the growth here."""

    depth: int
    tree: DraftTree
    layer: list[int]
    top: list[int]
    e_sub: float
    gain: float
    stop: bool


@dataclass(frozen=True)
class OptTreeTrace:
    layers: list[LayerState]
    final: DraftTree  # the global top-n of the last layer's tree: what OptTreePolicy.build returns


class _TracedRule(OptTreeRule):
    """``OptTreeRule`` that snapshots the tree after every layer."""

    def __init__(self, n: int, threshold: float):
        super().__init__(n, threshold)
        self.layers: list[LayerState] = []
        self.recorded = 0

    def frontier(self, tree: TreeBuilder, layer: torch.Tensor) -> torch.Tensor:
        before = self.best
        frontier = super().frontier(tree, layer)
        self.snapshot(tree, self.best - before, stop=frontier.numel() == 0)
        return frontier

    def snapshot(self, tree: TreeBuilder, gain: float, stop: bool) -> None:
        top = tree.ranking()[: self.n]
        self.layers.append(LayerState(len(tree.layers) - 1, tree.whole_tree(), tree.layers[-1].tolist(),
                                      sorted(top.tolist()), float(tree.p_hat[top].sum()), gain, stop))

    def keep(self, tree: TreeBuilder) -> torch.Tensor:
        if len(self.layers) < len(tree.layers) - 1:  # the depth cap ended it: no frontier call after the last layer
            e_sub = float(tree.top_n_sum(self.n))
            self.snapshot(tree, e_sub - self.best, stop=True)
        return super().keep(tree)


def trace_opt_tree(drafter, root_token: int, config: OptTreeConfig, device="cpu",
                   children: ChildSampling | None = None) -> OptTreeTrace:
    """OPT-Tree's construction with a record per layer (E_sub(T, n), its gain, where δ stops),
    grown by the same loop and rule as ``OptTreePolicy.build``, so ``final`` is exactly the tree
    it returns. The drafter must be ``start``-ed."""
    rule = _TracedRule(config.nodes, config.threshold)
    final = grow(drafter, root_token, rule, config.max_depth, device, children)
    return OptTreeTrace(rule.layers, final)
