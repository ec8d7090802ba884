"""OPT-Tree's construction step by step (arXiv 2406.17276, Algorithm 1), for notebook 3: a table and
an animation of the per-layer records ``opttree_core.policies.trace_opt_tree`` returns (E_sub(T, n),
its gain, where δ stops), and the final top-n tree. Re-exported by ``treeviz.teaching``."""
from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import style
from .layout import tidy_positions
from .logs import token_text, visible
from .scene import fitting_labels, label_px, label_width_px


def trace_table(trace, threshold: float) -> pd.DataFrame:
    """One row per layer of an ``OptTreeTrace``: nodes grown, E_sub(T, n), its gain, and the δ decision."""
    return pd.DataFrame([{"layer": s.depth, "new nodes": len(s.layer), "nodes in T": s.tree.n_nodes - 1,
                          "E_sub(T, n)": round(s.e_sub, 4), "gain": round(s.gain, 4),
                          "decision": ("stop: gain ≤ δ" if s.gain <= threshold else "stop: depth cap") if s.stop
                          else "grow"} for s in trace.layers])


TRACE_MARGIN, TRACE_X_PAD = {"l": 20, "r": 50, "t": 90, "b": 90}, 0.8  # trace figures: margins (px), x room (units)
TRACE_TITLE_PX = 30  # the title's band at the top of a trace figure, above its play button


def _frame_traces(tree, chosen: set[int], new: set[int], pos: Mapping[int, tuple[float, float]],
                  texts: Mapping[int, str], unit_px: float, only_chosen: bool = False) -> list[go.Scatter]:
    """Edges, then nodes coloured by p̂: the chosen (top-n) nodes opaque, the others faded (left
    out with ``only_chosen``), the newest layer outlined. A label is shown where it overlaps no
    other on its layer (the top-n first, then by p̂; ``unit_px``: pixels per unit of x)."""
    parents, tokens, p_hat = tree.parents.tolist(), tree.tokens.tolist(), tree.p_hat.tolist()
    nodes = [v for v in range(tree.n_nodes) if not only_chosen or v == 0 or v in chosen]
    xs, ys = [], []
    for v in nodes[1:]:
        (x0, y0), (x1, y1) = pos[parents[v]], pos[v]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    in_top = [v == 0 or v in chosen for v in nodes]
    labels = [visible(token_text(tokens[v], texts), 8) for v in nodes]
    shown = _labels_shown(labels, [pos[v] for v in nodes], in_top, [p_hat[v] for v in nodes], unit_px)
    marker = {"size": 16, "color": [p_hat[v] for v in nodes], "opacity": [1.0 if k else 0.25 for k in in_top],
              "colorscale": style.P_HAT_SCALE, "cmin": 0.0, "cmax": 1.0,
              "line": {"width": [3 if v in new else 0.5 for v in nodes],
                       "color": [style.ACCEPTED if v in new else style.OUTLINE for v in nodes]},
              "colorbar": {"title": {"text": "p̂"}, "thickness": 12}}
    hover = [f"{html.escape(lab)}<br>p̂ = {p:.4f}<br>{'in the top-n' if keep else 'outside the top-n'}"
             for lab, p, keep in zip(labels, [p_hat[v] for v in nodes], in_top)]
    return [go.Scatter(x=xs, y=ys, mode="lines", line={"color": style.REJECTED_EDGE, "width": 1}, hoverinfo="skip",
                       name="edges"),
            go.Scatter(x=[pos[v][0] for v in nodes], y=[pos[v][1] for v in nodes], mode="markers+text",
                       text=[html.escape(lab) if show else "" for lab, show in zip(labels, shown)],
                       textfont={"size": [label_px(lab) for lab in labels]}, textposition="bottom center", marker=marker,
                       hovertext=hover, hoverinfo="text", name="nodes (colour = p̂; faded: outside the top-n)")]


def _labels_shown(labels: list[str], xy: list[tuple[float, float]], in_top: list[bool], p_hat: list[float],
                  unit_px: float) -> np.ndarray:
    """Labels that fit on their layer: the root (always), then the top-n in node order, then the rest by p̂."""
    is_root, top, (xs, ys) = np.arange(len(labels)) == 0, np.asarray(in_top), np.array(xy).T
    order = np.lexsort((np.where(top, 0.0, -np.asarray(p_hat)), ~top, ~is_root))  # the last key sorts first
    widths = np.array([label_width_px(lab) + 4 for lab in labels])
    return fitting_labels(xs * unit_px, widths, ys, order, is_root)


