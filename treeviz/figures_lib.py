"""The paper's figures drawn from one bench run folder (``treeviz.runs``), in matplotlib for print.

OPT-Tree (arXiv 2406.17276): Fig. 4 is the count of steps per (E(A), A) for each draft, with
Pearson's r; Fig. 5 is the mean acceptance length against the node budget. Beside them: tokens/s
against the budget, speedup bars over autoregressive decoding, and a case-study tree (one step,
its accepted path highlighted and every token written out, like the paper's case figure).

Each function returns ``(figure, table)``: the table holds exactly the numbers drawn, so a
caller can save it beside the figure and a test can check the figure against the logs.
Panels are ``drafter · policy`` (heatmaps) or ``drafter`` (curves, bars), with ``· T=…``
added when a run mixes temperatures.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

from opttree_core.summary import per_prompt_speedups, prompts_per_machine

from . import style
from .analysis import correlation_intervals, ea_a_counts, speedup_stats
from .graph import accepted_path, step_graph
from .logs import visible
from .mpl_tree import tree_figure_mpl
from .paper import ea_heatmap_mpl
from .runs import AR_KIND, BenchRun, multi_temperature, panel_name, panels
from .static import PAGE_WIDTH_IN, new_figure, paper_style

CASE_MAX_BUDGET = 32  # the default case study's largest tree: a bigger one is unreadable as one picture
MIN_REJECTED = 2  # a case-study step has at least this many drafted nodes off the accepted path
MIN_WIDTH_IN = 5.6  # wide enough for a two-line title that states the data
CAPTION_CHARS_PER_INCH = 15  # 8-point DejaVu Sans averages about 4.5 pt a character, with a margin
AXIS_FLOOR = {"mal": 1.0, "tokens_per_s": 0.0}  # MAL is at least 1 (the bonus token); throughput at least 0
CURVE_VALUES = {"mal": "mean acceptance length", "tokens_per_s": "tokens / s"}


def data_caption(run: BenchRun, max_chars: int | None = None) -> str:
    """What a figure of ``run`` shows, for its title: target and dtype, drafts, prompts (and their
    datasets), budgets, temperatures and the token cap, e.g. ``qwen2.5-coder-1.5b (bfloat16) · draft
    qwen2.5-coder-0.5b:int4 · 24 prompts (spec_bench) · n = 25 · greedy · 128 new tokens``; broken into
    lines of at most ``max_chars`` characters between its parts (``caption_chars``)."""
    results, config = run.results, run.config.get("config", {})
    tree = results[results["kind"] == "tree"]
    budgets = sorted(int(b) for b in tree["budget"].dropna().unique())
    temperatures = sorted(float(t) for t in results["temperature"].unique())
    dtype = run_dtype(run)
    parts = [str(config["target"]) + (f" ({dtype})" if dtype else "")] if config.get("target") else []
    drafts = sorted(str(d) for d in tree["drafter"].dropna().unique())
    if drafts:
        parts.append(("draft " if len(drafts) == 1 else "drafts ") + ", ".join(drafts))
    datasets = ", ".join(sorted(str(d) for d in results["dataset"].dropna().unique()))
    parts.append(f"{results['prompt_id'].nunique()} prompts" + (f" ({datasets})" if datasets else ""))
    if budgets:
        parts.append(f"n = {budgets[0]}" if len(budgets) == 1 else f"n = {budgets[0]}–{budgets[-1]}")
    parts.append("greedy" if temperatures == [0.0] else "T = " + ", ".join(f"{t:g}" for t in temperatures))
    if config.get("max_new_tokens"):
        parts.append(f"{config['max_new_tokens']} new tokens")
    if len(machines := prompts_per_machine(results)) > 1:  # a run resumed in sittings elsewhere
        parts.append(f"timed on {len(machines)} machines")
    return _join_lines(parts, " · ", max_chars)


def run_dtype(run: BenchRun) -> str | None:
    """The dtype ``run``'s target decoded in: its config's, or where that says "auto", what its first
    tree log records (None: neither says)."""
    dtype = run.config.get("config", {}).get("dtype")
    if dtype not in (None, "auto"):
        return str(dtype)
    rows = run.tree_rows()
    if rows.empty:
        return None
    logged = run.log_meta(rows["log_dir"].iloc[0]).get("dtype")
    return str(logged) if logged else None


def caption_chars(fig) -> int:
    """How many characters of an 8-point caption fit across ``fig``."""
    return int(fig.get_figwidth() * CAPTION_CHARS_PER_INCH)


def figure_title(fig, run: BenchRun, *heading: str) -> str:
    """A figure's title: its heading (parts joined by spaces, broken between them where a line would
    not fit across ``fig``), then ``data_caption``."""
    width = caption_chars(fig)
    return f"{_join_lines(list(heading), ' ', width)}\n{data_caption(run, width)}"


def _join_lines(parts: list[str], separator: str, max_chars: int | None) -> str:
    lines = [""]
    for part in parts:
        joined = lines[-1] + separator + part if lines[-1] else part
        if max_chars is not None and lines[-1] and len(joined) > max_chars:
            lines.append(part)
        else:
            lines[-1] = joined
    return "\n".join(lines)


def ea_heatmaps(run: BenchRun):
    """Fig. 4: steps per (rounded E(A), A), one panel per drafter · policy, Pearson r and Spearman ρ
    (on the unrounded E(A)) in each title. Table: group, a, ea_bin, steps (zeros left out)."""
    frame = run.steps
    groups = panels(frame)
    fig = ea_heatmap_mpl(frame, groups)
    with paper_style():
        fig.suptitle(figure_title(fig, run, "Acceptance length A against expected acceptance E(A), per step",
                                  "(n = steps per panel)"), fontsize=8)
    parts = []
    for group in groups:
        counts = ea_a_counts(frame[frame["group"] == group]).stack().rename("steps").reset_index()
        parts.append(counts[counts["steps"] > 0].assign(group=group))
    table = pd.concat(parts, ignore_index=True)[["group", "a", "ea_bin", "steps"]]
    return fig, table


def correlation_table(run: BenchRun, n_boot: int = 1000) -> pd.DataFrame:
    """Per panel of Fig. 4: the per-step Pearson r and Spearman ρ of E(A) with A, the Pearson r of the
    E(A) bins' mean A (``analysis.binned_correlation``), each with a 95 % bootstrap interval over
    prompts (``analysis.correlation_intervals``); n = steps, prompts, mean E(A) and mean A."""
    frame = run.steps
    rows = []
    for group in panels(frame):
        part = frame[frame["group"] == group]
        rows.append({"group": group, **correlation_intervals(part, n_boot=n_boot), "n": len(part),
                     "prompts": part["prompt_id"].nunique(), "mean_ea": float(part["ea"].mean()),
                     "mean_a": float(part["a"].mean())})
    return pd.DataFrame(rows)


def drafting_free_seconds(tree: pd.DataFrame) -> pd.Series:
    """Each tree run's wall time had its drafting (and tree building) cost nothing: verification
    mostly. Its tokens over these seconds are the roofline's bound MAL(n) · T(1) / T(n + 1) measured in
    the run itself instead of predicted from a profile."""
    return tree["seconds"] - tree["draft_s"].fillna(0.0) - tree["build_s"].fillna(0.0)


def budget_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over prompts of MAL, tokens/s and tokens/s with drafting free
    (``drafting_free_seconds``) per panel (drafter), policy and node budget; AR's tokens/s per
    temperature comes as rows with ``policy == "ar"`` and no budget."""
    with_t = multi_temperature(results)
    tree = results[results["kind"] == "tree"].assign(
        group=lambda f: [panel_name(d, None, t, with_t) for d, t in zip(f["drafter"], f["temperature"])],
        drafting_free=lambda f: f["new_tokens"] / drafting_free_seconds(f))
    keys = ["group", "policy", "budget", "temperature"]
    stats = tree.groupby(keys, sort=True).agg(
        mal=("mal", "mean"), mal_std=("mal", "std"), tokens_per_s=("tokens_per_s", "mean"),
        tokens_per_s_std=("tokens_per_s", "std"), tokens_per_s_drafting_free=("drafting_free", "mean"),
        n_prompts=("prompt_id", "nunique")).reset_index()
    ar = results[results["kind"] == AR_KIND].groupby("temperature", sort=True).agg(
        tokens_per_s=("tokens_per_s", "mean"), tokens_per_s_std=("tokens_per_s", "std"),
        n_prompts=("prompt_id", "nunique")).reset_index().assign(policy=AR_KIND, group="")
    table = pd.concat([stats, ar], ignore_index=True)
    table["budget"] = table["budget"].astype("Int64")
    return table[keys + ["n_prompts", "mal", "mal_std", "tokens_per_s", "tokens_per_s_std", "tokens_per_s_drafting_free"]]


