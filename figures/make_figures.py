"""Regenerate every paper figure and table from logged bench runs; never runs a model.

    python -m figures.make_figures --data figures/data --out figures/out
    python figures/make_figures.py --data figures/data/small --out /tmp/figs

``--data`` is one run folder (``python -m opttree_core bench --out RUN_DIR``) or a folder of
them; each run's files go to ``--out`` (or ``--out/<run name>`` for a folder of runs):

    fig4_ea_vs_a.{png,pdf,csv}   Fig. 4: steps per (E(A), A), Pearson r per drafter · policy
    fig4_correlation.csv         r, ρ and n of each panel
    fig5_budget.{png,pdf,csv}    Fig. 5: MAL and tokens/s against the node budget
    shootout.{csv,md}            MAL and speedup per method × budget × temperature (pooled); the .md
                                 ends with the paper's order (OPT-Tree > EAGLE static > binary) tested
                                 on paired prompts where the run has two of them
    speedup_bars.{png,pdf,csv}   speedup over AR, mean ± sd over prompts
    case_tree.{png,pdf,csv}      one step's tree, accepted path and tokens (``--case METHOD``)

From a folder of runs, also ``COMBINED`` sets (``paper-fig5-all/``: Fig. 5 and its shoot-out over
``paper-fig5`` + ``paper-fig5-large`` on their shared prompts; ``pair-fig5-all/`` the same on the pair) and the paper's open questions from
the ``oq-*`` runs (``open-questions/oq_strength``, ``oq_delta`` + ``oq_delta_best.csv``, ``oq_large``;
``oq-*`` runs get no per-run set of their own; ``oq_large`` draws SmolLM2 and the pair), and questions 1
and 2 on the Qwen2.5-Coder pair (``open-questions/oq_strength_pair`` from ``pair-table1`` +
``pair-table1-ends`` + ``oq-strength-pair``; ``oq_delta_pair`` + ``oq_delta_pair_best.csv`` from
``oq-delta-pair-*``).

Same logs → same bytes (``treeviz.static`` pins fonts and strips dates). Reads Parquet and
JSON with pandas only: no torch, no transformers, no ``opttree_core``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from opttree_core.summary import machine_labels, method_summary, prompts_per_machine
from treeviz import open_questions as oq
from treeviz.figures_lib import (
    budget_curves,
    case_tree,
    correlation_table,
    ea_heatmaps,
    speedup_bars,
)
from treeviz.runs import (BenchRun, combine_runs, find_runs, load_run, ordering_table, shared_prompts,
                          shootout_table)
from treeviz.static import save_figure

FIGURES = {"fig4_ea_vs_a": ea_heatmaps, "fig5_budget": budget_curves, "speedup_bars": speedup_bars,
           "case_tree": case_tree}
FORMATS = ("png", "pdf")
PNG_DPI = 200  # keeps gallery PNGs small; the PDFs are vector
MAX_PNG_PIXELS = 0.8e6  # a gallery PNG's pixel budget (a figure of many panels gets a lower dpi)
MIN_PNG_DPI = 48  # no lower: a huge case tree (hundreds of nodes) is then still one small file
MAX_PNG_BYTES = 200_000  # a gallery PNG's size; a figure dense with text (many heatmap cells) gets a lower dpi
EXPECTED_FILES = sorted([f"{name}.{ext}" for name in FIGURES for ext in (*FORMATS, "csv")]
                        + ["fig4_correlation.csv", "shootout.csv", "shootout.md"])
FLOAT_FORMAT = "%.6g"
# Runs that sweep parts of one grid, joined on their shared prompts into one Fig. 5 (out/<name>/).
COMBINED = {"paper-fig5-all": ("paper-fig5", "paper-fig5-large"), "pair-fig5-all": ("pair-fig5", "pair-fig5-large")}
OPEN_QUESTIONS_DIR = "open-questions"
OPEN_QUESTION_PREFIX = "oq-"  # runs behind the open questions only: no per-run figure set of their own
# Question 1 on the Qwen2.5-Coder pair: Table 1's 0.5B draft beside its two ends (n-gram, self) and the
# 0.5B made weaker (oq-strength-pair, when run), the rows those runs share (OPT-Tree, n = 25, greedy) on
# the prompts every one of them decoded
PAIR_STRENGTH_RUNS = ("pair-table1", "pair-table1-ends")
PAIR_WEAKER_DRAFTS = "oq-strength-pair"
PAIR_STRENGTH_ROWS = {"policy": "opt-tree", "budget": 25, "temperature": 0.0}
PAIR_DELTA_PREFIX = "oq-delta-pair-"  # question 2 on the pair (SmolLM2's sweep: the other oq-delta-* runs)
# Question 3: OPT-Tree δ = 0 from the Fig. 5 sweeps to n = 1024, SmolLM2's and the pair's
LARGE_RUNS = ("paper-fig5", "paper-fig5-large", "oq-large", "pair-fig5", "pair-fig5-large", "oq-large-pair")


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return path


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _with_interval(value, low, high) -> str:
    """"2.31 (2.10–2.55)"; the bare value where there is no interval."""
    if any(_cell(v) == "–" for v in (low, high)):
        return _cell(value)
    return f"{_cell(value)} ({low:.2f}–{high:.2f})"


def machines_section(results: pd.DataFrame, methods: list[str]) -> list[str]:
    """For a run timed on more than one machine (``summary.machine_labels``): which machine timed how
    many prompts, and each method's pooled speedup on each machine's prompts alone."""
    machines = prompts_per_machine(results)
    if len(machines) < 2:
        return ["", f"Timed on {next(iter(machines))}."] if machines else []
    heads = [f"speedup on {m} ({n} prompt{'s' if n != 1 else ''})" for m, n in machines.items()]
    named = machine_labels(results)
    speedups = {m: method_summary(results[named == m]).set_index("method")["speedup"] for m in machines}
    lines = ["", f"Timed on {len(machines)} machines (a run resumed in sittings). Each prompt ran whole on one "
             "machine, so every speedup is over AR on its own prompt and machine; the pooled speedups above mix "
             "the machines, and each machine's own are:", "",
             "| method | " + " | ".join(heads) + " |", "|---|" + "|".join("---" for _ in heads) + "|"]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(_cell(speedups[m].get(method)) for m in machines) + " |")
    return lines


def _verdict(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return "ahead" if low > 1 else "behind" if high < 1 else "level (the interval holds 1)"


def ordering_section(ordering: pd.DataFrame) -> list[str]:
    """``runs.ordering_table`` in words: whether each policy of the paper's MAL order is ahead of the
    next on the same prompts (paired intervals), and whether that also makes it faster."""
    if ordering.empty:
        return []
    lines = ["", "## The paper's order, paired over prompts", "",
             "OPT-Tree's Table 1 ranks OPT-Tree > EAGLE static tree > binary tree in MAL. Each row compares two "
             "of them on the prompts both decoded (same prompt, same machine): the first's MAL and tokens/s over "
             "the second's, with 95 % paired percentile-bootstrap intervals over prompts (1000 draws, seed 0). "
             "Ahead: the interval lies above 1; behind: below 1.", "",
             "| drafter | T | n | first vs second | prompts | MAL ratio (95 % CI) | MAL | speed ratio (95 % CI) | speed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in ordering.itertuples(index=False):
        lines.append(f"| {row.drafter} | {row.temperature:g} | {row.budget} | {row.first} vs {row.second} | "
                     f"{row.prompts} | {_with_interval(row.mal_ratio, row.mal_ratio_lo, row.mal_ratio_hi)} | "
                     f"{_verdict(row.mal_ratio_lo, row.mal_ratio_hi)} | "
                     f"{_with_interval(row.speed_ratio, row.speed_ratio_lo, row.speed_ratio_hi)} | "
                     f"{_verdict(row.speed_ratio_lo, row.speed_ratio_hi)} |")
    return lines


def shootout_markdown(table: pd.DataFrame, run_name: str, results: pd.DataFrame | None = None) -> str:
    """The shoot-out as a Markdown table (numbers to 2 decimals, 95 % intervals in brackets; – where
    not applicable), then, given the ``results`` it summarises, the machines that timed them."""
    heads = ["method", "drafter", "policy", "budget n", "T", "prompts", "MAL (95 % CI)", "tokens/s",
             "speedup (95 % CI)", "= AR"]
    note = ("Pooled over prompts: MAL = Σ tokens / Σ steps, tokens/s = Σ tokens / Σ seconds, "
            "speedup = tokens/s over autoregressive decoding at the same temperature, same run. "
            "In brackets: 95 % percentile-bootstrap intervals over prompts (1000 draws, seed 0).")
    lines = [f"# Policy shoot-out: {run_name}", "", note, "",
             "| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for row in table.itertuples(index=False):
        cells = [_cell(v) for v in (row.method, row.drafter, row.policy, row.budget, row.temperature, row.n_prompts)]
        cells += [_with_interval(row.mal, row.mal_lo, row.mal_hi), _cell(row.tokens_per_s),
                  _with_interval(row.speedup, row.speedup_lo, row.speedup_hi), _cell(row.matches_ar)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += machines_section(results, list(table["method"])) if results is not None else []
    lines += ordering_section(ordering_table(results)) if results is not None else []
    return "\n".join(lines).rstrip("\n") + "\n"


def _png_dpi(fig) -> int:
    """``PNG_DPI``, lowered for a large figure (many panels) so its gallery PNG stays under
    ``MAX_PNG_PIXELS``."""
    width, height = fig.get_size_inches()
    return max(MIN_PNG_DPI, min(PNG_DPI, int(math.sqrt(MAX_PNG_PIXELS / (width * height)))))


def _save_png(fig, path: Path) -> list[Path]:
    """The gallery PNG at ``_png_dpi``, saved again at 85 % of the dpi while it is over ``MAX_PNG_BYTES``."""
    dpi = _png_dpi(fig)
    while True:
        saved = save_figure(fig, path, ("png",), dpi=dpi)
        if saved[0].stat().st_size <= MAX_PNG_BYTES or dpi <= MIN_PNG_DPI:
            return saved
        dpi = max(MIN_PNG_DPI, int(dpi * 0.85))


def _save(fig, table: pd.DataFrame, path: Path) -> list[Path]:
    return _save_png(fig, path) + save_figure(fig, path, ("pdf",)) + [write_csv(table, path.with_suffix(".csv"))]


def make_run_figures(run: BenchRun, out: Path, case_method: str | None = None) -> list[Path]:
    """Write every figure, its data table, and the shoot-out tables of ``run`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in FIGURES.items():
        paths += _save(*(draw(run, case_method) if draw is case_tree else draw(run)), out / name)
    paths.append(write_csv(correlation_table(run), out / "fig4_correlation.csv"))
    shootout = shootout_table(run.results)
    paths.append(write_csv(shootout, out / "shootout.csv"))
    (out / "shootout.md").write_text(shootout_markdown(shootout, run.name, run.results))
    paths.append(out / "shootout.md")
    return paths


def make_combined_figures(runs: dict[str, BenchRun], out: Path) -> list[Path]:
    """Fig. 5 and the shoot-out of each ``COMBINED`` set whose runs are all in ``runs``."""
    paths = []
    for name, members in COMBINED.items():
        if all(m in runs for m in members):
            run = combine_runs([runs[m] for m in members], name)
            fig, table = budget_curves(run)
            paths += _save(fig, table, out / name / "fig5_budget")
            shootout = shootout_table(run.results)
            paths.append(write_csv(shootout, out / name / "shootout.csv"))
            (out / name / "shootout.md").write_text(shootout_markdown(shootout, f"{name} ({' + '.join(members)})",
                                                                      run.results))
            paths.append(out / name / "shootout.md")
    return paths


def _runs_named(runs: dict[str, BenchRun], *names: str, prefix: str | None = None) -> list[BenchRun]:
    return [run for name, run in sorted(runs.items()) if name in names or (prefix and name.startswith(prefix))]


def make_open_question_figures(runs: dict[str, BenchRun], out: Path) -> list[Path]:
    """The paper's open questions (``treeviz.open_questions``) from the ``oq-*`` runs, into
    ``out/open-questions/``; a question whose runs are absent is skipped with a line on stderr."""
    out, paths = out / OPEN_QUESTIONS_DIR, []
    strength = [run for run in _runs_named(runs, prefix="oq-strength") if run.name != PAIR_WEAKER_DRAFTS]
    delta = [run for run in _runs_named(runs, prefix="oq-delta-") if not run.name.startswith(PAIR_DELTA_PREFIX)]
    pair_delta = _runs_named(runs, prefix=PAIR_DELTA_PREFIX)
    pair_strength = all(name in runs for name in PAIR_STRENGTH_RUNS)
    if strength:
        paths += _save(*oq.strength_figure(oq.strength_table(strength)), out / "oq_strength")
    if pair_strength:
        members = _runs_named(runs, *PAIR_STRENGTH_RUNS, PAIR_WEAKER_DRAFTS)
        table = oq.strength_table(members, prompts=shared_prompts(members), **PAIR_STRENGTH_ROWS)
        paths += _save(*oq.strength_figure(table), out / "oq_strength_pair")
    for name, members, profile in (("oq_delta", delta, oq.SimulatedProfile()),
                                   ("oq_delta_pair", pair_delta, oq.PAIR_PROFILE)):
        if members:
            table = oq.delta_table(members, profile)
            paths += _save(*oq.delta_figure(table, profile), out / name)
            paths.append(write_csv(oq.best_deltas(table), out / f"{name}_best.csv"))
    if "oq-large" in runs:
        table = oq.large_budget_table(_runs_named(runs, *LARGE_RUNS))
        paths += _save(*oq.large_budget_figure(table), out / "oq_large")
    for question, present in (("draft strength (oq-strength*)", strength),
                              (f"draft strength on the pair ({', '.join(PAIR_STRENGTH_RUNS)})", pair_strength),
                              ("best δ (oq-delta-*)", delta), (f"best δ on the pair ({PAIR_DELTA_PREFIX}*)", pair_delta),
                              ("past 500 nodes (oq-large)", "oq-large" in runs)):
        if not present:
            print(f"make_figures: open question '{question}' skipped: its runs are not in the data", file=sys.stderr)
    return paths


def make_figures(data: Path, out: Path, case_method: str | None = None) -> list[Path]:
    """Figures for the run folder ``data``, or for each run folder in it (into ``out/<run name>``),
    then the combined Fig. 5 and the open questions from a folder of runs."""
    paths = find_runs(data)
    if len(paths) == 1 and paths[0] == Path(data):
        return make_run_figures(load_run(paths[0]), out, case_method)
    runs = {path.name: load_run(path) for path in paths}
    written = []
    for name, run in runs.items():
        if not name.startswith(OPEN_QUESTION_PREFIX):
            written += make_run_figures(run, out / name, case_method)
    return written + make_combined_figures(runs, out) + make_open_question_figures(runs, out)


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
