"""The draft tree: a frozen dataclass of tensors, and the builder that grows one.

Notation: node 0 is the *root*, the last committed token, which the target has
not yet seen. Every other node is a drafted token. Nodes are stored in
breadth-first order, so ``parents[i] < i`` and ``depth`` never decreases.

    p̂(node) = product of the draft probabilities q along its path (root excluded)
    E(A)    = Σ p̂ over the non-root nodes        (see ``metrics.expected_acceptance``)

A node at depth d sits at position ``prefix_len + d`` (positions by depth, not by
flattened index: ARCHITECTURE.md §4, trap 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class DraftTree:
    """A token tree. All tensors have shape ``(n_nodes,)`` and live on one device."""

    tokens: torch.Tensor  # (N,) int64, tokens[0] = root token
    parents: torch.Tensor  # (N,) int64, parents[0] = -1
    depth: torch.Tensor  # (N,) int64, depth[0] = 0
    p_hat: torch.Tensor  # (N,) float32, p_hat[0] = 1
    q: torch.Tensor  # (N,) float32, draft probability of the node's token given its parent
    rank: torch.Tensor  # (N,) int64, rank among the draft's candidates under the parent (0 = top-1)
    # Trees of sampled children only (else None): every draw a node made, in draw order, kept
    # in the tree or not (-1 pads; a node that drew nothing has a row of -1), and the draft
    # distribution it drew them from. Verification walks all draws (``sampling.sample_path``).
    draws: torch.Tensor | None = None  # (N, K) int64
    draft_probs: torch.Tensor | None = None  # (N, V) float32

    def __post_init__(self):
        n = self.tokens.shape[0]
        for name in ("parents", "depth", "p_hat", "q", "rank"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"DraftTree.{name} must have shape ({n},)")
        if (self.draws is None) != (self.draft_probs is None):
            raise ValueError("DraftTree.draws and DraftTree.draft_probs go together")
        if self.draws is not None and (self.draws.shape[0] != n or self.draft_probs.shape[0] != n):
            raise ValueError(f"DraftTree.draws and draft_probs need {n} rows")

    @property
    def sampled_children(self) -> bool:
        return self.draws is not None

    @property
    def n_nodes(self) -> int:
        return self.tokens.shape[0]

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @cached_property
    def max_depth(self) -> int:
        return int(self.depth.max()) if self.n_nodes else 0

    @cached_property
    def ancestor_mask(self) -> torch.Tensor:
        """(N, N) bool: ``mask[i, j]`` is True when j is i or an ancestor of i."""
        n = self.n_nodes
        mask = torch.eye(n, dtype=torch.bool, device=self.device)
        for d in range(1, self.max_depth + 1):
            layer = (self.depth == d).nonzero().squeeze(1)  # (n_layer,)
            mask[layer] |= mask[self.parents[layer]]
        return mask

    def position_ids(self, prefix_len: int) -> torch.Tensor:
        """(N,) positions: the root sits at ``prefix_len``, a node at depth d at ``prefix_len + d``."""
        return self.depth + prefix_len

    def children(self, node: int) -> torch.Tensor:
        return (self.parents == node).nonzero().squeeze(1)

    def path_to(self, node: int) -> list[int]:
        """Node indices from the root's first child down to ``node`` (root excluded)."""
        parents = self.parents.tolist()
        path = []
        while node > 0:
            path.append(node)
            node = parents[node]
        return path[::-1]

    @classmethod
    def from_paths(cls, root_token: int, paths: list[list[int]], device=None) -> DraftTree:
        """A tree from token paths (each a list of tokens below the root), e.g. EAGLE's choice lists.

        Shared prefixes become shared nodes. Without draft probabilities, q = 1 and p̂ = 1
        for every node and ranks count siblings in order of first appearance.
        """
        appearance: dict[tuple[int, ...], int] = {}
        for path in paths:
            for d in range(1, len(path) + 1):
                appearance.setdefault(tuple(path[:d]), len(appearance))
        order: dict[tuple[int, ...], int] = {(): 0}
        tokens, parents, depth, rank, n_children = [root_token], [-1], [0], [0], {}
        for d in range(1, max(map(len, paths), default=0) + 1):
            layer = sorted((k for k in appearance if len(k) == d), key=lambda k: (order[k[:-1]], appearance[k]))
            for key in layer:
                parent = order[key[:-1]]
                order[key] = len(tokens)
                tokens.append(key[-1])
                parents.append(parent)
                depth.append(d)
                rank.append(n_children.get(parent, 0))
                n_children[parent] = rank[-1] + 1
        ones = torch.ones(len(tokens), dtype=torch.float32, device=device)
        as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
        return cls(as_long(tokens), as_long(parents), as_long(depth), ones, ones.clone(), as_long(rank))


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
    """Grows a tree layer by layer from draft distributions (layer-wise top-k expansion).

    Besides the node attributes it keeps, for every node, the indices of its
    ancestors by depth (``path[i, d]`` = ancestor of i at depth d, or -1), from
    which drafters build their attention masks afresh at every layer
    (ARCHITECTURE.md §4, trap 3).
    """

    def __init__(self, root_token: int, capacity: int, max_depth: int, device,
                 children: ChildSampling | None = None):
        self.device, self.children = torch.device(device), children
        self.capacity, self.max_depth, self.size = capacity, max_depth, 1
        long = dict(dtype=torch.long, device=self.device)
        self.tokens = torch.zeros(capacity, **long)
        self.parents = torch.full((capacity,), -1, **long)
        self.depth = torch.zeros(capacity, **long)
        self.rank = torch.zeros(capacity, **long)
        self.p_hat = torch.ones(capacity, dtype=torch.float32, device=self.device)
        self.q = torch.ones(capacity, dtype=torch.float32, device=self.device)
        self.path = torch.full((capacity, max_depth + 1), -1, **long)  # (capacity, max_depth + 1)
        self.path[0, 0] = 0
        self.tokens[0] = root_token
        self.layers: list[torch.Tensor] = [torch.zeros(1, **long)]
        self.expansions: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # sampled: (nodes, draws, probs)

    def record_draws(self, nodes: torch.Tensor, draws: torch.Tensor, probs: torch.Tensor) -> None:
        """Sampled children: remember what ``nodes`` (n,) drew, ``draws`` (n, K), and from which ``probs`` (n, V)."""
        self.expansions.append((nodes, draws, probs))

    def add_layer(self, parents: torch.Tensor, tokens: torch.Tensor, q: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        """Append one layer of children; returns their node indices, shape (n_new,)."""
        n_new = parents.shape[0]
        if self.size + n_new > self.capacity:
            raise ValueError(f"tree capacity {self.capacity} exceeded")
        idx = torch.arange(self.size, self.size + n_new, device=self.device)  # (n_new,)
        d = len(self.layers)
        self.tokens[idx], self.parents[idx], self.q[idx], self.rank[idx] = tokens, parents, q, rank
        self.depth[idx] = d
        self.p_hat[idx] = self.p_hat[parents] * q
        self.path[idx] = self.path[parents]
        self.path[idx, d] = idx
        self.size += n_new
        self.layers.append(idx)
        return idx

    def ancestor_mask(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(n_queries, n_keys) bool: key node is an ancestor of (or is) the query node."""
        return self.path[queries][:, self.depth[keys]] == keys[None, :]

    def ranking(self) -> torch.Tensor:
        """All nodes but the root, best first: p̂ descending, ties to the shallower (earlier) node."""
        p_hat = self.p_hat[1 : self.size]
        order = torch.sort(p_hat, descending=True, stable=True).indices  # (size - 1,)
        return order + 1

    def top_n_sum(self, n: int) -> torch.Tensor:
        """E_sub(T, n): the sum of the n largest p̂ among non-root nodes (0-dim tensor)."""
        return self.p_hat[self.ranking()[:n]].sum()

    def subtree(self, nodes: torch.Tensor) -> DraftTree:
        """The DraftTree of the root plus ``nodes`` (which must be closed under parents)."""
        keep = torch.cat([torch.zeros(1, dtype=torch.long, device=self.device), nodes]).sort().values  # (k,)
        new_index = torch.full((self.size,), -1, dtype=torch.long, device=self.device)
        new_index[keep] = torch.arange(keep.shape[0], device=self.device)
        parents = self.parents[keep]
        parents = torch.where(parents >= 0, new_index[parents.clamp(min=0)], parents)
        draws, draft_probs = self._draws_of(keep) if self.children is not None else (None, None)
        return DraftTree(
            tokens=self.tokens[keep], parents=parents, depth=self.depth[keep],
            p_hat=self.p_hat[keep], q=self.q[keep], rank=self.rank[keep], draws=draws, draft_probs=draft_probs,
        )

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
        return self.subtree(torch.arange(1, self.size, device=self.device))


def expand_layer(builder: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor,
                 per_node: int, layer_budget: int) -> torch.Tensor:
    """Layer-wise top-k expansion: each frontier node proposes its ``per_node`` most
    probable tokens (or, when the builder samples children, ``per_node`` draws from its
    distribution, in draw order); the ``layer_budget`` candidates of largest p̂ join the tree.

    ``probs`` has shape (n_frontier, vocab). Returns the new node indices.
    """
    k = min(per_node, probs.shape[1])
    top_q, top_tok = _candidates(builder, frontier, probs, k)  # (n_frontier, k) each
    cand_p_hat = builder.p_hat[frontier][:, None] * top_q  # (n_frontier, k)
    cand_p_hat = cand_p_hat.masked_fill(top_tok < 0, -1.0)  # a draw that could not be made
    m = min(layer_budget, int((top_tok >= 0).sum()) if builder.children is not None else cand_p_hat.numel())
    chosen = torch.sort(cand_p_hat.flatten(), descending=True, stable=True).indices[:m]  # (m,)
    chosen = chosen.sort().values  # keep parent order: breadth-first, siblings by rank
    rows, cols = chosen // k, chosen % k
    return builder.add_layer(frontier[rows], top_tok.flatten()[chosen], top_q.flatten()[chosen], cols)


def expand_ranks(builder: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Add exactly the chosen children: ``keep`` (n_frontier, k) bool marks, for each frontier node,
    which of its first k candidates join the tree. Candidates come from the same rule as in
    ``expand_layer`` (the draft's top-k, or draws when the builder samples children), so "the
    rank-r child" means one thing for every policy; a candidate that could not be drawn is skipped.

    ``probs`` has shape (n_frontier, vocab). Returns the new node indices (parent order, then rank).
    """
    k = min(keep.shape[1], probs.shape[1])
    top_q, top_tok = _candidates(builder, frontier, probs, k)  # (n_frontier, k) each
    rows, cols = (keep[:, :k] & (top_tok >= 0)).nonzero(as_tuple=True)  # row-major: breadth-first, siblings by rank
    return builder.add_layer(frontier[rows], top_tok[rows, cols], top_q[rows, cols], cols)


def _candidates(builder: TreeBuilder, frontier: torch.Tensor, probs: torch.Tensor, k: int):
    """Each frontier node's k candidates, as (q, tokens), each (n_frontier, k): the draft's top-k,
    or, when the builder samples children, k draws without replacement in draw order (recorded on
    the builder so verification can walk them). A draw that could not be made (fewer than k
    tokens with q > 0) is token -1 with q = 0: never add it. This is the one place children are
    chosen, so "the rank-r child" means one thing for every policy."""
    if builder.children is None:
        return probs.topk(k, dim=1)
    draws = builder.children.draw(probs, k)  # (n_frontier, k)
    builder.record_draws(frontier, draws, probs)
    q = probs.gather(1, draws.clamp(min=0)).masked_fill(draws < 0, 0.0)
    return q, draws
