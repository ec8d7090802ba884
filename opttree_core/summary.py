"""Every table of a benchmark's results, built once (torch-free: the bench harness, treeviz, figures
and notebooks all read them from here), from ``records.RESULT_COLUMNS`` rows with the one metric
definitions of ``metrics.py``:

    method_summary(results)       one row per method (``records.SUMMARY_COLUMNS``): pooled MAL,
                                  tokens/s and speedup over AR at the same temperature
    category_summary(results)     ``method_summary`` within each prompt category (speedups over AR on
                                  that category's prompts)
    per_prompt_speedups(results)  each tree run's tokens/s over AR's on the same prompt and temperature
    pooled_intervals(rows, ar)    95 % bootstrap intervals over prompts of a method's pooled MAL and
                                  pooled speedup (a prompt's method and AR runs drawn together)
    prompts_per_machine(results)  how many prompts each machine timed (a run resumed on others)
    machine_labels(results)       each row's machine, named even where the row has none
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import (
    bootstrap_picks,
    mean_expected_acceptance,
    percentile_interval,
    pooled_mal,
    pooled_speedup,
    tokens_per_second,
)
from .records import AR_KIND, ID_COLUMNS, MACHINE_COLUMN, SUMMARY_COLUMNS, UNRECORDED_MACHINE


def _totals(frame: pd.DataFrame) -> dict[str, tuple[int, float]]:
    """prompt id → (new tokens, seconds) of one method's result rows."""
    return {str(r.prompt_id): (int(r.new_tokens), float(r.seconds)) for r in frame.itertuples(index=False)}


def speedup_over_ar(rows: pd.DataFrame, ar_rows: pd.DataFrame) -> float:
    """The pooled speedup (``metrics.pooled_speedup``) of one method's result rows over the AR rows of
    the same temperature, on the prompts both finished: what ``bench-table``, the shoot-out, the
    notebooks and the paper figures all report."""
    return pooled_speedup(_totals(rows), _totals(ar_rows))


def ar_rows(results: pd.DataFrame, temperature: float) -> pd.DataFrame:
    """The autoregressive rows at ``temperature``: the baseline every speedup is taken against."""
    return results[(results["kind"] == AR_KIND) & (results["temperature"] == temperature)]


def _summary_row(rows: pd.DataFrame, ar: pd.DataFrame) -> dict:
    """One method's totals; speedup over AR at the same temperature on the prompts both finished."""
    tokens, seconds = int(rows["new_tokens"].sum()), float(rows["seconds"].sum())
    ea = rows.dropna(subset=["expected_acceptance"])
    split = {c: (float(rows[c].sum()) if rows[c].notna().any() else None) for c in ("draft_s", "verify_s", "build_s")}
    return {**{c: rows[c].iloc[0] for c in ID_COLUMNS}, "n_prompts": int(rows["prompt_id"].nunique()),
            "new_tokens": tokens, "mal": pooled_mal(tokens, int(rows["steps"].sum())),
            "tokens_per_s": tokens_per_second(tokens, seconds), "speedup": speedup_over_ar(rows, ar),
            **split, "expected_acceptance": (mean_expected_acceptance(ea["expected_acceptance"].tolist(),
                                                                      ea["steps"].tolist()) if len(ea) else None)}


def method_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per method (``SUMMARY_COLUMNS``), in results order: pooled over its prompts."""
    rows = [_summary_row(group, ar_rows(results, group["temperature"].iloc[0]))
            for _, group in results.groupby("method", sort=False)]
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["budget"] = frame["budget"].astype("Int64")
    for column in ("draft_s", "verify_s", "build_s", "expected_acceptance"):
        frame[column] = frame[column].astype("float64")
    return frame


def category_summary(results: pd.DataFrame) -> pd.DataFrame:
    """``method_summary`` within each prompt category: one row per (category, method), pooled over that
    category's prompts, speedups over AR on those prompts (``SUMMARY_COLUMNS`` and ``category``)."""
    parts = [method_summary(rows).assign(category=category)
             for category, rows in results.groupby("category", sort=True)]
    if not parts:
        return pd.DataFrame(columns=["category", *SUMMARY_COLUMNS])
    return pd.concat(parts, ignore_index=True)[["category", *SUMMARY_COLUMNS]]


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


