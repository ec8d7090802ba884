"""The OPT-Tree paper's open questions, answered from bench runs (notebook 10, ``make figures``).

1. How does the E(A)–A correlation vary with draft strength? ``strength_table``: per draft, the
   first-token agreement (the step's best depth-1 guess is the target's token) against the
   per-step Pearson r / Spearman ρ and the binned r, each with a bootstrap interval over prompts.
2. What is the best δ for a draft and a machine? ``delta_table``: per draft and δ, MAL, the
   measured speedup on this machine and the speedup a second, *simulated* cost profile predicts
   from the same trees (``SimulatedProfile``); opt-tree-auto's own choice beside them.
3. Does MAL keep rising past 500 nodes? ``large_budget_table``: MAL against n for OPT-Tree on the
   prompts that every run of the sweep shares.

Reads run folders with pandas only (``treeviz.runs``); draws with matplotlib for print.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

from opttree_core.metrics import pooled_mal, tokens_per_second
from opttree_core.summary import speedup_over_ar

from . import style
from .analysis import correlation_intervals, ea_a_frame
from .figures_lib import run_dtype
from .runs import AR_KIND, BenchRun, shared_prompts
from .static import COLUMN_WIDTH_IN, PAGE_WIDTH_IN, new_figure, paper_style

AUTO = "opt-tree-auto"


def draft_label(drafter: str, draft_vocab) -> str:
    """``eagle-smollm2 · vocab 512`` for a draft restricted to its most frequent tokens (a spec that
    names its vocabulary itself, ``qwen2.5-coder-0.5b:vocab1024``, stays as it is)."""
    if not draft_vocab or str(drafter).endswith(f":vocab{int(draft_vocab)}"):
        return str(drafter)
    return f"{drafter} · vocab {int(draft_vocab)}"


def _log_vocab(meta: dict):
    vocab = meta.get("draft_vocab")
    return vocab if isinstance(vocab, int) and vocab > 0 else None


def first_token_hits(nodes: pd.DataFrame) -> pd.Series:
    """Per step: whether the draft's best depth-1 guess (largest p̂) was the target's token. A step
    that drafted nothing counts as a miss (an n-gram table with no match), except a run's last step,
    which drafts nothing when the token cap leaves room for one token only."""
    steps = nodes["step"].unique()
    first = nodes[nodes["depth"] == 1].sort_values(["step", "p_hat"], ascending=[True, False], kind="stable")
    best = first.drop_duplicates("step").set_index("step")["accepted"].astype(bool)
    if len(steps) and steps.max() not in best.index:
        steps = steps[steps != steps.max()]
    return best.reindex(steps, fill_value=False)


def _tree_runs(runs: list[BenchRun], prompts=None, **match):
    """Each tree row of ``runs`` (with its run) whose columns equal ``match``'s values (e.g. ``policy``),
    on ``prompts`` only when given."""
    for run in runs:
        for row in run.tree_rows().itertuples(index=False):
            if all(getattr(row, k) == v for k, v in match.items()) and (prompts is None or row.prompt_id in prompts):
                yield run, row


def strength_table(runs: list[BenchRun], n_boot: int = 1000, prompts=None, **select) -> pd.DataFrame:
    """One row per draft (drafter and draft vocabulary) over ``runs``' tree logs: steps, prompts,
    first-token agreement, MAL, mean E(A) and the correlations of ``analysis.correlation_intervals``.
    ``select`` keeps the tree rows whose columns have those values (e.g. ``policy="opt-tree",
    budget=25, temperature=0.0`` out of a Table 1 run of five policies, two budgets and two temperatures);
    ``prompts`` (e.g. ``runs.shared_prompts``) keeps those prompts only."""
    steps, hits, budgets = {}, {}, {}
    dtypes = {run.name: run_dtype(run) or "" for run in runs}  # read once per run, not per log
    for run, row in _tree_runs(runs, prompts, **select):
        data = run.log(row.log_dir)
        label = (run.target, dtypes[run.name], draft_label(row.drafter, _log_vocab(data.meta)))
        part = ea_a_frame({row.log_dir: data})[["step", "ea", "a", "ea_bin"]].assign(prompt_id=row.prompt_id)
        steps.setdefault(label, []).append(part)
        hits.setdefault(label, []).append(first_token_hits(data.nodes))
        budgets.setdefault(label, set()).add(int(row.budget))
    rows = []
    for label in sorted(steps):
        frame = pd.concat(steps[label], ignore_index=True)
        agree = pd.concat(hits[label], ignore_index=True)
        rows.append({"target": label[0], "dtype": label[1], "draft": label[2], "budget": _span(budgets[label]),
                     "steps": len(frame),
                     "prompts": frame["prompt_id"].nunique(),
                     "first_token_agreement": float(agree.mean()), "mal": float(frame["a"].mean()),
                     "mean_ea": float(frame["ea"].mean()), **correlation_intervals(frame, n_boot=n_boot)})
    if not rows:
        raise ValueError("no tree runs with logs for the draft-strength question")
    return pd.DataFrame(rows).sort_values("first_token_agreement", kind="stable").reset_index(drop=True)


def _targets(table: pd.DataFrame) -> str:
    """"target smollm2-135m (float32)", or "targets a (bfloat16), b (float32)" when a table mixes them
    (for a figure's title)."""
    names = sorted({f"{row.target} ({row.dtype})" if isinstance(row.dtype, str) and row.dtype else row.target
                    for row in table[["target", "dtype"]].itertuples(index=False)})
    return ("target " if len(names) == 1 else "targets ") + ", ".join(names)


def series_label(row, table: pd.DataFrame, draft_column: str = "draft") -> str:
    """A draft's name in a figure; with its target in brackets when the table mixes targets."""
    draft = getattr(row, draft_column)
    return draft if table["target"].nunique() == 1 else f"{draft} ({row.target})"


def _span(values) -> str:
    """"25", or "25–50" when a column mixes budgets."""
    values = sorted(set(values))
    return f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}–{values[-1]:g}"


