"""The tree-policy zoo: the structures OPT-Tree is compared with, behind the ``TreePolicy`` protocol.

    k-ary / binary   full k-ary tree (every node gets its top-k children)
    eagle-static     EAGLE-1's static 25-node tree (``mc_sim_7b_63`` of EAGLE's ``choices.py``)
    eagle2           EAGLE-2's dynamic tree (arXiv 2406.16858): expand the top-k, rerank globally
    dynatree         DynaTree's confidence-aware adaptive tree with a history-based adjustment
    cum-logprob      beam of the best nodes by cumulative log-probability, level by level

Every policy drafts at most ``depth_cap`` layers, passes ``children`` to its ``TreeBuilder`` and
takes children only through ``expand_layer`` / ``expand_ranks`` (top-k, or sampled draws), so
"the rank-r child" is the r-th candidate the draft proposes. p̂ = product of q along the path
(``tree.py``); ranking by Σ log q is ranking by p̂.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .drafters import Drafter
from .errors import OptTreeError
from .policies import StatelessPolicy, _root_only
from .tree import ChildSampling, DraftTree, TreeBuilder, expand_layer, expand_ranks

Step = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _check_int(value, what: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptTreeError(f"{what} must be an integer >= {low}, got {value!r}")


def _check_prob(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise OptTreeError(f"{what} must lie in [0, 1], got {value!r}")


def _grow(drafter: Drafter, builder: TreeBuilder, depth: int, step: Step) -> None:
    """The layer loop every zoo policy shares: ``step(frontier, probs, d)`` adds layer d below
    ``frontier`` from ``probs`` (n_frontier, V) and returns the nodes to expand next (empty: stop).
    One draft forward per layer, none thrown away (ARCHITECTURE.md §4, trap 4)."""
    frontier, probs = builder.layers[0], drafter.root_probs()[None]  # probs: (1, V)
    for d in range(1, depth + 1):
        frontier = step(frontier, probs, d)
        if d == depth or frontier.numel() == 0:
            break
        probs = drafter.expand(builder, frontier)  # (n_frontier, V)


def _best(builder: TreeBuilder, nodes: torch.Tensor, m: int) -> torch.Tensor:
    """The ``m`` nodes of largest p̂ (ties to the earlier node), in index order."""
    order = torch.sort(builder.p_hat[nodes], descending=True, stable=True).indices[:max(m, 0)]
    return nodes[order].sort().values


# ---------------------------------------------------------------- k-ary / binary

def full_tree_size(k: int, depth: int) -> int:
    """Drafted nodes of the full k-ary tree of ``depth`` layers: k + k² + … + k^depth."""
    return sum(k ** d for d in range(1, depth + 1))


def _kary_for_budget(k: int, nodes: int) -> tuple[int, int]:
    """(depth, nodes): the largest full tree of size ≤ ``nodes``, plus one partial layer if needed."""
    _check_int(nodes, "node budget")
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
        _check_int(self.k, "k-ary tree: k (children per node)")
        _check_int(self.depth, "k-ary tree: depth")
        if self.nodes is not None:
            _check_int(self.nodes, "k-ary tree: nodes (the node cap)")


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
        _check_int(self.depth, "binary tree: depth")
        if self.nodes is not None:
            _check_int(self.nodes, "binary tree: nodes (the node cap)")


class KAryPolicy(StatelessPolicy):
    """Full k-ary tree (the classic fixed tree of SpecInfer-style baselines; DynaTree's
    "fixed tree" with branch factor B and depth D). Parameters: k, depth, nodes (``KAryConfig``)."""

    name = "k-ary"

    def __init__(self, config: KAryConfig | BinaryTreeConfig = KAryConfig()):
        self.config = config

    @property
    def max_nodes(self) -> int:
        full = full_tree_size(self.config.k, self.config.depth)
        return full if self.config.nodes is None else min(full, self.config.nodes)

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        depth, k, cap = min(self.config.depth, depth_cap), self.config.k, self.max_nodes
        if depth < 1:
            return _root_only(root_token, device)
        builder = TreeBuilder(root_token, capacity=1 + cap, max_depth=depth, device=device, children=children)

        def step(frontier, probs, d):
            room = cap - (builder.size - 1)
            layer = expand_layer(builder, frontier, probs, per_node=k, layer_budget=min(room, k * len(frontier)))
            return layer if builder.size - 1 < cap else layer[:0]

        _grow(drafter, builder, depth, step)
        return builder.whole_tree()


class BinaryTreePolicy(KAryPolicy):
    """Full binary tree: ``KAryPolicy`` with k = 2. Parameters: depth, nodes (``BinaryTreeConfig``)."""

    name = "binary"

    def __init__(self, config: BinaryTreeConfig = BinaryTreeConfig()):
        super().__init__(config)


# ---------------------------------------------------------------- EAGLE-1 static tree

# EAGLE's own ``mc_sim_7b_63`` (SafeAILab/EAGLE, eagle/model/choices.py): 25 rank paths in
# breadth-first order. Not Medusa's 63-node list of the same name (ARCHITECTURE.md §4, trap 8).
EAGLE_TREE: tuple[tuple[int, ...], ...] = (
    (0,), (1,), (2,), (3,),
    (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0),
    (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 0, 0),
    (0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2),
    (0, 0, 0, 0, 0), (0, 0, 0, 0, 1),
)


@dataclass(frozen=True)
class EagleStaticConfig:
    """EAGLE-1's static tree. nodes: how many entries of the 25-entry list to use, in list order
    (every prefix of the list is closed under parents). ``for_budget(n)``: the first min(n, 25)
    entries — the tree has 25 nodes, so budgets above 25 still draft 25."""

    nodes: int = len(EAGLE_TREE)

    @classmethod
    def for_budget(cls, nodes: int) -> EagleStaticConfig:
        _check_int(nodes, "node budget")
        return cls(nodes=min(nodes, len(EAGLE_TREE)))

    def __post_init__(self):
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or not 1 <= self.nodes <= len(EAGLE_TREE):
            raise OptTreeError(f"EAGLE's static tree has {len(EAGLE_TREE)} nodes: nodes must be 1..{len(EAGLE_TREE)}, "
                               f"got {self.nodes!r}")

    @property
    def choices(self) -> tuple[tuple[int, ...], ...]:
        return EAGLE_TREE[: self.nodes]


class EagleStaticPolicy(StatelessPolicy):
    """EAGLE-1 (arXiv 2401.15077): a fixed tree given as rank paths (``EAGLE_TREE``). Layer by
    layer, every node with listed children gets exactly the listed ranks of its candidates.
    Entries deeper than ``depth_cap`` are dropped. Parameter: nodes (``EagleStaticConfig``)."""

    name = "eagle-static"

    def __init__(self, config: EagleStaticConfig = EagleStaticConfig()):
        self.config = config

    @property
    def max_nodes(self) -> int:
        return self.config.nodes

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        listed = {path for path in self.config.choices if len(path) <= depth_cap}
        if not listed:
            return _root_only(root_token, device)
        depth = max(map(len, listed))
        width = 1 + max(path[-1] for path in listed)
        builder = TreeBuilder(root_token, capacity=1 + len(listed), max_depth=depth, device=device, children=children)
        rank_path: dict[int, tuple[int, ...]] = {0: ()}

        def step(frontier, probs, d):
            keep = torch.tensor([[rank_path[f] + (r,) in listed for r in range(width)] for f in frontier.tolist()],
                                dtype=torch.bool, device=builder.device)  # (n_frontier, width)
            layer = expand_ranks(builder, frontier, probs, keep)
            for node, parent, rank in zip(layer.tolist(), builder.parents[layer].tolist(), builder.rank[layer].tolist()):
                rank_path[node] = rank_path[parent] + (rank,)
            has_children = [any(rank_path[n] + (r,) in listed for r in range(width)) for n in layer.tolist()]
            return layer[torch.tensor(has_children, dtype=torch.bool, device=builder.device)]

        _grow(drafter, builder, depth, step)
        return builder.whole_tree()


# ---------------------------------------------------------------- EAGLE-2 dynamic tree

@dataclass(frozen=True)
class Eagle2Config:
    """EAGLE-2's dynamic tree. depth: drafted layers (the paper's "depth 6"; EAGLE's code counts
    the first layer apart, its ``depth=5``). top_k: nodes expanded per layer and candidates per
    node. total_tokens: nodes kept after the global rerank. ``for_budget(n)``: total_tokens = n
    with depth = min(6, n) and top_k = min(10, n): the same tree as depth 6, top_k 10 (a node
    in the top n has fewer than n nodes above it, in its layer and among its siblings), less work."""

    depth: int = 6
    top_k: int = 10
    total_tokens: int = 60

    @classmethod
    def for_budget(cls, nodes: int) -> Eagle2Config:
        _check_int(nodes, "node budget")
        return cls(depth=min(6, nodes), top_k=min(10, nodes), total_tokens=nodes)

    def __post_init__(self):
        _check_int(self.depth, "EAGLE-2 depth")
        _check_int(self.top_k, "EAGLE-2 top_k")
        _check_int(self.total_tokens, "EAGLE-2 total_tokens")


class Eagle2Policy(StatelessPolicy):
    """EAGLE-2 (arXiv 2406.16858; ``topK_genrate`` in SafeAILab/EAGLE). Expansion: the root's
    top_k children form layer 1; at each further depth the top_k nodes of the last layer by p̂
    each propose top_k children, all of which are kept as candidates (as EAGLE's code does), and
    the layer's top_k by p̂ are expanded next. Rerank: after ``depth`` layers the top
    ``total_tokens`` candidates by p̂ are kept (connected: a child never outranks its parent,
    ties go to the shallower node). Parameters: depth, top_k, total_tokens (``Eagle2Config``)."""

    name = "eagle2"

    def __init__(self, config: Eagle2Config = Eagle2Config()):
        self.config = config

    @property
    def max_nodes(self) -> int:
        k = self.config.top_k
        return min(self.config.total_tokens, k + (self.config.depth - 1) * k * k)

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        depth, k = min(self.config.depth, depth_cap), self.config.top_k
        if depth < 1:
            return _root_only(root_token, device)
        builder = TreeBuilder(root_token, capacity=1 + k + (depth - 1) * k * k, max_depth=depth, device=device,
                              children=children)

        def step(frontier, probs, d):
            layer = expand_layer(builder, frontier, probs, per_node=k, layer_budget=k * len(frontier))
            return _best(builder, layer, k)

        _grow(drafter, builder, depth, step)
        return builder.subtree(builder.ranking()[: self.config.total_tokens])


# ---------------------------------------------------------------- cumulative log-prob beam

@dataclass(frozen=True)
class CumLogProbConfig:
    """Level-wise beam by cumulative log-probability. max_nodes_per_level: nodes kept per level
    (and candidates each node proposes). max_total_nodes: drafted nodes in all. ``for_budget(n)``:
    max_total_nodes = n, max_nodes_per_level = ceil(√n) (a tree about as deep as it is wide)."""

    max_nodes_per_level: int = 4
    max_total_nodes: int = 16

    @classmethod
    def for_budget(cls, nodes: int) -> CumLogProbConfig:
        _check_int(nodes, "node budget")
        return cls(max_nodes_per_level=math.isqrt(nodes - 1) + 1, max_total_nodes=nodes)

    def __post_init__(self):
        _check_int(self.max_nodes_per_level, "cum-logprob max_nodes_per_level")
        _check_int(self.max_total_nodes, "cum-logprob max_total_nodes")


class CumLogProbPolicy(StatelessPolicy):
    """Recursive cumulative-log-prob tree (beam search over the draft, the beam kept as a tree):
    every node of the current level proposes its candidates from the draft distribution, each
    scored by Σ log q along its path; the best ``max_nodes_per_level`` form the next level, until
    ``max_total_nodes`` are drafted (the last level is cut to fit) or ``depth_cap``.
    Parameters: max_nodes_per_level, max_total_nodes (``CumLogProbConfig``)."""

    name = "cum-logprob"

    def __init__(self, config: CumLogProbConfig = CumLogProbConfig()):
        self.config = config

    @property
    def max_nodes(self) -> int:
        return self.config.max_total_nodes

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        width, total = self.config.max_nodes_per_level, self.config.max_total_nodes
        depth = min(total, depth_cap)  # every level adds at least one node
        if depth < 1:
            return _root_only(root_token, device)
        builder = TreeBuilder(root_token, capacity=1 + total, max_depth=depth, device=device, children=children)

        def step(frontier, probs, d):
            room = total - (builder.size - 1)
            layer = expand_layer(builder, frontier, probs, per_node=width, layer_budget=min(width, room))
            return layer if builder.size - 1 < total else layer[:0]

        _grow(drafter, builder, depth, step)
        return builder.whole_tree()


# ---------------------------------------------------------------- DynaTree

@dataclass(frozen=True)
class DynaTreeConfig:
    """DynaTree's adaptive tree (defaults: its code's, ``spec_decode/core/tree_speculative_generator_adaptive.py``).

    nodes: node budget (drafted nodes; a layer that would exceed it keeps its best by p̂).
    high_conf, low_conf: breadth by the draft's top-1 probability at a node: > high_conf → 1 child,
        < low_conf → 3 children, otherwise 2.
    tau: τ pruning: a drafted node with p̂ < τ is dropped (the root's top-1 child is always kept).
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
        _check_int(nodes, "node budget")
        return cls(nodes=nodes)

    def __post_init__(self):
        for name in ("nodes", "base_depth", "max_depth", "history_window", "min_history"):
            _check_int(getattr(self, name), f"DynaTree {name}")
        for name in ("high_conf", "low_conf", "tau", "early_stop", "deep_threshold", "target_rate", "adjust_step"):
            _check_prob(getattr(self, name), f"DynaTree {name}")
        if self.low_conf > self.high_conf:
            raise OptTreeError(f"DynaTree low_conf {self.low_conf} must not exceed high_conf {self.high_conf}")
        if self.base_depth > self.max_depth:
            raise OptTreeError(f"DynaTree base_depth {self.base_depth} must not exceed max_depth {self.max_depth}")
        if self.min_history > self.history_window:
            raise OptTreeError(f"DynaTree min_history {self.min_history} exceeds history_window {self.history_window}")


class DynaTreePolicy:
    """DynaTree ("Confidence-Aware Adaptive Tree Speculative Decoding", cny123222/DynaTree: its
    paper summary and ``tree_speculative_generator_adaptive.py``). Followed: (1) breadth 1/2/3
    by the draft's top-1 probability against high_conf / low_conf (the paper's 1/2/3; its code's
    default widest breadth is 4); (2) depth: expand to
    base_depth, beyond it only while p̂ > deep_threshold, up to max_depth, never expanding a
    node with p̂ < early_stop; (3) τ pruning and a node budget; (4) the history adjustment of
    base_depth, high_conf and deep_threshold from the mean acceptance rate of a window.
    Ours: the adjustment runs per step through ``observe`` (DynaTree: after each generation)
    with rate = (A − 1) / tree depth, and ``reset`` clears it (DynaTree keeps history across
    prompts); bounds are base_depth ∈ [1, max_depth], high_conf ∈ [low_conf, 1],
    deep_threshold ∈ [0, 1] (DynaTree: [2, max_depth − 1], [0.5, 0.95], [0.3, 0.8]); a layer over
    the budget keeps its best by p̂ (DynaTree: the first in order). Not followed: DynaTree's
    positions by flattened index and shared sibling cache (ARCHITECTURE.md §4, traps 1 and 2);
    the engine's drafters and verifier do neither. Parameters: ``DynaTreeConfig``."""

    name = "dynatree"

    def __init__(self, config: DynaTreeConfig = DynaTreeConfig()):
        self.config = config
        self.reset()

    @property
    def max_nodes(self) -> int:
        return self.config.nodes

    def reset(self) -> None:
        """Forget the history: back to the configured depth and thresholds."""
        c = self.config
        self.base_depth, self.high_conf, self.deep_threshold = c.base_depth, c.high_conf, c.deep_threshold
        self.rates: deque[float] = deque(maxlen=c.history_window)

    def observe(self, tree: DraftTree, accept_length: int) -> None:
        if tree.max_depth == 0:
            return
        c = self.config
        self.rates.append((accept_length - 1) / tree.max_depth)
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

    def expandable(self, builder: TreeBuilder, nodes: torch.Tensor, depth: int) -> torch.Tensor:
        """(n,) bool: which ``nodes`` get children (``depth``: the deepest layer allowed)."""
        p_hat, d = builder.p_hat[nodes], builder.depth[nodes]
        confident = (d < self.base_depth) | (p_hat > self.deep_threshold)
        return (d < depth) & (p_hat >= self.config.early_stop) & confident

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        depth, budget = min(self.config.max_depth, depth_cap), self.config.nodes
        if depth < 1:
            return _root_only(root_token, device)
        builder = TreeBuilder(root_token, capacity=4 + 3 * budget, max_depth=depth, device=device, children=children)
        kept: list[torch.Tensor] = []

        def step(frontier, probs, d):
            breadth = self.breadth(probs)  # (n_frontier,)
            ranks = torch.arange(int(breadth.max()), device=builder.device)
            layer = expand_ranks(builder, frontier, probs, ranks[None] < breadth[:, None])
            survive = (builder.p_hat[layer] >= self.config.tau) | ((d == 1) & (builder.rank[layer] == 0))
            layer = _best(builder, layer[survive], budget - sum(map(len, kept)))
            kept.append(layer)
            full = sum(map(len, kept)) >= budget
            return layer[:0] if full else layer[self.expandable(builder, layer, depth)]

        _grow(drafter, builder, depth, step)
        return builder.subtree(torch.cat(kept))