def _unit_px(pos: Mapping[int, tuple[float, float]], width: int) -> float:
    """Pixels per unit of x in a figure of ``width`` laid out by ``_trace_layout``."""
    xs = [x for x, _ in pos.values()]
    return (width - TRACE_MARGIN["l"] - TRACE_MARGIN["r"]) / (max(xs) - min(xs) + 2 * TRACE_X_PAD)


def _trace_axes(pos: Mapping[int, tuple[float, float]]) -> dict:
    """Axis ranges that hold every node of every frame (with room for labels)."""
    xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False, "fixedrange": True}
    return {"xaxis": {**axis, "range": [min(xs) - TRACE_X_PAD, max(xs) + TRACE_X_PAD]},
            "yaxis": {**axis, "range": [min(ys) - 0.7, max(ys) + 0.5]}}


def _trace_layout(fig: go.Figure, pos, width: int, height: int, title) -> None:
    fig.update_layout(**style.PLOTLY_BASE, width=width, height=height, **_trace_axes(pos), showlegend=False,
                      title=style.title_in_margin(title, TRACE_TITLE_PX, height),
                      modebar={"orientation": "v"},  # down the right edge, never over the title
                      margin=TRACE_MARGIN)


def trace_figure(trace, texts: Mapping[int, str] | None = None, width: int = 900,
                 height: int = 480) -> go.Figure:
    """An animation of the trace: one frame per layer (new layer outlined, top-n in colour,
    E_sub in the title), then the final top-n tree. Play button and slider included; the axes
    hold every node of every frame (the layout is the last layer's tree, frames only add nodes)."""
    texts = texts or {}
    last = trace.layers[-1].tree
    pos = tidy_positions(dict(enumerate(last.parents.tolist())))
    unit, frames = _unit_px(pos, width), []
    for s in trace.layers:
        title = (f"layer {s.depth}: E_sub(T, n) = {s.e_sub:.3f} (gain {s.gain:+.3f})"
                 + (" → stop" if s.stop else " → grow"))
        frames.append(go.Frame(name=f"layer {s.depth}", data=_frame_traces(s.tree, set(s.top), set(s.layer), pos, texts, unit),
                               layout={"title": {"text": title}}))
    kept = set(trace.layers[-1].top)
    frames.append(go.Frame(name="final top-n", data=_frame_traces(last, kept, set(), pos, texts, unit, only_chosen=True),
                           layout={"title": {"text": _final_title(trace)}}))
    fig = go.Figure(data=frames[0].data, frames=frames)
    steps = [{"method": "animate", "label": f.name, "args": [[f.name], {"mode": "immediate",
              "frame": {"duration": 0, "redraw": True}}]} for f in frames]
    _trace_layout(fig, pos, width, height, frames[0].layout.title.text)
    fig.update_layout(sliders=[{"steps": steps, "currentvalue": {"prefix": ""}, "y": -0.05}],
                      updatemenus=[{"type": "buttons", "x": 0, "y": 1.0, "yanchor": "bottom", "xanchor": "left",
                                    "pad": {"t": 0, "b": 34}, "buttons": [
                          {"label": "▶ play", "method": "animate",
                           "args": [None, {"frame": {"duration": 1200, "redraw": True}, "fromcurrent": True}]}]}])
    return fig


def _final_title(trace) -> str:
    kept = trace.layers[-1].top
    return f"final tree: the top-{len(kept)} nodes, E(A) = {trace.layers[-1].e_sub:.3f}"


def final_tree_figure(trace, texts: Mapping[int, str] | None = None, width: int = 900,
                      height: int = 420) -> go.Figure:
    """The final top-n tree of the trace as a still figure (the animation's last frame, drawn alone)."""
    last, kept = trace.layers[-1].tree, set(trace.layers[-1].top)
    parents = last.parents.tolist()
    pos = tidy_positions({v: parents[v] for v in range(last.n_nodes) if v == 0 or v in kept})  # the kept tree alone
    fig = go.Figure(_frame_traces(last, kept, set(), pos, texts or {}, _unit_px(pos, width), only_chosen=True))
    _trace_layout(fig, pos, width, height, _final_title(trace))
    fig.update_layout(margin={**TRACE_MARGIN, "t": 60, "b": 30})
    return fig
