"""Tree policies: how the draft tree is shaped at each step.

A policy asks the drafter for distributions layer by layer and returns a DraftTree.
Every policy honours ``depth_cap`` (the tokens still allowed, minus the bonus), so a
step never drafts past ``max_new_tokens``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .drafters import Drafter
from .errors import OptTreeError
from .tree import ChildSampling, DraftTree, TreeBuilder, expand_layer


@runtime_checkable
class TreePolicy(Protocol):
    """``build`` shapes one step's tree. ``children`` (None: the draft's top-k) is passed on to
    every ``TreeBuilder`` the policy makes, which then draws children by sampling instead.
    ``reset`` is called once before each prompt and ``observe`` after every verified step, so
    policies that adapt to the acceptance history (DynaTree) can; the others do nothing."""

    name: str

    @property
    def max_nodes(self) -> int:
        """Upper bound on drafted (non-root) nodes in one tree."""

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree: ...

    def reset(self) -> None: ...

    def observe(self, tree: DraftTree, accept_length: int) -> None: ...


@runtime_checkable
class HardwareAware(Protocol):
    """A policy that needs the target itself, not only the drafter (OPT-Tree auto measures their
    latencies): ``generate`` calls ``calibrate`` once per prompt, before its timed run."""

    def calibrate(self, target_model, drafter: Drafter) -> None: ...


class StatelessPolicy:
    """Base for policies that keep no history across steps."""

    def reset(self) -> None:
        pass

    def observe(self, tree: DraftTree, accept_length: int) -> None:
        pass


def _root_only(root_token: int, device) -> DraftTree:
    builder = TreeBuilder(root_token, capacity=1, max_depth=0, device=device)
    return builder.whole_tree()


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
        if not (isinstance(self.nodes, int) and self.nodes >= 1):
            raise OptTreeError(f"node budget n must be an integer >= 1, got {self.nodes!r}")
        if not (0.0 <= float(self.threshold) <= 1.0):
            raise OptTreeError(f"threshold delta must lie in [0, 1], got {self.threshold!r}")
        if not (isinstance(self.max_depth, int) and self.max_depth >= 1):
            raise OptTreeError(f"max depth must be an integer >= 1, got {self.max_depth!r}")


class OptTreePolicy(StatelessPolicy):
    """OPT-Tree: the tree that maximises E(A) = Σ p̂ under a node budget, grown adaptively.

    Per layer: every frontier node proposes its top-n tokens; the n candidates of largest
    p̂ form the next layer. After each layer, E_sub(T, n) = sum of the n largest p̂ in T;
    growth stops when its gain is <= δ or at ``max_depth``. The result is the global top-n
    nodes of T (ties go to the shallower node, so it is a connected tree).

    Only layer nodes inside the current top-n of T are fed to the drafter: a child's p̂
    never exceeds its parent's, so children of the others can't reach the final top-n.
    This changes no output (up to exact ties in p̂); it only saves draft compute.
    """

    def __init__(self, config: OptTreeConfig = OptTreeConfig()):
        self.config, self.name = config, "opt-tree"

    @property
    def max_nodes(self) -> int:
        return self.config.nodes

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        n, max_depth = self.config.nodes, min(self.config.max_depth, depth_cap)
        if max_depth < 1:
            return _root_only(root_token, device)
        builder = TreeBuilder(root_token, capacity=1 + n * max_depth, max_depth=max_depth, device=device,
                              children=children)
        grow_opt_tree(drafter, builder, n, max_depth, _GainAbove(n, self.config.threshold))
        return builder.subtree(builder.ranking()[:n])


class _GainAbove:
    """OPT-Tree's stop rule: keep growing while a layer raises E_sub(T, n) by more than δ."""

    def __init__(self, n: int, threshold: float):
        self.n, self.threshold, self.best = n, threshold, 0.0

    def __call__(self, builder: TreeBuilder, frontier: torch.Tensor) -> bool:
        e_sub = float(builder.top_n_sum(self.n))
        gain, self.best = e_sub - self.best, e_sub
        return gain > self.threshold


def grow_opt_tree(drafter: Drafter, builder: TreeBuilder, n: int, max_depth: int,
                  keep_growing: Callable[[TreeBuilder, torch.Tensor], bool]) -> None:
    """OPT-Tree's layer loop (arXiv 2406.17276, Algorithm 1) into ``builder``: every frontier node
    proposes its top-n tokens and the n candidates of largest p̂ form the next layer.

    After each layer but the last, ``keep_growing(builder, frontier)`` decides whether to draft
    the next one; frontier (n_frontier,) = the layer's nodes inside the current top-n, the only
    nodes whose children can still reach the top-n (a child's p̂ never exceeds its parent's).
    """
    frontier, probs = builder.layers[0], drafter.root_probs()[None]  # probs: (1, V)
    for depth in range(1, max_depth + 1):
        layer = expand_layer(builder, frontier, probs, per_node=n, layer_budget=n)
        frontier = layer[torch.isin(layer, builder.ranking()[:n])]  # (n_frontier,)
        if depth == max_depth or not keep_growing(builder, frontier):
            return
        probs = drafter.expand(builder, frontier)  # (n_frontier, V)


@dataclass(frozen=True)
class ChainConfig:
    """A chain of ``length`` tokens: the draft's greedy continuation (classic speculative decoding)."""

    length: int = 4

    @classmethod
    def for_budget(cls, nodes: int) -> ChainConfig:
        return cls(length=nodes)

    def __post_init__(self):
        if not (isinstance(self.length, int) and self.length >= 1):
            raise OptTreeError(f"chain length must be an integer >= 1, got {self.length!r}")


class ChainPolicy(StatelessPolicy):
    """Linear draft of K tokens, each the draft's top-1 below the previous one."""

    def __init__(self, config: ChainConfig = ChainConfig()):
        self.config, self.name = config, "chain"

    @property
    def max_nodes(self) -> int:
        return self.config.length

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        length = min(self.config.length, depth_cap)
        if length < 1:
            return _root_only(root_token, device)
        builder = TreeBuilder(root_token, capacity=1 + length, max_depth=length, device=device, children=children)
        frontier, probs = builder.layers[0], drafter.root_probs()[None]
        for depth in range(1, length + 1):
            frontier = expand_layer(builder, frontier, probs, per_node=1, layer_budget=1)
            if depth < length:
                probs = drafter.expand(builder, frontier)
        return builder.whole_tree()
