"""Tree layouts: a pure-Python tidy tree (Reingold–Tilford style) and Graphviz ``dot``.

Both return ``{node: (x, y)}`` in layout units: depth d sits at y = −d (parents above
their children) and neighbours on one level are at least ``sep`` apart.

The tidy layout places each subtree as a rigid block: children's subtrees are packed
left to right as close as their contours (the leftmost and rightmost x at every depth)
allow, and each parent is centred over its first and last child. It is deterministic
(children ordered by the key given, else by node id), O(n · depth), and takes nodes
of any ids (a log's nodes come breadth-first, but the layout does not rely on it).
"""
from __future__ import annotations

import shutil
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence

import networkx as nx

Positions = dict[int, tuple[float, float]]


def tidy_positions(parents: Mapping[int, int], order: Callable[[int], object] | None = None,
                   sep: float = 1.0) -> Positions:
    """Tidy layout of a tree given as ``{node: parent}`` (the root's parent is −1 or None)."""
    roots = [v for v, p in parents.items() if p is None or p < 0]
    if len(roots) != 1:
        raise ValueError(f"a tree has exactly one root (a node whose parent is -1), found {len(roots)}")
    children: dict[int, list[int]] = {v: [] for v in parents}
    for v in sorted(parents):
        if v != roots[0]:
            children[parents[v]].append(v)
    for kids in children.values():
        kids.sort(key=order or (lambda c: c))
    nodes = _breadth_first(roots[0], children)
    if len(nodes) != len(parents):
        raise ValueError("the parents do not form a tree: some nodes are not reachable from the root")
    offset: dict[int, float] = {}  # x of a node relative to its parent
    contour: dict[int, tuple[list[float], list[float]]] = {}  # subtree's left/right x by depth below it
    for v in reversed(nodes):  # children before parents
        contour[v] = _place_children(children[v], contour, offset, sep)
    return _absolute(nodes, parents, offset)


def _place_children(kids: list[int], contour, offset, sep: float) -> tuple[list[float], list[float]]:
    """Pack the children's subtrees, centre the parent; returns the parent's contour."""
    if not kids:
        return [0.0], [0.0]
    left, right = (list(c) for c in contour.pop(kids[0]))
    xs = [0.0]
    for kid in kids[1:]:
        k_left, k_right = contour.pop(kid)
        shift = max(r - l for r, l in zip(right, k_left)) + sep
        for d, (kl, kr) in enumerate(zip(k_left, k_right)):
            if d < len(right):
                right[d] = kr + shift
            else:
                left.append(kl + shift)
                right.append(kr + shift)
        xs.append(shift)
    centre = (xs[0] + xs[-1]) / 2
    for kid, x in zip(kids, xs):
        offset[kid] = x - centre
    return [0.0] + [x - centre for x in left], [0.0] + [x - centre for x in right]


def _breadth_first(root: int, children: Mapping[int, list[int]]) -> list[int]:
    order, i = [root], 0
    while i < len(order):
        order.extend(children[order[i]])
        i += 1
    return order


def _absolute(nodes: list[int], parents: Mapping[int, int], offset: Mapping[int, float]) -> Positions:
    x: dict[int, float] = {}
    y: dict[int, float] = {}
    for v in nodes:
        p = parents[v]
        if p is None or p < 0:
            x[v], y[v] = 0.0, 0.0
        else:
            x[v], y[v] = x[p] + offset[v], y[p] - 1.0
    low = min(x.values(), default=0.0)
    return {v: (x[v] - low, y[v]) for v in nodes}


def tidy_layout(graph: nx.DiGraph, sep: float = 1.0) -> Positions:
    """Tidy layout of a step graph (children by sibling rank, the bonus node last)."""
    from .graph import ordered_children

    parents = {v: -1 for v in graph.nodes}
    rank = {}
    for u in graph.nodes:
        for i, c in enumerate(ordered_children(graph, u)):
            parents[c], rank[c] = u, i
    return tidy_positions(parents, order=lambda c: (rank[c], c), sep=sep)


def has_dot() -> bool:
    return shutil.which("dot") is not None


def dot_layout(graph: nx.DiGraph) -> Positions:
    """Graphviz ``dot`` through pydot; without the ``dot`` program, a one-line notice and the tidy layout."""
    if not has_dot():
        print("treeviz: Graphviz 'dot' is not installed; using the tidy layout instead", file=sys.stderr)
        return tidy_layout(graph)
    from .graph import ordered_children

    bare = nx.DiGraph()  # ids only: token texts can break the dot language
    bare.add_nodes_from(graph.nodes)
    for u in sorted(graph.nodes):
        bare.add_edges_from((u, c) for c in ordered_children(graph, u))
    bare.graph["graph"] = {"ordering": "out", "nodesep": "0.1", "ranksep": "0.3"}
    with warnings.catch_warnings():  # pydot's parser uses deprecated pyparsing names
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = nx.nx_pydot.pydot_layout(bare, prog="dot")
    return _normalise(graph, raw)


def _normalise(graph: nx.DiGraph, raw: Mapping) -> Positions:
    """Dot's points to layout units: y = −depth, x scaled so the closest neighbours on a level are 1 apart."""
    depth = nx.single_source_shortest_path_length(graph, 0) if 0 in graph else {v: 0 for v in graph}
    levels: dict[int, list[float]] = {}
    for v in graph.nodes:
        levels.setdefault(depth[v], []).append(float(raw[v][0]))
    gaps = [b - a for xs in levels.values() for a, b in zip(sorted(xs), sorted(xs)[1:]) if b > a]
    scale = min(gaps) if gaps else 1.0
    low = min(float(raw[v][0]) for v in graph.nodes)
    return {v: ((float(raw[v][0]) - low) / scale, -float(depth[v])) for v in graph.nodes}


LAYOUTS = {"tidy": tidy_layout, "dot": dot_layout}


def layout(graph: nx.DiGraph, method: str = "tidy") -> Positions:
    if method not in LAYOUTS:
        raise ValueError(f"unknown layout {method!r}: choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[method](graph)


def parents_of(parents: Sequence[int]) -> dict[int, int]:
    """``{node: parent}`` from a parents list (as in a log's ``parent`` column)."""
    return {i: int(p) for i, p in enumerate(parents)}
