"""One step of a log as a ``networkx.DiGraph``, and the tree-attention (ancestor) mask.

Node attributes: ``token, text, label`` (text with whitespace made visible), ``p_hat,
log_p_hat, q, depth, rank, accepted, drafted, target_token, target_text, kind`` where
kind is ``root``, ``accepted``, ``rejected`` or ``bonus``. The bonus token is not a node
of the drafted tree; with ``bonus=True`` it hangs below the last accepted node as an
extra node (id ``n_nodes``, ``drafted=False``), as in the OPT-Tree paper's case figure.
Graph attributes: ``step, a, ea, n_nodes, bonus_node`` (None when there is none).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np

from .logs import safe_log, step_info, step_nodes, token_text, token_text_map, visible

ROOT, ACCEPTED, REJECTED, BONUS = "root", "accepted", "rejected", "bonus"


def step_graph(data, step: int, bonus: bool = True, texts: Mapping[int, str] | None = None) -> nx.DiGraph:
    """The tree of ``step``; ``texts`` (token id → text) defaults to the log's own texts."""
    texts = token_text_map(data) if texts is None else texts
    rows, info = step_nodes(data, step), step_info(data, step)
    graph = nx.DiGraph(step=info.step, a=info.a, ea=info.ea, n_nodes=info.n_nodes, bonus_node=None)
    for row in rows.itertuples(index=False):
        node, accepted = int(row.node), bool(row.accepted)
        kind = ROOT if node == 0 else ACCEPTED if accepted else REJECTED
        text = token_text(row.token, texts)
        graph.add_node(node, token=int(row.token), text=text, label=visible(text), p_hat=float(row.p_hat),
                       log_p_hat=safe_log(float(row.p_hat)), q=float(row.q), depth=int(row.depth),
                       rank=int(row.rank), accepted=accepted, drafted=node != 0, target_token=int(row.target_token),
                       target_text=token_text(row.target_token, texts), kind=kind)
        if row.parent >= 0:
            graph.add_edge(int(row.parent), node)
    if bonus:
        _add_bonus(graph, info, texts)
    return graph


def _add_bonus(graph: nx.DiGraph, info, texts: Mapping[int, str]) -> None:
    """The target's bonus token below the last accepted node (absent when EOS cut the step short)."""
    path = accepted_path(graph)
    if info.a != len(path):  # A = accepted drafted tokens + 1 bonus = len(root + path)
        return
    last, node = path[-1], info.n_nodes
    text = token_text(info.bonus_token, texts)
    graph.add_node(node, token=info.bonus_token, text=text, label=visible(text), p_hat=float("nan"),
                   log_p_hat=float("nan"), q=float("nan"), depth=graph.nodes[last]["depth"] + 1, rank=-1,
                   accepted=True, drafted=False, target_token=-1, target_text="", kind=BONUS)
    graph.add_edge(last, node)
    graph.graph["bonus_node"] = node


def accepted_path(graph: nx.DiGraph) -> list[int]:
    """Root, then the accepted drafted nodes from shallow to deep (the bonus node excluded)."""
    path, node = [0], 0
    while True:
        nxt = [c for c in graph.successors(node) if graph.nodes[c]["kind"] == ACCEPTED]
        if not nxt:
            return path
        node = min(nxt)
        path.append(node)


def ordered_children(graph: nx.DiGraph, node: int) -> list[int]:
    """Children by sibling rank, then node index (the bonus node last)."""
    return sorted(graph.successors(node), key=lambda c: (graph.nodes[c]["kind"] == BONUS, graph.nodes[c]["rank"], c))


def parents_array(graph: nx.DiGraph) -> list[int]:
    """``parents[i]`` for nodes 0 … len−1 (the root's is −1); node ids must be 0 … len−1."""
    parents = [-1] * graph.number_of_nodes()
    for u, v in graph.edges:
        parents[v] = u
    return parents


def ancestor_matrix(parents: Sequence[int]) -> np.ndarray:
    """(N, N) bool tree-attention mask: ``m[i, j]`` when j is i or an ancestor of i (parents[i] < i)."""
    n = len(parents)
    mask = np.eye(n, dtype=bool)
    for i in range(1, n):
        mask[i] |= mask[parents[i]]
    return mask
