"""Helpers the notebooks share, so each notebook stays a few calls to the two packages.

- ``fast_mode`` / ``pick``: the notebooks' fast mode (``OPTTREE_FAST=1``: fewer prompts, tiny
  budgets, as CI runs them).
- ``offline_plotly``: plotly figures that carry plotly.js inside the notebook, so an exported
  HTML page draws them without a network; ``show_widget`` shows an explorer and, in an HTML
  build (``OPTTREE_HTML=1``), a static copy of its figures (widget JavaScript can't be
  inlined offline).
- ``step_table``: one row per decoding step of a log: what was drafted, accepted, and the
  bonus token (notebook 1); ``speed_verdict``: why a method is faster or slower than AR, in
  numbers (a step's cost in AR tokens against its MAL; notebooks 1, 6, 7).
- ``trace_table`` / ``trace_figure`` / ``final_tree_figure`` (from ``opt_tree_trace``): a table and an animation of OPT-Tree's construction
  (arXiv 2406.17276, Algorithm 1) from the per-layer records the engine's
  ``opttree_core.policies.trace_opt_tree`` returns (E_sub(T, n), its gain, where δ stops).
- ``static_figure``: a matplotlib paper figure as an inline PNG (notebook 10).
- ``chi_square``: a Pearson χ² goodness-of-fit test of sampled tokens against a
  distribution, pooling rare tokens; ``rejection_stages`` / ``rejection_figure``: recursive
  rejection drawn stage by stage (notebook 4).

Like the rest of treeviz, nothing here loads or runs a model: the notebooks run the engine and
hand these helpers its records.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import NotebookRenderer

from . import style
from .logs import token_text, token_text_map, visible
from .opt_tree_trace import final_tree_figure, trace_figure, trace_table  # noqa: F401 (the notebooks' one import)
from .stream import DRAFTED, step_tokens

FAST_ENV, HTML_ENV = "OPTTREE_FAST", "OPTTREE_HTML"
EXPLORER_KEY = "treeviz_explorer"  # display metadata marking an explorer's widget output
OFFLINE_RENDERER = "offline_notebook"


class OfflineNotebookRenderer(NotebookRenderer):
    """plotly's "notebook" renderer (plotly.js inlined once, at activation) without its
    per-figure MathJax CDN ``<script>``: exported pages then load nothing from the network."""

    def to_mimebundle(self, fig_dict):
        html_text = pio.to_html(fig_dict, config=self.config, auto_play=self.auto_play, include_plotlyjs=False,
                                include_mathjax=False, full_html=False, animation_opts=self.animation_opts,
                                default_width="100%", default_height=525, validate=False)
        return {"text/html": html_text}


def fast_mode() -> bool:
    """True when the environment asks for the fast (CI) mode: ``OPTTREE_FAST=1``."""
    return os.environ.get(FAST_ENV, "") == "1"


def pick(fast, full):
    """``fast`` in fast mode, else ``full`` (for the notebooks' parameter cells)."""
    return fast if fast_mode() else full


def html_build() -> bool:
    """True while ``make html`` executes the notebooks (``OPTTREE_HTML=1``)."""
    return os.environ.get(HTML_ENV, "") == "1"


def offline_plotly() -> str:
    """Show plotly figures as JupyterLab's plotly mime type plus HTML that needs no network:
    plotly.js is embedded once per notebook and no MathJax CDN script is added (plotly's own
    "notebook" renderer adds one per figure). Also turns off Hugging Face's loading bars and tqdm's
    (transformers' one-time GGUF conversion of the embedded model), which would otherwise be saved
    into the notebook as tqdm widgets. Returns the default renderer's name."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is first imported
    os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is first imported (the notebooks' first cell)
    pio.renderers[OFFLINE_RENDERER] = OfflineNotebookRenderer()
    pio.renderers.default = f"plotly_mimetype+{OFFLINE_RENDERER}"
    return pio.renderers.default


def show_widget(explorer) -> None:
    """Display an explorer; in an HTML build (``OPTTREE_HTML=1``) also its current figures as static
    plotly figures, since widget JavaScript can't be embedded offline (``make html`` replaces the
    widget itself by a note saying so)."""
    from IPython.display import display

    display(explorer.widget, metadata={EXPLORER_KEY: type(explorer).__name__})  # tagged for the HTML build
    if not html_build():
        return
    for view in _figure_views(explorer):  # the HTML build puts its note in the widget's place
        go.Figure(view.figure).show()


def _figure_views(explorer) -> list:
    """The ``FigureView``s of a TreeExplorer, CompareExplorer or AnalysisDashboard."""
    if hasattr(explorer, "browser"):
        return [v for v in (explorer.browser.tree, explorer.browser.side) if v is not None]
    if hasattr(explorer, "sides"):
        return [side.tree for side in explorer.sides]
    return [explorer.heatmap, explorer.curves]


COLUMN_WORDS = {
    "mean_ea": "mean E(A)", "mal": "MAL", "tokens_per_s": "tokens/s", "expected_acceptance": "expected A (E(A) + 1)",
    "speedup": "× AR", "speedup_lo": "× AR, 95 % low", "speedup_hi": "× AR, 95 % high", "budget": "n (node budget)",
    "nodes": "n (nodes)", "layers": "draft layers", "expected": "E_sub(T, n*)", "draft_s": "draft s / step",
    "verify_s": "verify s / step", "skipped": "drafted nothing", "steps": "steps", "tokens": "tokens",
    "method": "method", "policy": "policy", "prompt": "prompt", "group": "draft → target",
}


def in_words(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its column names written as words for a reader (``mean_ea`` → "mean E(A)",
    ``tokens_per_s`` → "tokens/s"); names it doesn't know are kept."""
    return frame.rename(columns=lambda c: COLUMN_WORDS.get(c, c))


