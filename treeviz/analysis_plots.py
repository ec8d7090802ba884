"""Plotly analysis figures: E(A)-vs-A heatmaps (paper Fig. 4), MAL against node budget
(Fig. 5), speedup bars, acceptance by depth and sibling rank, and a per-step timeline.

Each takes logs (a list or dict of loaded logs) or the tidy frames of ``analysis``.
"""
from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import style
from .analysis import (
    acceptance_by_depth,
    acceptance_by_rank,
    correlation,
    ea_a_counts,
    ea_a_frame,
    mal_by_budget,
    speedup_stats,
    summarize_logs,
    timeline_frame,
)

HEAT_SCALE = [[0.0, "#FFFFFF"], [0.001, "#E8F1FA"], [1.0, "#08306B"]]


def _layout(fig: go.Figure, title: str, width: int, height: int) -> go.Figure:
    fig.update_layout(**style.PLOTLY_BASE, title={"text": title, "x": 0.01}, width=width, height=height,
                      margin={"l": 60, "r": 20, "t": 90, "b": 60})
    fig.update_xaxes(**style.GRID)
    fig.update_yaxes(**style.GRID)
    return fig


def ea_heatmap_figure(logs_or_frame, groups: list[str] | None = None) -> go.Figure:
    """Count of steps per (E(A) rounded, A), one panel per draft/target group, with Pearson and
    Spearman r (computed on the unrounded E(A)) and n (steps) above each panel. Every panel spans
    the same E(A) and A ranges, cells without a step are blank, and the dotted line A = E(A) + 1 is
    where a calibrated draft's steps fall (above it: the target accepted more than the draft expected)."""
    frame = logs_or_frame if isinstance(logs_or_frame, pd.DataFrame) else ea_a_frame(logs_or_frame)
    groups = groups if groups is not None else sorted(frame["group"].unique())
    groups = groups or ["(no runs)"]
    shown = frame[frame["group"].isin(groups)]
    titles = [f"{html.escape(g)}<br><sup>{correlation(frame[frame['group'] == g])}</sup>" for g in groups]
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=titles, horizontal_spacing=0.08)
    for col, group in enumerate(groups, start=1):
        counts = ea_a_counts(frame[frame["group"] == group], like=shown)
        if counts.empty:
            fig.add_trace(go.Heatmap(z=[[None]], name=group, showscale=False), row=1, col=col)
            continue
        z = [[int(n) if n else None for n in row] for row in counts.to_numpy()]  # no step: a blank cell
        fig.add_trace(go.Heatmap(z=z, x=list(counts.columns), y=list(counts.index),
                                 text=[[str(n) if n else "" for n in row] for row in counts.to_numpy()],
                                 texttemplate="%{text}", colorscale=HEAT_SCALE, zmin=0,
                                 showscale=False, name=group, xgap=1, ygap=1,
                                 hovertemplate="E(A) ≈ %{x}<br>A = %{y}<br>steps: %{z}<extra></extra>"),
                      row=1, col=col)
        x = [counts.columns[0] - 0.5, counts.columns[-1] + 0.5]
        fig.add_trace(go.Scatter(x=x, y=[v + 1 for v in x], mode="lines", name="A = E(A) + 1",
                                 line={"color": style.ACCEPTED, "dash": "dot", "width": 1.5}, hoverinfo="skip",
                                 showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(title_text="E(A) (rounded)", dtick=1, range=x, row=1, col=col)
        fig.update_yaxes(title_text="A" if col == 1 else None, dtick=1,
                         range=[counts.index[0] - 0.5, counts.index[-1] + 0.5], row=1, col=col)
    fig = _layout(fig, "Acceptance length A against E(A)", width=max(420, 380 * len(groups)), height=480)
    # the legend below the axes: above them it covered the panel titles (issue 27)
    fig.update_layout(legend={"orientation": "h", "y": -0.2, "yanchor": "top", "x": 0.5, "xanchor": "center"},
                      margin={"b": 100})
    return fig


def mal_budget_figure(logs_or_summary, groups: list[str] | None = None,
                      policies: list[str] | None = None) -> go.Figure:
    """Mean acceptance length against the node budget, a line per policy, a panel per group."""
    summary = logs_or_summary if isinstance(logs_or_summary, pd.DataFrame) else summarize_logs(logs_or_summary)
    table = mal_by_budget(summary)
    groups = groups if groups is not None else sorted(table["group"].unique())
    if policies is not None:
        table = table[table["policy"].isin(policies)]
    colours = style.policy_colours(summary["policy"].unique())
    titles = [html.escape(g) for g in groups] or ["(no runs)"]
    fig = make_subplots(rows=1, cols=max(1, len(groups)), subplot_titles=titles,
                        shared_yaxes=True, horizontal_spacing=0.06)
    for col, group in enumerate(groups, start=1):
        for policy, rows in table[table["group"] == group].groupby("policy", sort=True):
            rows = rows.sort_values("nodes")
            fig.add_trace(go.Scatter(x=rows["nodes"], y=rows["mal"], mode="lines+markers", name=policy,
                                     legendgroup=policy, showlegend=col == 1, line={"color": colours[policy]},
                                     error_y={"array": rows["mal_std"].fillna(0), "visible": True},
                                     hovertemplate=f"{policy}<br>n = %{{x}}<br>MAL = %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
        budgets = sorted(table.loc[table["group"] == group, "nodes"].unique().tolist())
        fig.update_xaxes(title_text="node budget n", type="log", tickvals=budgets, row=1, col=col)
    fig.update_yaxes(title_text="mean acceptance length", row=1, col=1)
    return _layout(fig, "MAL against node budget", width=max(480, 400 * max(1, len(groups))), height=420)


def speedup_figure(frame: pd.DataFrame, by: str = "method", value: str = "speedup",
                   colour_by: str | None = None) -> go.Figure:
    """Bars of mean ``value`` per ``by`` with ±1 standard deviation error bars (over rows)."""
    keys = [by] + ([colour_by] if colour_by else [])
    table = speedup_stats(frame, keys, value)
    fig = go.Figure()
    series = table.groupby(colour_by, sort=True) if colour_by else [(value, table)]
    colours = style.policy_colours([name for name, _ in series])
    for name, rows in series:
        fig.add_trace(go.Bar(x=rows[by], y=rows["mean"], name=str(name), marker_color=colours[name],
                             error_y={"type": "data", "array": rows["std"], "visible": True},
                             customdata=rows[["std", "count"]],
                             hovertemplate="%{x}<br>mean %{y:.3f} ± %{customdata[0]:.3f} (n = %{customdata[1]})"
                                           "<extra></extra>"))
    fig.add_hline(y=1.0, line={"color": "#555", "dash": "dot", "width": 1})
    fig.update_layout(barmode="group", yaxis_title=f"{value} (mean ± sd)", xaxis_title=by,
                      showlegend=colour_by is not None)
    return _layout(fig, f"{value.capitalize()} by {by}", width=560, height=400)


def pooled_speedup_figure(shootout: pd.DataFrame, by: str = "policy") -> go.Figure:
    """Bars of each tree method's pooled speedup over AR (``treeviz.runs.shootout_table``: the number
    the bench summary and its table report), whiskers to its 95 % interval over prompts."""
    trees = shootout[shootout["kind"] == "tree"]
    low, high = trees["speedup"] - trees["speedup_lo"], trees["speedup_hi"] - trees["speedup"]
    fig = go.Figure(go.Bar(x=trees[by].astype(str), y=trees["speedup"], marker_color="#4c78a8",
                           error_y={"type": "data", "symmetric": False, "array": high.fillna(0),
                                    "arrayminus": low.fillna(0), "visible": True},
                           customdata=trees[["speedup_lo", "speedup_hi", "n_prompts"]],
                           hovertemplate="%{x}<br>speedup %{y:.3f} (95 % interval %{customdata[0]:.3f}–"
                                         "%{customdata[1]:.3f}, %{customdata[2]} prompts)<extra></extra>"))
    fig.add_hline(y=1.0, line={"color": "#555", "dash": "dot", "width": 1})
    fig.update_layout(yaxis_title="speedup over AR (pooled, 95 % interval)", xaxis_title=by, showlegend=False)
    return _layout(fig, "Speedup over AR, pooled over the prompts", width=560, height=400)


def acceptance_figure(logs) -> go.Figure:
    """Acceptance rate by depth and by sibling rank (given the parent was accepted), a line per run kind."""
    by_depth, by_rank = acceptance_by_depth(logs), acceptance_by_rank(logs)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by depth", "by sibling rank"), shared_yaxes=True)
    names = sorted({f"{g} · {p}" for g, p in zip(by_depth["group"], by_depth["policy"])})
    colours = style.policy_colours(names)
    for col, (table, key) in enumerate(((by_depth, "depth"), (by_rank, "rank")), start=1):
        for (group, policy), rows in table.groupby(["group", "policy"], sort=True):
            name = f"{group} · {policy}"
            fig.add_trace(go.Scatter(x=rows[key], y=rows["conditional"], mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=col == 1, line={"color": colours[name]},
                                     customdata=rows[["accepted", "reached", "rate"]],
                                     hovertemplate=f"{key} %{{x}}<br>accepted %{{customdata[0]}} of "
                                                   "%{customdata[1]} reached (%{y:.2f})<br>of all drafted: "
                                                   "%{customdata[2]:.2f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text=key, dtick=1 if table[key].max() <= 12 else None, row=1, col=col)
    fig.update_yaxes(title_text="accepted / nodes whose parent was accepted", range=[0, 1.05], row=1, col=1)
    return _layout(fig, "Acceptance rate", width=900, height=400)


def timeline_figure(data) -> go.Figure:
    """Seconds per step, stacked: draft (tree building included unless the log has ``build_s``), verify."""
    frame = timeline_frame(data)
    looks = {"draft_s": ("draft", style.DRAFTED), "build_s": ("tree building", style.OKABE_ITO[2]),
             "verify_s": ("verify", style.TARGET)}
    fig = go.Figure()
    for col in [c for c in frame.columns if c in looks]:
        label, colour = looks[col]
        fig.add_trace(go.Bar(x=frame["step"], y=frame[col], name=label, marker_color=colour, customdata=frame["a"],
                             hovertemplate=f"step %{{x}} · A = %{{customdata}}<br>{label}: %{{y:.4f}} s"
                                           "<extra></extra>"))
    fig.update_layout(barmode="stack", xaxis_title="step", yaxis_title="seconds", legend={"orientation": "h"})
    return _layout(fig, "Time per step", width=900, height=320)
