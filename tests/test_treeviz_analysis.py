"""treeviz analysis: E(A)-vs-A heatmaps (counts and r), MAL against budget, speedups,
acceptance by depth and rank, timelines — tables and figure data against the logs."""
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from opttree_core.summary import method_summary, per_prompt_speedups
from treeviz.analysis import (
    acceptance_by_depth,
    acceptance_by_rank,
    binned_correlation,
    correlation,
    correlation_intervals,
    ea_a_frame,
    mal_by_budget,
    speedup_stats,
    summarize_logs,
    timeline_frame,
)
from treeviz.analysis_plots import (
    acceptance_figure,
    ea_heatmap_figure,
    mal_budget_figure,
    pooled_speedup_figure,
    speedup_figure,
    timeline_figure,
)
from treeviz.logs import load_logs
from treeviz.runs import shootout_table
from treeviz.paper import (
    ea_heatmap_mpl,
    mal_budget_mpl,
    save_paper_figures,
    speedup_mpl,
)

DATA = Path(__file__).parent / "data" / "treeviz"


@pytest.fixture(scope="module")
def logs():
    return load_logs(sorted(DATA.glob("tiny-*")))


def test_summary_has_one_row_per_run_from_meta(logs):
    summary = summarize_logs(logs)
    assert len(summary) == 8 and set(summary["policy"]) == {"opt-tree", "chain"}
    assert sorted(summary["nodes"].unique()) == [4, 12, 24]
    for row in summary.itertuples():
        data = logs[row.run]
        assert row.mal == pytest.approx(data.meta["mal"]) and row.steps == data.meta["steps"]
        assert row.tokens_per_s == pytest.approx(data.meta["tokens_per_s"])
        assert row.group == f"{data.meta['draft']} → {data.meta['target']}"


def test_heatmap_counts_equal_the_logs_ea_a_pairs(logs):
    fig = ea_heatmap_figure(logs)
    groups = sorted({f"{d.meta['draft']} → {d.meta['target']}" for d in logs.values()})
    panels = [t for t in fig.data if t.type == "heatmap"]
    assert len(panels) == len(groups)
    lines = [t for t in fig.data if t.name == "A = E(A) + 1"]  # a calibrated draft's diagonal, in every panel
    assert len(lines) == len(groups) and all(np.allclose(np.diff(t.y), np.diff(t.x)) for t in lines)
    assert len({tuple(t.x) for t in panels}) == 1 and len({tuple(t.y) for t in panels}) == 1  # shared ranges
    for trace, group in zip(panels, groups):
        expected = Counter()
        for data in logs.values():
            if f"{data.meta['draft']} → {data.meta['target']}" == group:
                expected.update(zip(np.rint(data.steps["ea"]).astype(int), data.steps["a"]))
        drawn = Counter({(x, y): trace.z[i][j] for i, y in enumerate(trace.y) for j, x in enumerate(trace.x)
                         if trace.z[i][j]})
        assert drawn == expected
        assert sum(expected.values()) == sum(len(d.steps) for d in logs.values()
                                             if f"{d.meta['draft']} → {d.meta['target']}" == group)


def test_correlations_equal_scipys_and_are_printed(logs):
    frame = ea_a_frame(logs)
    fig = ea_heatmap_figure(frame)
    titles = [a.text for a in fig.layout.annotations]
    for group, part in frame.groupby("group"):
        r = correlation(part)
        assert r.pearson == pytest.approx(stats.pearsonr(part["ea"], part["a"]).statistic, abs=1e-12)
        assert r.spearman == pytest.approx(stats.spearmanr(part["ea"], part["a"]).statistic, abs=1e-12)
        assert r.n == len(part)
        assert any(group in t and f"Pearson r = {r.pearson:.3f}" in t and f"Spearman ρ = {r.spearman:.3f}" in t
                   for t in titles)


def test_correlation_of_a_constant_is_nan():
    r = correlation(pd.DataFrame({"ea": [1.0, 2.0, 3.0], "a": [2, 2, 2]}))
    assert np.isnan(r.pearson) and np.isnan(r.spearman) and r.n == 3


