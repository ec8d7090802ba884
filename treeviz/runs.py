"""Benchmark run folders (``python -m opttree_core bench``), read without the engine, and their tables.

A run folder holds ``config.json``, ``results.parquet`` (one row per method × prompt, columns
``RESULT_COLUMNS``), ``summary.parquet`` and ``logs/<method-slug>/<prompt_id>/`` tree logs.
Everything here reads Parquet/JSON with pandas only (no torch, no transformers), so figure
scripts never pull in model code.

The schema and the metrics are the engine's own, imported from its torch-free modules
(``opttree_core.records``, ``opttree_core.metrics``): over a method's prompts, MAL = Σ new tokens
/ Σ steps and tokens/s = Σ new tokens / Σ seconds; speedup = the method's pooled tokens/s over
autoregressive decoding's (``kind == "ar"``) at the same temperature, on the prompts both
finished (``records.speedup_over_ar``: what ``bench-table`` reports too). The shoot-out gives each a
95 % bootstrap interval over prompts (``pooled_intervals``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from opttree_core.records import (
    AR_KIND,
    RESULT_COLUMNS,
    LogData,
    read_log,
    speedup_over_ar,
)

from .analysis import bootstrap_picks, ea_a_frame, percentile_interval

SHOOTOUT_COLUMNS = ["method", "kind", "drafter", "policy", "budget", "temperature", "n_prompts", "new_tokens",
                    "steps", "seconds", "mal", "mal_lo", "mal_hi", "tokens_per_s", "speedup", "speedup_lo",
                    "speedup_hi", "matches_ar"]
read_log_dir = read_log  # a log directory, by the engine's one reader (no torch)


@dataclass(frozen=True)
class BenchRun:
    """A loaded run folder: its config, its per-(method, prompt) results, where its logs are."""

    path: Path
    config: dict
    results: pd.DataFrame  # (methods × prompts, RESULT_COLUMNS)

    @property
    def name(self) -> str:
        return self.path.name

    def tree_rows(self) -> pd.DataFrame:
        """Rows of tree-decoding methods that have a log, in results order."""
        rows = self.results[(self.results["kind"] == "tree") & self.results["log_dir"].notna()]
        return rows.reset_index(drop=True)

    def log(self, log_dir: str) -> LogData:
        return read_log_dir(self.path / log_dir)


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "results.parquet").is_file()


def load_run(path: str | os.PathLike) -> BenchRun:
    """Read a run folder; a missing file or results column is a one-line ValueError."""
    path = Path(path)
    if not is_run_dir(path):
        raise ValueError(f"{path} is not a bench run folder: no results.parquet")
    results = pd.read_parquet(path / "results.parquet")
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"{path / 'results.parquet'} lacks column(s) {', '.join(missing)}")
    if not (results["kind"] == AR_KIND).any():
        raise ValueError(f"{path / 'results.parquet'} has no autoregressive ('ar') rows to take speedups against")
    config_path = path / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return BenchRun(path=path, config=config, results=results)


def find_runs(data_dir: str | os.PathLike) -> list[Path]:
    """``data_dir`` itself when it is a run folder, else its run-folder children (sorted by name; hidden
    ones, such as ``make experiments``' unfinished ``.NAME.new``, left out)."""
    data_dir = Path(data_dir)
    if is_run_dir(data_dir):
        return [data_dir]
    runs = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and is_run_dir(p)
                  ) if data_dir.is_dir() else []
    if not runs:
        raise ValueError(f"no bench run folders (with results.parquet) in {data_dir}")
    return runs


