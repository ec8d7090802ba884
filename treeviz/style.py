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


def policy_colours(names) -> dict[str, str]:
    """A stable colour per name (sorted, then cycled through the palette)."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(sorted(set(names)))}

# Plotly layouts: the empty "none" template (cheap to build, small to embed) on white.
PLOTLY_BASE = {"template": "none", "paper_bgcolor": "white", "plot_bgcolor": "white",
               "font": {"family": FONT, "size": 12}}
GRID = {"gridcolor": "#E5E9F0", "zerolinecolor": "#C8CDD5", "linecolor": "#888", "showline": True, "ticks": "outside"}
