"""Paper-ready static figures in matplotlib (colour-blind palette, Type 42 fonts, reproducible bytes).

The same tables as the plotly figures (``analysis``), drawn for print: E(A)-vs-A count
heatmaps (Fig. 4), MAL against node budget (Fig. 5), speedup bars, acceptance by depth
and rank. ``save_paper_figures`` writes them all, with one step's tree, as PDF and PNG.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator, NullLocator

from . import style
from .analysis import (
    acceptance_by_depth,
    acceptance_by_rank,
    binned_correlation,
    correlation,
    ea_a_counts,
    ea_a_frame,
    mal_by_budget,
    speedup_stats,
    summarize_logs,
)
from .logs import as_named
from .mpl_tree import tree_figure_mpl
from .static import COLUMN_WIDTH_IN, PAGE_WIDTH_IN, new_figure, paper_style, save_figure


def _heatmap_columns(groups: list[str]) -> int:
    """Panels per row of Fig. 4 (more groups wrap to further rows): four fit a page, three when a
    panel's title (``drafter · policy · T=…``) is long."""
    return max(1, min(len(groups), 4 if max((len(g) for g in groups), default=0) <= 28 else 3))


PANEL_TITLE_CHARS = 34  # a 2.3-inch panel's 7-point title line holds about this many characters


def panel_title(group: str) -> str:
    """A panel's name, broken after its drafter ("qwen2.5-coder-0.5b:int4\nopt-tree-auto · n=16")
    when it is too long for one line of a panel's title."""
    drafter, sep, rest = group.partition(" · ")
    return f"{drafter}\n{rest}" if sep and len(group) > PANEL_TITLE_CHARS else group


