"""Why trees pay on one model and machine and not on another: the roofline figure.

Input: the JSON ``benchmarks/bench_roofline.py`` writes (the machine, and for each target and dtype
the seconds of one forward of q new tokens, and the MAL a logged bench run reached per budget n).

Left: T(q)/T(1), what verifying q tokens costs in AR steps. Right: the speedup each configuration
allows at each logged budget, MAL(n) · T(1) / T(n + 1): drafting counted as free, so an upper bound;
below the dashed line at 1, no draft can make trees pay. ``roofline_table`` holds exactly the
numbers drawn. ``budget_peaks`` sets that bound beside a Fig. 5 run's measured speed per budget.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from matplotlib.ticker import NullLocator

from opttree_core.metrics import pooled_mal
from opttree_core.summary import ar_rows, machine_labels, speedup_over_ar

from .figures_lib import drafting_free_seconds
from .static import PAGE_WIDTH_IN, new_figure, paper_style


def read_roofline(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _label(config: dict) -> str:
    return f"{config['target']} {config['dtype']} ({config['kernels']})"


def _verify_cost(config: dict, sizes: list[int], rows: int) -> float | None:
    """T(rows)/T(1), interpolated in log-q between measured sizes (None past the largest)."""
    seconds = np.asarray(config["seconds"])
    if rows > sizes[-1]:
        return None
    return float(np.interp(np.log2(rows), np.log2(sizes), seconds / seconds[0]))


def roofline_table(record: dict) -> pd.DataFrame:
    """One row per configuration and logged budget n: MAL(n), T(n+1)/T(1) and the bound MAL · T(1)/T(n+1)."""
    rows = []
    for config in record["configs"]:
        for n, mal in sorted((int(k), v) for k, v in config.get("mal", {}).items()):
            cost = _verify_cost(config, record["sizes"], n + 1)
            if cost is not None:
                rows.append({"config": _label(config), "budget": n, "mal": mal, "verify_cost": cost,
                             "speedup_bound": mal / cost})
    return pd.DataFrame(rows, columns=["config", "budget", "mal", "verify_cost", "speedup_bound"])


def _run_machine(results: pd.DataFrame) -> str:
    machines = machine_labels(results).unique()
    if len(machines) != 1:
        raise ValueError(f"the run was timed on {len(machines)} machines; a roofline belongs to one")
    return str(machines[0])


def budget_peaks(records: list[dict], results: pd.DataFrame, target: str, dtype: str,
                 policy: str = "opt-tree") -> pd.DataFrame:
    """Fig. 5's speed beside the roofline's prediction: per budget n of ``policy``'s greedy runs in a
    bench run's ``results``, the pooled MAL, the measured speedup over AR, the speedup had drafting
    cost nothing (``figures_lib.drafting_free_seconds``), both pooled as the shoot-out pools them
    (``summary.speedup_over_ar``), and the roofline's bound MAL · T(1) / T(n + 1) from the profile of ``target`` in ``dtype`` among ``records`` taken on the
    machine that timed the run (None past its largest q). A ValueError names what is missing."""
    machine = _run_machine(results)
    record = next((r for r in records if r["machine"].startswith(machine)), None)
    if record is None:
        raise ValueError(f"no roofline was measured on {machine}")
    config = next((c for c in record["configs"] if (c["target"], c["dtype"]) == (target, dtype)), None)
    if config is None:
        raise ValueError(f"the roofline of {machine} has no {target} in {dtype}")
    ar = ar_rows(results, 0.0)
    tree = results[(results["kind"] == "tree") & (results["temperature"] == 0.0) & (results["policy"] == policy)]
    rows = []
    for n, runs in tree.groupby("budget"):
        mal = pooled_mal(int(runs["new_tokens"].sum()), int(runs["steps"].sum()))
        cost = _verify_cost(config, record["sizes"], int(n) + 1)
        rows.append({"budget": int(n), "mal": mal, "speedup": speedup_over_ar(runs, ar),
                     "speedup_drafting_free": speedup_over_ar(runs.assign(seconds=drafting_free_seconds(runs)), ar),
                     "roofline_bound": None if cost is None else mal / cost})
    return pd.DataFrame(rows, columns=["budget", "mal", "speedup", "speedup_drafting_free", "roofline_bound"])


def roofline_figure(record: dict):
    """(figure, table): the two panels described in the module docstring; the title names the machine."""
    table = roofline_table(record)
    sizes = record["sizes"]
    with paper_style():
        fig, axes = new_figure(PAGE_WIDTH_IN, 2.9, ncols=2)
        left, right = axes[0]
        for config in record["configs"]:
            seconds = np.asarray(config["seconds"])
            line, = left.plot(sizes, seconds / seconds[0], marker="o", ms=3,
                              label=f"{_label(config)}, T(1) = {seconds[0] * 1e3:.0f} ms")
            mine = table[table["config"] == _label(config)]
            if len(mine):
                right.plot(mine["budget"], mine["speedup_bound"], marker="o", ms=3, color=line.get_color(),
                           label=_label(config))
        left.set(xscale="log", xlabel="q new tokens in one forward", ylabel="T(q) / T(1)  (AR steps)",
                 title="What verifying q tokens costs")
        left.set_xticks(sizes, [str(s) for s in sizes])
        left.xaxis.set_minor_locator(NullLocator())
        left.axhline(1, color="grey", lw=0.6, ls=":")
        left.legend(fontsize=6, loc="upper left")
        right.axhline(1, color="black", lw=0.8, ls="--")
        right.set(xscale="log", xlabel="node budget n", ylabel="MAL(n) · T(1) / T(n+1)",
                  title="Speedup the logged MAL allows (drafting free)")
        budgets = sorted(table["budget"].unique())
        right.set_xticks(budgets, [str(b) for b in budgets])
        right.xaxis.set_minor_locator(NullLocator())
        right.legend(fontsize=6)
        drafts = {c["target"]: c.get("mal_draft") or "?" for c in record["configs"] if c.get("mal")}
        fig.suptitle(f"Roofline on {record['machine']}\n{record['date']}, context {record['context']} tokens\n"
                     "MAL from logged greedy OPT-Tree runs of "
                     + " and ".join(f"{target} ({draft})" for target, draft in drafts.items()), fontsize=6.5)
    return fig, table


def main(argv: list[str] | None = None) -> int:
    """``python -m treeviz.roofline ROOFLINE.json OUT.png``: draw the figure (and print its table)."""
    import sys

    from .static import save_figure

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m treeviz.roofline ROOFLINE.json OUT.png", file=sys.stderr)
        return 2
    fig, table = roofline_figure(read_roofline(args[0]))
    save_figure(fig, args[1], dpi=150)
    print(table.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
