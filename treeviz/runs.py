"""Benchmark run folders (``python -m opttree_core bench``), read without the engine, and their tables.

A run folder holds ``config.json``, ``results.parquet`` (one row per method × prompt, columns
``RESULT_COLUMNS``), ``summary.parquet`` and ``logs/<method-slug>/<prompt_id>/`` tree logs.
Everything here reads Parquet/JSON with pandas only (no torch, no transformers), so figure
scripts never pull in model code.

The schema, the metrics and the tables are the engine's own, from its torch-free modules
(``opttree_core.records``, ``opttree_core.metrics``, ``opttree_core.summary``): over a method's
prompts, MAL = Σ new tokens / Σ steps and tokens/s = Σ new tokens / Σ seconds; speedup = the
method's pooled tokens/s over autoregressive decoding's (``kind == "ar"``) at the same temperature,
on the prompts both finished. The shoot-out is the bench summary (``summary.method_summary``: what
``bench-table`` reports) with each figure's 95 % bootstrap interval over prompts
(``summary.pooled_intervals``) and whether the tokens matched AR's.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from opttree_core.records import AR_KIND, MACHINE_COLUMN, RESULT_COLUMNS, LogData, read_log, read_log_meta
from opttree_core.summary import ar_rows, method_summary, paired_ratios, pooled_intervals

from .analysis import ea_a_frame

SHOOTOUT_COLUMNS = ["method", "kind", "drafter", "policy", "budget", "temperature", "n_prompts", "new_tokens",
                    "steps", "seconds", "mal", "mal_lo", "mal_hi", "tokens_per_s", "speedup", "speedup_lo",
                    "speedup_hi", "matches_ar"]
PAPER_ORDER = ("opt-tree", "eagle-static", "binary")  # OPT-Tree's Table 1: MAL in this order
ORDERING_COLUMNS = ["drafter", "temperature", "budget", "first", "second", "prompts", "mal_ratio", "mal_ratio_lo",
                    "mal_ratio_hi", "speed_ratio", "speed_ratio_lo", "speed_ratio_hi"]
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

    @property
    def target(self) -> str:
        """The target model the run decoded with, as its config names it ("?" if it does not)."""
        return str(self.config.get("config", {}).get("target") or "?")

    def tree_rows(self) -> pd.DataFrame:
        """Rows of tree-decoding methods that have a log, in results order."""
        rows = self.results[(self.results["kind"] == "tree") & self.results["log_dir"].notna()]
        return rows.reset_index(drop=True)

    def log(self, log_dir: str) -> LogData:
        return read_log_dir(self.path / log_dir)

    def log_meta(self, log_dir: str) -> dict:
        """One log's meta.json only (cheap: its node and step tables are not read)."""
        return read_log_meta(self.path / log_dir)

    @cached_property
    def steps(self) -> pd.DataFrame:
        """``step_frame(self)``, read once per run: Fig. 4 and its correlation table both draw on it
        (a grid's hundreds of tree logs are then read once). Shared: do not modify it."""
        return step_frame(self)


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


def shared_prompts(runs: list[BenchRun], what: str | None = None) -> set:
    """The prompts every one of ``runs`` decoded, so that drafts or budgets from several runs compare on
    the same text; none shared is a ValueError naming the runs (after ``what``, when given)."""
    shared = set.intersection(*(set(run.results["prompt_id"]) for run in runs))
    if not shared:
        raise ValueError((f"{what}: " if what else "") + f"the runs {', '.join(r.name for r in runs)} share no prompt")
    return shared


def combine_runs(runs: list[BenchRun], name: str) -> BenchRun:
    """One run from ``runs`` that sweep different parts of one grid (e.g. small budgets on many prompts,
    large ones on a few), restricted to the prompts all of them finished, so that one curve compares
    like with like. Each prompt's AR rows are pooled into one (Σ tokens / Σ seconds); a method in two
    runs is a ValueError. The combined run's log paths are absolute paths into the runs' own folders
    (the combined run's own folder, beside the first run's, need not exist)."""
    if not runs:
        raise ValueError(f"{name}: no runs to combine")
    shared = shared_prompts(runs, name)
    path, tree, ar = runs[0].path.parent / name, [], []
    for run in runs:
        rows = run.results[run.results["prompt_id"].isin(shared)]
        drafts = rows[rows["kind"] != AR_KIND]
        tree.append(drafts.assign(log_dir=[None if pd.isna(d) else os.path.abspath(run.path / d)
                                           for d in drafts["log_dir"]]))
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
    columns = RESULT_COLUMNS + [c for c in (MACHINE_COLUMN,) if all(c in r.results for r in runs)]
    results = pd.concat([pooled[columns], tree[columns]], ignore_index=True)
    config = {**runs[0].config, "combined": [r.name for r in runs], "prompts": sorted(shared)}  # the first run's settings
    return BenchRun(path=path, config=config, results=results)


def multi_temperature(results: pd.DataFrame) -> bool:
    return results["temperature"].nunique() > 1


def panel_name(drafter, policy=None, temperature=None, with_temperature: bool = False, budget=None) -> str:
    """``drafter · policy`` (and ``· n=…`` when given a budget, ``· T=…`` when a run mixes
    temperatures): one figure panel."""
    parts = [str(drafter)] + ([str(policy)] if policy is not None else [])
    if budget is not None:
        parts.append(f"n={int(budget)}")
    if with_temperature:
        parts.append(f"T={float(temperature):g}")
    return " · ".join(parts)


