"""A drawable record of one step's tree: positions, colours' inputs, labels, hover data.

``tree_scene`` does every decision both renderers share (layout, orientation, figure
size, marker size, which labels fit); ``plotly_tree`` and ``mpl_tree`` only draw it.
Labels sit off the edges (below a node when the root is on top, right of it when the tree
runs left to right; edges leave a node below or after its label). Every label of the root,
the accepted path and the bonus token is shown; another is left out where it would overlap
one already placed on its level; hover still shows every node. A label of punctuation alone
(``.``, ``,``, `````) is drawn larger, so a student can read it. In projector mode
(``treeviz.projector()``) fonts are larger and the tree is spread out until every label fits.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import style
from .graph import ACCEPTED, BONUS, REJECTED, ROOT, accepted_path, step_graph
from .layout import layout
from .logs import visible

NODE_COLUMNS = ["node", "x", "y", "kind", "token", "text", "label", "show_label", "label_px", "p_hat", "log_p_hat",
                "q", "depth", "rank", "accepted", "drafted", "target_text"]
MARGIN_PX = 60
CHAR_EM = 0.62  # rough width of one label character, in font sizes
LABEL_CHARS = 14
PUNCTUATION_EXTRA_PX = 5  # a label of punctuation alone is drawn this much larger


def label_px(label: str) -> float:
    """The font size of one node label: larger for punctuation alone ("." "," "```"), which is
    unreadable at the size of a word."""
    base = style.LABEL_PX + (PUNCTUATION_EXTRA_PX if not any(c.isalnum() for c in label) else 0)
    return style.font_px(base)


def label_width_px(label: str) -> float:
    return len(label) * CHAR_EM * label_px(label)


def fitting_labels(centres_px, widths_px, levels, order, always, allowed=None) -> np.ndarray:
    """Which labels to show, taken in ``order``: one in ``always`` is shown; another (of those
    ``allowed``, default all) only where it overlaps no label already shown on its level
    (``centres_px``/``widths_px`` along the level)."""
    allowed = np.ones(len(centres_px), dtype=bool) if allowed is None else allowed
    placed: dict[float, list[tuple[float, float]]] = {}
    show = np.zeros(len(centres_px), dtype=bool)
    for i in order:
        low, high = centres_px[i] - widths_px[i] / 2, centres_px[i] + widths_px[i] / 2
        taken = placed.setdefault(float(levels[i]), [])
        if always[i] or (allowed[i] and all(high <= a or low >= b for a, b in taken)):
            taken.append((low, high))
            show[i] = True
    return show


@dataclass(frozen=True)
class TreeScene:
    """``nodes``: one row per drawn node (``NODE_COLUMNS``); ``edges``: x0, y0, x1, y1, kind, child (the node it leads to)
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
    nodes = _node_frame(graph, pos, orientation)
    widest = max(nodes["label"].map(label_width_px).max() + 6, 40) if style.projecting() else 0
    width, height, unit_px, level_px = _size(orientation, spread, levels, width, height, widest)
    marker_px = float(np.clip(0.7 * unit_px, 5, 16))
    nodes["show_label"] = _labels_that_fit(nodes, orientation, unit_px, level_px)
    x_px, y_px = (unit_px, level_px) if orientation == "td" else (level_px, unit_px)
    clearance = _label_clearance(nodes, orientation, marker_px, x_px, y_px)
    return TreeScene(step=graph.graph["step"], a=graph.graph["a"], ea=graph.graph["ea"],
                     n_nodes=graph.graph["n_nodes"], orientation=orientation, nodes=nodes,
                     edges=_edge_frame(graph, nodes, orientation, clearance),
                     width=width, height=height, marker_px=marker_px, x_px=x_px, y_px=y_px)


def _size(orientation: str, spread: float, levels: float, width, height,
          widest_label_px: float = 0) -> tuple[int, int, float, float]:
    """Figure size, pixels per sibling unit and pixels per level. ``widest_label_px`` > 0 (projector
    mode) spreads the tree until labels that wide fit side by side."""
    scale = style.font_px(1.0)
    if orientation == "td":
        unit = max(40.0, widest_label_px)
        width = width or int(np.clip(spread * unit + 2 * MARGIN_PX, 520, 1400 if not widest_label_px else 4000))
        height = height or int(np.clip(levels * 80 * scale + 2 * MARGIN_PX, 300, 900 * scale))
        return width, height, (width - 2 * MARGIN_PX) / spread, (height - 2 * MARGIN_PX) / levels
    width = width or int(np.clip(levels * max(130.0, widest_label_px + 30) + 2 * MARGIN_PX, 520,
                                 1400 if not widest_label_px else 4000))
    height = height or int(np.clip(spread * 17 * scale + 2 * MARGIN_PX, 300, 8000))
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
    frame["label_px"] = frame["label"].map(label_px)
    return frame[NODE_COLUMNS]


def _labels_that_fit(nodes: pd.DataFrame, orientation: str, unit_px: float, level_px: float) -> np.ndarray:
    """Which labels to show: every label of the root, the accepted path and the bonus token, then the
    others by p̂ (largest first), each only where it overlaps no label already placed on its level."""
    along, across = ("x", "y") if orientation == "td" else ("y", "x")
    widths = nodes["label"].map(label_width_px).to_numpy()
    extent = widths + 4 if orientation == "td" else nodes["label_px"].to_numpy() + 2.0  # px along the level
    always = nodes["kind"].isin([ROOT, ACCEPTED, BONUS]).to_numpy()
    fits_level = widths <= level_px - 20 if orientation == "lr" else np.ones(len(nodes), dtype=bool)
    order = np.lexsort((nodes["node"].to_numpy(), -nodes["p_hat"].fillna(2.0).to_numpy(), ~always))
    centres = nodes[along].to_numpy(dtype=float) * unit_px
    return fitting_labels(centres, extent, nodes[across].to_numpy(dtype=float), order, always, fits_level)


def _label_clearance(nodes: pd.DataFrame, orientation: str, marker_px: float, x_px: float,
                     y_px: float) -> pd.Series:
    """How far (layout units) a node's outgoing edges start from it, so they pass clear of its
    label: labels sit below the node (top down) or to its right (left to right), never on an edge."""
    if orientation == "lr":
        room = (marker_px / 2 + 4 + nodes["label"].map(label_width_px).to_numpy()) / x_px
    else:
        room = (marker_px / 2 + 2 * nodes["label_px"].to_numpy() + 6) / y_px  # two lines: the token, and p̂ in print
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
            y0 = max(y0 - clearance[u], y1)
        rows.append({"x0": x0, "y0": y0, "x1": x1, "y1": y1, "kind": kind, "child": v})
    return pd.DataFrame(rows, columns=["x0", "y0", "x1", "y1", "kind", "child"])


def edge_lines(edges: pd.DataFrame, kind: str) -> tuple[list, list]:
    """x and y lists of one kind of edge, segments separated by None (plotly's convention)."""
    xs: list = []
    ys: list = []
    for row in edges[edges["kind"] == kind].itertuples(index=False):
        xs += [row.x0, row.x1, None]
        ys += [row.y0, row.y1, None]
    return xs, ys
