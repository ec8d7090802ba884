"""The one tree-growth loop every policy uses, and how the tree it grows chooses its children.

    grow(drafter, root_token, rule, max_depth, device, children, stop) -> DraftTree

``grow`` asks the drafter for the root's distribution, then, one layer at a time: the policy's
``GrowthRule`` picks which candidates join the layer (``add_layer``), and which of the layer's
nodes are expanded next (``frontier``; none: stop); the frontier goes to the drafter as one
frozen ``TreeLayer`` (one draft forward per layer, none thrown away, never past ``max_depth``).
At the end the rule says which nodes the tree keeps (``keep``, closed under parents).

Candidates: below each frontier node, the draft's top-k tokens, or, when ``children`` samples,
k draws from the draft without replacement in draw order. ``TreeBuilder._candidates`` is the one
place they are made, so "the rank-r child" means one thing for every policy; a rule picks among
them in one of three ways (``TreeBuilder.add_best``, ``add_ranks``, ``add_at``). The builder's
storage, feeding and final cut are ``tree_store.TreeStore``.

Stop tokens (``stop``: the target's end-of-sequence ids, which ``decoding.generate`` passes): no
output ever follows one, so drafting below it is waste. The rules that choose their frontier on the
host from the draft's numbers (OPT-Tree, OPT-Tree auto, DynaTree) leave such nodes out of it inside
the read they already make (``TreeBuilder.open``); a stop-token node can still be drafted and
accepted, it gets no children. Static shapes (chain, k-ary, EAGLE's) keep their shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .tree import DraftTree
from .tree_store import TreeStore


@dataclass(frozen=True)
class ChildSampling:
    """Draw each node's children by sampling the draft distribution (without replacement)
    instead of taking its top-k, with ``generator`` (SpecInfer-style sampled children)."""

    generator: torch.Generator

    def draw(self, probs: torch.Tensor, k: int) -> torch.Tensor:
        """(n, k) tokens drawn without replacement from each row of ``probs`` (n, V), in draw
        order (Gumbel-top-k: the order of perturbed log-probs is sequential sampling's order).
        Zero-probability tokens are never drawn: they come back as -1."""
        uniform = torch.rand(probs.shape, generator=self.generator, device=self.generator.device).to(probs.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20)))  # (n, V)
        keys = torch.log(probs.float()) + gumbel  # -inf where q = 0
        values, tokens = keys.topk(k, dim=1)  # (n, k), descending keys = draw order
        return torch.where(torch.isfinite(values), tokens, torch.full_like(tokens, -1))


class TreeBuilder(TreeStore):
    """The growing tree (its buffers, feeding and final cut: ``TreeStore``) and the choosing of its
    children. ``_candidates`` makes each frontier node's candidates, the draft's top-k or k draws;
    a rule picks among them in one of three ways: ``add_best`` (the best by p̂ within a budget),
    ``add_ranks`` (given ranks, decided on the device) or ``add_at`` (given ranks known on the host,
    top-k children only). ``ranking``, ``best``, ``top_n_sum`` and ``compact`` serve a rule's
    ``frontier`` and ``keep``.
    """

    def __init__(self, root_token: int, max_depth: int, device, children=None, capacity: int = 32,
                 stop: torch.Tensor | None = None):
        super().__init__(root_token, max_depth, device, children, capacity)
        self.stop = stop  # (s,) token ids nothing is drafted below, or None

    def open(self, nodes: torch.Tensor) -> torch.Tensor:
        """(n,) bool: which of ``nodes`` may have children, all but stop tokens (decided on the device)."""
        if self.stop is None:
            return torch.ones_like(nodes, dtype=torch.bool)
        return (self.tokens[nodes, None] != self.stop).all(1)  # (isin would sort on a GPU: a sync)

    def _candidates(self, frontier: torch.Tensor, probs: torch.Tensor, k: int):
        """Each frontier node's k candidates, as (q, tokens), each (n_frontier, k): the draft's top-k,
        or k draws without replacement in draw order (recorded so verification can walk them). A
        draw that could not be made (fewer than k tokens with q > 0) is token -1 with q = 0."""
        if self.children is None:
            return probs.topk(k, dim=1)
        draws = self.children.draw(probs, k)  # (n_frontier, k)
        self.expansions.append((frontier, draws, probs))
        q = probs.gather(1, draws.clamp(min=0)).masked_fill(draws < 0, 0.0)
        return q, draws

    def add_best(self, frontier: torch.Tensor, probs: torch.Tensor, per_node: int, budget: int) -> torch.Tensor:
        """Layer-wise top-k expansion: each frontier node proposes ``per_node`` candidates; the
        ``budget`` candidates of largest p̂ join the tree (ties to the earlier parent and rank).
        ``probs`` (n_frontier, V). Returns the new node indices (parent order, then rank)."""
        k = min(per_node, probs.shape[1])
        top_q, top_tok = self._candidates(frontier, probs, k)  # (n_frontier, k) each
        cand_p_hat = self.p_hat[frontier][:, None] * top_q  # (n_frontier, k)
        cand_p_hat = cand_p_hat.masked_fill(top_tok < 0, -1.0)  # a draw that could not be made
        m = min(budget, int((top_tok >= 0).sum()) if self.children is not None else cand_p_hat.numel())
        chosen = torch.sort(cand_p_hat.flatten(), descending=True, stable=True).indices[:m]  # (m,)
        chosen = chosen.sort().values  # keep parent order: breadth-first, siblings by rank
        rows, cols = chosen // k, chosen % k
        return self.add_layer(frontier[rows], top_tok.flatten()[chosen], top_q.flatten()[chosen], cols)

    def add_ranks(self, frontier: torch.Tensor, probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Add exactly the chosen children: ``keep`` (n_frontier, k) bool marks which of each frontier
        node's first k candidates join (a candidate that could not be drawn is skipped).
        ``probs`` (n_frontier, V). Returns the new node indices (parent order, then rank).
        ``nonzero`` makes the host wait for the device: with top-k children and a host-known choice,
        ``add_at`` adds the same nodes without it."""
        k = min(keep.shape[1], probs.shape[1])
        top_q, top_tok = self._candidates(frontier, probs, k)  # (n_frontier, k) each
        rows, cols = (keep[:, :k] & (top_tok >= 0)).nonzero(as_tuple=True)  # row-major: breadth-first
        return self.add_layer(frontier[rows], top_tok[rows, cols], top_q[rows, cols], cols)

    def add_at(self, frontier: torch.Tensor, probs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
               k: int) -> torch.Tensor:
        """``add_ranks`` for top-k children whose choice is known without looking at the draft: the
        candidates (rows[i], cols[i]) of each frontier node's top ``k`` (every col < k, row-major)
        join, in that order. Same nodes as ``add_ranks`` with the matching ``keep``; no host read."""
        if self.children is not None:
            raise ValueError("add_at takes top-k children only: sampled draws may be missing")
        top_q, top_tok = self._candidates(frontier, probs, k)  # (n_frontier, k) each
        return self.add_layer(frontier[rows], top_tok[rows, cols], top_q[rows, cols], cols)

    @staticmethod
    def compact(nodes: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
        """``nodes[mask]`` (order kept) when the host already knows ``count`` = mask.sum(): a stable
        sort puts the chosen first, so no ``nonzero`` makes the host wait."""
        if count == nodes.shape[0]:
            return nodes
        return nodes[torch.argsort((~mask).to(torch.uint8), stable=True)[:count]]

    def ranking(self) -> torch.Tensor:
        """All nodes but the root, best first: p̂ descending, ties to the shallower (earlier) node."""
        order = torch.sort(self.p_hat[1 : self.size], descending=True, stable=True).indices  # (size - 1,)
        return order + 1

    def top_n_sum(self, n: int) -> torch.Tensor:
        """E_sub(T, n): the sum of the n largest p̂ among non-root nodes (0-dim tensor)."""
        return self.p_hat[self.ranking()[:n]].sum()

    def best(self, nodes: torch.Tensor, m: int) -> torch.Tensor:
        """The ``m`` of ``nodes`` with largest p̂ (ties to the earlier node), in index order."""
        order = torch.sort(self.p_hat[nodes], descending=True, stable=True).indices[: max(m, 0)]
        return nodes[order].sort().values


class GrowthRule:
    """One policy's tree, layer by layer, inside ``grow``; a fresh rule per tree, so per-tree state
    (OPT-Tree's best E_sub so far, a node budget left) lives on it.

    ``add_layer`` adds layer d below ``frontier`` from the draft's ``probs`` (n_frontier, V) and
    returns the new nodes; ``frontier`` picks the nodes of ``layer`` to expand next (empty: stop
    growing); ``keep`` gives the nodes the final tree keeps (closed under parents).
    ``host_reads``: the named reads (``syncs``) the rule makes on the host while it grows a tree
    (none: the tree's shape is decided on the device).
    """

    host_reads: tuple[str, ...] = ()

    def add_layer(self, tree: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def frontier(self, tree: TreeBuilder, layer: torch.Tensor) -> torch.Tensor:
        return layer

    def keep(self, tree: TreeBuilder) -> torch.Tensor:
        return tree.drafted()

    def capacity(self, max_depth: int) -> int:
        """How many nodes (root included) the builder should hold from the start: an upper bound
        lets the buffers keep one static shape all through the tree (a smaller guess is grown)."""
        return 32


def grow(drafter, root_token: int, rule: GrowthRule, max_depth: int, device,
         children: ChildSampling | None = None, stop: torch.Tensor | None = None) -> DraftTree:
    """Grow one tree with ``rule``: at most ``max_depth`` layers, one draft forward per layer
    (none for the last layer's children, none thrown away). ``max_depth < 1``: the root alone,
    and the drafter is not called. ``stop``: token ids the rule does not expand (see above)."""
    if max_depth < 1:
        return DraftTree.root_only(root_token, device)
    tree = TreeBuilder(root_token, max_depth, device, children, capacity=rule.capacity(max_depth), stop=stop)
    frontier, probs = tree.root, drafter.root_probs()[None]  # probs: (1, V)
    for depth in range(1, max_depth + 1):
        layer = rule.add_layer(tree, frontier, probs)
        if depth == max_depth:
            break
        frontier = rule.frontier(tree, layer)
        if frontier.numel() == 0:
            break
        probs = drafter.expand(tree.feed(frontier))  # (n_frontier, V)
    return tree.subtree(rule.keep(tree))