def strength_figure(table: pd.DataFrame):
    """r (per step, and over E(A) bins) against first-token agreement, one point per draft, 95 %
    bootstrap intervals as error bars."""
    fig, axes = new_figure(COLUMN_WIDTH_IN + 1.4, 2.6)
    ax = axes[0, 0]
    with paper_style():
        for column, label, colour, shift in (("pearson", "per-step Pearson r", style.OKABE_ITO[0], -0.004),
                                             ("binned_pearson", "Pearson r over E(A) bins", style.OKABE_ITO[1], 0.004)):
            x = table["first_token_agreement"].to_numpy(float) + shift
            y = table[column].to_numpy(float)
            err = np.abs(np.vstack([y - table[f"{column}_lo"], table[f"{column}_hi"] - y]))
            ax.errorbar(x, y, yerr=np.nan_to_num(err), fmt="o", ms=3.5, capsize=2, lw=0.9, color=colour, label=label)
        _label_points(ax, table)
        ax.set_xlabel("first-token agreement (best depth-1 guess = target's token)")
        ax.set_ylabel("correlation of E(A) with A")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(min(0.0, float(np.nanmin(table[["pearson", "binned_pearson"]].to_numpy()))) - 0.05, 1.05)
        ax.axhline(0.95, color="#888", lw=0.7, ls=":")
        ax.text(0.01, 0.955, "paper: r > 0.95", fontsize=6, color="#666", va="bottom")
        ax.legend(frameon=False, fontsize=6, loc="lower right")
        prompts = sorted(set(table["prompts"].astype(int)))
        budgets = sorted(set(table["budget"]))
        ax.set_title(f"E(A)–A correlation against draft strength · {_targets(table)}\nOPT-Tree n = {', '.join(budgets)} · greedy · "
                     f"{prompts[-1]} prompts · {int(table['steps'].min())}–{int(table['steps'].max())} steps per draft",
                     fontsize=7)
    return fig, table


