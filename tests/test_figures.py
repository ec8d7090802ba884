"""figures/make_figures.py: every file written, same bytes twice, no model code imported, and each
figure and table holding the numbers it claims (recomputed from results.parquet and the logs)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

from conftest import make_tiny_run, text_boxes

from figures.make_figures import (
    EXPECTED_FILES,
    MAX_PNG_BYTES,
    OPEN_QUESTION_PREFIX,
    make_figures,
    shootout_markdown,
)
from treeviz.figures_lib import budget_curves, case_tree, data_caption, ea_heatmaps, speedup_bars
from treeviz.runs import load_run, read_log_dir, shootout_table

AR_SECONDS = 4.0  # the fixture's autoregressive time for its 40 tokens


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder in the bench schema around the real tiny logs of tests/data/treeviz
    (two drafts × OPT-Tree 4/12/24 and a chain; each log stands for two prompts)."""
    return make_tiny_run(tmp_path_factory.mktemp("runs") / "tiny", AR_SECONDS)


@pytest.fixture(scope="module")
def written(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("figs")
    make_figures(tiny_run, out)
    return out


def test_a_figures_caption_states_target_dtype_drafts_prompts_budgets_and_temperature(tmp_path):
    """Issue 28: each figure's title states its data. "auto" in the config is read back from a tree log."""
    config = {"config": {"target": "tiny-target", "dtype": "auto", "max_new_tokens": 40}}
    run = load_run(make_tiny_run(tmp_path / "run", AR_SECONDS, config=config))
    drafts = sorted(run.tree_rows()["drafter"].unique())
    caption = data_caption(run)
    assert caption == (f"tiny-target (float32) · drafts {', '.join(drafts)} · 2 prompts (tiny) · n = 4–24 · greedy"
                       " · 40 new tokens")
    lines = data_caption(run, max_chars=50).split("\n")
    assert len(lines) > 1 and all(len(line) <= 50 for line in lines)
    assert " · ".join(lines) == caption  # broken only between its parts


def test_every_expected_file_is_written(written):
    assert sorted(p.name for p in written.iterdir()) == EXPECTED_FILES
    for name in EXPECTED_FILES:
        assert (written / name).stat().st_size > 0


def test_shootout_numbers_recompute_from_results(tiny_run, written):
    results = pd.read_parquet(tiny_run / "results.parquet")
    table = pd.read_csv(written / "shootout.csv")
    assert len(table) == results["method"].nunique() and table["method"].iloc[0] == "ar"
    ar_rate = results.loc[results["kind"] == "ar", "new_tokens"].sum() / (2 * AR_SECONDS)
    for row in table.itertuples(index=False):
        part = results[results["method"] == row.method]
        assert row.mal == pytest.approx(part["new_tokens"].sum() / part["steps"].sum(), rel=1e-5)
        rate = part["new_tokens"].sum() / part["seconds"].sum()
        assert row.tokens_per_s == pytest.approx(rate, rel=1e-5)
        assert row.speedup == pytest.approx(rate / ar_rate, rel=1e-5)
        assert row.n_prompts == 2
    markdown = (written / "shootout.md").read_text()
    assert markdown.count("\n| ") == len(table) + 1  # header + one line per method
    assert "| opt-tree-24@tiny-close | tiny-close | opt-tree | 24 | 0.00 | 2 |" in markdown


def test_heatmap_counts_sum_to_the_steps_of_each_panel(tiny_run):
    """The run sweeps OPT-Tree's budget (4, 12, 24): a panel per drafter · policy · budget, in budget
    order (n=4 before n=12), never one panel pooling three configurations."""
    run = load_run(tiny_run)
    fig, table = ea_heatmaps(run)
    steps = {}
    for row in run.tree_rows().sort_values(["drafter", "policy", "budget"]).itertuples(index=False):
        key = f"{row.drafter} · {row.policy} · n={row.budget}"
        steps[key] = steps.get(key, 0) + len(run.log(row.log_dir).steps)
    assert table.groupby("group")["steps"].sum().to_dict() == steps
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == len(steps) == 8
    for ax, group in zip(panels, steps):
        assert ax.images[0].get_array().sum() == steps[group]  # the pixels' counts, not just the table
        assert ax.get_title().startswith(group) and "r = " in ax.get_title()


def test_a_run_at_one_budget_per_policy_has_a_panel_per_drafter_and_policy(tmp_path):
    run = load_run(make_tiny_run(tmp_path / "one", AR_SECONDS, logs="tiny-*-opt-tree-12"))
    _, table = ea_heatmaps(run)
    assert sorted(table["group"].unique()) == ["tiny-close · opt-tree", "tiny-noisy · opt-tree"]


def test_budget_curves_plot_mean_mal_per_budget(tiny_run):
    run = load_run(tiny_run)
    fig, table = budget_curves(run)
    mal_axes = fig.axes[0]
    assert mal_axes.get_title() == "tiny-close"
    results = run.results[(run.results["drafter"] == "tiny-close") & (run.results["policy"] == "opt-tree")]
    expected = results.groupby("budget")["mal"].mean()
    line = next(c for c in mal_axes.containers if c.get_label() == "opt-tree").lines[0]
    dodge = np.asarray(line.get_xdata(), float) / expected.index.to_numpy(float)  # policies side by side
    assert np.allclose(dodge, dodge[0]) and 0.9 < dodge[0] < 1.1 and mal_axes.get_xscale() == "log"
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), expected.to_numpy(float))
    ar = table[table["policy"] == "ar"]
    assert ar["tokens_per_s"].tolist() == [pytest.approx(40 / AR_SECONDS)]