def sweeps_budgets(rows: pd.DataFrame) -> bool:
    """Whether some drafter · policy · temperature of ``rows`` ran at more than one node budget
    (then a step-level figure needs a panel per budget: pooling them would mix configurations)."""
    if rows.empty:
        return False
    return bool((rows.groupby(["drafter", "policy", "temperature"])["budget"].nunique() > 1).any())


def _all_or_na(flags: pd.Series):
    """True when every known flag is true; NA when none is known (sampled runs are not compared)."""
    known = flags.dropna()
    return bool(known.astype(bool).all()) if len(known) else pd.NA


def _check_baselines(results: pd.DataFrame) -> None:
    """One autoregressive method per temperature, at every temperature: the speedups' baseline."""
    ar = results[results["kind"] == AR_KIND].groupby("temperature")["method"].nunique()
    if (ar > 1).any():
        raise ValueError("more than one autoregressive method per temperature: which is the baseline is ambiguous")
    lacking = sorted(set(results["temperature"]) - set(ar.index))
    if lacking:
        raise ValueError(f"no autoregressive baseline at temperature {lacking[0]:g}")


def shootout_table(results: pd.DataFrame) -> pd.DataFrame:
    """The bench summary (``summary.method_summary``: pooled MAL, tokens/s and speedup per method)
    with steps, seconds, each figure's 95 % interval over prompts and whether every output matched
    AR's (``SHOOTOUT_COLUMNS``), AR first, then by drafter, policy and budget."""
    _check_baselines(results)
    table = method_summary(results)
    grouped = results.groupby("method", sort=False)
    extra = grouped.agg(steps=("steps", "sum"), seconds=("seconds", "sum"),
                        matches_ar=("output_matches_ar", _all_or_na)).reset_index()
    table = table.merge(extra, on="method", how="left", validate="one_to_one")
    rows = dict(iter(grouped))
    intervals = [pooled_intervals(rows[m], ar_rows(results, t)) for m, t in zip(table["method"], table["temperature"])]
    for i, column in enumerate(("mal_lo", "mal_hi", "speedup_lo", "speedup_hi")):
        table[column] = [interval[i] for interval in intervals]
    order = table.assign(_ar=table["kind"] != AR_KIND).sort_values(
        ["temperature", "_ar", "drafter", "policy", "budget", "method"], na_position="first", kind="stable")
    return order[SHOOTOUT_COLUMNS].reset_index(drop=True)


def ordering_table(results: pd.DataFrame, order: tuple[str, ...] = PAPER_ORDER, n_boot: int = 1000) -> pd.DataFrame:
    """Each neighbouring pair of ``order`` among the policies that ran at one drafter, temperature and
    budget (one missing there is passed over: at n = 60, with no 25-node static tree, OPT-Tree meets
    the binary tree), compared on the prompts both decoded by ``summary.paired_ratios``: the first's
    MAL and tokens/s over the second's, with paired 95 % intervals (``ORDERING_COLUMNS``)."""
    tree = results[(results["kind"] != AR_KIND) & results["policy"].isin(order)]
    rows = []
    for (drafter, temperature, budget), part in tree.groupby(["drafter", "temperature", "budget"], sort=True):
        if part.groupby("policy")["method"].nunique().max() > 1:
            raise ValueError(f"{drafter} at n = {budget}, T = {temperature:g} has two methods of one policy: "
                             "which to compare is ambiguous")
        present = [policy for policy in order if policy in set(part["policy"])]
        for first, second in zip(present, present[1:]):
            ratios = paired_ratios(part[part["policy"] == first], part[part["policy"] == second], n_boot=n_boot)
            rows.append({"drafter": drafter, "temperature": float(temperature), "budget": int(budget),
                         "first": first, "second": second, **ratios})
    return pd.DataFrame(rows, columns=ORDERING_COLUMNS)


def step_frame(run: BenchRun) -> pd.DataFrame:
    """Every step of every tree log: E(A), A and rounded E(A) (``treeviz.analysis.ea_a_frame``),
    with the method, drafter, policy, budget, temperature, prompt and panel ``group`` (a panel per
    budget too when the run sweeps budgets: ``sweeps_budgets``)."""
    rows = run.tree_rows()
    with_t = multi_temperature(rows) if len(rows) else False
    with_n = sweeps_budgets(rows)
    parts = []
    for row in rows.itertuples(index=False):
        part = ea_a_frame({row.log_dir: run.log(row.log_dir)})[["step", "ea", "a", "ea_bin"]]
        part = part.assign(method=row.method, drafter=row.drafter, policy=row.policy, budget=row.budget,
                           temperature=row.temperature, prompt_id=row.prompt_id,
                           group=panel_name(row.drafter, row.policy, row.temperature, with_t,
                                            row.budget if with_n else None))
        parts.append(part)
    if not parts:
        raise ValueError(f"{run.path} has no tree runs with logs")
    return pd.concat(parts, ignore_index=True)


def panels(frame: pd.DataFrame) -> list[str]:
    """``step_frame``'s panel groups in reading order: by drafter, policy, budget (as a number, so
    n=4 comes before n=16) and temperature."""
    ordered = frame.drop_duplicates("group").sort_values(["drafter", "policy", "budget", "temperature"], kind="stable")
    return ordered["group"].tolist()
