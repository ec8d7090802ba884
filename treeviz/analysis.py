"""Tidy tables for the analysis figures, from a list (or dict) of loaded logs.

Every function returns a plain DataFrame; ``analysis_plots`` (plotly) and ``paper``
(matplotlib) draw them. Runs are described by their ``meta.json``: target, draft, policy
and ``policy_config`` (``nodes``, or a chain's ``length``, is the node budget).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from opttree_core.metrics import bootstrap_picks, percentile_interval, pooled_mal

from .logs import as_named, budget_of, group_name

LOG_SUMMARY_COLUMNS = ["run", "group", "target", "draft", "policy", "nodes", "prompt", "steps", "tokens", "mal",
                       "mean_ea", "tokens_per_s", "seconds"]  # one row per tree log (a bench run's: records.SUMMARY_COLUMNS)


@dataclass(frozen=True)
class Correlation:
    pearson: float
    spearman: float
    n: int

    def __str__(self) -> str:
        return f"Pearson r = {self.pearson:.3f} · Spearman ρ = {self.spearman:.3f} · n = {self.n}"


def _run_columns(name: str, meta: dict) -> dict:
    return {"run": name, "group": group_name(meta), "target": meta.get("target", "?"),
            "draft": meta.get("draft", "?"), "policy": meta.get("policy", "?"), "nodes": budget_of(meta)}


def summarize_logs(logs) -> pd.DataFrame:
    """One row per run: who drafted for whom, the policy and its budget, MAL, mean E(A), tokens/s."""
    rows = []
    for name, data in as_named(logs).items():
        a = data.steps["a"].to_numpy()
        rows.append({**_run_columns(name, data.meta), "prompt": data.meta.get("prompt"), "steps": len(a),
                     "tokens": int(a.sum()), "mal": pooled_mal(int(a.sum()), len(a)),
                     "mean_ea": float(data.steps["ea"].mean()) if len(a) else float("nan"),
                     "tokens_per_s": float(data.meta.get("tokens_per_s", float("nan"))),
                     "seconds": float(data.meta.get("seconds", float("nan")))})
    return pd.DataFrame(rows, columns=LOG_SUMMARY_COLUMNS)


def ea_a_frame(logs) -> pd.DataFrame:
    """One row per step of every run: E(A), A and E(A) rounded to the nearest integer (``ea_bin``)."""
    parts = []
    for name, data in as_named(logs).items():
        part = data.steps[["step", "ea", "a"]].copy()
        for key, value in _run_columns(name, data.meta).items():
            part[key] = value
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["step", "ea", "a", "run", "group"])
    frame["ea_bin"] = np.rint(frame["ea"].astype(float)).astype(int)
    return frame


def ea_a_counts(frame: pd.DataFrame, like: pd.DataFrame | None = None) -> pd.DataFrame:
    """Count of steps per (A, rounded E(A)): rows A ascending, columns E(A) ascending, zeros filled.
    With ``like`` (a larger frame, e.g. every panel's steps), rows and columns span its ranges, so
    panels drawn side by side share their axes."""
    span = frame if like is None or like.empty else like
    if span.empty:
        return pd.DataFrame()
    counts = pd.crosstab(frame["a"], frame["ea_bin"]) if len(frame) else pd.DataFrame()
    rows = range(int(span["a"].min()), int(span["a"].max()) + 1)
    cols = range(int(span["ea_bin"].min()), int(span["ea_bin"].max()) + 1)
    return counts.reindex(index=rows, columns=cols, fill_value=0).astype(int)


def correlation(frame: pd.DataFrame) -> Correlation:
    """Pearson and Spearman correlation of E(A) with A over the frame's steps (NaN below 2 steps
    or when either is constant)."""
    ea, a = frame["ea"].to_numpy(float), frame["a"].to_numpy(float)
    return Correlation(CORRELATIONS["pearson"](ea, a, None), CORRELATIONS["spearman"](ea, a, None), len(a))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _binned(ea: np.ndarray, a: np.ndarray, bins: np.ndarray, min_steps: int = 5) -> float:
    keys, index, steps = np.unique(bins, return_inverse=True, return_counts=True)
    keep = steps >= min_steps
    if keep.sum() < 3:
        return float("nan")
    mean_ea, mean_a = np.bincount(index, ea) / steps, np.bincount(index, a) / steps
    return _pearson(mean_ea[keep], mean_a[keep])


def binned_correlation(frame: pd.DataFrame, min_steps: int = 5) -> float:
    """Pearson r over E(A) bins: each bin's mean E(A) against its mean A, over the bins (integer-rounded
    E(A), ``ea_bin``) holding at least ``min_steps`` steps. A step's A is a draw around E(A) + 1, so
    this is the correlation of the heatmap's column means, far above the per-step r when single steps
    are noisy. NaN with fewer than 3 such bins."""
    return _binned(frame["ea"].to_numpy(float), frame["a"].to_numpy(float), frame["ea_bin"].to_numpy(), min_steps)


CORRELATIONS = {  # name → statistic of (E(A), A, E(A) bin) arrays
    "pearson": lambda ea, a, bins: _pearson(ea, a),
    "spearman": lambda ea, a, bins: _pearson(stats.rankdata(ea), stats.rankdata(a)),
    "binned_pearson": _binned,
}


def correlation_intervals(frame: pd.DataFrame, by: str = "prompt_id", n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict[str, float]:
    """Each of ``CORRELATIONS`` over the frame's steps, with a percentile bootstrap interval over ``by``
    (prompts drawn with replacement, each with all its steps: steps of one prompt are not independent).
    Keys NAME, NAME_lo, NAME_hi; an interval is NaN with fewer than 2 prompts."""
    columns = [frame[c].to_numpy(float) for c in ("ea", "a", "ea_bin")]
    out = {name: stat(*columns) for name, stat in CORRELATIONS.items()}
    rows = [np.flatnonzero(frame[by].to_numpy() == key) for key in sorted(frame[by].unique())]
    draws: dict[str, list[float]] = {name: [] for name in CORRELATIONS}
    for picked in bootstrap_picks(len(rows), n_boot, seed):
        pick = np.concatenate([rows[i] for i in picked])
        for name, stat in CORRELATIONS.items():
            draws[name].append(stat(*(c[pick] for c in columns)))
    for name, values in draws.items():
        out[f"{name}_lo"], out[f"{name}_hi"] = percentile_interval(values, level)
    return out


def mal_by_budget(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean MAL (and its spread over runs) per group, policy and node budget."""
    keys = ["group", "policy", "nodes"]
    out = summary.dropna(subset=["nodes"]).groupby(keys, sort=True)["mal"].agg(["mean", "std", "count"])
    return out.rename(columns={"mean": "mal", "std": "mal_std", "count": "runs"}).reset_index()