def _label_points(ax, table: pd.DataFrame) -> None:
    """Name each draft's per-step point from a column of labels in the figure's empty middle (drafts
    of similar strength sit close together), each joined to its point by a thin line."""
    order = table.sort_values("pearson", kind="stable")
    heights = np.linspace(0.22, 0.8, len(order)) if len(order) > 1 else np.array([0.4])
    for height, row in zip(heights, order.itertuples(index=False)):
        ax.annotate(series_label(row, table), (row.first_token_agreement, row.pearson), xytext=(0.6, height), fontsize=5.5,
                    color="#333", va="center", arrowprops={"arrowstyle": "-", "color": "#bbb", "lw": 0.5})


@dataclass(frozen=True)
class SimulatedProfile:
    """A cost profile stated, not measured: a verify pass of N tokens costs
    ``max(1, N / saturate)`` AR steps (flat until ``saturate`` tokens fill the chip, then linear),
    and each draft layer ``layer_cost`` AR steps (``ngram_layer_cost`` for the n-gram table; for
    ``self``, the target drafting for itself, a layer is a pass of the target: one AR step)."""

    name: str = "simulated GPU (stated, not measured):\nT(N)/T(1) = max(1, N/64), draft layer 0.1 (n-gram 0.01)"
    saturate: int = 64
    layer_cost: float = 0.1
    ngram_layer_cost: float = 0.01
    self_layer_cost: float = 1.0

    def step_cost(self, tokens: np.ndarray, layers: np.ndarray, drafter: str) -> np.ndarray:
        layer = {"ngram": self.ngram_layer_cost, "self": self.self_layer_cost}.get(drafter, self.layer_cost)
        return np.maximum(1.0, tokens / self.saturate) + layer * layers


PAIR_PROFILE = SimulatedProfile(
    name="simulated GPU (stated, not measured):\nT(N)/T(1) = max(1, N/64), draft layer\n"
         "0.33 for the 0.5B (⅓ of the weights), 1 for self",
    layer_cost=0.33)  # the Qwen2.5-Coder pair: decode reads every weight once, so a 0.5B pass costs about a third


def simulated_speedup(nodes: pd.DataFrame, steps: pd.DataFrame, drafter: str, profile: SimulatedProfile) -> float:
    """Tokens per AR-step-time under ``profile`` for one log: Σ A / Σ step cost, a step verifying its
    ``n_nodes`` tokens after drafting as many layers as its tree is deep (root-only steps: none)."""
    depth = nodes.groupby("step")["depth"].max().reindex(steps["step"], fill_value=0).to_numpy(float)
    cost = profile.step_cost(steps["n_nodes"].to_numpy(float), depth, drafter)
    return float(steps["a"].sum() / cost.sum())


def deepest_layer_gain(nodes: pd.DataFrame) -> pd.Series:
    """Per step: Σ p̂ over the verified tree's deepest layer, the E(A) its last layer added, which is
    what OPT-Tree's δ is compared with (a layer is kept while it adds more than δ)."""
    drafted = nodes[nodes["depth"] > 0]
    deepest = drafted.groupby("step")["depth"].transform("max") == drafted["depth"]
    return drafted[deepest].groupby("step")["p_hat"].sum()


def _threshold(run: BenchRun, policy: str) -> float:
    if policy == AUTO:
        return float("nan")
    params = run.config.get("config", {}).get("policy_params", {}).get(policy, {})
    return float(params.get("threshold", 0.5))