def test_budget_curves_draw_opt_trees_speed_with_drafting_free(tiny_run):
    run = load_run(tiny_run)
    fig, table = budget_curves(run)
    tree = run.results[(run.results["drafter"] == "tiny-close") & (run.results["policy"] == "opt-tree")]
    free = tree["new_tokens"] / (tree["seconds"] - tree["draft_s"] - tree["build_s"].fillna(0))
    expected = free.groupby(tree["budget"]).mean()
    assert (expected > tree.groupby("budget")["tokens_per_s"].mean()).all()  # drafting took time
    speed_axes = fig.axes[len(fig.axes) // 2]  # the bottom row's first panel: tiny-close
    line = next(ln for ln in speed_axes.get_lines() if ln.get_label() == "opt-tree, drafting free")
    np.testing.assert_allclose(np.asarray(line.get_xdata(), float), expected.index.to_numpy(float))
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), expected.to_numpy(float))
    rows = table[(table["group"] == "tiny-close") & (table["policy"] == "opt-tree")]
    np.testing.assert_allclose(rows["tokens_per_s_drafting_free"].to_numpy(float), expected.to_numpy(float))


def test_speedup_bars_are_per_prompt_ratios(tiny_run):
    run = load_run(tiny_run)
    fig, table = speedup_bars(run)
    tree = run.results[run.results["kind"] == "tree"]
    expected = (tree["tokens_per_s"] / (40 / AR_SECONDS)).groupby([tree["drafter"], tree["policy"],
                                                                    tree["budget"]]).mean()
    got = table.set_index(["group", "policy", "budget"])["mean"]
    np.testing.assert_allclose(got.sort_index().to_numpy(), expected.sort_index().to_numpy())
    heights = sorted(p.get_height() for ax in fig.axes for p in ax.patches)
    np.testing.assert_allclose(heights, sorted(expected.to_numpy()))


def test_case_tree_highlights_the_logged_accepted_path(tiny_run):
    run = load_run(tiny_run)
    fig, table = case_tree(run)
    method, prompt_id, step = table["method"].iloc[0], table["prompt_id"].iloc[0], int(table["step"].iloc[0])
    assert method == "opt-tree-24@tiny-close"  # largest budget, the better draft
    data = read_log_dir(tiny_run / "logs" / "opt-tree-24--tiny-close" / prompt_id)
    branched = data.steps[data.steps["n_nodes"] - data.steps["a"] >= 2]  # >= 2 drafted nodes rejected
    assert step == int(branched["step"].iloc[int(np.argmax(branched["a"].to_numpy()))])
    nodes = data.nodes[data.nodes["step"] == step].sort_values("node")
    drafted = table[table["kind"] != "bonus"].sort_values("node")
    assert drafted["token"].tolist() == nodes["token"].tolist()
    assert drafted["accepted"].tolist() == nodes["accepted"].tolist()
    assert table["on_path"].sum() == data.steps["a"].iloc[step] + 1  # root + accepted + bonus
    assert f"A = {data.steps['a'].iloc[step]}" in fig.axes[0].get_title(loc="left")