def static_figure(fig, dpi: int = 110):
    """A matplotlib figure (``treeviz.figures_lib``, ``treeviz.open_questions``) as an inline PNG for a
    notebook cell and its HTML export (no pyplot, no inline backend needed)."""
    import io

    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return Image(data=buffer.getvalue(), format="png")


def step_table(data, tokenizer=None) -> pd.DataFrame:
    """Per step: drafted nodes, the accepted drafted tokens, the bonus token, A and E(A)."""
    texts = token_text_map(data, tokenizer)
    rows = []
    for step in range(len(data.steps)):
        tokens = step_tokens(data, step)
        drafted = [visible(token_text(t, texts)) for t, source in tokens if source == DRAFTED]
        bonus = [visible(token_text(t, texts)) for t, source in tokens if source != DRAFTED]
        row = data.steps.iloc[step]
        rows.append({"step": step, "drafted nodes": int(row["n_nodes"]) - 1, "accepted drafts": " ".join(drafted),
                     "bonus (target)": " ".join(bonus), "A": int(row["a"]), "E(A)": round(float(row["ea"]), 3)})
    return pd.DataFrame(rows)


def speed_verdict(name: str, mal: float, step_s: float, ar_token_s: float, rows: int | None = None,
                  verify_s: float | None = None, draft_s: float | None = None,
                  interval: tuple[float, float] | None = None) -> str:
    """Why a tree (or chain) method is faster or slower than AR, in numbers: a step yields MAL
    tokens and costs step_s; AR costs ar_token_s per token; the speedup is MAL × ar_token_s / step_s,
    so the method wins only when a step costs less than MAL AR tokens. ``rows`` (n + 1: the root and
    n drafted nodes), ``verify_s`` and ``draft_s`` (per step) say where a step's time goes.
    ``interval``: the speedup's 95 % interval over prompts; when it contains 1 the verdict says the
    run cannot tell the method from AR instead of calling it faster or slower."""
    ratio = step_s / ar_token_s
    where = ""
    if verify_s is not None and draft_s is not None:
        where = (f" (verifying {rows} rows: {verify_s * 1e3:.0f} ms = {verify_s / ar_token_s:.2f} AR tokens; "
                 f"drafting: {draft_s * 1e3:.0f} ms)") if rows else f" (verify {verify_s * 1e3:.0f} ms, draft {draft_s * 1e3:.0f} ms)"
    verdict = f"{'faster' if mal > ratio else 'slower'} than AR"
    spread = ""
    if interval is not None and all(np.isfinite(interval)):
        spread = f" (95 % interval over prompts {interval[0]:.2f}–{interval[1]:.2f})"
        if interval[0] <= 1 <= interval[1]:
            verdict = "not distinguishable from AR in this run"
    return (f"{name}: a step costs {step_s * 1e3:.0f} ms = {ratio:.2f} AR tokens' time{where} and yields MAL "
            f"{mal:.2f} tokens, so it is {verdict}: speedup = {mal:.2f} / {ratio:.2f} = {mal / ratio:.2f}{spread}")


def speed_lines(results: pd.DataFrame, machine: str) -> list[str]:
    """Speed lines a notebook may print, from a bench run's results (``opttree_core.tools.bench``:
    AR interleaved with every method, prompt by prompt, in one process): the machine first, then one
    ``speed_verdict`` per tree method with its 95 % interval over the prompts."""
    from .runs import shootout_table

    shootout = shootout_table(results).set_index("method")
    ar = results[results["kind"] == "ar"]
    ar_token_s = ar["seconds"].sum() / ar["new_tokens"].sum()
    lines = [f"measured on {machine}, {ar['prompt_id'].nunique()} prompts: AR {1 / ar_token_s:.1f} tokens/s, "
             "interleaved with every method below"]
    for method, rows in results[results["kind"] == "tree"].groupby("method", sort=False):
        row, n, steps = shootout.loc[method], int(rows["budget"].iloc[0]), rows["steps"].sum()
        lines.append(speed_verdict(f"{rows['policy'].iloc[0]} n={n}", rows["new_tokens"].sum() / steps,
                                   rows["seconds"].sum() / steps, ar_token_s, rows=n + 1,
                                   verify_s=rows["verify_s"].sum() / steps, draft_s=rows["draft_s"].sum() / steps,
                                   interval=(row["speedup_lo"], row["speedup_hi"])))
    return lines