def combine_runs(runs: list[BenchRun], name: str) -> BenchRun:
    """One run from ``runs`` that sweep different parts of one grid (e.g. small budgets on many prompts,
    large ones on a few), restricted to the prompts all of them finished, so that one curve compares
    like with like. Each prompt's AR rows are pooled into one (Σ tokens / Σ seconds); a method in two
    runs is a ValueError. The combined run's log paths point into the runs' own folders."""
    if not runs:
        raise ValueError(f"{name}: no runs to combine")
    shared = set.intersection(*(set(r.results["prompt_id"]) for r in runs))
    if not shared:
        raise ValueError(f"{name}: the runs {', '.join(r.name for r in runs)} share no prompt")
    tree, ar = [], []
    for run in runs:
        rows = run.results[run.results["prompt_id"].isin(shared)]
        drafts = rows[rows["kind"] != AR_KIND]
        tree.append(drafts.assign(log_dir=[None if pd.isna(d) else str(run.path / d) for d in drafts["log_dir"]]))
        ar.append(rows[rows["kind"] == AR_KIND])
    tree = pd.concat(tree, ignore_index=True)
    twice = tree.groupby(["method", "prompt_id"]).size()
    if (twice > 1).any():
        raise ValueError(f"{name}: {twice[twice > 1].index[0][0]!r} is in more than one of the runs combined")
    ar = pd.concat(ar, ignore_index=True)
    pooled = ar.groupby(["method", "temperature", "prompt_id"], sort=True).agg(
        new_tokens=("new_tokens", "sum"), steps=("steps", "sum"), seconds=("seconds", "sum")).reset_index()
    first = ar.drop_duplicates(["method", "temperature", "prompt_id"]).drop(columns=["new_tokens", "steps", "seconds"])
    pooled = first.merge(pooled, on=["method", "temperature", "prompt_id"])
    pooled["tokens_per_s"] = pooled["new_tokens"] / pooled["seconds"]
    results = pd.concat([pooled[RESULT_COLUMNS], tree[RESULT_COLUMNS]], ignore_index=True)
    config = {**runs[0].config, "combined": [r.name for r in runs], "prompts": sorted(shared)}  # the first run's settings
    return BenchRun(path=runs[0].path.parent / name, config=config, results=results)


def multi_temperature(results: pd.DataFrame) -> bool:
    return results["temperature"].nunique() > 1


def panel_name(drafter, policy=None, temperature=None, with_temperature: bool = False) -> str:
    """``drafter · policy`` (and ``· T=…`` when a run mixes temperatures): one figure panel."""
    parts = [str(drafter)] + ([str(policy)] if policy is not None else [])
    if with_temperature:
        parts.append(f"T={float(temperature):g}")
    return " · ".join(parts)


def _all_or_na(flags: pd.Series):
    """True when every known flag is true; NA when none is known (sampled runs are not compared)."""
    known = flags.dropna()
    return bool(known.astype(bool).all()) if len(known) else pd.NA


def shootout_table(results: pd.DataFrame) -> pd.DataFrame:
    """Pooled MAL, tokens/s and speedup per method and temperature (``SHOOTOUT_COLUMNS``), AR first,
    then by drafter, policy and budget."""
    keys = ["method", "temperature"]
    grouped = results.groupby(keys, sort=False, dropna=False)
    table = grouped.agg(kind=("kind", "first"), drafter=("drafter", "first"), policy=("policy", "first"),
                        budget=("budget", "first"), n_prompts=("prompt_id", "nunique"),
                        new_tokens=("new_tokens", "sum"), steps=("steps", "sum"), seconds=("seconds", "sum"),
                        matches_ar=("output_matches_ar", _all_or_na)).reset_index()
    table["mal"] = table["new_tokens"] / table["steps"]
    table["tokens_per_s"] = table["new_tokens"] / table["seconds"]
    ar = table[table["kind"] == AR_KIND].set_index("temperature")["method"]
    if ar.index.duplicated().any():
        raise ValueError("more than one autoregressive method per temperature: which is the baseline is ambiguous")
    lacking = sorted(set(table["temperature"]) - set(ar.index))
    if lacking:
        raise ValueError(f"no autoregressive baseline at temperature {lacking[0]:g}")
    rows = {key: part for key, part in results.groupby(keys, sort=False, dropna=False)}
    table["speedup"] = [speedup_over_ar(rows[(m, t)], rows[(ar[t], t)])
                        for m, t in zip(table["method"], table["temperature"])]
    intervals = [pooled_intervals(rows[(m, t)], rows[(ar[t], t)]) for m, t in zip(table["method"], table["temperature"])]
    for i, column in enumerate(("mal_lo", "mal_hi", "speedup_lo", "speedup_hi")):
        table[column] = [interval[i] for interval in intervals]
    table["budget"] = table["budget"].astype("Int64")
    order = table.assign(_ar=table["kind"] != AR_KIND).sort_values(
        ["temperature", "_ar", "drafter", "policy", "budget", "method"], na_position="first", kind="stable")
    return order[SHOOTOUT_COLUMNS].reset_index(drop=True)