DODGE_LOG2 = 0.07  # policies at one budget sit this far apart on the log₂ axis, so error bars don't overlap


def _budget_panel(ax, rows: pd.DataFrame, value: str, colours: dict) -> None:
    policies = sorted(rows["policy"].unique())
    for i, (policy, line) in enumerate(rows.groupby("policy", sort=True)):
        line = line.sort_values("budget")
        dodge = 2.0 ** ((i - (len(policies) - 1) / 2) * DODGE_LOG2)
        ax.errorbar(line["budget"].astype(float) * dodge, line[value], yerr=line[f"{value}_std"].fillna(0),
                    marker="o", ms=3, capsize=2, lw=1.2, color=colours[policy], label=policy)
    budgets = sorted(rows["budget"].astype(int).unique())
    ax.set_xscale("log", base=2)
    if len(budgets) == 1:  # one point: autoscaling a log axis around it leaves it on the panel's edge
        ax.set_xlim(budgets[0] / 2, budgets[0] * 2)
    ax.xaxis.set_major_locator(FixedLocator(budgets))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
    ax.xaxis.set_minor_locator(NullLocator())


DRAFTING_FREE_POLICY = "opt-tree"  # the policy whose drafting-free speed Fig. 5 draws (one dashed line, not five)


def _drafting_free_line(ax, rows: pd.DataFrame, colours: dict) -> None:
    """OPT-Tree's tokens/s had its drafting cost nothing, dashed in its colour: where that peaks is
    where the roofline puts the best budget; the gap down to the solid line is what drafting costs."""
    line = rows[rows["policy"] == DRAFTING_FREE_POLICY].sort_values("budget")
    if len(line):
        ax.plot(line["budget"].astype(float), line["tokens_per_s_drafting_free"], ls="--", lw=0.9, marker="x",
                ms=3, color=colours[DRAFTING_FREE_POLICY], label=f"{DRAFTING_FREE_POLICY}, drafting free")