def test_the_default_case_study_is_the_largest_readable_tree(tiny_run, monkeypatch):
    """Past CASE_MAX_BUDGET nodes one tree is unreadable as a picture: the default case study takes
    the largest OPT-Tree budget within it, or the smallest budget when every run is larger."""
    from treeviz import figures_lib

    run = load_run(tiny_run)
    assert figures_lib.pick_case(run)[0]["budget"] == 24
    monkeypatch.setattr(figures_lib, "CASE_MAX_BUDGET", 12)
    assert figures_lib.pick_case(run)[0]["budget"] == 12
    monkeypatch.setattr(figures_lib, "CASE_MAX_BUDGET", 2)
    assert figures_lib.pick_case(run)[0]["budget"] == 4


def test_bad_run_folders_are_one_line_errors(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="no bench run folders"):
        make_figures(tmp_path, tmp_path / "out")
    broken = tmp_path / "broken"
    broken.mkdir()
    pd.read_parquet(tiny_run / "results.parquet").drop(columns=["mal"]).to_parquet(broken / "results.parquet")
    with pytest.raises(ValueError, match="lacks column"):
        load_run(broken)
    no_ar = tmp_path / "no_ar"
    no_ar.mkdir()
    results = pd.read_parquet(tiny_run / "results.parquet")
    results[results["kind"] != "ar"].to_parquet(no_ar / "results.parquet")
    with pytest.raises(ValueError, match="no autoregressive"):
        load_run(no_ar)
    assert "–" in shootout_markdown(shootout_table(results), "x")  # AR has no budget


def test_a_run_timed_on_two_machines_gives_each_machines_own_speedups(tiny_run):
    """A run resumed in sittings on two machines (each prompt whole on one): the shoot-out names the
    machines with their prompt counts, and each machine's column is the pooled speedup over AR on that
    machine's prompts alone."""
    from opttree_core.records import MACHINE_COLUMN
    from opttree_core.summary import method_summary

    results = pd.read_parquet(tiny_run / "results.parquet")
    prompts = sorted(results["prompt_id"].unique())
    results[MACHINE_COLUMN] = ["Zen CPU" if p == prompts[0] else "Xeon CPU" for p in results["prompt_id"]]
    results.loc[(results["prompt_id"] == prompts[0]) & (results["kind"] == "ar"), "seconds"] *= 2  # a slower AR
    results["tokens_per_s"] = results["new_tokens"] / results["seconds"]
    table = shootout_table(results)
    text = shootout_markdown(table, "x", results)
    assert "Timed on 2 machines" in text
    head = next(line for line in text.splitlines() if line.startswith("| method | speedup on"))
    assert len(prompts) == 2 and head == "| method | speedup on Xeon CPU (1 prompt) | speedup on Zen CPU (1 prompt) |"
    lines = text.splitlines()
    rows = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ")[1:] for line in lines[lines.index(head) + 2:]
            if line.startswith("| ")}
    assert list(rows) == list(table["method"])
    for machine, column in (("Xeon CPU", 0), ("Zen CPU", 1)):
        own = method_summary(results[results[MACHINE_COLUMN] == machine]).set_index("method")["speedup"]
        assert all(rows[m][column] == f"{own[m]:.2f}" for m in own.index)
    from treeviz.runs import BenchRun

    assert data_caption(BenchRun(tiny_run, {}, results)).endswith(" · timed on 2 machines")
    one = results.assign(**{MACHINE_COLUMN: "Xeon CPU"})
    assert shootout_markdown(table, "x", one).endswith("\n\nTimed on Xeon CPU.\n")
    assert shootout_markdown(table, "x", results.drop(columns=[MACHINE_COLUMN])) == shootout_markdown(table, "x")


