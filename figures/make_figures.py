"""Regenerate every paper figure and table from logged bench runs; never runs a model.

    python -m figures.make_figures --data figures/data --out figures/out
    python figures/make_figures.py --data figures/data/small --out /tmp/figs

``--data`` is one run folder (``python -m opttree_core bench --out RUN_DIR``) or a folder of
them; each run's files go to ``--out`` (or ``--out/<run name>`` for a folder of runs):

    fig4_ea_vs_a.{png,pdf,csv}   Fig. 4: steps per (E(A), A), Pearson r per drafter · policy
    fig4_correlation.csv         r, ρ and n of each panel
    fig5_budget.{png,pdf,csv}    Fig. 5: MAL and tokens/s against the node budget
    shootout.{csv,md}            MAL and speedup per method × budget × temperature (pooled)
    speedup_bars.{png,pdf,csv}   speedup over AR, mean ± sd over prompts
    case_tree.{png,pdf,csv}      one step's tree, accepted path and tokens (``--case METHOD``)

Same logs → same bytes (``treeviz.static`` pins fonts and strips dates). Reads Parquet and
JSON with pandas only: no torch, no transformers, no ``opttree_core``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from treeviz.figures_lib import (
    budget_curves,
    case_tree,
    correlation_table,
    ea_heatmaps,
    speedup_bars,
)
from treeviz.runs import BenchRun, find_runs, load_run, shootout_table
from treeviz.static import save_figure

FIGURES = {"fig4_ea_vs_a": ea_heatmaps, "fig5_budget": budget_curves, "speedup_bars": speedup_bars,
           "case_tree": case_tree}
FORMATS = ("png", "pdf")
PNG_DPI = 200  # keeps gallery PNGs small; the PDFs are vector
EXPECTED_FILES = sorted([f"{name}.{ext}" for name in FIGURES for ext in (*FORMATS, "csv")]
                        + ["fig4_correlation.csv", "shootout.csv", "shootout.md"])
FLOAT_FORMAT = "%.6g"


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return path


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def shootout_markdown(table: pd.DataFrame, run_name: str) -> str:
    """The shoot-out as a Markdown table (numbers to 2 decimals; – where not applicable)."""
    columns = ["method", "drafter", "policy", "budget", "temperature", "n_prompts", "mal", "tokens_per_s", "speedup",
               "matches_ar"]
    heads = ["method", "drafter", "policy", "budget n", "T", "prompts", "MAL", "tokens/s", "speedup", "= AR"]
    note = ("Pooled over prompts: MAL = Σ tokens / Σ steps, tokens/s = Σ tokens / Σ seconds, "
            "speedup = tokens/s over autoregressive decoding at the same temperature, same run.")
    lines = [f"# Policy shoot-out: {run_name}", "", note, "",
             "| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for row in table[columns].itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def make_run_figures(run: BenchRun, out: Path, case_method: str | None = None) -> list[Path]:
    """Write every figure, its data table, and the shoot-out tables of ``run`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in FIGURES.items():
        fig, table = draw(run, case_method) if draw is case_tree else draw(run)
        paths += save_figure(fig, out / name, ("png",), dpi=PNG_DPI) + save_figure(fig, out / name, ("pdf",))
        paths.append(write_csv(table, out / f"{name}.csv"))
    paths.append(write_csv(correlation_table(run), out / "fig4_correlation.csv"))
    shootout = shootout_table(run.results)
    paths.append(write_csv(shootout, out / "shootout.csv"))
    (out / "shootout.md").write_text(shootout_markdown(shootout, run.name))
    paths.append(out / "shootout.md")
    return paths


def make_figures(data: Path, out: Path, case_method: str | None = None) -> list[Path]:
    """Figures for the run folder ``data``, or for each run folder in it (into ``out/<run name>``)."""
    runs = find_runs(data)
    single = len(runs) == 1 and runs[0] == Path(data)
    paths = []
    for path in runs:
        paths += make_run_figures(load_run(path), out if single else out / path.name, case_method)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m figures.make_figures", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("figures/data"), help="a bench run folder, or a folder of them")
    p.add_argument("--out", type=Path, default=Path("figures/out"))
    p.add_argument("--case", default=None, help="method whose logs give the case-study tree (default: OPT-Tree, "
                                                "largest budget, best MAL)")
    args = p.parse_args(argv)
    try:
        paths = make_figures(args.data, args.out, args.case)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} files under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
