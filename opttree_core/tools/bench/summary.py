"""A bench run's summary: one row per method (``records.SUMMARY_COLUMNS``), pooled over its prompts
with the one metric definitions of ``metrics.py``, and its Markdown table."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ...atomic import write_atomic
from ...errors import OptTreeError
from ...metrics import mean_expected_acceptance, pooled_mal, tokens_per_second
from ...records import AR_KIND, ID_COLUMNS, SUMMARY_COLUMNS, speedup_over_ar


def _totals(rows: pd.DataFrame) -> tuple[int, float]:
    return int(rows["new_tokens"].sum()), float(rows["seconds"].sum())


def _summary_row(rows: pd.DataFrame, ar: pd.DataFrame) -> dict:
    """One method's totals; speedup over AR at the same temperature on the prompts both finished."""
    tokens, seconds = _totals(rows)
    ea = rows.dropna(subset=["expected_acceptance"])
    split = {c: (float(rows[c].sum()) if rows[c].notna().any() else None) for c in ("draft_s", "verify_s", "build_s")}
    return {**{c: rows[c].iloc[0] for c in ID_COLUMNS}, "n_prompts": int(rows["prompt_id"].nunique()),
            "new_tokens": tokens, "mal": pooled_mal(tokens, int(rows["steps"].sum())),
            "tokens_per_s": tokens_per_second(tokens, seconds),
            "speedup": speedup_over_ar(rows, ar),
            **split, "expected_acceptance": (mean_expected_acceptance(ea["expected_acceptance"].tolist(),
                                                                      ea["steps"].tolist()) if len(ea) else None)}


def summary_frame(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, group in results.groupby("method", sort=False):
        ar = results[(results["kind"] == AR_KIND) & (results["temperature"] == group["temperature"].iloc[0])]
        rows.append(_summary_row(group, ar))
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["budget"] = frame["budget"].astype("Int64")
    for column in ("draft_s", "verify_s", "build_s", "expected_acceptance"):
        frame[column] = frame[column].astype("float64")
    return frame


def write_summary(run_dir: Path, results: pd.DataFrame) -> pd.DataFrame:
    summary = summary_frame(results)
    write_atomic(run_dir / "summary.parquet", lambda p: summary.to_parquet(p, index=False))
    records = json.loads(summary.to_json(orient="records"))
    write_atomic(run_dir / "summary.json", lambda p: p.write_text(json.dumps(records, indent=1)))
    return summary


def summarize(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The per-method summary of a run folder, recomputed from its results.parquet."""
    path = Path(run_dir) / "results.parquet"
    if not path.is_file():
        raise OptTreeError(f"{run_dir} is not a bench run: it has no results.parquet")
    return summary_frame(pd.read_parquet(path))


def published_of(run_dir: str | os.PathLike) -> tuple[dict, ...]:
    """The ``[[published]]`` rows of the config a run folder was made with (none in older runs)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return ()
    return tuple(json.loads(path.read_text()).get("config", {}).get("published", ()))


def published_table(summary: pd.DataFrame, published) -> list[str]:
    """One line per published cell: our MAL / speedup beside the paper's."""
    if not published:
        return []
    out = ["### Published numbers beside ours", "",
           "| drafter | policy | n | T | ours: MAL / speedup | published: MAL / speedup | source |",
           "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    trees = summary[summary["kind"] == "tree"]
    for row in published:
        ours = trees[(trees["drafter"] == row["drafter"]) & (trees["policy"] == row["policy"])
                     & (trees["budget"] == row["budget"]) & (trees["temperature"] == row["temperature"])]
        mine = f"{ours['mal'].iloc[0]:.2f} / {ours['speedup'].iloc[0]:.2f}×" if len(ours) else "not run"
        theirs = " / ".join(f"{row[k]:.2f}{'×' if k == 'speedup' else ''}" if k in row else "–"
                            for k in ("mal", "speedup"))
        out.append(f"| {row['drafter']} | {row['policy']} | {row['budget']} | {row['temperature']:g} | {mine} | "
                   f"{theirs} | {row['source']} |")
    return out + [""]


def markdown_table(summary: pd.DataFrame, published=()) -> str:
    """Per temperature: MAL / speedup for each drafter × policy (rows) and budget (columns), then the peers;
    then ``published`` cells (a config's ``[[published]]``) beside ours."""
    out = []
    for t, at_t in summary.groupby("temperature", sort=True):
        trees = at_t[at_t["kind"] == "tree"]
        budgets = sorted(int(b) for b in trees["budget"].dropna().unique())
        out += [f"### T = {t:g} (cells: MAL / speedup over AR)", "",
                "| drafter | policy | " + " | ".join(f"n={b}" for b in budgets) + " |",
                "| --- | --- | " + " | ".join("---:" for _ in budgets) + " |"]
        for (drafter, policy), rows in trees.groupby(["drafter", "policy"], sort=False):
            by_budget = {int(r.budget): f"{r.mal:.2f} / {r.speedup:.2f}×" for r in rows.itertuples()}
            out.append(f"| {drafter} | {policy} | " + " | ".join(by_budget.get(b, "–") for b in budgets) + " |")
        out += ["", "| peer | MAL | tokens/s | speedup |", "| --- | ---: | ---: | ---: |"]
        out += [f"| {r.method} | {r.mal:.2f} | {r.tokens_per_s:.1f} | {r.speedup:.2f}× |"
                for r in at_t[at_t["kind"] != "tree"].itertuples()]
        out.append("")
    return "\n".join(out + published_table(summary, published))
