"""The growing tree's storage: what ``grow.TreeBuilder`` keeps and hands on, apart from choosing.

``TreeStore`` holds the node attributes in buffers that grow as layers are appended
(``add_layer``), feeds a layer's nodes to the drafter as a frozen ``TreeLayer`` (``feed``), and
cuts the final ``DraftTree`` out of them (``subtree``). Which candidates become nodes is decided
in ``grow.py`` (``TreeBuilder.add_best``, ``add_ranks``, ``add_at``).
"""
from __future__ import annotations

import torch

from .tree import DraftTree, TreeLayer

_FIELDS = ("tokens", "parents", "depth", "rank", "slots", "p_hat", "q", "path")


class TreeStore:
    """The growing tree: node attributes in buffers that grow as layers are added.

    Besides the node attributes it keeps, for every node, the indices of its ancestors by depth
    (``path[i, d]`` = ancestor of i at depth d, or -1), from which each ``TreeLayer``'s ancestor
    rows are built afresh (docs/architecture.md, "Traps": no draft-side mask reuse), and each
    node's drafter slot (-1 until it is fed). With sampled children (``children``, a
    ``grow.ChildSampling``) it also keeps every expansion's draws and draft distribution
    (``expansions``), which the final tree carries for verification.
    """

    def __init__(self, root_token: int, max_depth: int, device, children=None, capacity: int = 32):
        self.device, self.children, self.max_depth = torch.device(device), children, max_depth
        self.size, capacity = 1, max(capacity, 1)
        long = {"dtype": torch.long, "device": self.device}
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
