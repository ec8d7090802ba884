"""Lossless verification at temperature > 0, for trees of deterministic (top-k) children.

Notation: p = the target's distribution at a node after temperature, top-k and top-p;
q = the draft's. A node's children were picked deterministically (the draft's top
candidates), so each child x_i is a point mass for the acceptance rule:

    accept x_i with probability p(x_i) / Σ p        (p the current residual)
    on rejection: p(x_i) ← 0, renormalise, try the next child
    if no child is accepted: sample the bonus token from the residual p

Each emitted token is then distributed exactly as p (SpecInfer's multi-candidate rule with
one-hot proposals), so the output has the target's distribution whatever the draft.
"""
from __future__ import annotations

import torch

from .tree import DraftTree


def target_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(N, V) logits → (N, V) probabilities: temperature, then top-k, then nucleus (top-p)."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # tokens after the nucleus is full
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_path(tree: DraftTree, probs: torch.Tensor, generator: torch.Generator) -> tuple[list[int], int]:
    """Walk the tree by recursive rejection; returns (accepted node indices, bonus token)."""
    parents, tokens = tree.parents.tolist(), tree.tokens.tolist()
    children: dict[int, list[int]] = {}
    for node in range(1, tree.n_nodes):  # breadth-first order keeps siblings in draft-rank order
        children.setdefault(parents[node], []).append(node)
    path, node = [], 0
    while True:
        residual = probs[node].clone()  # (V,)
        chosen = None
        for child in children.get(node, []):
            mass = residual.sum()
            u = torch.rand((), generator=generator, device=generator.device).to(residual.device)
            if u * mass < residual[tokens[child]]:
                chosen = child
                break
            residual[tokens[child]] = 0.0
        if chosen is None:
            bonus = torch.multinomial(residual / residual.sum(), 1, generator=generator)
            return path, int(bonus)
        path.append(chosen)
        node = chosen
