"""One decoding step end to end, as frames a teacher steps through (a plotly slider and ▶ play).

    draft layer 1 … draft layer D   the tree so far, and its tree-attention mask beside it
    verify                          one target forward over every node, each attending to its ancestors;
                                    under each node the target's own next token there (T = 0: its argmax)
    accept                          the path the target agrees with (greedy: a node is kept while its
                                    token is the target's choice below its parent; T > 0: recursive
                                    rejection draws accept or reject each child)
    bonus                           the target's token after the accepted path: A = accepted + 1

Every frame has the same traces (tree edges, accepted path, bonus edge, nodes, bonus token, mask), so
plotly animates between them; drawn from the log alone (``step_graph``, ``tree_scene``).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from . import style
from .graph import ACCEPTED, BONUS, ROOT, ancestor_matrix, parents_array, step_graph
from .logs import visible
from .plotly_tree import MASK_SCALE, _node_names, _safe, tree_layout
from .scene import edge_lines, tree_scene

PHASES = ("verify", "accept", "bonus")


def walkthrough_figure(data, step: int, texts: Mapping[int, str] | None = None) -> go.Figure:
    """The frames of ``step``: each draft layer, then verify, accept and bonus (module docstring)."""
    scene = tree_scene(data, step, texts=texts, orientation="td")
    graph = step_graph(data, step, bonus=False, texts=texts)
    ancestors = ancestor_matrix(parents_array(graph))  # (N, N): the same in every frame
    sampled = float((getattr(data, "meta", None) or {}).get("temperature") or 0.0) > 0
    layers = int(scene.nodes.loc[scene.nodes["kind"] != BONUS, "depth"].max())
    # no draft layer when the step drafted nothing: the root is verified alone
    frames = [_frame(scene, graph, ancestors, d, None, _draft_title(scene, d)) for d in range(1, layers + 1)]
    frames += [_frame(scene, graph, ancestors, layers, phase, _phase_title(scene, phase, sampled)) for phase in PHASES]
    figure = go.Figure(data=frames[0]["data"], frames=[go.Frame(**f) for f in frames],
                       layout=_layout(scene, frames[0]["layout"]["title"]["text"]))
    steps = [{"method": "animate", "label": f["name"], "args": [[f["name"]], {"mode": "immediate",
              "frame": {"duration": 0, "redraw": True}}]} for f in frames]
    figure.update_layout(
        sliders=[{"steps": steps, "currentvalue": {"prefix": "frame: "}, "y": -0.02, "x": 0.03, "len": 0.9}],
        updatemenus=[{"type": "buttons", "x": 0, "y": 1.0, "yanchor": "bottom", "xanchor": "left",
                      "pad": {"t": 0, "b": 44}, "buttons": [{"label": "▶ play", "method": "animate", "args": [
                          None, {"frame": {"duration": 1500, "redraw": True}, "fromcurrent": True}]}]}])
    return figure


def _draft_title(scene, d: int) -> str:
    drafted = scene.nodes[scene.nodes["kind"] != BONUS]
    return (f"step {scene.step} · draft layer {d}: the draft proposes {int((drafted['depth'] == d).sum())} "
            f"token(s) below layer {d - 1}<br>the tree so far and its attention mask (each node sees its ancestors)")


def _phase_title(scene, phase: str, sampled: bool) -> str:
    n = scene.n_nodes - 1
    if phase == "verify":
        how = "its distribution there (T > 0)" if sampled else "its argmax there, under each node"
        return f"step {scene.step} · verify: ONE target forward over the prefix + {n} nodes<br>the target's next token: {how}"
    if phase == "accept":
        how = ("recursive rejection draws accept or reject each child" if sampled
               else "a node is kept while its token is the target's choice below its parent")
        return f"step {scene.step} · accept: {scene.a - 1} drafted token(s) on the accepted path<br>{how}"
    return f"step {scene.step} · bonus: the target's own next token after the path<br>A = {scene.a} tokens this step (E(A) = {scene.ea:.2f})"


def _frame(scene, graph, ancestors: np.ndarray, layer: int, phase: str | None, title: str) -> dict:
    nodes = scene.nodes
    drafted = nodes[(nodes["kind"] != BONUS) & (nodes["depth"] <= layer)]
    judged = phase in PHASES[1:]
    shown = set(drafted["node"])
    edges = scene.edges
    into_shown = edges["child"].isin(shown)
    grey = edges[into_shown & ((edges["kind"] != ACCEPTED) | ~judged) & (edges["kind"] != BONUS)]
    kept = edges[into_shown & (edges["kind"] == ACCEPTED)] if judged else edges.iloc[:0]
    bonus = edges[edges["kind"] == BONUS] if phase == "bonus" else edges.iloc[:0]
    traces = [_lines(grey, "draft edges", {"color": style.REJECTED_EDGE, "width": 1.2, "dash": "dot" if judged else "solid"}),
              _lines(kept, "accepted path", {"color": style.ACCEPTED, "width": 3.5}),
              _lines(bonus, "bonus edge", {"color": style.TARGET, "width": 2.5, "dash": "dot"}),
              _nodes(drafted, phase, scene.marker_px), _bonus(nodes if phase == "bonus" else nodes.iloc[:0], scene),
              _mask(graph, ancestors, sorted(shown), phase)]
    return {"name": phase or f"draft layer {layer}", "data": traces, "layout": {"title": {"text": title}}}


def _lines(edges, name: str, line: dict) -> dict:
    xs, ys = edge_lines(edges.assign(kind="any"), "any")
    return {"type": "scatter", "x": xs, "y": ys, "mode": "lines", "name": name, "line": line, "hoverinfo": "skip",
            "xaxis": "x", "yaxis": "y", "showlegend": False}


def _nodes(nodes, phase: str | None, marker_px: float) -> dict:
    judged = phase in PHASES[1:]
    on_path = nodes["kind"].isin([ROOT, ACCEPTED]).to_numpy() & judged
    labels = [_safe(lab) for lab in nodes["label"]]
    if phase is not None:  # the target's own next token under each node
        labels = [f"{lab}<br><span style='color:{style.TARGET}'>→ {_safe(visible(t, 10))}</span>"
                  for lab, t in zip(labels, nodes["target_text"])]
    faded = judged & ~nodes["kind"].isin([ROOT, ACCEPTED]).to_numpy()
    return {"type": "scatter", "x": nodes["x"].tolist(), "y": nodes["y"].tolist(), "mode": "markers+text",
            "name": "nodes", "text": labels, "textposition": "bottom center", "xaxis": "x", "yaxis": "y",
            "textfont": {"size": nodes["label_px"].tolist(), "family": style.FONT}, "showlegend": False,
            "marker": {"size": np.where(on_path, marker_px * 1.25, marker_px).tolist(),
                       "color": nodes["p_hat"].astype(float).tolist(), "colorscale": style.P_HAT_SCALE,
                       "cmin": 0.0, "cmax": 1.0, "opacity": np.where(faded, 0.35, 1.0).tolist(),
                       "line": {"color": np.where(on_path, style.ACCEPTED, style.REJECTED_OUTLINE).tolist(),
                                "width": np.where(on_path, 2.5, 1.0).tolist()}},
            "hovertemplate": "p̂ = %{marker.color:.3f}<extra></extra>"}


def _bonus(nodes, scene) -> dict:
    bonus = nodes[nodes["kind"] == BONUS]
    return {"type": "scatter", "x": bonus["x"].tolist(), "y": bonus["y"].tolist(), "mode": "markers+text",
            "name": "bonus token", "text": [_safe(t) for t in bonus["label"]], "textposition": "bottom center",
            "textfont": {"color": style.ACCEPTED, "size": bonus["label_px"].tolist()}, "xaxis": "x", "yaxis": "y",
            "marker": {"symbol": "diamond", "size": scene.marker_px * 1.5, "color": style.TARGET,
                       "line": {"color": style.ACCEPTED, "width": 2}}, "showlegend": False, "hoverinfo": "skip"}


def _mask(graph, ancestors: np.ndarray, shown: list[int], phase: str | None) -> dict:
    """The tree-attention mask (rows: queries; columns: keys) over every node of the step, with the
    rows and columns of nodes not drafted yet left blank: 1 where a node sees a key; from "accept"
    on, 2 among accepted nodes. (One shape in every frame, so plotly redraws it in place.)"""
    n = len(ancestors)
    drafted = np.isin(np.arange(n), shown)
    mask = ancestors & drafted[:, None] & drafted[None, :]
    accepted = np.array([graph.nodes[v]["accepted"] for v in range(n)])
    z = mask.astype(int) + (mask & accepted[:, None] & accepted[None, :] & (phase in PHASES[1:]))
    names = _node_names(graph)
    return {"type": "heatmap", "z": z.tolist(), "x": names, "y": names, "zmin": 0, "zmax": 2, "colorscale": MASK_SCALE,
            "showscale": False, "xgap": 1, "ygap": 1, "xaxis": "x2", "yaxis": "y2", "name": "mask",
            "hovertemplate": "query %{y}<br>key %{x}<extra></extra>"}


WALK_MARGIN = {"l": 20, "r": 20, "t": 110, "b": 60}


def _layout(scene, title: str) -> dict:
    tree = tree_layout(scene)
    width = max(scene.width, 520) + 420
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False, "showline": False}
    ticks = {"tickfont": {"size": 10, "family": "DejaVu Sans Mono, monospace"}, "showgrid": False, "zeroline": False}
    height = max(scene.height, 420) + 120
    return {**style.PLOTLY_BASE, "width": width, "height": height,
            "title": style.title_in_margin(title, WALK_MARGIN["t"], height),
            "xaxis": {**axis, "range": tree["xaxis"]["range"], "domain": [0.0, 0.58]},
            "yaxis": {**axis, "range": [tree["yaxis"]["range"][0] - 0.4, tree["yaxis"]["range"][1]]},
            "xaxis2": {**ticks, "domain": [0.66, 1.0], "anchor": "y2", "tickangle": -60},
            "yaxis2": {**ticks, "domain": [0.25, 0.95], "anchor": "x2", "autorange": "reversed"},
            "margin": WALK_MARGIN, "showlegend": False}
