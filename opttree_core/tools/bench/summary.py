"""A bench run's summary (``summary.method_summary``, the core's one per-method table: one row per
method, ``records.SUMMARY_COLUMNS``), written beside its results, and its Markdown table."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ...atomic import write_atomic
from ...errors import OptTreeError
from ...records import AR_KIND
from ...summary import category_summary, method_summary, prompts_per_machine


def write_summary(run_dir: Path, results: pd.DataFrame) -> pd.DataFrame:
    summary = method_summary(results)
    write_atomic(run_dir / "summary.parquet", lambda p: summary.to_parquet(p, index=False))
    records = json.loads(summary.to_json(orient="records"))
    write_atomic(run_dir / "summary.json", lambda p: p.write_text(json.dumps(records, indent=1)))
    return summary


def summarize(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The per-method summary of a run folder, recomputed from its results.parquet."""
    return method_summary(read_results(run_dir))


def read_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """A run folder's results.parquet; missing or unreadable: one line."""
    path = Path(run_dir) / "results.parquet"
    if not path.is_file():
        raise OptTreeError(f"{run_dir} is not a bench run: it has no results.parquet")
    try:
        results = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a torn or foreign file
        raise OptTreeError(f"{path} is not a readable results table ({type(e).__name__}: {e}); "
                           "rerun the bench command to rewrite it") from e
    return results


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


def _column_label(row, one_drafter: bool) -> str:
    """A method's short name in a by-category table: "opt-tree n=8", "hf-assisted" (the drafter too
    when the run has several)."""
    if row.kind == AR_KIND:
        return "AR"
    name = f"{row.policy} n={int(row.budget)}" if row.kind == "tree" else str(row.kind)
    return name if one_drafter or pd.isna(row.drafter) else f"{name} {row.drafter}"


def category_markdown(results: pd.DataFrame) -> str:
    """Per temperature: a row per prompt category (and one for all prompts), a column per method other
    than AR, cells "speedup over AR on that category's prompts (MAL)"."""
    table = pd.concat([category_summary(results), method_summary(results).assign(category="all prompts")],
                      ignore_index=True)
    one_drafter = table.loc[table["kind"] != AR_KIND, "drafter"].dropna().nunique() <= 1
    table["column"] = [_column_label(r, one_drafter) for r in table.itertuples(index=False)]
    out = []
    for t, at_t in table.groupby("temperature", sort=True):
        columns = list(dict.fromkeys(at_t.loc[at_t["kind"] != AR_KIND, "column"]))
        out += [f"### T = {t:g} (cells: speedup over AR on the category's prompts, MAL in brackets)", "",
                "| category | prompts | " + " | ".join(columns) + " |",
                "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |"]
        for category, rows in at_t.groupby("category", sort=False):
            cells = {r.column: f"{r.speedup:.2f}× ({r.mal:.2f})" for r in rows.itertuples(index=False)}
            prompts = int(rows["n_prompts"].max())
            out.append(f"| {category} | {prompts} | " + " | ".join(cells.get(c, "–") for c in columns) + " |")
        out.append("")
    return "\n".join(out)


def machines_markdown(results: pd.DataFrame) -> str:
    """Which machine timed how many of the run's prompts ("" for runs from before rows named their
    machine): a run resumed on other machines pools prompts timed on each."""
    machines = prompts_per_machine(results)
    if not machines:
        return ""
    lines = [f"- {machine}: {n} prompt{'s' if n != 1 else ''}" for machine, n in machines.items()]
    return "\n".join([f"Measured on {len(machines)} machine{'s' if len(machines) > 1 else ''}:", *lines, ""])
