"""The paper-scale tables and the open questions (issue 17): shoot-out intervals, runs joined into one
Fig. 5, and treeviz.open_questions' tables recomputed by hand from the logs they read."""
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

from conftest import TREEVIZ_LOGS as LOGS
from conftest import make_tiny_run, text_boxes

import figures.make_figures as make_figures_module
from figures.make_figures import OPEN_QUESTIONS_DIR, make_figures, ordering_section
from treeviz import open_questions as oq
from opttree_core.summary import paired_ratios, pooled_intervals
from treeviz.runs import (BenchRun, combine_runs, load_run, ordering_table, read_log_dir, shared_prompts,
                          shootout_table)

PROMPTS = ("p0", "p1", "p2", "p3")


def _config(**params) -> dict:
    return {"config": {"target": "tiny", "max_new_tokens": 40, "policy_params": params}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder of runs as the committed paper-scale data names them: the open questions' oq-* runs
    and the two Fig. 5 runs (small budgets on four prompts, large ones on two)."""
    data = tmp_path_factory.mktemp("data")
    slow = {"p0": 4.0, "p1": 5.0, "p2": 8.0, "p3": 2.0}  # AR differs per prompt: the intervals have width
    make_tiny_run(data / "oq-strength", 4.0, PROMPTS, "tiny-*-opt-tree-12", _config(), slow)
    make_tiny_run(data / "oq-delta-0", 4.0, PROMPTS, "tiny-*-opt-tree-24", _config(**{"opt-tree": {"threshold": 0.0}}),
                  slow)
    make_tiny_run(data / "oq-delta-0.5", 4.0, PROMPTS, "tiny-*-opt-tree-4", _config(), slow)
    make_tiny_run(data / "paper-fig5", 4.0, PROMPTS, "tiny-*-opt-tree-[14]*", _config(), slow)
    make_tiny_run(data / "paper-fig5-large", 6.0, PROMPTS[:2], "tiny-*-opt-tree-2*", _config())
    make_tiny_run(data / "oq-large", 6.0, PROMPTS[:3], "tiny-close-opt-tree-24", _config())
    return data


def test_shootout_intervals_bracket_the_pooled_numbers_and_come_from_prompts(runs):
    run = load_run(runs / "paper-fig5")
    table = shootout_table(run.results).set_index("method")
    ar = table.loc["ar"]
    assert (ar["mal_lo"], ar["mal_hi"], ar["speedup_lo"], ar["speedup_hi"]) == (1.0, 1.0, 1.0, 1.0)
    results = run.results
    for method, row in table.drop(index="ar").iterrows():
        assert row["mal_lo"] <= row["mal"] <= row["mal_hi"]
        assert row["speedup_lo"] < row["speedup"] < row["speedup_hi"]  # AR's per-prompt times differ
        per_prompt = (results[results["method"] == method].set_index("prompt_id")["tokens_per_s"]
                      / results[results["kind"] == "ar"].set_index("prompt_id")["tokens_per_s"])
        assert per_prompt.min() - 1e-9 <= row["speedup_lo"] and row["speedup_hi"] <= per_prompt.max() + 1e-9
    mine, base = results[results["method"] == table.index[1]], results[results["kind"] == "ar"]
    assert pooled_intervals(mine, base) == pooled_intervals(mine, base)  # seeded
    assert np.isnan(pooled_intervals(mine.iloc[:1], base.iloc[:1])).all()  # one prompt: no interval


def _rows(policy: str, budget: int, steps: dict, seconds: dict) -> pd.DataFrame:
    """A tree method's result rows: 60 tokens per prompt in ``steps[prompt]`` steps and ``seconds[prompt]``."""
    return pd.DataFrame([{"method": f"{policy} n={budget}", "kind": "tree", "policy": policy, "budget": budget,
                          "drafter": "d", "temperature": 0.0, "prompt_id": p, "new_tokens": 60, "steps": steps[p],
                          "seconds": seconds[p]} for p in steps])


def test_paired_ratios_compare_two_methods_on_the_prompts_both_decoded():
    first = _rows("opt-tree", 25, {"p0": 10, "p1": 20, "p2": 15, "p3": 12}, {"p0": 6.0, "p1": 5.0, "p2": 4.0, "p3": 9.0})
    second = _rows("binary", 25, {"p0": 20, "p1": 24, "p2": 30}, {"p0": 6.0, "p1": 7.0, "p2": 5.0})
    got = paired_ratios(first, second)
    assert got["prompts"] == 3  # p3 only in the first
    assert got["mal_ratio"] == pytest.approx((180 / 45) / (180 / 74))
    assert got["speed_ratio"] == pytest.approx((180 / 15.0) / (180 / 18.0))
    per_prompt = [(20 / 10, 6 / 6), (24 / 20, 7 / 5), (30 / 15, 5 / 4)]  # (MAL ratio, speed ratio) per prompt
    for i, name in enumerate(("mal_ratio", "speed_ratio")):
        values = [r[i] for r in per_prompt]
        assert min(values) - 1e-12 <= got[f"{name}_lo"] <= got[name] <= got[f"{name}_hi"] <= max(values) + 1e-12
    assert paired_ratios(first, second) == got  # seeded
    alone = paired_ratios(first.iloc[:1], second.iloc[:1])
    assert alone["mal_ratio"] == pytest.approx(2.0) and np.isnan(alone["mal_ratio_lo"])  # one prompt: no interval


def test_the_papers_order_is_tested_between_neighbours_that_ran_together():
    steps = {"p0": 10, "p1": 12, "p2": 11}
    seconds = {"p0": 5.0, "p1": 5.0, "p2": 5.0}
    results = pd.concat([_rows("opt-tree", 25, steps, seconds), _rows("binary", 25, steps, seconds),
                         _rows("eagle-static", 25, {p: 2 * n for p, n in steps.items()}, seconds),
                         _rows("eagle2", 25, steps, seconds),  # not in the paper's order: left out
                         _rows("opt-tree", 60, steps, seconds), _rows("binary", 60, steps, seconds)])
    table = ordering_table(results)
    assert [(r.budget, r.first, r.second) for r in table.itertuples()] == [
        (25, "opt-tree", "eagle-static"), (25, "eagle-static", "binary"), (60, "opt-tree", "binary")]
    assert table["mal_ratio"].tolist() == pytest.approx([2.0, 0.5, 1.0])
    lines = ordering_section(table)
    assert "| 2.00 (2.00–2.00) | ahead | 1.00 (1.00–1.00) | level (the interval holds 1) |" in lines[-3]
    assert "| 0.50 (0.50–0.50) | behind |" in lines[-2] and "| 1.00 (1.00–1.00) | level" in lines[-1]
    assert ordering_section(ordering_table(results[results["policy"] == "eagle2"])) == []


def test_combined_fig5_keeps_the_shared_prompts_and_pools_their_ar(runs, monkeypatch):
    monkeypatch.chdir(runs.parent)  # runs named by relative paths, as make_figures --data figures/data names them
    small, large = load_run(Path(runs.name) / "paper-fig5"), load_run(Path(runs.name) / "paper-fig5-large")
    both = combine_runs([small, large], "fig5-all")
    assert set(both.results["prompt_id"]) == {"p0", "p1"}
    assert sorted(both.results.loc[both.results["kind"] == "tree", "budget"].unique()) == [4, 12, 24]
    ar = both.results[both.results["kind"] == "ar"].set_index("prompt_id")
    assert ar.loc["p0", "new_tokens"] == 80 and ar.loc["p0", "tokens_per_s"] == pytest.approx(80 / (4.0 + 6.0))
    row = both.results[both.results["budget"] == 24].iloc[0]
    assert both.log(row["log_dir"]).n_steps == row["steps"]  # logs read from the run they came from
    source = large.results.set_index(["method", "prompt_id"]).loc[(row["method"], row["prompt_id"]), "log_dir"]
    assert both.log_meta(row["log_dir"]) == large.log_meta(source)
    with pytest.raises(ValueError, match="more than one of the runs"):
        combine_runs([small, small], "twice")


def test_first_token_agreement_and_the_deepest_layer_recompute_from_nodes():
    nodes = pd.DataFrame({"step": [0, 0, 0, 0, 1, 1, 1, 2], "depth": [0, 1, 1, 2, 0, 1, 2, 0],
                          "p_hat": [1.0, 0.6, 0.3, 0.4, 1.0, 0.9, 0.5, 1.0],
                          "accepted": [True, False, True, True, True, True, False, True]})
    assert oq.first_token_hits(nodes).tolist() == [False, True]  # the last step drafted nothing: the token cap
    middle = pd.concat([nodes, pd.DataFrame({"step": [3, 3], "depth": [0, 1], "p_hat": [1.0, 0.7],
                                             "accepted": [True, True]})], ignore_index=True)
    assert oq.first_token_hits(middle).tolist() == [False, True, False, True]  # step 2 drafted nothing: a miss
    assert oq.deepest_layer_gain(nodes).to_dict() == {0: 0.4, 1: 0.5}
    steps = pd.DataFrame({"step": [0, 1, 2], "n_nodes": [4, 128, 1], "a": [3, 2, 1]})
    profile = oq.SimulatedProfile(saturate=64, layer_cost=0.1, ngram_layer_cost=0.0)
    expected = 6 / ((1 + 0.2) + (2 + 0.2) + 1)
    assert oq.simulated_speedup(nodes, steps, "eagle", profile) == pytest.approx(expected)
    assert oq.simulated_speedup(nodes, steps, "ngram", profile) == pytest.approx(6 / 4)
    assert oq.simulated_speedup(nodes, steps, "self", profile) == pytest.approx(6 / ((1 + 2) + (2 + 2) + 1))
    assert oq.PAIR_PROFILE.step_cost(np.array([4.0]), np.array([3.0]), "qwen2.5-coder-0.5b:int4") == pytest.approx(1.99)


def test_strength_table_matches_the_logs(runs):
    table = oq.strength_table([load_run(runs / "oq-strength")]).set_index("draft")
    for draft in ("tiny-close", "tiny-noisy"):
        data = read_log_dir(LOGS / f"{draft}-opt-tree-12")
        row = table.loc[draft]
        assert row["steps"] == 4 * data.n_steps and row["prompts"] == 4
        assert row["mal"] == pytest.approx(data.steps["a"].mean())
        assert row["first_token_agreement"] == pytest.approx(oq.first_token_hits(data.nodes).mean())
        assert row["pearson"] == pytest.approx(np.corrcoef(data.steps["ea"], data.steps["a"])[0, 1])
    assert table.loc["tiny-close", "first_token_agreement"] > table.loc["tiny-noisy", "first_token_agreement"]
    assert oq.draft_label("eagle-smollm2", 512) == "eagle-smollm2 · vocab 512"
    assert oq.draft_label("qwen2.5-coder-0.5b:int4:vocab1024", 1024) == "qwen2.5-coder-0.5b:int4:vocab1024"


def test_strength_table_keeps_only_the_rows_asked_for(runs):
    """A Table 1 run mixes policies, budgets and temperatures: question 1 reads one of its columns."""
    fig5 = load_run(runs / "paper-fig5")  # opt-tree at n = 4 and 12, each log standing for 4 prompts
    columns = ["draft", "budget", "steps", "prompts", "mal", "first_token_agreement", "pearson"]
    chosen = oq.strength_table([fig5], policy="opt-tree", budget=12, temperature=0.0)[columns]
    alone = oq.strength_table([load_run(runs / "oq-strength")])[columns]  # the same n = 12 logs
    pd.testing.assert_frame_equal(chosen, alone)
    assert set(oq.strength_table([fig5])["budget"]) == {"4–12"}  # nothing asked: both budgets pooled
    with pytest.raises(ValueError, match="no tree runs"):
        oq.strength_table([fig5], temperature=1.0)


def test_make_figures_asks_question_1_of_the_pair_from_table1_and_its_ends(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_tiny_run(data / "pair-table1", 4.0, PROMPTS[:2], "tiny-close-*")  # chain, and opt-tree at n = 4, 12, 24
    make_tiny_run(data / "pair-table1-ends", 4.0, PROMPTS[:2], "tiny-noisy-opt-tree-*")
    monkeypatch.setitem(make_figures_module.PAIR_STRENGTH_ROWS, "budget", 12)  # the tiny logs have no n = 25
    make_figures(data, tmp_path / "out")
    drawn = pd.read_csv(tmp_path / "out" / OPEN_QUESTIONS_DIR / "oq_strength_pair.csv").set_index("draft")
    assert sorted(drawn.index) == ["tiny-close", "tiny-noisy"] and set(drawn["budget"].astype(str)) == {"12"}
    for draft in drawn.index:
        assert drawn.loc[draft, "steps"] == 2 * read_log_dir(LOGS / f"{draft}-opt-tree-12").n_steps
    assert (tmp_path / "out" / OPEN_QUESTIONS_DIR / "oq_strength_pair.png").is_file()
    assert (tmp_path / "out" / "pair-table1-ends" / "shootout.md").is_file()  # the ends keep their own table


def test_the_pairs_weaker_drafts_join_question_1_on_the_prompts_every_run_decoded(tmp_path, monkeypatch):
    """oq-strength-pair ran one of Table 1's prompts: every draft of the pair's figure is read on that one
    prompt only, and SmolLM2's oq_strength (the other oq-strength* runs) leaves it out."""
    data = tmp_path / "data"
    make_tiny_run(data / "pair-table1", 4.0, PROMPTS[:2], "tiny-close-opt-tree-*")
    make_tiny_run(data / "pair-table1-ends", 4.0, PROMPTS[:2], "tiny-noisy-opt-tree-*")
    weaker = make_tiny_run(data / "oq-strength-pair", 4.0, PROMPTS[1:2], "tiny-noisy-opt-tree-*") / "results.parquet"
    pd.read_parquet(weaker).replace({"drafter": {"tiny-noisy": "tiny-far"}}).to_parquet(weaker, index=False)
    make_tiny_run(data / "oq-strength", 4.0, PROMPTS[:2], "tiny-close-opt-tree-12")
    monkeypatch.setitem(make_figures_module.PAIR_STRENGTH_ROWS, "budget", 12)
    make_figures(data, tmp_path / "out")
    drawn = pd.read_csv(tmp_path / "out" / OPEN_QUESTIONS_DIR / "oq_strength_pair.csv").set_index("draft")
    assert sorted(drawn.index) == ["tiny-close", "tiny-far", "tiny-noisy"] and set(drawn["prompts"]) == {1}
    for draft in drawn.index:
        log = {"tiny-far": "tiny-noisy"}.get(draft, draft)
        assert drawn.loc[draft, "steps"] == read_log_dir(LOGS / f"{log}-opt-tree-12").n_steps
    smollm2 = pd.read_csv(tmp_path / "out" / OPEN_QUESTIONS_DIR / "oq_strength.csv")
    assert list(smollm2["draft"]) == ["tiny-close"]
    runs = [load_run(data / name) for name in ("pair-table1", "oq-strength-pair")]
    assert shared_prompts(runs) == {"p1"}
    with pytest.raises(ValueError, match="share no prompt"):
        shared_prompts([load_run(data / "pair-table1"), dataclasses.replace(
            runs[1], results=runs[1].results.assign(prompt_id="elsewhere"))])


def test_delta_table_reads_each_runs_threshold_and_picks_the_best(runs):
    delta = [load_run(runs / name) for name in ("oq-delta-0", "oq-delta-0.5")]
    table = oq.delta_table(delta)
    assert sorted(table["delta"].unique()) == [0.0, 0.5]  # 0.5: OPT-Tree's default when the run sets none
    row = table[(table["drafter"] == "tiny-close") & (table["delta"] == 0.0)].iloc[0]
    data = read_log_dir(LOGS / "tiny-close-opt-tree-24")
    assert row["mal"] == pytest.approx(len(data.meta["token_ids"]) / data.n_steps)
    assert row["sim_speedup"] == pytest.approx(oq.simulated_speedup(data.nodes, data.steps, "tiny-close",
                                                                    oq.SimulatedProfile()))
    best = oq.best_deltas(table).set_index("drafter")
    for drafter, part in table.groupby("drafter"):
        assert best.loc[drafter, "best_delta_here"] == part.loc[part["speedup"].idxmax(), "delta"]
        assert best.loc[drafter, "best_delta_simulated"] == part.loc[part["sim_speedup"].idxmax(), "delta"]


def test_the_pairs_delta_sweep_is_drawn_apart_from_smollm2s_and_priced_by_the_pairs_profile(runs, tmp_path):
    """oq-delta-pair-* runs make oq_delta_pair (the pair's stated profile), not part of SmolLM2's oq_delta."""
    import shutil

    data = tmp_path / "data"
    for name in ("oq-delta-0", "oq-delta-0.5"):
        shutil.copytree(runs / name, data / name)
        shutil.copytree(runs / name, data / name.replace("oq-delta-", "oq-delta-pair-"))
    make_figures(data, tmp_path / "out")
    out = tmp_path / "out" / OPEN_QUESTIONS_DIR
    smollm2, pair = (pd.read_csv(out / f"{name}.csv") for name in ("oq_delta", "oq_delta_pair"))
    assert set(smollm2["run"]) == {"oq-delta-0", "oq-delta-0.5"} and set(pair["run"]) == {"oq-delta-pair-0", "oq-delta-pair-0.5"}
    expected = oq.delta_table([load_run(data / n) for n in ("oq-delta-pair-0", "oq-delta-pair-0.5")], oq.PAIR_PROFILE)
    np.testing.assert_allclose(pair["sim_speedup"], expected["sim_speedup"], rtol=1e-5)
    assert (pair["sim_speedup"] < smollm2["sim_speedup"]).all()  # a draft layer costs more on the pair's profile
    assert (out / "oq_delta_pair_best.csv").is_file() and (out / "oq_delta_pair.png").is_file()


def test_large_budget_curve_joins_runs_on_their_shared_prompts(runs):
    names = ("paper-fig5", "paper-fig5-large", "oq-large")
    table = oq.large_budget_table([load_run(runs / n) for n in names])
    assert set(table["prompts"]) == {2}  # p0, p1: the prompts all three runs finished
    close = table[table["drafter"] == "tiny-close"].set_index("budget")
    assert sorted(close.index) == [4, 12, 24]
    data = read_log_dir(LOGS / "tiny-close-opt-tree-24")
    assert close.loc[24, "mal"] == pytest.approx(len(data.meta["token_ids"]) / data.n_steps)
    assert close.loc[24, "run"] == "oq-large"  # a budget in two runs is drawn once, from the first by name


def test_large_budget_curves_of_two_targets_join_each_targets_own_prompts(runs):
    """A second target's runs (here the same runs relabelled, on other prompt ids) neither empty the
    first target's shared prompts nor join them."""
    first = [load_run(runs / n) for n in ("paper-fig5", "oq-large")]
    second = [dataclasses.replace(r, config={**r.config, "config": {**r.config["config"], "target": "other-target"}},
                                  results=r.results.assign(prompt_id="other-" + r.results["prompt_id"].astype(str)))
              for r in first]
    table = oq.large_budget_table(first + second)
    assert set(table["target"]) == {first[0].target, "other-target"}
    alone = oq.large_budget_table(first)
    mine = table[table["target"] == first[0].target].drop(columns="target").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, alone.drop(columns="target"))
    theirs = table[table["target"] == "other-target"].drop(columns="target").reset_index(drop=True)
    pd.testing.assert_frame_equal(theirs, alone.drop(columns="target"))


def test_make_figures_writes_the_open_questions_and_no_per_run_set_for_them(runs, tmp_path):
    make_figures(runs, tmp_path)
    written = sorted(p.name for p in (tmp_path / OPEN_QUESTIONS_DIR).iterdir())
    assert written == sorted([f"{name}.{ext}" for name in ("oq_strength", "oq_delta", "oq_large")
                              for ext in ("png", "pdf", "csv")] + ["oq_delta_best.csv"])
    assert not any((tmp_path / name).exists() for name in ("oq-strength", "oq-delta-0", "oq-large"))
    assert (tmp_path / "paper-fig5-all" / "fig5_budget.png").is_file()
    drawn = pd.read_csv(tmp_path / "paper-fig5-all" / "fig5_budget.csv")
    assert set(drawn.loc[drawn["policy"] == "opt-tree", "budget"].astype(int)) == {4, 12, 24}
    again = tmp_path / "again"
    make_figures(runs, again)
    for path in (tmp_path / OPEN_QUESTIONS_DIR).iterdir():
        assert path.read_bytes() == (again / OPEN_QUESTIONS_DIR / path.name).read_bytes(), path.name


@pytest.mark.parametrize("question", ["strength", "delta", "large"])
def test_open_question_figures_draw_their_table_and_keep_titles_apart(runs, question):
    if question == "strength":
        fig, table = oq.strength_figure(oq.strength_table([load_run(runs / "oq-strength")]))
        points = fig.axes[0].containers[0].lines[0].get_ydata()
        np.testing.assert_allclose(points, table["pearson"])
    elif question == "delta":
        fig, table = oq.delta_figure(oq.delta_table([load_run(runs / n) for n in ("oq-delta-0", "oq-delta-0.5")]),
                                     oq.PAIR_PROFILE)  # the longer panel title of the two profiles
        fixed = table[table["policy"] == "opt-tree"]
        lines = {line.get_label(): line for line in fig.axes[1].get_lines() if not line.get_label().startswith("_")}
        for drafter, part in fixed.groupby("drafter"):
            np.testing.assert_allclose(lines[drafter].get_ydata(), part.sort_values("delta")["sim_speedup"])
    else:  # two targets, as make_figures draws SmolLM2 beside the pair: the longest title
        first = [load_run(runs / n) for n in ("paper-fig5", "paper-fig5-large", "oq-large")]
        second = [dataclasses.replace(r, config={**r.config, "config": {**r.config["config"],
                                                                        "target": "qwen2.5-coder-1.5b"}})
                  for r in first]
        fig, table = oq.large_budget_figure(oq.large_budget_table(first + second))
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        for (target, drafter), part in table.groupby(["target", "drafter"]):
            np.testing.assert_allclose(lines[f"{drafter} ({target})"].get_ydata(), part.sort_values("budget")["mal"])
    boxes = text_boxes(fig)
    for i, (text, box) in enumerate(boxes):
        assert fig.bbox.x0 - 1 <= box.x0 and box.x1 <= fig.bbox.x1 + 1, f"{text!r} runs off the figure"
        for other, other_box in boxes[i + 1:]:
            assert not box.overlaps(other_box), f"{text!r} overlaps {other!r}"


@pytest.mark.parametrize("config", sorted((ROOT / "figures" / "experiments").glob("oq-delta-*.toml")),
                         ids=lambda p: p.stem)
def test_the_delta_of_each_committed_sweep_config_is_read_back_from_its_config_json(config):
    """delta_table reads δ where the bench harness writes it (config.json's ``config``: BenchConfig.to_dict())."""
    from opttree_core.tools.bench.config import load_config

    run = BenchRun(path=config, config={"config": load_config(config).to_dict()},
                   results=pd.DataFrame())
    assert oq._threshold(run, "opt-tree") == float(config.stem.removeprefix("oq-delta-").removeprefix("pair-"))