def test_mal_against_budget_has_a_line_per_policy_and_group(logs):
    table = mal_by_budget(summarize_logs(logs))
    fig = mal_budget_figure(logs)
    assert len(fig.data) == 4  # 2 groups × (opt-tree, chain)
    for trace in fig.data:
        rows = table[table["policy"] == trace.name]
        assert set(trace.x) <= set(rows["nodes"])
    opt = [t for t in fig.data if t.name == "opt-tree"]
    for trace in opt:
        assert list(trace.x) == [4, 12, 24]
    expected = table[(table["policy"] == "opt-tree")].groupby("group")["mal"].apply(list)
    assert sorted(map(list, (t.y for t in opt))) == sorted(expected.tolist())


def _results(tokens_per_s: dict) -> pd.DataFrame:
    """Bench result rows (the columns the tables read): method → per-prompt tokens/s, 10 tokens each."""
    rows = []
    for method, speeds in tokens_per_s.items():
        kind, policy = ("ar", None) if method == "ar" else ("tree", method)
        for prompt, speed in enumerate(speeds):
            rows.append({"method": method, "kind": kind, "policy": policy, "budget": None if kind == "ar" else 4,
                         "drafter": None if kind == "ar" else "d", "temperature": 0.0, "prompt_id": f"p{prompt}",
                         "new_tokens": 10, "steps": 10 if kind == "ar" else 5, "seconds": 10 / speed,
                         "tokens_per_s": speed, "draft_s": None, "verify_s": None, "build_s": None,
                         "expected_acceptance": None, "output_matches_ar": True if kind == "tree" else None})
    return pd.DataFrame(rows)


def test_speedup_bars_carry_mean_and_sd():
    ratios = per_prompt_speedups(_results({"ar": [10, 11, 9], "opt-tree": [14, 15, 13], "chain": [12, 12.5, 11]}))
    assert ratios.loc[ratios.policy == "opt-tree", "speedup"].tolist() == pytest.approx([1.4, 15 / 11, 13 / 9])
    table = speedup_stats(ratios)
    bar = speedup_figure(ratios).data[0]
    assert list(bar.x) == ["opt-tree", "chain"]
    np.testing.assert_allclose(bar.y, table["mean"])
    np.testing.assert_allclose(bar.error_y.array, table["std"])


def test_the_pooled_bars_show_the_summary_tables_numbers():
    """Notebook 07 drew per-prompt means as bars beside a table of pooled speedups (0.68 against 0.576 on
    one run): its bars are now the summary's own pooled speedups, with their intervals as whiskers."""
    results = _results({"ar": [10, 11, 9], "opt-tree": [14, 15, 13], "chain": [12, 12.5, 11]})
    summary = method_summary(results).set_index("policy")
    shootout = shootout_table(results)
    bar = pooled_speedup_figure(shootout).data[0]
    assert dict(zip(bar.x, bar.y)) == {p: summary.loc[p, "speedup"] for p in ("chain", "opt-tree")}
    trees = shootout[shootout["kind"] == "tree"]
    np.testing.assert_allclose(bar.error_y.array, trees["speedup_hi"] - trees["speedup"])


def test_acceptance_by_depth_and_rank_count_the_nodes(logs):
    depth, rank = acceptance_by_depth(logs), acceptance_by_rank(logs)
    all_nodes = sum(int((d.nodes["depth"] > 0).sum()) for d in logs.values())
    accepted = sum(int(((d.nodes["depth"] > 0) & d.nodes["accepted"]).sum()) for d in logs.values())
    for table in (depth, rank):
        assert table["nodes"].sum() == all_nodes and table["accepted"].sum() == accepted
        assert ((table["accepted"] <= table["reached"]) & (table["reached"] <= table["nodes"])).all()
    top = rank[rank["rank"] == 0]
    assert (top["conditional"] > 0).all()
    assert len(acceptance_figure(logs).data) == 2 * len(depth.groupby(["group", "policy"]))


