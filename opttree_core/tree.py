"""The draft tree, and the layer of it a drafter sees: both frozen dataclasses of tensors.

Notation: node 0 is the *root*, the last committed token, which the target has
not yet seen. Every other node is a drafted token. Nodes are stored in
breadth-first order, so ``parents[i] < i`` and ``depth`` never decreases.

    p̂(node) = product of the draft probabilities q along its path (root excluded)
    E(A)    = Σ p̂ over the non-root nodes        (``DraftTree.expected_acceptance``)

A node at depth d sits at position ``prefix_len + d`` (positions by depth, not by
flattened index: docs/architecture.md, "Traps").

Drafter slots: while a tree grows (``grow.py``), the nodes whose children are drafted are fed
to the drafter one layer at a time; the k-th node fed is the drafter's *slot* k (the root,
already committed, is slot -1). A ``TreeLayer`` speaks only in slots, and ``DraftTree.slots``
keeps each node's slot, so verification can tell the drafter which of its slots were accepted.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

LONG_FIELDS = ("parents", "depth", "rank")


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
    slots: torch.Tensor | None = None  # (N,) int64: the drafter slot of each node (-1: root or never fed)

    def __post_init__(self):
        n = self.tokens.shape[0]
        if self.slots is None:
            object.__setattr__(self, "slots", torch.full((n,), -1, dtype=torch.long, device=self.tokens.device))
        for name in ("parents", "depth", "p_hat", "q", "rank", "slots"):
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
        """(N, N) bool: ``mask[i, j]`` is True when j is i or an ancestor of i.

        Pointer doubling, so the number of passes depends on N alone (a host-known shape) and no
        value is read on the host: after pass t, ``reach[i]`` holds i's ancestors at distance
        < 2^t and ``jump[i]`` its ancestor at distance 2^t (row N: "none", all False)."""
        n = self.n_nodes
        reach = torch.cat([torch.eye(n, dtype=torch.bool, device=self.device),
                           torch.zeros(1, n, dtype=torch.bool, device=self.device)])  # (N + 1, N)
        jump = torch.cat([torch.where(self.parents >= 0, self.parents, n),
                          torch.full((1,), n, dtype=torch.long, device=self.device)])  # (N + 1,)
        for _ in range((n - 1).bit_length()):  # 2^passes >= N > any depth
            reach = reach | reach[jump]
            jump = jump[jump]
        return reach[:n]

    def expected_acceptance(self) -> torch.Tensor:
        """E(A): Σ p̂ over the non-root nodes (0-dim tensor, stays on the device)."""
        return torch.where(self.depth > 0, self.p_hat, torch.zeros_like(self.p_hat)).sum()

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
    def root_only(cls, root_token: int, device=None) -> DraftTree:
        """The tree of the root alone (a step that drafts nothing), made on the device (no upload)."""
        long = dict(dtype=torch.long, device=device)
        ones = torch.ones(1, dtype=torch.float32, device=device)
        return cls(torch.full((1,), root_token, **long), torch.full((1,), -1, **long), torch.zeros(1, **long), ones,
                   ones.clone(), torch.zeros(1, **long))

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
class TreeLayer:
    """One layer of a growing tree, handed to ``Drafter.expand``: the nodes whose children are
    drafted next, in the drafter's own terms. Nothing in it refers to the tree's builder.

    The drafter has been fed ``first_slot`` nodes of this tree so far (slots 0 … first_slot − 1);
    this layer's nodes become slots first_slot, first_slot + 1, … in order.
    """

    tokens: torch.Tensor  # (m,) the nodes' tokens
    parent_slots: torch.Tensor  # (m,) each node's parent's slot (-1: the root)
    depth: int  # every node of the layer sits at depth ``depth`` (1: children of the root)
    ancestors: torch.Tensor  # (m, first_slot) bool: ancestors[i, s] — slot s is an ancestor of node i
    paths: torch.Tensor  # (m, depth) tokens from depth 1 down to each node (its own token last)

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    @property
    def first_slot(self) -> int:
        return self.ancestors.shape[1]

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def attention(self, committed: int) -> torch.Tensor:
        """(m, committed + first_slot + m) bool, for a drafter whose cache holds ``committed`` entries
        (the root last) followed by this tree's slots in order: every node sees the committed part,
        its fed ancestors and itself. Built afresh for every layer, never reused."""
        m = self.size
        return torch.cat([torch.ones(m, committed, dtype=torch.bool, device=self.device), self.ancestors,
                          torch.eye(m, dtype=torch.bool, device=self.device)], dim=1)

    def positions(self, root_position: int) -> torch.Tensor:
        """(m,) positions: the root's plus the layer's depth (positions by depth)."""
        return torch.full((self.size,), root_position + self.depth, dtype=torch.long, device=self.device)
