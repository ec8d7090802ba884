"""A drawable record of one step's tree: positions, colours' inputs, labels, hover data.

``tree_scene`` does every decision both renderers share (layout, orientation, figure
size, marker size, which labels fit); ``plotly_tree`` and ``mpl_tree`` only draw it.
Labels that would overlap a neighbour are left out (the root, the accepted path and the
bonus token are always labelled); hover still shows every node.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .graph import ACCEPTED, BONUS, REJECTED, ROOT, accepted_path, step_graph
from .layout import layout
from .logs import visible

NODE_COLUMNS = ["node", "x", "y", "kind", "token", "text", "label", "show_label", "p_hat", "log_p_hat", "q",
                "depth", "rank", "accepted", "drafted", "target_text"]
MARGIN_PX = 60
FONT_PX = 11
CHAR_PX = 0.62 * FONT_PX  # rough width of one label character
LABEL_CHARS = 14


@dataclass(frozen=True)
class TreeScene:
    """``nodes``: one row per drawn node (``NODE_COLUMNS``); ``edges``: x0, y0, x1, y1, kind
    (``accepted``, ``rejected`` or ``bonus``). Sizes in pixels are suggestions."""

    step: int
    a: int
    ea: float
    n_nodes: int
    orientation: str  # "td" (root on top) or "lr" (root on the left)
    nodes: pd.DataFrame
    edges: pd.DataFrame
    width: int
    height: int
    marker_px: float
    x_px: float  # pixels per layout unit along x
    y_px: float  # pixels per layout unit along y

    @property
    def title(self) -> str:
        return f"step {self.step} · {self.n_nodes - 1} drafted nodes<br>E(A) = {self.ea:.2f} · A = {self.a}"


def tree_scene(data, step: int, method: str = "tidy", orientation: str = "auto", texts: Mapping | None = None,
               width: int | None = None, height: int | None = None) -> TreeScene:
    """The scene of ``step``. ``orientation="auto"`` draws wide trees left to right."""
    graph = step_graph(data, step, texts=texts)
    pos = layout(graph, method)
    spread = max((x for x, _ in pos.values()), default=0.0) + 1
    levels = 1 - min((y for _, y in pos.values()), default=0.0)
    if orientation == "auto":
        orientation = "lr" if spread > 40 else "td"
    if orientation not in ("td", "lr"):
        raise ValueError(f"orientation must be 'td', 'lr' or 'auto', got {orientation!r}")
    width, height, unit_px, level_px = _size(orientation, spread, levels, width, height)
    marker_px = float(np.clip(0.7 * unit_px, 5, 16))
    nodes = _node_frame(graph, pos, orientation)
    nodes["show_label"] = _labels_that_fit(nodes, orientation, unit_px, level_px)
    x_px, y_px = (unit_px, level_px) if orientation == "td" else (level_px, unit_px)
    clearance = _label_clearance(nodes, orientation, marker_px, x_px, y_px)
    return TreeScene(step=graph.graph["step"], a=graph.graph["a"], ea=graph.graph["ea"],
                     n_nodes=graph.graph["n_nodes"], orientation=orientation, nodes=nodes,
                     edges=_edge_frame(graph, nodes, orientation, clearance),
                     width=width, height=height, marker_px=marker_px, x_px=x_px, y_px=y_px)


def _size(orientation: str, spread: float, levels: float, width, height) -> tuple[int, int, float, float]:
    """Figure size, pixels per sibling unit and pixels per level."""
    if orientation == "td":
        width = width or int(np.clip(spread * 40 + 2 * MARGIN_PX, 520, 1400))
        height = height or int(np.clip(levels * 80 + 2 * MARGIN_PX, 300, 900))
        return width, height, (width - 2 * MARGIN_PX) / spread, (height - 2 * MARGIN_PX) / levels
    width = width or int(np.clip(levels * 130 + 2 * MARGIN_PX, 520, 1400))
    height = height or int(np.clip(spread * 17 + 2 * MARGIN_PX, 300, 8000))
    return width, height, (height - 2 * MARGIN_PX) / spread, (width - 2 * MARGIN_PX) / (levels + 1)


def _node_frame(graph, pos, orientation: str) -> pd.DataFrame:
    rows = []
    for node, attrs in sorted(graph.nodes(data=True)):
        x, y = pos[node]
        x, y = (x, y) if orientation == "td" else (-y, -x)
        rows.append({**{k: attrs[k] for k in NODE_COLUMNS if k in attrs}, "node": node, "x": x, "y": y,
                     "label": visible(attrs["text"], LABEL_CHARS)})
    frame = pd.DataFrame(rows)
    frame["show_label"] = False
    return frame[NODE_COLUMNS]


def _labels_that_fit(nodes: pd.DataFrame, orientation: str, unit_px: float, level_px: float) -> np.ndarray:
    """A label shows when it clears its neighbours on its level (always on the accepted path)."""
    along, across = ("x", "y") if orientation == "td" else ("y", "x")
    fit = np.zeros(len(nodes), dtype=bool)
    for _, level in nodes.groupby(across):
        order = level.sort_values(along)
        coords = order[along].to_numpy()
        gaps = np.diff(coords) * unit_px  # (k - 1,)
        room = np.minimum(np.r_[np.inf, gaps], np.r_[gaps, np.inf])  # space to the nearer neighbour
        need = order["label"].str.len().to_numpy() * CHAR_PX + 4 if orientation == "td" else FONT_PX + 2
        ok = room >= need
        if orientation == "lr":
            ok &= order["label"].str.len().to_numpy() * CHAR_PX <= level_px - 20
        fit[order.index.to_numpy()] = ok
    return fit | nodes["kind"].isin([ROOT, ACCEPTED, BONUS]).to_numpy()


def _label_clearance(nodes: pd.DataFrame, orientation: str, marker_px: float, x_px: float,
                     y_px: float) -> pd.Series:
    """How far (layout units) edges keep off a node's label: outgoing edges start after it
    (left to right), incoming ones end above it (top down)."""
    chars = nodes["label"].str.len().to_numpy()
    if orientation == "lr":
        room = (marker_px / 2 + 4 + chars * CHAR_PX) / x_px
    else:
        room = (marker_px / 2 + FONT_PX + 2) / y_px
    return pd.Series(np.where(nodes["show_label"], room, 0.0), index=nodes["node"])


def _edge_frame(graph, nodes: pd.DataFrame, orientation: str, clearance: pd.Series) -> pd.DataFrame:
    at = nodes.set_index("node")[["x", "y"]]
    on_path = set(accepted_path(graph))
    rows = []
    for u, v in sorted(graph.edges):
        kind = BONUS if graph.nodes[v]["kind"] == BONUS else ACCEPTED if u in on_path and v in on_path else REJECTED
        x0, y0, x1, y1 = at.at[u, "x"], at.at[u, "y"], at.at[v, "x"], at.at[v, "y"]
        if orientation == "lr":
            x0 = min(x0 + clearance[u], x1)
        else:
            y1 = min(y1 + clearance[v], y0)
        rows.append({"x0": x0, "y0": y0, "x1": x1, "y1": y1, "kind": kind})
    return pd.DataFrame(rows, columns=["x0", "y0", "x1", "y1", "kind"])


def edge_lines(edges: pd.DataFrame, kind: str) -> tuple[list, list]:
    """x and y lists of one kind of edge, segments separated by None (plotly's convention)."""
    xs: list = []
    ys: list = []
    for row in edges[edges["kind"] == kind].itertuples(index=False):
        xs += [row.x0, row.x1, None]
        ys += [row.y0, row.y1, None]
    return xs, ys