def test_command_runs_without_model_code_and_repeats_its_bytes(tiny_run, written, tmp_path):
    """The script imports neither torch nor transformers (they are made unimportable: it reads logs
    through opttree_core's torch-free ``records`` and ``metrics``), and a second run over the same
    logs, in a fresh process, writes byte-identical files."""
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'transformers'):\n"
               "            raise ImportError(f'figures must not import {name}')\n"
               "sys.meta_path.insert(0, Block())\n"
               "sys.argv = ['make_figures', '--data', sys.argv[1], '--out', sys.argv[2]]\n"
               "import runpy\n"
               "runpy.run_path('figures/make_figures.py', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", blocker, str(tiny_run), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == EXPECTED_FILES
    for name in EXPECTED_FILES:
        assert (tmp_path / name).read_bytes() == (written / name).read_bytes(), name


DATA = ROOT / "figures" / "data"
# A hidden folder (``.NAME.new``) is a run still in progress, resumed in sittings: make_figures skips it.
RUNS = sorted(p for p in DATA.iterdir() if not p.name.startswith(".") and (p / "results.parquet").is_file()
              ) if DATA.is_dir() else []


@pytest.mark.parametrize("run_dir", RUNS, ids=lambda p: p.name)
def test_each_committed_run_matches_its_summary(run_dir):
    """A committed run's shoot-out = the run's own summary; greedy tree decoding reproduced AR's tokens
    (HF assisted generation is a peer, verified by transformers' own forward: not held to it)."""
    run = load_run(run_dir)
    table = shootout_table(run.results).set_index("method")
    summary = pd.read_parquet(run_dir / "summary.parquet").set_index("method")
    for column in ("mal", "tokens_per_s", "speedup"):
        np.testing.assert_allclose(table.loc[summary.index, column], summary[column], rtol=1e-6)
    assert table.loc[table["kind"] == "tree", "matches_ar"].dropna().all()


@pytest.mark.skipif(not RUNS, reason="figures/data holds no runs in this checkout")
def test_the_committed_gallery_is_what_make_figures_draws_from_the_committed_runs(tmp_path):
    """`make figures` over figures/data writes exactly the files in figures/out, byte for byte."""
    make_figures(DATA, tmp_path)
    gallery = ROOT / "figures" / "out"
    drawn = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(gallery) for p in gallery.rglob("*") if p.is_file())
    assert drawn == committed, "figures/out has stale or missing files: run make figures"
    for name in drawn:
        assert (tmp_path / name).read_bytes() == (gallery / name).read_bytes(), f"figures/out/{name} is stale"
        if name.suffix == ".png":
            assert (gallery / name).stat().st_size <= MAX_PNG_BYTES, f"{name} is too big for the gallery"


@pytest.mark.parametrize("run_dir", [p for p in RUNS if not p.name.startswith(OPEN_QUESTION_PREFIX)], ids=lambda p: p.name)
@pytest.mark.parametrize("draw", [ea_heatmaps, budget_curves, speedup_bars, case_tree])
def test_titles_and_labels_fit_and_never_overlap(draw, run_dir):
    """What a reader sees of the committed gallery: no title or label runs off the figure or over another
    (the heatmaps' four 'E(A) (rounded) · dotted …' labels overlapped; the case tree's title ran off its right)."""
    fig, _ = draw(load_run(run_dir))
    boxes = text_boxes(fig)
    whole = fig.bbox
    for text, box in boxes:
        assert box.x0 >= whole.x0 - 1 and box.x1 <= whole.x1 + 1 and box.y0 >= whole.y0 - 1 and box.y1 <= whole.y1 + 1, \
            f"{text!r} runs off the figure"
    for i, (text, box) in enumerate(boxes):
        for other, other_box in boxes[i + 1:]:
            assert not box.overlaps(other_box), f"{text!r} overlaps {other!r}"
