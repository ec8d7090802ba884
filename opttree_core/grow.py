"""The one tree-growth loop every policy uses, and the tree it grows.

    grow(drafter, root_token, rule, max_depth, device, children) -> DraftTree

``grow`` asks the drafter for the root's distribution, then, one layer at a time: the policy's
``GrowthRule`` picks which candidates join the layer (``add_layer``), and which of the layer's
nodes are expanded next (``frontier``; none: stop); the frontier goes to the drafter as one
frozen ``TreeLayer`` (one draft forward per layer, none thrown away, never past ``max_depth``).
At the end the rule says which nodes the tree keeps (``keep``, closed under parents).

Candidates: below each frontier node, the draft's top-k tokens, or, when ``children`` samples,
k draws from the draft without replacement in draw order. ``TreeBuilder.add_best`` and
``add_ranks`` are the only places children are chosen, so "the rank-r child" means one thing
for every policy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .tree import DraftTree, TreeLayer

_FIELDS = ("tokens", "parents", "depth", "rank", "slots", "p_hat", "q", "path")


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


class TreeBuilder:
    """The growing tree: node attributes in buffers that grow as layers are added.

    Besides the node attributes it keeps, for every node, the indices of its ancestors by depth
    (``path[i, d]`` = ancestor of i at depth d, or -1), from which each ``TreeLayer``'s ancestor
    rows are built afresh (docs/architecture.md, "Traps": no draft-side mask reuse), and each
    node's drafter slot (-1 until it is fed).
    """

    def __init__(self, root_token: int, max_depth: int, device, children: ChildSampling | None = None,
                 capacity: int = 32):
        self.device, self.children, self.max_depth = torch.device(device), children, max_depth
        self.size, capacity = 1, max(capacity, 1)
        long = dict(dtype=torch.long, device=self.device)
        self.tokens, self.parents = torch.zeros(capacity, **long), torch.full((capacity,), -1, **long)
        self.depth, self.rank = torch.zeros(capacity, **long), torch.zeros(capacity, **long)
        self.slots = torch.full((capacity,), -1, **long)
        self.p_hat = torch.ones(capacity, dtype=torch.float32, device=self.device)
        self.q = torch.ones(capacity, dtype=torch.float32, device=self.device)
        self.path = torch.full((capacity, max_depth + 1), -1, **long)  # (capacity, max_depth + 1)
        self.path[0, 0] = 0
        self.tokens[0] = root_token
        self.layers: list[torch.Tensor] = [torch.zeros(1, **long)]
        self.fed = torch.zeros(0, **long)  # builder indices of the nodes fed to the drafter, in slot order
        self.expansions: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # sampled: (nodes, draws, probs)

    @property
    def capacity(self) -> int:
        return self.tokens.shape[0]

    @property
    def root(self) -> torch.Tensor:
        return self.layers[0]

    def drafted(self) -> torch.Tensor:
        """Every node but the root, (size - 1,)."""
        return torch.arange(1, self.size, device=self.device)

    def _reserve(self, n_new: int) -> None:
        """Grow every buffer (doubling) so that ``n_new`` more nodes fit."""
        old_capacity = capacity = self.capacity
        while self.size + n_new > capacity:
            capacity *= 2
        if capacity == old_capacity:
            return
        for name in _FIELDS:
            old = getattr(self, name)
            fill = -1 if name in ("parents", "slots", "path") else 1 if name in ("p_hat", "q") else 0
            new = torch.full((capacity, *old.shape[1:]), fill, dtype=old.dtype, device=self.device)
            new[:old_capacity] = old
            setattr(self, name, new)

    def add_layer(self, parents: torch.Tensor, tokens: torch.Tensor, q: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        """Append one layer of children; returns their node indices, shape (n_new,)."""
        n_new = parents.shape[0]
        d = len(self.layers)
        if d > self.max_depth:
            raise ValueError(f"the tree already has its {self.max_depth} layers")
        self._reserve(n_new)
        start, end = self.size, self.size + n_new  # the new nodes take the next indices: slices, not scatters
        idx = torch.arange(start, end, device=self.device)  # (n_new,)
        self.tokens[start:end], self.parents[start:end] = tokens, parents
        self.q[start:end], self.rank[start:end] = q, rank
        self.depth[start:end] = d
        self.p_hat[start:end] = self.p_hat[parents] * q
        self.path[start:end] = self.path[parents]
        self.path[start:end, d] = idx
        self.size = end
        self.layers.append(idx)
        return idx

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
        top_q, top_tok = probs.topk(k, dim=1)  # (n_frontier, k) each
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

    def ancestor_mask(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(n_queries, n_keys) bool: key node is an ancestor of (or is) the query node."""
        return self.path[queries][:, self.depth[keys]] == keys[None, :]

    def feed(self, nodes: torch.Tensor) -> TreeLayer:
        """Hand ``nodes`` to the drafter; they take the next slots. They must belong to the newest
        layer (the growth loop feeds each layer right after adding it)."""
        d = len(self.layers) - 1
        layer = TreeLayer(tokens=self.tokens[nodes], parent_slots=self.slots[self.parents[nodes]], depth=d,
                          ancestors=self.ancestor_mask(nodes, self.fed),
                          paths=self.tokens[self.path[nodes, 1 : d + 1]])
        self.slots[nodes] = torch.arange(self.fed.shape[0], self.fed.shape[0] + nodes.shape[0], device=self.device)
        self.fed = torch.cat([self.fed, nodes])
        return layer

    def subtree(self, nodes: torch.Tensor) -> DraftTree:
        """The DraftTree of the root plus ``nodes`` (which must be closed under parents)."""
        keep = torch.cat([torch.zeros(1, dtype=torch.long, device=self.device), nodes]).sort().values  # (k,)
        new_index = torch.full((self.size,), -1, dtype=torch.long, device=self.device)
        new_index[keep] = torch.arange(keep.shape[0], device=self.device)
        parents = self.parents[keep]
        parents = torch.where(parents >= 0, new_index[parents.clamp(min=0)], parents)
        draws, draft_probs = self._draws_of(keep) if self.children is not None else (None, None)
        return DraftTree(tokens=self.tokens[keep], parents=parents, depth=self.depth[keep], p_hat=self.p_hat[keep],
                         q=self.q[keep], rank=self.rank[keep], draws=draws, draft_probs=draft_probs,
                         slots=self.slots[keep])

    def _draws_of(self, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, K) draws and (k, V) draft distributions of the nodes ``keep`` (-1 / 0 where none)."""
        width = max((d.shape[1] for _, d, _ in self.expansions), default=1)
        vocab = self.expansions[0][2].shape[1] if self.expansions else 1
        draws = torch.full((self.size, width), -1, dtype=torch.long, device=self.device)
        probs = torch.zeros(self.size, vocab, dtype=torch.float32, device=self.device)
        for nodes, node_draws, node_probs in self.expansions:
            draws[nodes, : node_draws.shape[1]] = node_draws
            probs[nodes] = node_probs.float()
        return draws[keep], probs[keep]

    def whole_tree(self) -> DraftTree:
        return self.subtree(self.drafted())


class GrowthRule:
    """One policy's tree, layer by layer, inside ``grow``; a fresh rule per tree, so per-tree state
    (OPT-Tree's best E_sub so far, a node budget left) lives on it.

    ``add_layer`` adds layer d below ``frontier`` from the draft's ``probs`` (n_frontier, V) and
    returns the new nodes; ``frontier`` picks the nodes of ``layer`` to expand next (empty: stop
    growing); ``keep`` gives the nodes the final tree keeps (closed under parents).
    """

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
         children: ChildSampling | None = None) -> DraftTree:
    """Grow one tree with ``rule``: at most ``max_depth`` layers, one draft forward per layer
    (none for the last layer's children, none thrown away). ``max_depth < 1``: the root alone,
    and the drafter is not called."""
    if max_depth < 1:
        return DraftTree.root_only(root_token, device)
    tree = TreeBuilder(root_token, max_depth, device, children, capacity=rule.capacity(max_depth))
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
