"""Plotly figures of one step: the tree, its tree-attention mask, and an icicle of p̂.

Each figure is first built as a plain JSON-ready dict (``*_spec``: ``{"data": [...],
"layout": {...}}``), which the HTML export embeds as is; the ``*_figure`` functions wrap
a spec in a ``go.Figure``. The tree figure always has the same traces, in this order
(``TREE_TRACES``), so a figure can be updated in place from step to step:
``rejected edges`` (dotted), ``accepted path``, ``bonus edge``, ``nodes`` (every node filled
with its p̂ colour, read on the colour bar; the accepted path larger and outlined, rejected
nodes with a thin grey outline) and ``bonus token`` (the target's own token: an orange diamond
below the last accepted node). Labels sit below the nodes, off the edges (``scene``).
The hover data of ``nodes`` is its ``customdata`` (columns ``HOVER_COLUMNS``).
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from . import style
from .graph import (
    ACCEPTED,
    BONUS,
    REJECTED,
    ROOT,
    ancestor_matrix,
    parents_array,
    step_graph,
)
from .logs import visible
from .scene import TreeScene, edge_lines, tree_scene

HOVER_COLUMNS = ["text", "token", "p_hat", "log_p_hat", "q", "depth", "rank", "accepted", "target_text"]
NODE_HOVER = ("<b>%{customdata[0]}</b> (id %{customdata[1]})<br>p̂ = %{customdata[2]:.4g}"
              " · log p̂ = %{customdata[3]:.3f}<br>draft q = %{customdata[4]:.4g}<br>depth %{customdata[5]}"
              " · sibling rank %{customdata[6]}<br>accepted: %{customdata[7]}<br>target's next token:"
              " %{customdata[8]}<extra></extra>")
BONUS_HOVER = "<b>%{customdata[0]}</b> (id %{customdata[1]})<br>bonus token: produced by the target<extra></extra>"
TREE_TRACES = ["rejected edges", "accepted path", "bonus edge", "nodes", "bonus token"]
EDGE_LOOKS = ((REJECTED, "rejected edges", {"color": style.REJECTED_EDGE, "width": 1.2, "dash": "dot"}),
              (ACCEPTED, "accepted path", {"color": style.ACCEPTED, "width": 3.5}),
              (BONUS, "bonus edge", {"color": style.TARGET, "width": 2.5, "dash": "dot"}))


def _list(values) -> list:
    """Plain Python values (JSON-ready) from a Series or an array."""
    return np.asarray(values).tolist()


def _safe(text: str) -> str:
    """Plotly reads a few HTML tags in text; a token like ``</s>`` must show as itself."""
    return html.escape(text, quote=False)


def _six_digits(value: float) -> float:
    """Six significant digits (hover data stays small in JSON; tiny p̂ keep their precision)."""
    return float(f"{float(value):.6g}")


def tree_figure(data, step: int, **scene_options) -> go.Figure:
    """The tree of ``step`` (options: ``method``, ``orientation``, ``texts``, ``width``, ``height``)."""
    return go.Figure(tree_spec(tree_scene(data, step, **scene_options)))


def scene_figure(scene: TreeScene) -> go.Figure:
    return go.Figure(tree_spec(scene))


def tree_spec(scene: TreeScene) -> dict:
    traces = []
    for kind, name, line in EDGE_LOOKS:
        xs, ys = edge_lines(scene.edges, kind)
        traces.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "name": name, "line": line,
                       "hoverinfo": "skip", "showlegend": kind != BONUS})
    traces += [_node_trace(scene), _bonus_trace(scene)]
    return {"data": traces, "layout": tree_layout(scene)}


def _text_position(scene: TreeScene) -> str:
    return "bottom center" if scene.orientation == "td" else "middle right"


def _node_trace(scene: TreeScene) -> dict:
    nodes = scene.nodes[scene.nodes["kind"] != BONUS]
    kind = nodes["kind"].to_numpy()
    on_path = np.isin(kind, [ROOT, ACCEPTED])
    custom = nodes[HOVER_COLUMNS].copy()
    custom["text"] = custom["text"].map(lambda t: _safe(visible(t)))
    custom["target_text"] = custom["target_text"].map(lambda t: _safe(visible(t)))
    custom["accepted"] = custom["accepted"].map({True: "yes", False: "no"})
    for column in ("p_hat", "log_p_hat", "q"):
        custom[column] = custom[column].map(_six_digits)
    marker = {"size": _list(np.where(on_path, scene.marker_px * 1.25, scene.marker_px)),
              "color": _list(nodes["p_hat"].astype(float)), "colorscale": style.P_HAT_SCALE, "cmin": 0.0,
              "cmax": 1.0, "opacity": 1.0, "symbol": _list(np.where(kind == ROOT, "square", "circle")),
              "line": {"color": _list(np.where(on_path, style.ACCEPTED, style.REJECTED_OUTLINE)),
                       "width": _list(np.where(on_path, 2.5, 1.0))},
              "colorbar": {"title": {"text": "node colour: p̂"}, "thickness": 12, "len": 0.8}}
    labels = [_safe(t) if show else "" for t, show in zip(nodes["label"], nodes["show_label"])]
    return {"type": "scatter", "x": _list(nodes["x"]), "y": _list(nodes["y"]), "mode": "markers+text",
            "name": "nodes (colour = p̂)", "showlegend": False, "text": labels,
            "textposition": _text_position(scene),
            "textfont": {"size": _list(nodes["label_px"]), "family": style.FONT},
            "marker": marker, "customdata": custom.to_numpy(dtype=object).tolist(), "hovertemplate": NODE_HOVER}


def _bonus_trace(scene: TreeScene) -> dict:
    bonus = scene.nodes[scene.nodes["kind"] == BONUS]
    return {"type": "scatter", "x": _list(bonus["x"]), "y": _list(bonus["y"]), "mode": "markers+text",
            "name": "bonus token (target)", "text": [_safe(t) for t in bonus["label"]],
            "textposition": _text_position(scene),
            "textfont": {"size": _list(bonus["label_px"]), "family": style.FONT, "color": style.ACCEPTED},
            "marker": {"symbol": "diamond", "size": scene.marker_px * 1.5, "color": style.TARGET,
                       "line": {"color": style.ACCEPTED, "width": 2}},
            "customdata": [[_safe(t), int(k)] for t, k in zip(bonus["label"], bonus["token"])],
            "hovertemplate": BONUS_HOVER}


TREE_MARGIN = {"l": 20, "r": 20, "t": 80, "b": 40}


def tree_layout(scene: TreeScene) -> dict:
    pad = 0.6
    xs, ys = scene.nodes["x"], scene.nodes["y"]
    x_extra = 1.2 if scene.orientation == "lr" else pad  # room for labels to the right
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False, "showline": False}
    return {**style.PLOTLY_BASE, "width": scene.width, "height": scene.height,
            "title": style.title_in_margin(scene.title, TREE_MARGIN["t"], scene.height),
            "xaxis": {**axis, "range": [float(xs.min()) - pad, float(xs.max()) + x_extra]},
            "yaxis": {**axis, "range": [float(ys.min()) - pad, float(ys.max()) + pad]},
            "legend": {"orientation": "h", "y": -0.02, "yanchor": "top", "x": 0},
            "margin": TREE_MARGIN,
            "hoverlabel": {"font": {"family": "DejaVu Sans Mono, monospace"}}}


# a mask cell: 0 hidden (white), 1 visible (blue), 2 visible and on the accepted path (accepted colour)
MASK_SCALE = [[0, "#FFFFFF"], [0.33, "#FFFFFF"], [0.33, "#6C8EBF"], [0.66, "#6C8EBF"], [0.66, style.ACCEPTED],
              [1, style.ACCEPTED]]


def _node_names(graph) -> list[str]:
    """``index:token`` for each node: how the mask's rows and columns are labelled."""
    return [_safe(f"{v}:{visible(graph.nodes[v]['text'], 10)}") for v in range(graph.number_of_nodes())]