def pooled_intervals(rows: pd.DataFrame, ar: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float, float]:
    """95 % percentile-bootstrap intervals over prompts of one method's pooled MAL (its prompts) and
    pooled speedup over AR (the prompts both finished, drawn together, each draw pooled exactly as
    ``speedup_over_ar`` pools): (mal_lo, mal_hi, speedup_lo, speedup_hi); NaN with fewer than 2 prompts."""
    tokens, steps = rows["new_tokens"].to_numpy(float), rows["steps"].to_numpy(float)
    mal = [pooled_mal(tokens[p].sum(), steps[p].sum()) for p in bootstrap_picks(len(rows), n_boot, seed)]
    mine, base = _on_shared_prompts(rows, ar)
    speedup = [_speed_ratio(mine, base, p) for p in bootstrap_picks(len(mine["seconds"]), n_boot, seed)]
    return (*percentile_interval(mal, level), *percentile_interval(speedup, level))


def _on_shared_prompts(rows: pd.DataFrame, other: pd.DataFrame) -> tuple[dict, dict]:
    """Two methods' new_tokens, steps and seconds (arrays by column) on the prompts both finished,
    in one order (sorted prompt ids), so that a bootstrap draw picks the same prompts of both."""
    own = rows.set_index(rows["prompt_id"].astype(str))
    base = other.set_index(other["prompt_id"].astype(str))
    both = sorted(set(own.index) & set(base.index))
    columns = ("new_tokens", "steps", "seconds")
    return tuple({c: frame.loc[both, c].to_numpy(float) for c in columns} for frame in (own, base))


def _speed_ratio(mine: dict, base: dict, picks) -> float:
    """Pooled tokens/s of ``mine`` over ``base`` on the prompts ``picks`` (``_on_shared_prompts``' arrays)."""
    return (tokens_per_second(mine["new_tokens"][picks].sum(), mine["seconds"][picks].sum())
            / tokens_per_second(base["new_tokens"][picks].sum(), base["seconds"][picks].sum()))


def paired_ratios(rows: pd.DataFrame, other: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, float]:
    """One method's rows against another's on the prompts both finished, drawn together (a paired
    bootstrap: both methods decoded the same prompts on the same machine): the ratio of their pooled
    MALs and of their pooled tokens/s (the ratio of their speedups over one AR), each with a 95 %
    percentile-bootstrap interval over prompts, NaN with fewer than 2 prompts."""
    mine, base = _on_shared_prompts(rows, other)

    def ratios(p) -> tuple[float, float]:
        return (pooled_mal(mine["new_tokens"][p].sum(), mine["steps"][p].sum())
                / pooled_mal(base["new_tokens"][p].sum(), base["steps"][p].sum()), _speed_ratio(mine, base, p))

    prompts = len(mine["seconds"])
    mal, speed = ratios(np.arange(prompts))
    draws = np.array([ratios(p) for p in bootstrap_picks(prompts, n_boot, seed)]).reshape(-1, 2)
    (mal_lo, mal_hi), (speed_lo, speed_hi) = (percentile_interval(draws[:, i], level) for i in (0, 1))
    return {"prompts": prompts, "mal_ratio": mal, "mal_ratio_lo": mal_lo, "mal_ratio_hi": mal_hi,
            "speed_ratio": speed, "speed_ratio_lo": speed_lo, "speed_ratio_hi": speed_hi}


def prompts_per_machine(results: pd.DataFrame) -> dict[str, int]:
    """Machine (``records.MACHINE_COLUMN``) → how many of the run's prompts it timed, most first; {}
    for a run from before rows named their machine. Each prompt runs whole on one machine
    (``tools/bench/sittings.py``), so each speedup is a ratio from one machine."""
    if MACHINE_COLUMN not in results.columns or results[MACHINE_COLUMN].isna().all():
        return {}
    counts = results.groupby(machine_labels(results))["prompt_id"].nunique()
    return {str(m): int(n) for m, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))}


def machine_labels(results: pd.DataFrame) -> pd.Series:
    """Each row's machine (``records.MACHINE_COLUMN``), ``records.UNRECORDED_MACHINE`` where it names none."""
    return results[MACHINE_COLUMN].fillna(UNRECORDED_MACHINE)
