"""The notebook suite: .py/.ipynb pairs in sync and stripped, the teaching helpers they call,
and (slow) one notebook rendered by `make html` and checked in headless Chromium.

The notebooks themselves run in CI through nbmake (`make test`, fast mode)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import ScriptedDrafter

import opttree_core as oc
from treeviz.browser import distinct_colours, find_chromium, open_page
from treeviz.logs import load_log
from opttree_core.policies import trace_opt_tree
from treeviz.teaching import (
    chi_square,
    fast_mode,
    pick,
    speed_verdict,
    step_table,
    trace_figure,
    trace_table,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
DATA = Path(__file__).parent / "data" / "treeviz"


def test_the_ten_notebooks_exist():
    assert [p.stem[:2] for p in SOURCES] == [f"{i:02d}" for i in range(1, 11)]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_pair_is_in_sync_and_stripped(source):
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing: run `jupytext --sync {source.name}`"
    text, notebook = jupytext.read(source), nbformat.read(paired, as_version=4)
    assert [(c.cell_type, c.source) for c in jupytext.read(paired).cells] == \
           [(c.cell_type, c.source) for c in text.cells], f"{paired.name} differs from {source.name}: jupytext --sync"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{paired.name}: outputs are not stripped"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_notebook_teaches_has_parameters_and_asserts(source):
    cells = jupytext.read(source).cells
    assert cells[0].cell_type == "markdown" and len(cells[0].source) > 400, "start with an intro that teaches"
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "pick(" in params[0].source, "one parameters cell with a fast mode (pick)"
    assert any(re.search(r"^\s*assert ", c.source, re.MULTILINE) for c in cells if c.cell_type == "code")


def test_fast_mode_follows_the_environment(monkeypatch):
    monkeypatch.setenv("OPTTREE_FAST", "1")
    assert fast_mode() and pick("small", "big") == "small"
    monkeypatch.setenv("OPTTREE_FAST", "0")
    assert not fast_mode() and pick("small", "big") == "big"


def test_chi_square_accepts_the_right_distribution_and_rejects_a_wrong_one():
    probs = np.array([0.5, 0.3, 0.15, 0.04, 0.01])
    samples = np.random.default_rng(0).choice(len(probs), size=2000, p=probs)
    right = chi_square(samples, probs)
    assert right.p_value > 0.01 and right.samples == 2000
    assert right.bins == 5 and right.dof == 4
    assert chi_square(samples, [0.2] * 5).p_value < 1e-6
    pooled = chi_square(samples[:100], probs)  # tokens 3 and 4 expected < 5 times: one pooled bin
    assert pooled.bins == 4
    with pytest.raises(ValueError, match="too few samples"):
        chi_square([0], probs)


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.4])
def test_trace_opt_tree_equals_the_engine_policy(threshold):
    config = oc.OptTreeConfig(nodes=6, threshold=threshold, max_depth=5)
    drafter = ScriptedDrafter(vocab_size=8)
    drafter.start(None)
    trace = trace_opt_tree(drafter, 0, config)
    drafter.start(None)
    engine = oc.OptTreePolicy(config).build(drafter, 0, 5, "cpu")
    assert trace.final.tokens.tolist() == engine.tokens.tolist()
    assert trace.final.parents.tolist() == engine.parents.tolist()
    e_sub = [s.e_sub for s in trace.layers]
    assert e_sub == sorted(e_sub) and trace.layers[-1].stop and not any(s.stop for s in trace.layers[:-1])
    assert all(s.gain > threshold for s in trace.layers[:-1])
    assert trace.layers[-1].gain <= threshold or trace.layers[-1].depth == 5
    assert [s.tree.n_nodes - 1 for s in trace.layers] == [6 * s.depth for s in trace.layers]
    table = trace_table(trace, threshold)
    assert table["decision"].tolist()[:-1] == ["grow"] * (len(trace.layers) - 1)
    figure = trace_figure(trace, {t: f"w{t}" for t in range(8)})
    assert len(figure.frames) == len(trace.layers) + 1
    assert [len(f.data[1].x) for f in figure.frames] == [s.tree.n_nodes for s in trace.layers] + [7]

    crowded = trace_figure(trace, {t: f"long-word-{t}" for t in range(8)}, width=500)  # labels must give way
    unit_px = (500 - 70) / (max(crowded.frames[0].data[1].x + crowded.frames[-2].data[1].x) + 1.6)
    left_out = [_assert_no_two_shown_labels_overlap(frame.data[1], unit_px) for frame in crowded.frames]
    assert any(left_out), "crowded frames leave some labels out (hover still shows them)"


def _assert_no_two_shown_labels_overlap(nodes, unit_px: float) -> int:
    """How many labels a frame leaves out; fails where two shown labels overlap on one layer."""
    from treeviz.scene import label_width_px

    shown = [(x, y, t) for x, y, t in zip(nodes.x, nodes.y, nodes.text) if t]
    assert shown, "the root's label is always shown"
    for y in {y for _, y, _ in shown}:
        spans = sorted((x * unit_px - label_width_px(t) / 2, x * unit_px + label_width_px(t) / 2)
                       for x, yy, t in shown if yy == y)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"labels overlap on layer y={y}: {spans}"
    return len(nodes.x) - len(shown)


def test_step_table_adds_up_to_the_generated_tokens():
    log = load_log(DATA / "tiny-close-opt-tree-12")
    table = step_table(log)
    assert len(table) == len(log.steps) and table["A"].sum() == log.steps["a"].sum()
    drafted = table["accepted drafts"].map(lambda s: len(s.split()) if s else 0)
    has_bonus = (table["bonus (target)"] != "").astype(int)  # no bonus only when EOS cut a step short
    assert (drafted + has_bonus == table["A"]).all() and has_bonus.sum() >= len(table) - 1


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (CI installs it)")
def test_make_html_renders_a_notebook_that_works_offline(tmp_path):
    env = {**os.environ, "OPTTREE_FAST": "1"}
    notebook = NOTEBOOKS / "03_opt_tree_step_by_step.ipynb"
    subprocess.run([sys.executable, str(NOTEBOOKS / "render_html.py"), "--fast", "--out", str(tmp_path), str(notebook)],
                   check=True, env=env, cwd=ROOT, timeout=600)
    page = tmp_path / "03_opt_tree_step_by_step.html"
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text), "the page must not fetch scripts"
    assert "Plotly.newPlot" in text and len(text) > 3_000_000 and "E_sub(T, n)" in text  # plotly.js inline
    check = open_page(page, tmp_path / "shot.png", width=1200, height=2400, budget_ms=15000)
    assert check.errors == [], f"JavaScript errors: {check.errors}"
    assert distinct_colours(check.png) > 200, "the screenshot looks blank"
    if os.environ.get("OPTTREE_KEEP_SHOTS"):
        (Path(os.environ["OPTTREE_KEEP_SHOTS"]) / "nb03.png").write_bytes(check.png.read_bytes())


def test_a_speed_verdict_whose_interval_holds_1_calls_no_winner():
    line = speed_verdict("opt-tree n=4", 2.18, 0.079, 0.037, interval=(0.95, 1.09))
    assert "not distinguishable from AR in this run" in line and "faster" not in line
    assert "95 % interval over prompts 0.95–1.09" in line
    assert "slower than AR" in speed_verdict("opt-tree n=8", 2.0, 0.1, 0.037, interval=(0.72, 0.82))


@pytest.mark.parametrize("name", ["01_speculative_decoding", "06_budget_threshold_hardware"])
def test_notebooks_say_speeds_only_from_a_run_with_ar_interleaved(name):
    """Their speed lines come from the bench harness (``quick_bench``: AR interleaved on the same prompts;
    ``speed_lines``: a 95 % interval over them, the machine named), never from one separate AR run
    (issue 27: notebook 06 printed 2.83x that way, notebook 01 6.7x on a loaded machine)."""
    cells = [c.source for c in jupytext.read(NOTEBOOKS / f"{name}.py").cells if c.cell_type == "code"]
    speed = [c for c in cells if "speed_lines(" in c or "speed_verdict(" in c]
    assert speed and all("quick_bench(" in c and "speed_lines(" in c and "describe_machine(" in c for c in speed)
    assert not any("generate_autoregressive(" in c or ".seconds" in c for c in speed)


def test_speed_lines_give_each_method_its_interval_and_name_the_machine():
    from treeviz.runs import shootout_table
    from treeviz.teaching import speed_lines

    rows = []
    for prompt, (ar_s, tree_s) in enumerate([(1.0, 0.8), (1.2, 0.9)]):
        base = {"temperature": 0.0, "prompt_id": f"p{prompt}", "new_tokens": 10, "dataset": "prompts",
                "category": "prompts", "draft_s": 0.1, "verify_s": 0.5, "build_s": 0.0, "expected_acceptance": 1.0,
                "log_dir": "", "output_matches_ar": True}
        rows.append({**base, "method": "ar T=0", "kind": "ar", "policy": None, "budget": None, "drafter": None,
                     "steps": 10, "mal": 1.0, "seconds": ar_s, "tokens_per_s": 10 / ar_s})
        rows.append({**base, "method": "chain n=4 d T=0", "kind": "tree", "policy": "chain", "budget": 4,
                     "drafter": "d", "steps": 5, "mal": 2.0, "seconds": tree_s, "tokens_per_s": 10 / tree_s})
    results = pd.DataFrame(rows)
    lines = speed_lines(results, "Test CPU, 2 threads")
    row = shootout_table(results).set_index("method").loc["chain n=4 d T=0"]
    assert lines[0].startswith("measured on Test CPU, 2 threads, 2 prompts: AR 9.1 tokens/s")
    assert lines[1].startswith("chain n=4: a step costs")
    assert f"(95 % interval over prompts {row['speedup_lo']:.2f}–{row['speedup_hi']:.2f})" in lines[1]


def test_tables_shown_to_a_reader_name_their_columns_in_words():
    from treeviz.teaching import in_words

    frame = pd.DataFrame({"mean_ea": [1.0], "tokens_per_s": [2.0], "speedup": [0.9], "something_else": [0]})
    assert list(in_words(frame).columns) == ["mean E(A)", "tokens/s", "× AR", "something_else"]
    for name in ("05_expected_vs_actual", "06_budget_threshold_hardware", "07_structure_shootout"):
        source = (NOTEBOOKS / f"{name}.py").read_text()
        shown = re.findall(r"^display\((.*)\)$", source, flags=re.M)
        assert not [s for s in shown if ("summary" in s or "table" in s or "picked" in s) and "in_words" not in s
                    and "static_figure" not in s and "HTML" not in s], f"{name}: a table shown with raw column names"