def _mask_trace(graph, prefix_len: int = 0) -> dict:
    """0 hidden, 1 visible, 2 both on the accepted path; with ``prefix_len``, one first column for
    the cached prefix (visible to every node)."""
    mask = ancestor_matrix(parents_array(graph))
    accepted = np.array([graph.nodes[v]["accepted"] for v in range(len(mask))])
    z = mask.astype(int) + (mask & accepted[:, None] & accepted[None, :])  # (N, N)
    names = _node_names(graph)
    columns = names
    if prefix_len:
        z = np.hstack([np.ones((len(mask), 1), dtype=int), z])  # (N, 1 + N)
        columns = [f"prefix ({prefix_len} tokens)"] + names
    return {"type": "heatmap", "z": z.tolist(), "x": columns, "y": names, "zmin": 0, "zmax": 2, "colorscale": MASK_SCALE,
            "showscale": False, "xgap": 1, "ygap": 1, "name": "mask",
            "hovertemplate": "query %{y}<br>key %{x}<extra></extra>"}


def _icicle_trace(graph) -> dict:
    """Each node's area is its p̂ (the root's is 1); a parent holds at least its children."""
    n = graph.number_of_nodes()
    value = [1.0 if v == 0 else graph.nodes[v]["p_hat"] for v in range(n)]
    for v in range(n - 1, -1, -1):  # float rounding can make children sum past their parent
        value[v] = max(value[v], sum(value[c] for c in graph.successors(v)))
    colours = [style.ACCEPTED if graph.nodes[v]["accepted"] else "#9DB4D9" for v in range(n)]
    return {"type": "icicle", "ids": [str(v) for v in range(n)],
            "parents": ["" if p < 0 else str(p) for p in parents_array(graph)],
            "labels": [_safe(graph.nodes[v]["label"]) for v in range(n)], "values": value, "branchvalues": "total",
            "marker": {"colors": colours}, "customdata": [_six_digits(graph.nodes[v]["p_hat"]) for v in range(n)],
            "hovertemplate": "%{label}<br>p̂ = %{customdata:.4g}<extra></extra>", "sort": False,
            "tiling": {"orientation": "v"}, "name": "icicle"}