def ea_heatmap_mpl(logs_or_frame, groups: list[str] | None = None):
    """Fig. 4: steps per (E(A) rounded, A), a panel per draft/target group; in each title the per-step r
    and ρ, the r of the E(A) bins' mean A (``analysis.binned_correlation``) and n (steps). Every panel spans the same ranges, cells without a step are blank, and the dotted line
    A = E(A) + 1 marks where a calibrated draft's steps fall."""
    frame = logs_or_frame if isinstance(logs_or_frame, pd.DataFrame) else ea_a_frame(logs_or_frame)
    groups = groups if groups is not None else sorted(frame["group"].unique())
    shown = frame[frame["group"].isin(groups)]
    ncols = _heatmap_columns(groups)
    nrows = max(1, -(-len(groups) // ncols))
    fig, axes = new_figure(min(PAGE_WIDTH_IN, 2.3 * ncols + 0.4), 2.6 * nrows, ncols=ncols, nrows=nrows)
    with paper_style():
        for ax in axes.flat[len(groups):]:
            ax.set_axis_off()
        for ax, group in zip(axes.flat, groups):
            part = frame[frame["group"] == group]
            counts = ea_a_counts(part, like=shown)
            values = counts.to_numpy()
            extent = (counts.columns[0] - 0.5, counts.columns[-1] + 0.5, counts.index[0] - 0.5, counts.index[-1] + 0.5)
            ax.imshow(np.ma.masked_equal(values, 0), origin="lower", cmap="Blues", aspect="auto", extent=extent,
                      vmin=0, vmax=max(1, values.max()))
            for (a, ea), n in np.ndenumerate(values):
                if n:
                    colour = "white" if n > values.max() * 0.6 else "black"
                    ax.text(counts.columns[ea], counts.index[a], str(n), ha="center", va="center", fontsize=6,
                            color=colour)
            ax.plot(extent[:2], [extent[0] + 1, extent[1] + 1], color=style.ACCEPTED, lw=0.9, ls=":",
                    label="A = E(A) + 1")
            ax.set_xlim(extent[:2])
            ax.set_ylim(extent[2:])
            r = correlation(part)
            ax.set_title(f"{panel_title(group)}\nr = {r.pearson:.2f}, ρ = {r.spearman:.2f}\nbins r = {binned_correlation(part):.2f}"
                         f" · n = {r.n} steps", fontsize=7)
            ax.set_xticks(list(counts.columns))
            ax.set_yticks(list(counts.index))
        for row in axes:
            row[0].set_ylabel("acceptance length A")
        fig.supxlabel("E(A), rounded · dotted line: A = E(A) + 1", fontsize=8)  # once: panel labels collide
    return fig


def mal_budget_mpl(logs_or_summary):
    """Fig. 5: MAL against node budget, a line per policy, a panel per group."""
    summary = logs_or_summary if isinstance(logs_or_summary, pd.DataFrame) else summarize_logs(logs_or_summary)
    table = mal_by_budget(summary)
    groups = sorted(table["group"].unique())
    colours = style.policy_colours(table["policy"].unique())
    fig, axes = new_figure(min(PAGE_WIDTH_IN, 2.3 * max(1, len(groups)) + 0.4), 2.2, ncols=max(1, len(groups)),
                           sharey=True)
    with paper_style():
        for ax, group in zip(axes[0], groups):
            for policy, rows in table[table["group"] == group].groupby("policy", sort=True):
                rows = rows.sort_values("nodes")
                ax.errorbar(rows["nodes"], rows["mal"], yerr=rows["mal_std"].fillna(0), marker="o", ms=3,
                            capsize=2, lw=1.2, color=colours[policy], label=policy)
            ax.set_xscale("log")
            budgets = sorted(table.loc[table["group"] == group, "nodes"].unique())
            ax.xaxis.set_major_locator(FixedLocator(budgets))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_title(group, fontsize=7)
            ax.set_xlabel("node budget n")
        axes[0, 0].set_ylabel("mean acceptance length")
        axes[0, 0].legend(frameon=False)
    return fig


def speedup_mpl(frame: pd.DataFrame, by: str = "method", value: str = "speedup"):
    """Bars of mean ``value`` per ``by`` with ±1 sd error bars, and a line at 1."""
    table = speedup_stats(frame, by, value)
    fig, axes = new_figure(COLUMN_WIDTH_IN, 2.0)
    ax = axes[0, 0]
    with paper_style():
        colours = [style.OKABE_ITO[i % len(style.OKABE_ITO)] for i in range(len(table))]
        ax.bar(table[by].astype(str), table["mean"], yerr=table["std"], color=colours, capsize=3, width=0.6)
        ax.axhline(1.0, color="#555", lw=0.8, ls=":")
        ax.set_ylabel(f"{value} (mean ± sd)")
    return fig


def acceptance_mpl(logs):
    """Acceptance rate (given the parent was accepted) by depth and by sibling rank."""
    fig, axes = new_figure(PAGE_WIDTH_IN, 2.2, ncols=2, sharey=True)
    tables = ((acceptance_by_depth(logs), "depth"), (acceptance_by_rank(logs), "rank"))
    with paper_style():
        names = sorted({f"{g} · {p}" for g, p in zip(tables[0][0]["group"], tables[0][0]["policy"])})
        colours = style.policy_colours(names)
        for ax, (table, key) in zip(axes[0], tables):
            for (group, policy), rows in table.groupby(["group", "policy"], sort=True):
                name = f"{group} · {policy}"
                ax.plot(rows[key], rows["conditional"], marker="o", ms=2.5, lw=1, color=colours[name], label=name)
            ax.set_xlabel(f"sibling {key}" if key == "rank" else key)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, 1.05)
        axes[0, 0].set_ylabel("accepted / reached")
        axes[0, 1].legend(frameon=False, fontsize=5.5)
    return fig


def save_paper_figures(logs, out_dir: str | os.PathLike, step: int = 0,
                       formats: tuple[str, ...] = ("pdf", "png")) -> list[Path]:
    """Write every static figure for ``logs`` under ``out_dir`` (tree of ``step`` from the first run)."""
    named = as_named(logs)
    out = Path(out_dir)
    first = next(iter(named.values()))
    figures = {f"tree_step{step}": tree_figure_mpl(first, step), "ea_vs_a": ea_heatmap_mpl(named),
               "mal_vs_budget": mal_budget_mpl(named), "acceptance": acceptance_mpl(named)}
    paths = []
    for name, fig in figures.items():
        paths += save_figure(fig, out / name, formats)
    return paths
