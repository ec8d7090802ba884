"""DynaTree ("Confidence-Aware Adaptive Tree Speculative Decoding", cny123222/DynaTree): the paper's
Algorithm DraftTree and its code, ``spec_decode/core/tree_speculative_generator_adaptive.py``."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from ..checks import check_int, check_prob
from ..errors import OptTreeError
from ..grow import GrowthRule, TreeBuilder
from ..syncs import DYNATREE_READ, host_read, to_device
from .base import GrowthPolicy


@dataclass(frozen=True)
class DynaTreeConfig:
    """DynaTree's adaptive tree (defaults: its code's, ``tree_speculative_generator_adaptive.py``).

    nodes: node budget (drafted nodes; a layer that would exceed it keeps its best by p̂).
    high_conf, low_conf: breadth by the draft's top-1 probability at a node: > high_conf → 1 child,
        < low_conf → 3 children, otherwise 2.
    tau: τ pruning: a node with p̂ < τ is kept but not expanded (the code's ``probability_threshold``).
    early_stop: a node with p̂ < early_stop is kept but not expanded.
    base_depth: nodes shallower than this are expanded; deeper ones only while p̂ > deep_threshold.
    max_depth: the deepest layer a confident branch may reach.
    deep_threshold: the cumulative probability a node needs to extend past ``base_depth``.
    history_window, min_history: the acceptance rates of the last ``history_window`` steps are kept;
        the adjustment starts once there are ``min_history`` of them.
    target_rate: the acceptance rate (accepted drafted tokens / tree depth) aimed at: above
        target_rate + 0.1 → base_depth + 1, high_conf and deep_threshold − adjust_step; below
        target_rate − 0.1 → the opposite.
    adjust_step: how far high_conf and deep_threshold move per adjustment.
    ``for_budget(n)``: nodes = n, the rest at DynaTree's defaults.
    """

    nodes: int = 64
    high_conf: float = 0.8
    low_conf: float = 0.3
    tau: float = 0.05
    early_stop: float = 0.1
    base_depth: int = 4
    max_depth: int = 8
    deep_threshold: float = 0.5
    history_window: int = 10
    min_history: int = 5
    target_rate: float = 0.7
    adjust_step: float = 0.05

    @classmethod
    def for_budget(cls, nodes: int) -> DynaTreeConfig:
        check_int(nodes, "node budget")
        return cls(nodes=nodes)

    def __post_init__(self):
        for name in ("nodes", "base_depth", "max_depth", "history_window", "min_history"):
            check_int(getattr(self, name), f"DynaTree {name}")
        for name in ("high_conf", "low_conf", "tau", "early_stop", "deep_threshold", "target_rate", "adjust_step"):
            check_prob(getattr(self, name), f"DynaTree {name}")
        if self.low_conf > self.high_conf:
            raise OptTreeError(f"DynaTree low_conf {self.low_conf} must not exceed high_conf {self.high_conf}")
        if self.base_depth > self.max_depth:
            raise OptTreeError(f"DynaTree base_depth {self.base_depth} must not exceed max_depth {self.max_depth}")
        if self.min_history > self.history_window:
            raise OptTreeError(f"DynaTree min_history {self.min_history} exceeds history_window {self.history_window}")


class DynaTreeRule(GrowthRule):
    """One DynaTree tree. Layer 1 is the draft's top-1 token alone (the paper: "let u0 be the top-1
    token; initialize T with root u0"; the code computes a breadth at the root but adds only the
    top-1). Below it, every expanded node gets 1/2/3 children by its top-1 probability; a node is
    expanded only when p̂ ≥ early_stop and p̂ ≥ τ, and past ``base_depth`` only when p̂ >
    deep_threshold; nodes failing a test are kept, not expanded (the code's ``continue``)."""

    host_reads = (DYNATREE_READ,)  # and once per step in ``DynaTreePolicy.observe``

    def __init__(self, policy: DynaTreePolicy):
        self.policy, self.drafted = policy, 0

    def add_layer(self, tree: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        first = len(tree.layers) == 1
        if first:
            layer = self._add(tree, frontier, probs, [1])
        else:
            with host_read(DYNATREE_READ, tree.device):  # the breadths decide the layer's shape
                breadths = self.policy.breadth(probs).tolist()  # (n_frontier,)
            layer = self._add(tree, frontier, probs, breadths)
        layer = tree.best(layer, self.policy.config.nodes - self.drafted)
        self.drafted += len(layer)
        self.kept = layer if first else torch.cat([self.kept, layer])
        return layer

    @staticmethod
    def _add(tree: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor, breadths: list[int]) -> torch.Tensor:
        """Each frontier node's first ``breadths[i]`` candidates (host-known, so top-k children need
        no ``nonzero``; sampled draws may be missing and go through ``add_ranks``)."""
        k = min(max(breadths), probs.shape[1])
        if tree.children is not None:
            ranks = torch.arange(k, device=tree.device)
            return tree.add_ranks(frontier, probs, ranks[None] < to_device(breadths, tree.device)[:, None])
        rows = [i for i, b in enumerate(breadths) for _ in range(min(b, k))]
        cols = [r for b in breadths for r in range(min(b, k))]
        return tree.add_at(frontier, probs, to_device(rows, tree.device), to_device(cols, tree.device), k)

    def frontier(self, tree: TreeBuilder, layer: torch.Tensor) -> torch.Tensor:
        if self.drafted >= self.policy.config.nodes:
            return layer[:0]
        expand = self.policy.expandable(tree, layer) & tree.open(layer)  # (n_layer,) bool
        with host_read(DYNATREE_READ, tree.device):
            count = int(expand.sum())
        return tree.compact(layer, expand, count)

    def capacity(self, max_depth: int) -> int:
        return 2 + 3 * self.policy.config.nodes  # each kept node expands once, into at most 3 candidates

    def keep(self, tree: TreeBuilder) -> torch.Tensor:
        return self.kept


class DynaTreePolicy(GrowthPolicy):
    """DynaTree. Followed: (1) one depth-1 node, the draft's top-1; breadth 1/2/3 by the draft's
    top-1 probability against high_conf / low_conf (the paper's B_min/B_mid/B_max = 1/2/3; its
    code's default widest breadth is 4); (2) depth: expand to base_depth, beyond it only while
    p̂ > deep_threshold, up to max_depth, never expanding (but keeping) a node with p̂ <
    early_stop or p̂ < τ; (3) a node budget; (4) the history adjustment of base_depth, high_conf
    and deep_threshold from the mean acceptance rate of a window.
    Ours: the adjustment runs per step through ``observe`` (DynaTree: after each generation)
    with rate = (A − 1) / tree depth, and ``reset`` clears it (DynaTree keeps history across
    prompts); bounds are base_depth ∈ [1, max_depth], high_conf ∈ [low_conf, 1],
    deep_threshold ∈ [0, 1] (DynaTree: [2, max_depth − 1], [0.5, 0.95], [0.3, 0.8]); a layer over
    the budget keeps its best by p̂ (DynaTree: the first in order). Not followed: DynaTree's
    positions by flattened index and shared sibling cache (docs/architecture.md, "Traps"); the
    engine's drafters and verifier do neither. Parameters: ``DynaTreeConfig``."""

    name, config_class, rule_class = "dynatree", DynaTreeConfig, DynaTreeRule

    def rule(self) -> DynaTreeRule:
        return DynaTreeRule(self)

    def reset(self) -> None:
        """Forget the history: back to the configured depth and thresholds."""
        c = self.config
        self.base_depth, self.high_conf, self.deep_threshold = c.base_depth, c.high_conf, c.deep_threshold
        self.rates: deque[float] = deque(maxlen=c.history_window)

    def observe(self, record) -> None:
        with host_read(DYNATREE_READ, record.tree.device):
            depth = record.tree.max_depth
        if depth == 0:
            return
        c = self.config
        self.rates.append((record.a - 1) / depth)
        if len(self.rates) < c.min_history:
            return
        rate = sum(self.rates) / len(self.rates)
        sign = 1 if rate > c.target_rate + 0.1 else -1 if rate < c.target_rate - 0.1 else 0
        self.base_depth = min(max(self.base_depth + sign, 1), c.max_depth)
        self.high_conf = min(max(self.high_conf - sign * c.adjust_step, c.low_conf), 1.0)
        self.deep_threshold = min(max(self.deep_threshold - sign * c.adjust_step, 0.0), 1.0)

    def breadth(self, probs: torch.Tensor) -> torch.Tensor:
        """(n,) children per node from its draft distribution ``probs`` (n, V): 1, 2 or 3."""
        top1 = probs.max(dim=1).values  # (n,)
        return torch.where(top1 > self.high_conf, 1, torch.where(top1 < self.config.low_conf, 3, 2))

    def expandable(self, tree: TreeBuilder, nodes: torch.Tensor) -> torch.Tensor:
        """(n,) bool: which ``nodes`` get children (the growth loop stops at the depth cap itself)."""
        p_hat, d = tree.p_hat[nodes], tree.depth[nodes]
        confident = (d < self.base_depth) | (p_hat > self.deep_threshold)
        return (p_hat >= self.config.early_stop) & (p_hat >= self.config.tau) & confident