def delta_table(runs: list[BenchRun], profile: SimulatedProfile = SimulatedProfile()) -> pd.DataFrame:
    """Per run, drafter and policy (OPT-Tree at its δ, or opt-tree-auto): MAL, the measured speedup
    over AR in the same run, the speedup ``profile`` predicts from the same trees, the mean verified
    nodes and depth, and the median E(A) of the deepest layer (auto's implied δ)."""
    rows, dtypes = [], {run.name: run_dtype(run) for run in runs}
    for run, row in _tree_runs(runs):
        if row.policy not in ("opt-tree", AUTO):
            continue
        data = run.log(row.log_dir)
        rows.append({"run": run.name, "target": run.target, "dtype": dtypes[run.name], "drafter": row.drafter,
                     "policy": row.policy,
                     "budget": int(row.budget),
                     "delta": _threshold(run, row.policy),
                     "prompt_id": row.prompt_id, "new_tokens": row.new_tokens, "steps": row.steps,
                     "seconds": row.seconds, "sim_time": row.new_tokens / simulated_speedup(data.nodes, data.steps,
                                                                                             row.drafter, profile),
                     "nodes": float(data.steps["n_nodes"].mean()), "depth": float(data.nodes.groupby("step")["depth"].max().mean()),
                     "layer_gain": float(deepest_layer_gain(data.nodes).median())})
    if not rows:
        raise ValueError("no OPT-Tree or opt-tree-auto runs with logs for the δ question")
    per_prompt = pd.DataFrame(rows)
    out = []
    for (name, drafter, policy), part in per_prompt.groupby(["run", "drafter", "policy"], sort=True):
        run = next(r for r in runs if r.name == name)
        results = run.results
        mine = results[(results["drafter"] == drafter) & (results["policy"] == policy)]
        ar = results[(results["kind"] == AR_KIND) & (results["temperature"] == mine["temperature"].iloc[0])]
        out.append({"target": run.target, "dtype": part["dtype"].iloc[0], "drafter": drafter, "policy": policy, "budget": part["budget"].iloc[0],
                    "delta": part["delta"].iloc[0], "prompts": len(part),
                    "mal": pooled_mal(part["new_tokens"].sum(), part["steps"].sum()),
                    "speedup": speedup_over_ar(mine, ar),
                    "sim_speedup": _simulated(part, policy), "nodes": part["nodes"].mean(),
                    "depth": part["depth"].mean(), "layer_gain": part["layer_gain"].median(), "run": name})
    table = pd.DataFrame(out)
    return table.sort_values(["target", "drafter", "policy", "delta"], kind="stable").reset_index(drop=True)


def _simulated(part: pd.DataFrame, policy: str) -> float:
    """Pooled tokens per AR-step-time under the simulated profile; NaN for opt-tree-auto, whose trees
    follow the measured profile of the machine it ran on, so replaying them elsewhere says nothing."""
    return float("nan") if policy == AUTO else float(part["new_tokens"].sum() / part["sim_time"].sum())


def best_deltas(table: pd.DataFrame) -> pd.DataFrame:
    """Per target and drafter: the δ with the best measured and the best simulated speedup, and auto's
    beside them."""
    rows = []
    for (target, drafter), part in table.groupby(["target", "drafter"], sort=True):
        fixed, auto = part[part["policy"] == "opt-tree"], part[part["policy"] == AUTO]
        best, best_sim = fixed.loc[fixed["speedup"].idxmax()], fixed.loc[fixed["sim_speedup"].idxmax()]
        rows.append({"target": target, "drafter": drafter, "best_delta_here": best["delta"], "speedup_here": best["speedup"],
                     "best_delta_simulated": best_sim["delta"], "sim_speedup": best_sim["sim_speedup"],
                     "auto_speedup_here": auto["speedup"].iloc[0] if len(auto) else float("nan"),
                     "auto_implied_delta": auto["layer_gain"].iloc[0] if len(auto) else float("nan")})
    return pd.DataFrame(rows)