def speedup_stats(frame: pd.DataFrame, by: str | list[str] = "method", value: str = "speedup") -> pd.DataFrame:
    """Mean, standard deviation and count of ``value`` per ``by`` (the bars and error bars)."""
    keys = [by] if isinstance(by, str) else list(by)
    out = frame.groupby(keys, sort=False)[value].agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def nodes_with_parent_state(data) -> pd.DataFrame:
    """A log's drafted nodes (root excluded) with ``parent_accepted``: whether the node was reached."""
    nodes = data.nodes[["step", "node", "parent", "depth", "rank", "q", "accepted"]]
    parents = nodes[["step", "node", "accepted"]].rename(columns={"node": "parent", "accepted": "parent_accepted"})
    drafted = nodes[nodes["depth"] > 0]
    return drafted.merge(parents, on=["step", "parent"], how="left")


def _acceptance_by(logs, key: str) -> pd.DataFrame:
    parts = []
    for data in as_named(logs).values():
        part = nodes_with_parent_state(data)
        part["group"] = group_name(data.meta)
        part["policy"] = data.meta.get("policy", "?")
        parts.append(part)
    nodes = pd.concat(parts, ignore_index=True)
    grouped = nodes.groupby(["group", "policy", key], sort=True)
    out = pd.DataFrame({"nodes": grouped.size(), "accepted": grouped["accepted"].sum(),
                        "reached": grouped["parent_accepted"].sum()}).reset_index()
    out["rate"] = out["accepted"] / out["nodes"]
    out["conditional"] = out["accepted"] / out["reached"].where(out["reached"] > 0)
    return out


def acceptance_by_depth(logs) -> pd.DataFrame:
    """Per depth: drafted nodes, accepted ones, ``rate`` = accepted / nodes, and ``conditional`` =
    accepted / nodes whose parent was accepted (``reached``)."""
    return _acceptance_by(logs, "depth")


def acceptance_by_rank(logs) -> pd.DataFrame:
    """The same per sibling rank (0 = the draft's top-1 child)."""
    return _acceptance_by(logs, "rank")


def timeline_frame(data) -> pd.DataFrame:
    """Per-step seconds: draft, tree building (only when the log has ``build_s``), verify."""
    cols = ["step", "draft_s"] + (["build_s"] if "build_s" in data.steps.columns else []) + ["verify_s"]
    return data.steps[cols + ["a"]].copy()
