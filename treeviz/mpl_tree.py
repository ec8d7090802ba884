"""The tree of one step in matplotlib: the same scene as the plotly figure, for papers."""
from __future__ import annotations

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize

from . import style
from .graph import ACCEPTED, BONUS, REJECTED, ROOT
from .scene import TreeScene, tree_scene
from .static import new_figure, paper_style

PX_PER_IN = 100.0


def draw_scene(ax, scene: TreeScene, colorbar: bool = True, fontsize: float = 6.5, legend: bool = True):
    """Draw ``scene`` on ``ax``; returns the node PathCollection (colour = p̂). Every node keeps its p̂
    colour; rejected nodes get a dashed grey ring, the accepted path a solid vermillion one, and each
    labelled drafted node its p̂ printed under its token."""
    with paper_style():
        _draw_edges(ax, scene)
        nodes = scene.nodes[scene.nodes["kind"] != BONUS]
        on_path = nodes["kind"].isin([ROOT, ACCEPTED]).to_numpy()
        size = (scene.marker_px * 0.7) ** 2
        points = None
        for mask, looks in ((~on_path, {"edgecolors": style.REJECTED_OUTLINE, "linewidths": 0.7,
                                         "linestyle": (0, (1.5, 1.0)), "zorder": 2.5}),
                            (on_path, {"edgecolors": style.ACCEPTED, "linewidths": 1.4, "zorder": 3})):
            part = nodes[mask]
            scale = np.where(part["kind"] == ROOT, 1.6, 1.5 if looks["zorder"] == 3 else 1.0)
            points = ax.scatter(part["x"], part["y"], c=part["p_hat"], cmap="viridis", norm=Normalize(0, 1),
                                s=size * scale, marker="o", **looks)
        bonus = scene.nodes[scene.nodes["kind"] == BONUS]
        ax.scatter(bonus["x"], bonus["y"], marker="D", s=size * 1.4, c=style.TARGET, edgecolors=style.ACCEPTED,
                   linewidths=1.2, zorder=4)
        _draw_labels(ax, scene, fontsize)
        if colorbar and points is not None:
            _colour_bar(ax, points)
        if legend:
            _legend(ax, size, fontsize, "upper right" if scene.orientation == "td" else "upper left")
        ax.set_axis_off()
        xs, ys = scene.nodes["x"], scene.nodes["y"]
        right = 1.3 if scene.orientation == "lr" else 0.6  # room for labels on the right
        bottom = 0.6 if scene.orientation == "lr" else 0.9  # room for the labels under the deepest nodes
        ax.set_xlim(xs.min() - 0.6, xs.max() + right)
        top = 0.6 + (LEGEND_ROOM if legend and scene.orientation == "td" else 0.0)  # the legend sits above the root
        ax.set_ylim(ys.min() - bottom, ys.max() + top)
    return points


LEGEND_ROOM = 0.7  # levels of empty space above a top-down tree's root for the legend's three rows


def _legend(ax, size: float, fontsize: float, corner: str) -> None:
    """What the rings, edges and the diamond mean (the colour bar says what the fill means), in the
    corner a tree leaves empty (top right when the root is on top, top left when it is on the left)."""
    from matplotlib.lines import Line2D

    ms = size ** 0.5
    handles = [Line2D([], [], color=style.ACCEPTED, lw=2, marker="o", ms=ms * 0.8, mfc="#CCCCCC",
                      mec=style.ACCEPTED, label="accepted path"),
               Line2D([], [], color=style.REJECTED_EDGE, lw=0.8, ls=(0, (1.5, 1.5)), marker="o", ms=ms * 0.65,
                      mfc="#CCCCCC", mec=style.REJECTED_OUTLINE, label="rejected by the target"),
               Line2D([], [], ls="none", marker="D", ms=ms * 0.7, mfc=style.TARGET, mec=style.ACCEPTED,
                      label="bonus token (the target's own)")]
    ax.legend(handles=handles, loc=corner, frameon=False, fontsize=fontsize, handlelength=2.2, borderaxespad=0.2)


def _colour_bar(ax, points) -> None:
    """A colour bar of about 2 inches at the top right, whatever the figure's height."""
    height_in = ax.figure.get_figheight()
    h = min(0.6, 2.0 / height_in)
    cax = ax.inset_axes((1.01, 1 - h, 0.02 * 6 / max(6, ax.figure.get_figwidth()) * 2, h))
    ax.figure.colorbar(points, cax=cax, label="p̂")


def _draw_edges(ax, scene: TreeScene) -> None:
    looks = {REJECTED: {"colors": style.REJECTED_EDGE, "linewidths": 0.7, "linestyles": (0, (1.5, 1.5)), "zorder": 1},
             ACCEPTED: {"colors": style.ACCEPTED, "linewidths": 2.0, "zorder": 2},
             BONUS: {"colors": style.TARGET, "linewidths": 1.5, "linestyles": (0, (1.5, 1.5)), "zorder": 2}}
    for kind, look in looks.items():
        edges = scene.edges[scene.edges["kind"] == kind]
        segments = [[(r.x0, r.y0), (r.x1, r.y1)] for r in edges.itertuples(index=False)]
        if segments:
            ax.add_collection(LineCollection(segments, **look))


def _draw_labels(ax, scene: TreeScene, fontsize: float) -> None:
    """Token labels below the node (top down) or right of it (left to right), off the edges, each scaled
    as the scene sizes it (punctuation alone larger); a drafted node's p̂ on a second line."""
    shown = scene.nodes[scene.nodes["show_label"]]
    td = scene.orientation == "td"
    dy = -0.16 if td else 0.0
    dx = 0.0 if td else 0.12
    for row in shown.itertuples(index=False):
        colour = style.ACCEPTED if row.kind == BONUS else "#202020"
        size = fontsize * row.label_px / style.LABEL_PX
        where = (row.x + dx, row.y + dy)
        if row.drafted and size != fontsize:  # a larger token line, then p̂ at the usual size below it
            ax.text(*where, row.label, fontsize=size, color=colour, zorder=5, ha="center" if td else "left",
                    va="top" if td else "center", parse_math=False)
            ax.annotate(f"{row.p_hat:.2g}", where, xytext=(0, -1.15 * size if td else -0.9 * size),
                        textcoords="offset points", fontsize=fontsize, color=colour, zorder=5,
                        ha="center" if td else "left", va="top", annotation_clip=False)
            continue
        text = row.label if not row.drafted else f"{row.label}\n{row.p_hat:.2g}"
        ax.text(*where, text, fontsize=size, color=colour, zorder=5, linespacing=1.1,
                ha="center" if td else "left", va="top" if td else "center", parse_math=False)


def tree_figure_mpl(data, step: int, width_in: float | None = None, height_in: float | None = None,
                    **scene_options):
    """A matplotlib Figure of the tree of ``step`` (size from the scene unless given)."""
    scene = tree_scene(data, step, **scene_options)
    width_in = width_in or scene.width / PX_PER_IN
    height_in = height_in or scene.height / PX_PER_IN
    fig, axes = new_figure(width_in, height_in)
    draw_scene(axes[0, 0], scene)
    with paper_style():
        axes[0, 0].set_title(scene.title.replace("<br>", ", "), loc="left")
    return fig