def delta_figure(table: pd.DataFrame, profile: SimulatedProfile = SimulatedProfile()):
    """Speedup against δ per drafter: measured on this machine (left) and under ``profile`` (right);
    opt-tree-auto's measured speedup as a dashed line at its implied δ."""
    labelled = table.assign(series=[series_label(row, table, "drafter") for row in table.itertuples(index=False)])
    fixed = labelled[labelled["policy"] == "opt-tree"]
    colours = style.policy_colours(labelled["series"].unique())
    fig, axes = new_figure(PAGE_WIDTH_IN * 0.8, 2.5, ncols=2, sharex=True)
    with paper_style():
        for ax, column, title in ((axes[0, 0], "speedup", "measured on this CPU\n(AR interleaved in the same run)"),
                                  (axes[0, 1], "sim_speedup", profile.name)):
            for series, line in fixed.groupby("series", sort=True):
                line = line.sort_values("delta")
                ax.plot(line["delta"], line[column], marker="o", ms=3, lw=1.2, color=colours[series], label=series)
            if column == "speedup":
                for row in labelled[labelled["policy"] == AUTO].itertuples(index=False):
                    ax.axhline(row.speedup, color=colours[row.series], lw=0.8, ls="--")
                    ax.plot([row.layer_gain], [row.speedup], marker="x", ms=5, color=colours[row.series])
            ax.axhline(1.0, color="#555", lw=0.8, ls=":")
            ax.set_xlabel("threshold δ")
            ax.set_title(title, fontsize=6.5)
        axes[0, 0].set_ylabel("speedup over AR")
        axes[0, 1].legend(frameon=False, fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        prompts = int(fixed["prompts"].max())
        fig.suptitle(f"Best δ by draft and cost profile: {_targets(table)} · OPT-Tree n = {_span(fixed['budget'])} · "
                     f"greedy · {prompts} prompts\n(dashed line and ×: opt-tree-auto, at its implied δ)", fontsize=7)
    return fig, table


def large_budget_table(runs: list[BenchRun], policy: str = "opt-tree") -> pd.DataFrame:
    """MAL and tokens/s of ``policy`` per target, drafter and node budget over the prompts every run
    of that target finished (so a curve joining runs compares like with like), pooled over those prompts."""
    shared = {target: shared_prompts([r for r in runs if r.target == target], f"{target}'s budget curve")
              for target in sorted({r.target for r in runs})}  # sorted: the first target without shared prompts is named
    rows = []
    for run in runs:
        results = run.results[run.results["prompt_id"].isin(shared[run.target])]
        ar = results[results["kind"] == AR_KIND]
        tree, dtype = results[(results["kind"] == "tree") & (results["policy"] == policy)], run_dtype(run)
        for (drafter, budget), part in tree.groupby(["drafter", "budget"], sort=True):
            rows.append({"target": run.target, "dtype": dtype, "drafter": drafter, "budget": int(budget),
                         "delta": _threshold(run, policy),
                         "prompts": part["prompt_id"].nunique(),
                         "mal": pooled_mal(part["new_tokens"].sum(), part["steps"].sum()),
                         "tokens_per_s": tokens_per_second(part["new_tokens"].sum(), part["seconds"].sum()),
                         "speedup": speedup_over_ar(part, ar), "run": run.name})
    table = pd.DataFrame(rows).sort_values(["target", "drafter", "budget", "run"], kind="stable")
    return table.drop_duplicates(["target", "drafter", "budget"]).reset_index(drop=True)


def large_budget_figure(table: pd.DataFrame):
    """MAL against the node budget (log₂ axis) up to the largest budget run, a line per drafter."""
    labelled = table.assign(series=[series_label(row, table, "drafter") for row in table.itertuples(index=False)])
    colours = style.policy_colours(labelled["series"].unique())
    fig, axes = new_figure(COLUMN_WIDTH_IN + 1.2, 2.4)
    ax = axes[0, 0]
    with paper_style():
        for series, line in labelled.groupby("series", sort=True):
            line = line.sort_values("budget")
            ax.plot(line["budget"], line["mal"], marker="o", ms=3, lw=1.2, color=colours[series], label=series)
        budgets = sorted(table["budget"].unique())
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(budgets))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_ylim(bottom=1.0)
        ax.set_xlabel("node budget n (log₂ axis)")
        ax.set_ylabel("mean acceptance length")
        ax.legend(frameon=False, fontsize=6)
        ax.set_title(f"Does MAL keep rising past 500 nodes? OPT-Tree · δ = {_span(table['delta'])} · greedy · "
                     f"{int(table['prompts'].min())} prompts\n{_targets(table)}", fontsize=7)
    return fig, table