def pooled_intervals(rows: pd.DataFrame, ar_rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float, float]:
    """95 % percentile-bootstrap intervals over prompts of one method's pooled MAL (its prompts) and
    pooled speedup over AR (the prompts both finished, drawn together, as ``speedup_over_ar`` pools
    them): (mal_lo, mal_hi, speedup_lo, speedup_hi); NaN with fewer than 2 prompts."""
    own = rows.set_index(rows["prompt_id"].astype(str))
    base = ar_rows.set_index(ar_rows["prompt_id"].astype(str))
    tokens, steps = own["new_tokens"].to_numpy(float), own["steps"].to_numpy(float)
    mal = [tokens[p].sum() / steps[p].sum() for p in bootstrap_picks(len(own), n_boot, seed)]
    both = sorted(set(own.index) & set(base.index))
    m_tok, m_sec = (own.loc[both, c].to_numpy(float) for c in ("new_tokens", "seconds"))
    a_tok, a_sec = (base.loc[both, c].to_numpy(float) for c in ("new_tokens", "seconds"))
    speedup = [(m_tok[p].sum() / m_sec[p].sum()) / (a_tok[p].sum() / a_sec[p].sum())
               for p in bootstrap_picks(len(both), n_boot, seed)]
    return (*percentile_interval(mal, level), *percentile_interval(speedup, level))


def per_prompt_speedups(results: pd.DataFrame) -> pd.DataFrame:
    """Each tree method's tokens/s over AR's on the same prompt and temperature (column ``speedup``)."""
    ar = results[results["kind"] == AR_KIND].set_index(["temperature", "prompt_id"])["tokens_per_s"]
    if ar.index.duplicated().any():
        raise ValueError("more than one autoregressive row per (temperature, prompt)")
    out = results[results["kind"] == "tree"].copy()
    base = ar.reindex(pd.MultiIndex.from_frame(out[["temperature", "prompt_id"]])).to_numpy()
    if np.isnan(base).any():
        raise ValueError("some tree runs have no autoregressive run on the same prompt and temperature")
    out["speedup"] = out["tokens_per_s"].to_numpy() / base
    return out


def step_frame(run: BenchRun) -> pd.DataFrame:
    """Every step of every tree log: E(A), A and rounded E(A) (``treeviz.analysis.ea_a_frame``),
    with the method, drafter, policy, budget, temperature, prompt and panel ``group``."""
    rows = run.tree_rows()
    with_t = multi_temperature(rows) if len(rows) else False
    parts = []
    for row in rows.itertuples(index=False):
        part = ea_a_frame({row.log_dir: run.log(row.log_dir)})[["step", "ea", "a", "ea_bin"]]
        part = part.assign(method=row.method, drafter=row.drafter, policy=row.policy, budget=row.budget,
                           temperature=row.temperature, prompt_id=row.prompt_id,
                           group=panel_name(row.drafter, row.policy, row.temperature, with_t))
        parts.append(part)
    if not parts:
        raise ValueError(f"{run.path} has no tree runs with logs")
    return pd.concat(parts, ignore_index=True)
