"""Paper-ready static figures: one matplotlib style, and byte-for-byte reproducible PDF/PNG/SVG.

Fonts are embedded as TrueType (Type 42), the palette is Okabe–Ito, sizes are fixed, and
the files carry no dates or tool versions, so the same input gives the same bytes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import matplotlib

from . import style

PAPER_RC = {
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path", "svg.hashsalt": "treeviz",
    "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8,
    "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
    "axes.spines.right": False, "axes.prop_cycle": matplotlib.cycler(color=style.OKABE_ITO),
    "figure.dpi": 100, "savefig.dpi": 300, "image.cmap": "viridis", "path.simplify": False,
}
NO_METADATA = {
    ".pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
    ".png": {"Software": None},
    ".svg": {"Date": None, "Creator": None},
}
COLUMN_WIDTH_IN = 3.3  # one column of a two-column paper
PAGE_WIDTH_IN = 6.9


@contextmanager
def paper_style():
    """matplotlib settings for paper figures (use around figure creation *and* saving)."""
    with matplotlib.rc_context(PAPER_RC):
        yield


def new_figure(width_in: float = COLUMN_WIDTH_IN, height_in: float = 2.4, ncols: int = 1, nrows: int = 1, **kw):
    """A figure and its axes under the paper style (a non-interactive canvas: works without a display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with paper_style():
        fig = Figure(figsize=(width_in, height_in), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def save_figure(fig, path: str | os.PathLike, formats: tuple[str, ...] | None = None,
                dpi: float | None = None) -> list[Path]:
    """Save ``fig`` reproducibly to ``path`` (its suffix), or to ``path`` with each of ``formats``;
    ``dpi`` overrides the paper style's 300 for raster formats (smaller PNGs for a web gallery)."""
    path = Path(path)
    targets = [path.with_suffix(f if f.startswith(".") else f".{f}") for f in formats] if formats else [path]
    for target in targets:
        if target.suffix not in NO_METADATA:
            raise ValueError(f"unsupported format {target.suffix!r}: use one of {', '.join(NO_METADATA)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with paper_style():
            fig.savefig(target, metadata=NO_METADATA[target.suffix], **({"dpi": dpi} if dpi else {}))
    return targets
