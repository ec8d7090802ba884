"""Colours and sizes shared by every figure: the Okabe–Ito colour-blind palette, viridis for p̂."""
from __future__ import annotations

# Okabe & Ito (2008), safe for the common colour-vision deficiencies.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]

ACCEPTED = "#D55E00"  # vermillion: the accepted path (edges and node outlines)
TARGET = "#E69F00"  # orange: a token the target produced itself (the bonus token)
DRAFTED = "#0072B2"  # blue: a token a draft proposed and the target accepted
REJECTED_EDGE = "#A0A0A0"  # dotted: a branch the target did not take
REJECTED_OUTLINE = "#707070"  # thin grey ring: a node the target rejected (its fill keeps its p̂ colour)
OUTLINE = "#404040"
P_HAT_SCALE = "Viridis"  # plotly name; matplotlib: "viridis"
STREAM_BG = {"drafted": "#CDE6F5", "target": "#FBE3B4"}  # light tints of DRAFTED / TARGET for text
FONT = "DejaVu Sans, Arial, sans-serif"
LABEL_PX = 11  # a node's token label
PROJECTOR_SCALE = 1.5  # how much larger every font is in projector mode


def policy_colours(names) -> dict[str, str]:
    """A stable colour per name (sorted, then cycled through the palette)."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(sorted(set(names)))}

# Plotly layouts: the empty "none" template (cheap to build, small to embed) on white.
PLOTLY_BASE = {"template": "none", "paper_bgcolor": "white", "plot_bgcolor": "white",
               "font": {"family": FONT, "size": 12}}
GRID = {"gridcolor": "#E5E9F0", "zerolinecolor": "#C8CDD5", "linecolor": "#888", "showline": True, "ticks": "outside"}


_projector = False


def projector(on: bool = True) -> None:
    """Projector mode for a lecture hall: every figure drawn after this call uses fonts
    ``PROJECTOR_SCALE`` times larger, and tree figures make room for every node's label (the tree is
    spread out instead of leaving labels out where they would overlap). ``projector(False)`` undoes it."""
    global _projector
    _projector = bool(on)
    PLOTLY_BASE["font"]["size"] = round(12 * (PROJECTOR_SCALE if _projector else 1))


def projecting() -> bool:
    return _projector


def font_px(base: float) -> float:
    """A font size in pixels: ``base``, times ``PROJECTOR_SCALE`` in projector mode."""
    return base * PROJECTOR_SCALE if _projector else base


def title_in_margin(text: str, band_px: float, height_px: float, size: float = 14) -> dict:
    """A plotly title centred in the top ``band_px`` pixels of a figure ``height_px`` tall (its top
    margin, or the part of it above the buttons): every line of it inside the figure.

    Plotly (plotly.js 3, seen in Chromium) places a title of several lines (``<br>``) anchored at
    ``yanchor="top"`` too high: the top of its first line is cut off at the figure's edge."""
    return {"text": text, "x": 0.01, "xanchor": "left", "yref": "container", "yanchor": "middle",
            "y": 1 - band_px / 2 / height_px, "font": {"size": size}}