def attention_mask_figure(data, step: int, texts=None, prefix_len: int = 0) -> go.Figure:
    """The tree-attention mask of ``step``: row i may attend to column j (j is i or an ancestor);
    cells among accepted nodes are drawn in the accepted colour. ``prefix_len`` > 0 adds the cached
    prefix as one block of columns on the left (every node attends to all of it)."""
    graph = step_graph(data, step, bonus=False, texts=texts)
    n = graph.number_of_nodes()
    side = int(np.clip(28 * n + 200, 420, 900))
    ticks = {"tickfont": {"size": 11, "family": "DejaVu Sans Mono, monospace"}, "automargin": True}
    prefix = f" · left block: the {prefix_len} cached prefix tokens" if prefix_len else ""
    return go.Figure({"data": [_mask_trace(graph, prefix_len)], "layout": {
        **style.PLOTLY_BASE, "title": {"text": f"tree-attention mask, step {step}{prefix}"},
        "width": side + (120 if prefix_len else 0), "height": side,
        "yaxis": {**ticks, "autorange": "reversed", "title": {"text": "query node (index:token)"}},
        "xaxis": {**ticks, "tickangle": -60, "title": {"text": "key (index:token)"}},
        "margin": {"l": 20, "r": 20, "t": 50, "b": 20}}})


def icicle_figure(data, step: int, texts=None) -> go.Figure:
    """An icicle of the tree of ``step``: each node's area is its p̂."""
    graph = step_graph(data, step, bonus=False, texts=texts)
    return go.Figure({"data": [_icicle_trace(graph)], "layout": {
        **style.PLOTLY_BASE, "title": {"text": f"p̂ icicle, step {step} (area = p̂)"}, "width": 460, "height": 460,
        "margin": {"l": 10, "r": 10, "t": 50, "b": 10}}})


def side_spec(data, step: int, texts=None) -> dict:
    """The tree-attention mask and the p̂ icicle of ``step`` side by side (two traces, this order)."""
    graph = step_graph(data, step, bonus=False, texts=texts)
    few = graph.number_of_nodes() <= 24
    axis = {"showticklabels": few, "tickfont": {"size": 10, "family": "DejaVu Sans Mono, monospace"},
            "showgrid": False, "zeroline": False, "automargin": True}
    titles = [{"text": text, "x": x, "y": 1.0, "xref": "paper", "yref": "paper", "xanchor": "center",
               "yanchor": "bottom", "showarrow": False, "font": {"size": 13}}
              for text, x in (("tree-attention mask (accepted in colour)", 0.22), ("p̂ icicle (area = p̂)", 0.78))]
    icicle = {**_icicle_trace(graph), "domain": {"x": [0.56, 1.0], "y": [0.0, 1.0]}}
    return {"data": [_mask_trace(graph), icicle], "layout": {
        **style.PLOTLY_BASE, "width": 820, "height": 420, "annotations": titles,
        "xaxis": {**axis, "domain": [0.0, 0.44]}, "yaxis": {**axis, "autorange": "reversed"},
        "margin": {"l": 20 if not few else 90, "r": 20, "t": 40, "b": 20 if not few else 80}}}


def side_figure(data, step: int, texts=None) -> go.Figure:
    return go.Figure(side_spec(data, step, texts))