def monotone_profile(profile) -> tuple[object, list[str]]:
    """A hardware profile (``opttree_core.policies.auto.Profile``) whose costs never fall as the tree
    grows: a larger tree can't be cheaper to verify or draft, so a measured dip is timing noise. Each
    cost is raised to the largest at any smaller size; returns the profile and one line per change."""
    import dataclasses

    notes, fixed = [], {}
    for field_name, label in (("verify_s", "verify"), ("draft_layer_s", "draft layer")):
        times = np.asarray(getattr(profile, field_name), dtype=float)
        smooth = np.maximum.accumulate(times)
        for size, got, used in zip(profile.sizes, times, smooth):
            if used > got:
                notes.append(f"{label} at {size} nodes measured {got * 1e3:.1f} ms, less than a smaller tree: "
                             f"noise, smoothed to {used * 1e3:.1f} ms")
        fixed[field_name] = tuple(float(t) for t in smooth)
    return dataclasses.replace(profile, **fixed), notes


def rejection_stages(p, children: Sequence[int]) -> list[dict]:
    """Recursive rejection over deterministic children, stage by stage: before trying child i, the
    residual distribution (the target's p with the children already rejected zeroed, renormalised)
    and the chance of accepting child i; the last stage is the residual the bonus token is drawn
    from when every child is rejected (SpecInfer's rule with q a point mass on each child)."""
    residual = np.asarray(p, dtype=np.float64) / float(np.sum(p))
    stages = []
    for child in children:
        stages.append({"child": int(child), "accept": float(residual[child]), "p": residual.copy()})
        residual = residual.copy()
        residual[child] = 0.0
        residual /= residual.sum()
    stages.append({"child": None, "accept": None, "p": residual})
    return stages


def rejection_figure(p, children: Sequence[int], top: int = 8, width: int = 980, height: int = 300) -> go.Figure:
    """Bars of the residual distribution at each stage of ``rejection_stages`` (the ``top`` tokens of
    p): the child being tried in the accepted colour, the children already rejected at 0."""
    from plotly.subplots import make_subplots

    stages = rejection_stages(p, children)
    shown = sorted(set(np.argsort(-np.asarray(p))[:top].tolist()) | {int(c) for c in children},
                   key=lambda t: -float(p[t]))
    titles = [f"try child t{s['child']}: accept w.p. {s['accept']:.2f}" if s["child"] is not None
              else "all rejected: bonus ~ residual" for s in stages]
    fig = make_subplots(rows=1, cols=len(stages), subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.03)
    for col, stage in enumerate(stages, start=1):
        colours = [style.ACCEPTED if t == stage["child"] else style.REJECTED_EDGE if stage["p"][t] == 0
                   else style.DRAFTED for t in shown]
        fig.add_trace(go.Bar(x=[f"t{t}" for t in shown], y=[float(stage["p"][t]) for t in shown],
                             marker={"color": colours}, showlegend=False,
                             hovertemplate="%{x}: %{y:.3f}<extra></extra>"), row=1, col=col)
    fig.update_layout(**style.PLOTLY_BASE, width=width, height=height, margin={"l": 50, "r": 10, "t": 60, "b": 40},
                      title={"text": "recursive rejection: residual p before each try (tried child in colour)",
                             "x": 0.01, "font": {"size": 13}})
    fig.update_annotations(font={"size": 11})
    fig.update_yaxes(title_text="residual p", row=1, col=1)
    return fig


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float
    samples: int
    bins: int

    def __str__(self) -> str:
        return f"χ² = {self.statistic:.2f}, dof = {self.dof}, p = {self.p_value:.3g} ({self.samples} samples)"


def chi_square(samples: Sequence[int], probs, min_expected: float = 5.0) -> ChiSquare:
    """Pearson's χ² test that ``samples`` (token ids) were drawn from ``probs`` (shape (V,)).

    Tokens expected fewer than ``min_expected`` times are pooled into one bin (the usual
    validity rule for the χ² approximation)."""
    from scipy import stats

    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum()
    counts = np.bincount(np.asarray(samples, dtype=np.int64), minlength=len(probs)).astype(np.float64)
    expected = probs * len(samples)
    big = expected >= min_expected
    observed, wanted = list(counts[big]), list(expected[big])
    if (~big).any() and expected[~big].sum() > 0:
        observed.append(counts[~big].sum())
        wanted.append(expected[~big].sum())
    if len(wanted) < 2:
        raise ValueError("too few samples for a χ² test: fewer than two bins reach the expected count")
    result = stats.chisquare(observed, wanted)
    return ChiSquare(float(result.statistic), len(wanted) - 1, float(result.pvalue), len(samples), len(wanted))