def _prompts(table: pd.DataFrame) -> str:
    """"n = 4 prompts" (or a range when methods finished different numbers of prompts)."""
    counts = sorted(set(table["n_prompts"].astype(int)))
    return f"n = {counts[0]} prompts" if len(counts) == 1 else f"n = {counts[0]}–{counts[-1]} prompts"


def _width(groups) -> float:
    """A figure with a panel per group: 2.6 in a panel and 1.6 for the legend, within the page."""
    return min(PAGE_WIDTH_IN, max(MIN_WIDTH_IN, 2.6 * len(groups) + 1.6))


def budget_curves(run: BenchRun):
    """Fig. 5: MAL (top row) and tokens/s (bottom row) against the node budget (log₂ axis), a line
    per policy (dodged sideways so error bars don't overlap), a column per drafter; AR's tokens/s as
    a dotted line and OPT-Tree's with drafting free dashed (``_drafting_free_line``); the legend
    outside the panels. Points: mean ± sd over the prompts (n in the title)."""
    table = budget_table(run.results)
    tree = table[table["policy"] != AR_KIND]
    groups = sorted(tree["group"].unique())
    colours = style.policy_colours(tree["policy"].unique())
    fig, axes = new_figure(_width(groups), 3.9, ncols=len(groups), nrows=2,
                           sharex="col", sharey="row")
    with paper_style():
        for col, group in enumerate(groups):
            rows = tree[tree["group"] == group]
            for row, value in enumerate(CURVE_VALUES):
                _budget_panel(axes[row, col], rows, value, colours)
            _drafting_free_line(axes[1, col], rows, colours)
            for t in rows["temperature"].unique():
                ar = table[(table["policy"] == AR_KIND) & (table["temperature"] == t)]
                axes[1, col].axhline(float(ar["tokens_per_s"].iloc[0]), color="#555", lw=0.9, ls=":",
                                     label="autoregressive")
            axes[0, col].set_title(group, fontsize=8)
        fig.supxlabel("node budget n (log₂ axis)", fontsize=axes[1, 0].xaxis.label.get_fontsize())  # one for all panels
        for row, (value, label) in enumerate(CURVE_VALUES.items()):
            axes[row, 0].set_ylabel(label)
            for ax in axes[row]:
                ax.set_ylim(bottom=AXIS_FLOOR[value])  # after every panel is drawn: the top spans them all
        axes[1, -1].legend(frameon=False, fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(figure_title(fig, run, "Mean acceptance length and throughput against the node budget",
                                  f"(mean ± sd over {_prompts(tree)})"), fontsize=8)
    return fig, table


def speedup_bars(run: BenchRun):
    """Speedup over AR on the same prompt: bars per node budget and policy, a panel per drafter;
    bar = mean of per-prompt speedups, whisker = sd. Table: group, policy, budget, mean, std, count."""
    per_prompt = per_prompt_speedups(run.results)
    with_t = multi_temperature(run.results)
    per_prompt["group"] = [panel_name(d, None, t, with_t) for d, t in
                           zip(per_prompt["drafter"], per_prompt["temperature"])]
    table = speedup_stats(per_prompt, ["group", "policy", "budget"]).sort_values(["group", "policy", "budget"])
    table = table.reset_index(drop=True)
    groups = sorted(table["group"].unique())
    policies = sorted(table["policy"].unique())
    colours = style.policy_colours(policies)
    fig, axes = new_figure(_width(groups), 2.5, ncols=len(groups), sharey=True)
    width = 0.8 / len(policies)
    with paper_style():
        for ax, group in zip(axes[0], groups):
            rows = table[table["group"] == group]
            budgets = sorted(rows["budget"].astype(int).unique())
            for i, policy in enumerate(policies):
                bars = rows[rows["policy"] == policy]
                x = np.searchsorted(budgets, bars["budget"].astype(int)) + (i - (len(policies) - 1) / 2) * width
                ax.bar(x, bars["mean"], width=width * 0.92, yerr=bars["std"], capsize=2, color=colours[policy],
                       label=policy, error_kw={"lw": 0.8})
            ax.axhline(1.0, color="#555", lw=0.8, ls=":")
            ax.set_xticks(np.arange(len(budgets)), [str(b) for b in budgets])
            ax.set_xlabel("node budget n")
            ax.set_title(group, fontsize=8)
        axes[0, 0].set_ylabel("speedup over AR (mean ± sd)")
        axes[0, -1].legend(frameon=False, fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        prompts = sorted(set(table["count"].astype(int)))
        count = prompts[0] if len(prompts) == 1 else f"{prompts[0]}–{prompts[-1]}"
        fig.suptitle(figure_title(fig, run, "Speedup over autoregressive decoding on the same prompt",
                                  f"(mean ± sd over n = {count} prompts)"), fontsize=8)
    return fig, table


def pick_case(run: BenchRun, method: str | None = None) -> tuple[pd.Series, int]:
    """The case-study step: in ``method``'s logs (default: the OPT-Tree method with the largest
    budget up to ``CASE_MAX_BUDGET`` nodes, or the smallest budget run when all are larger, and among
    those the highest pooled MAL), the step with the longest acceptance among
    those with at least ``MIN_REJECTED`` rejected nodes, so the picture shows a tree rather than a
    lucky chain (ties: the lowest prompt id, then the earliest step). Returns (results row, step)."""
    rows = run.tree_rows()
    if method is None:
        trees = rows[rows["policy"] == "opt-tree"] if (rows["policy"] == "opt-tree").any() else rows
        readable = trees[trees["budget"] <= CASE_MAX_BUDGET]
        top = (trees[trees["budget"] == readable["budget"].max()] if len(readable)
               else trees[trees["budget"] == trees["budget"].min()])
        pooled = top.groupby("method")[["new_tokens", "steps"]].sum()
        method = str((pooled["new_tokens"] / pooled["steps"]).sort_index().idxmax())
    chosen = rows[rows["method"] == method].sort_values("prompt_id")
    if chosen.empty:
        raise ValueError(f"no logged tree method {method!r} in {run.path}")
    best = None
    for _, row in chosen.iterrows():
        steps = run.log(row["log_dir"]).steps
        rejected = steps["n_nodes"].to_numpy() - steps["a"].to_numpy()  # drafted nodes off the path
        score = np.where(rejected >= MIN_REJECTED, steps["a"].to_numpy(), -1)
        if score.max() < 0:  # no branched step at all: take the longest acceptance anyway
            score = steps["a"].to_numpy()
        i = int(np.argmax(score))  # the first of the best
        if best is None or int(score[i]) > best[2]:
            best = (row, i, int(score[i]))
    return best[0], best[1]


def case_tree(run: BenchRun, method: str | None = None):
    """One step's draft tree (``pick_case``): accepted path highlighted, tokens as text, p̂ as colour.
    Table: the step's nodes (node, parent, depth, token, text, p_hat, accepted, on_path)."""
    row, step = pick_case(run, method)
    data = run.log(row["log_dir"])
    graph = step_graph(data, step)
    fig = tree_figure_mpl(data, step)  # the scene's own size: edges stop clear of the labels
    path = accepted_path(graph)
    bonus = graph.graph["bonus_node"]
    accepted_text = "".join(graph.nodes[n]["text"] for n in path[1:] + ([bonus] if bonus is not None else []))
    chars = max(30, int(fig.get_figwidth() * 72 / (7 * 0.62)))  # a 7 pt line's characters across the figure
    with paper_style():
        ax = fig.axes[0]
        prompt = visible(str(data.meta.get("prompt") or row["prompt_id"]), chars - 2)
        ax.set_title(f"{row['method']} · step {step}: {graph.graph['n_nodes'] - 1} drafted nodes, "
                     f"E(A) = {graph.graph['ea']:.2f}, A = {graph.graph['a']}\n“{prompt}”\n"
                     f"accepted: “{visible(accepted_text, chars - 20)}” (root “{visible(graph.nodes[0]['text'])}”)",
                     loc="left", fontsize=7)
    nodes = [{"node": n, "parent": next(iter(graph.predecessors(n)), -1), "depth": a["depth"], "token": a["token"],
              "text": a["text"], "p_hat": a["p_hat"], "accepted": a["accepted"], "kind": a["kind"],
              "on_path": n in path or n == bonus} for n, a in sorted(graph.nodes(data=True))]
    table = pd.DataFrame(nodes).assign(method=row["method"], prompt_id=row["prompt_id"], step=step)
    return fig, table