def test_timeline_shows_build_time_only_when_the_log_has_it(logs):
    data = next(iter(logs.values()))
    fig = timeline_figure(data)
    assert [t.name for t in fig.data] == ["draft", "verify"]
    np.testing.assert_allclose(fig.data[0].y, data.steps["draft_s"])
    with_build = type(data)(nodes=data.nodes, steps=data.steps.assign(build_s=0.01), meta=data.meta)
    assert list(timeline_frame(with_build).columns[:4]) == ["step", "draft_s", "build_s", "verify_s"]
    assert [t.name for t in timeline_figure(with_build).data] == ["draft", "tree building", "verify"]


def test_paper_figures_are_written_reproducibly(logs, tmp_path):
    first = save_paper_figures(logs, tmp_path / "a", step=1)
    second = save_paper_figures(logs, tmp_path / "b", step=1)
    assert [p.name for p in first] == [p.name for p in second]
    assert {p.suffix for p in first} == {".pdf", ".png"} and len(first) == 8
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    heat = ea_heatmap_mpl(logs)
    assert len(heat.axes) == 2 and "r = " in heat.axes[0].get_title()
    assert len(mal_budget_mpl(logs).axes[0].lines) >= 2
    frame = pd.DataFrame({"method": ["a", "b", "a", "b"], "speedup": [1.1, 0.9, 1.3, 1.0]})
    assert len(speedup_mpl(frame).axes[0].patches) == 2


def _noisy_steps(prompts: int = 6, steps: int = 80, seed: int = 0) -> pd.DataFrame:
    """Steps whose A is E(A) + 1 plus noise that does not depend on E(A), as a calibrated draft's are."""
    rng = np.random.default_rng(seed)
    ea = rng.uniform(0.0, 4.0, prompts * steps)
    a = np.clip(np.rint(ea + 1 + rng.normal(0, 1.2, ea.size)), 1, None)
    return pd.DataFrame({"ea": ea, "a": a.astype(int), "ea_bin": np.rint(ea).astype(int),
                         "prompt_id": np.repeat([f"p{i}" for i in range(prompts)], steps)})


def test_binned_correlation_sees_the_calibration_that_noisy_steps_hide():
    frame = _noisy_steps()
    per_step = correlation(frame).pearson
    assert 0.4 < per_step < 0.85  # one step's A is a noisy draw
    assert binned_correlation(frame) > 0.97 > per_step  # the bins' means lie on A = E(A) + 1
    bins = frame.groupby("ea_bin")["a"].mean()
    assert np.isclose(binned_correlation(frame), np.corrcoef(frame.groupby("ea_bin")["ea"].mean(), bins)[0, 1])


def test_correlation_intervals_resample_prompts_and_hold_the_estimate():
    frame = _noisy_steps()
    out = correlation_intervals(frame, n_boot=300, seed=1)
    assert out == correlation_intervals(frame, n_boot=300, seed=1)  # seeded
    for name in ("pearson", "spearman", "binned_pearson"):
        assert out[f"{name}_lo"] <= out[name] <= out[f"{name}_hi"], (name, out)
        assert out[f"{name}_hi"] - out[f"{name}_lo"] > 0
    assert np.isclose(out["pearson"], stats.pearsonr(frame["ea"], frame["a"]).statistic)
    assert np.isclose(out["spearman"], stats.spearmanr(frame["ea"], frame["a"]).statistic)
    # one prompt that disagrees with the rest widens the interval: prompts, not steps, are resampled
    odd = _noisy_steps(prompts=1, seed=2).assign(prompt_id="odd")
    odd["a"] = odd["a"].to_numpy()[::-1]
    wide = correlation_intervals(pd.concat([frame, odd], ignore_index=True), n_boot=300, seed=1)
    assert wide["pearson_hi"] - wide["pearson_lo"] > out["pearson_hi"] - out["pearson_lo"]
    single = correlation_intervals(frame[frame["prompt_id"] == "p0"], n_boot=50)
    assert np.isnan(single["pearson_lo"]) and np.isfinite(single["pearson"])
